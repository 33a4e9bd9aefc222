"""WAV: the RIFF WAVE form, and its 64-bit variants RF64 and BW64.

RIFF (IBM/Microsoft "Multimedia Programming Interface and Data Specifications 1.0", 1991,
chapter 2) is a form header ("RIFF", 32-bit little-endian size, form type "WAVE") around
chunks of an ID, a 32-bit size and data padded to an even length. The WAVE form
(chapter 3, "Waveform Audio File Format") needs a 'fmt ' chunk before its 'data' chunk.
RF64 (EBU Tech 3306) and BW64 (ITU-R BS.2088) put -1 in the 32-bit sizes of the form and
of 'data' and give the real 64-bit sizes in a 'ds64' chunk right after the form type.

Uncompressed audio has no redundancy to judge, so the check is about sizes: the data
chunk must be whole (a cut file ends inside it) and, for PCM, a whole number of sample
frames. A zero-filled tail of PCM is silence and is not reported.

The chunk helpers here serve AIFF too: it is the same IFF chunk grammar, big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .base import WINDOW, BeyondLimits, Damage, Source, Verdict, is_zero, ok
from .tags import id3v2_size, trailing_tags_start

FORMAT = "wav"
EXTENSIONS = frozenset({".wav"})

FORM_HEADER = 12
CHUNK_HEADER = 8
# A sane file has a handful of chunks; this bounds the walk of a hostile one.
MAX_CHUNKS = 10_000
RF64_MAGICS = (b"RF64", b"BW64")
# EBU Tech 3306 section 3: "-1" in a 32-bit size means "see the ds64 chunk".
SIZE_IN_DS64 = 0xFFFFFFFF
# Writers on unseekable output (FFmpeg to a pipe) cannot go back to fill in sizes and
# leave 0xFFFFFFFF in the RIFF and data sizes (some writers leave 0): the data then runs
# to the end of the file.
STREAMED_SIZES = (0, 0xFFFFFFFF)
# Format tags of sample-per-frame codings, where data is a whole number of nBlockAlign
# frames (RIFF 1.0 ch. 3 "PCM"; RFC 2361 for float 3, A-law 6, mu-law 7).
FRAME_FORMATS = frozenset({1, 3, 6, 7})
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# Sound data this much shorter than its header declares, ending on a whole sample frame,
# is what some writers leave (a count of frames they meant to write, or a header written
# before the last buffer was dropped): it plays completely. A cut download ends at an
# arbitrary byte, so in three cases out of four (16-bit stereo) inside a frame, and is
# rarely within 10 ms of the end; the manifest's size catches the rest.
SHORT_DATA_SECONDS = 0.010


@dataclass(frozen=True)
class Chunk:
    id: bytes
    offset: int
    size: int  # the declared data size, without header or pad byte

    @property
    def body(self) -> int:
        return self.offset + CHUNK_HEADER

    @property
    def end(self) -> int:
        return self.body + self.size

    @property
    def next(self) -> int:
        """Where the next chunk starts: data is padded to an even length (RIFF 1.0 ch. 2, EA IFF 85)."""
        return self.end + (self.size & 1)

    @property
    def name(self) -> str:
        return self.id.decode("latin-1")


def valid_id(fourcc: bytes) -> bool:
    """Chunk IDs are four printable ASCII characters (RIFF 1.0 ch. 2 "FOURCC"; EA IFF 85 "ID")."""
    return len(fourcc) == 4 and all(0x20 <= b <= 0x7E for b in fourcc)


def read_chunk(src: Source, offset: int, big_endian: bool) -> Chunk | None:
    """The chunk header at ``offset``, or None if fewer than 8 bytes or no valid ID are there."""
    raw = src.read(offset, CHUNK_HEADER)
    if len(raw) < CHUNK_HEADER or not valid_id(raw[:4]):
        return None
    size = struct.unpack_from(">I" if big_endian else "<I", raw, 4)[0]
    return Chunk(raw[:4], offset, size)


def bad_chunk_header(src: Source, offset: int) -> Damage:
    """What an invalid chunk header where one is required says about the file."""
    if is_zero(src.read(offset, CHUNK_HEADER)):
        return Damage("zero_filled", f"zero bytes where a chunk header should be at byte {offset:,}")
    return Damage("bad_structure", f"no valid chunk header at byte {offset:,}")


def cut_chunk(src: Source, chunk: Chunk, what: str) -> Damage:
    have = max(0, src.size - chunk.body)
    return Damage("truncated", f"{what} ('{chunk.name}' at byte {chunk.offset:,}) declares {chunk.size:,} bytes "
                               f"but the file holds {have:,} of them ({percent(have, chunk.size)})")


def harmless_tail(src: Source, start: int, big_endian: bool) -> bool:
    """Whether the bytes from ``start`` to the end of the file are nothing a player minds.

    Taggers append ID3v2/ID3v1/APEv2 tags or whole chunks ('id3 ') behind the form without
    updating its size, and some writers leave a pad byte or a few alignment bytes uncounted
    or pad with zeros; readers ignore all of these (they stop at the form's end), so a
    redownload would not change anything. Zeros there may also be a zero-filled tail, but
    for uncompressed audio that is indistinguishable from silence and padding, so it is not
    reported. What remains, at least a chunk header's worth of data that is neither chunks,
    tags nor zeros, is unexplained.
    """
    if _zero_padding(src, start):
        return True
    end = trailing_tags_start(src, start)
    pos = start
    for _ in range(MAX_CHUNKS):
        if end - pos < CHUNK_HEADER:
            return True
        tag = id3v2_size(src.read(pos, 10))
        if tag is not None:
            pos += tag
            continue
        chunk = read_chunk(src, pos, big_endian)
        if chunk is None or chunk.end > end:
            return False
        pos = chunk.next
    return True


def _zero_padding(src: Source, start: int) -> bool:
    """Whether the file is zero from ``start`` on, judged from the first and last windows."""
    return is_zero(src.read(start, WINDOW)) and is_zero(src.tail[max(0, start - src.tail_offset):])


def form_cut(form_end: int | None, walked_to: int, file_size: int) -> bool:
    """Whether the form declares more bytes than the file has.

    Some writers count the 8-byte form header in the form size, or leave out the pad byte
    after an odd-sized last chunk: the form then claims up to 8 bytes more than a file whose
    chunks all end exactly at its end. Readers go by the chunk sizes, so that is no cut.
    """
    if form_end is None or form_end <= file_size:
        return False
    return not (form_end - file_size <= CHUNK_HEADER and walked_to >= file_size)


def short_by_a_few_frames(missing_frames: int, rate: float | None) -> bool:
    """Whether sound data ``missing_frames`` short of its header is within SHORT_DATA_SECONDS."""
    return bool(rate) and 0 < missing_frames <= rate * SHORT_DATA_SECONDS


def frames_in(size: int, frame_bytes: int) -> int:
    """How many sample frames ``size`` bytes touch (a partial frame counts)."""
    return -(-size // frame_bytes)


def short_note(missing_frames: int, rate: float) -> str:
    return (f"; {missing_frames:,} sample frame(s) ({1000 * missing_frames / rate:.1f} ms) fewer than "
            "its header declares, a writer's miscount, not a cut")


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "0%"


# --- WAVE ------------------------------------------------------------------------------

def sniff(head: bytes) -> bool:
    """The RIFF/RF64/BW64 magic and the WAVE form type; a file cut inside those 12 bytes
    still shows its magic, and the check then reports it truncated."""
    return head[:4] in (b"RIFF",) + RF64_MAGICS and form_type_matches(head, (b"WAVE",))


def form_type_matches(head: bytes, form_types: tuple[bytes, ...]) -> bool:
    """Whether bytes 8-12 hold one of ``form_types``, or the start of one when the file is shorter."""
    if len(head) >= FORM_HEADER:
        return head[8:12] in form_types
    return len(head) >= 4 and any(form_type.startswith(head[8:]) for form_type in form_types)


@dataclass
class WaveFormat:
    """The fields of WAVEFORMATEX that size the data (RIFF 1.0 ch. 3 "fmt ")."""
    tag: int
    channels: int
    rate: int
    bytes_per_second: int
    block_align: int

    @property
    def framed(self) -> bool:
        return self.tag in FRAME_FORMATS and self.block_align > 0


@dataclass
class Wave:
    form_end: int | None  # None when the writer streamed and never filled the size in
    sizes64: tuple[int, int, int] | None = None  # ds64: RIFF size, data size, sample count
    fmt: WaveFormat | None = None
    fact_samples: int | None = None
    data: Chunk | None = None
    data_streamed: bool = False
    walked_to: int = FORM_HEADER
    stopped_early: bool = False  # an invalid chunk header after the data ended the walk
    missing: int = 0  # bytes of data the data chunk declares beyond the end of the file (a few frames)
    short_frames: int = 0  # those bytes in sample frames


def check(src: Source) -> Verdict:
    header = src.read(0, FORM_HEADER)
    if len(header) < FORM_HEADER:
        raise Damage("truncated", f"the file ends inside the {FORM_HEADER}-byte RIFF header")
    wave, first_chunk = _form(src, header)
    _walk(src, wave, first_chunk)
    _require_audio(src, wave)
    frames = _judge_data(wave)
    judge_form_end(src, wave, "RIFF form", big_endian=False)
    note = short_note(wave.short_frames, wave.fmt.rate) if wave.short_frames else ""
    return ok(FORMAT, _describe(wave, frames) + note, _duration(wave, frames))


def _form(src: Source, header: bytes) -> tuple[Wave, int]:
    """The form's extent, from its header or, for RF64/BW64, the 'ds64' chunk after it."""
    riff_size = struct.unpack_from("<I", header, 4)[0]
    if header[:4] not in RF64_MAGICS:
        form_end = None if riff_size in STREAMED_SIZES else 8 + riff_size
        return Wave(form_end), FORM_HEADER
    ds64 = read_chunk(src, FORM_HEADER, big_endian=False)
    if ds64 is None or ds64.id != b"ds64":
        if src.size < FORM_HEADER + CHUNK_HEADER:
            raise Damage("truncated", "the file ends before the 'ds64' chunk RF64 requires")
        raise Damage("bad_structure", "an RF64 file without the 'ds64' chunk that must follow its header")
    if ds64.size < 24:
        raise Damage("bad_structure", f"the 'ds64' chunk is {ds64.size} bytes, too short for its three sizes")
    if ds64.body + 24 > src.size:
        raise cut_chunk(src, ds64, "the RF64 size chunk")
    sizes64 = struct.unpack("<QQQ", src.read(ds64.body, 24))
    riff64 = sizes64[0] if riff_size == SIZE_IN_DS64 else riff_size
    form_end = None if riff64 in STREAMED_SIZES else 8 + riff64
    return Wave(form_end, sizes64), ds64.next


def _walk(src: Source, wave: Wave, offset: int) -> None:
    """Read the form's chunks up to the data chunk's end or the form's end."""
    limit = src.size if wave.form_end is None else min(wave.form_end, src.size)
    for _ in range(MAX_CHUNKS):
        wave.walked_to = offset
        if limit - offset < CHUNK_HEADER or wave.data_streamed:
            return
        chunk = read_chunk(src, offset, big_endian=False)
        if chunk is None:
            if wave.data is None:
                raise bad_chunk_header(src, offset)
            wave.stopped_early = True  # past the audio: judged as part of the tail in _judge_end
            return
        chunk = _resolve_size(src, wave, chunk)
        if chunk.end > src.size:
            chunk = _short_data(src, wave, chunk)
        _take(src, wave, chunk)
        offset = chunk.next
    raise BeyondLimits(f"more than {MAX_CHUNKS:,} chunks")


def _short_data(src: Source, wave: Wave, chunk: Chunk) -> Chunk:
    """A chunk that runs past the end of the file: the data chunk cut to what is there when
    that is whole PCM frames, a few short (see SHORT_DATA_SECONDS); otherwise a cut."""
    fmt = wave.fmt
    present = src.size - chunk.body
    if chunk.id == b"data" and fmt is not None and fmt.framed and present % fmt.block_align == 0:
        missing_frames = frames_in(chunk.end - src.size, fmt.block_align)
        if short_by_a_few_frames(missing_frames, fmt.rate):
            wave.missing, wave.short_frames = chunk.end - src.size, missing_frames
            return Chunk(chunk.id, chunk.offset, present)
    raise cut_chunk(src, chunk, "the audio data" if chunk.id == b"data" else "a chunk")


def _resolve_size(src: Source, wave: Wave, chunk: Chunk) -> Chunk:
    """The data chunk's real size: from 'ds64' in RF64, to the end of the file when streamed."""
    if chunk.id != b"data":
        return chunk
    if wave.sizes64 is not None and chunk.size == SIZE_IN_DS64:
        return Chunk(chunk.id, chunk.offset, wave.sizes64[1])
    streamed = chunk.size == 0xFFFFFFFF or (chunk.size == 0 and wave.form_end is None)
    if streamed:
        wave.data_streamed = True
        return Chunk(chunk.id, chunk.offset, max(0, src.size - chunk.body))
    return chunk


def _take(src: Source, wave: Wave, chunk: Chunk) -> None:
    if chunk.id == b"fmt ":
        wave.fmt = _parse_fmt(src, chunk)
    elif chunk.id == b"fact" and chunk.size >= 4:
        wave.fact_samples = struct.unpack("<I", src.read(chunk.body, 4))[0]
    elif chunk.id == b"data" and wave.data is None:
        if wave.fmt is None:
            raise Damage("bad_structure", "the audio data chunk comes before the 'fmt ' chunk that describes it")
        wave.data = chunk


def _parse_fmt(src: Source, chunk: Chunk) -> WaveFormat:
    if chunk.size < 14:
        raise Damage("bad_structure", f"the 'fmt ' chunk is {chunk.size} bytes, shorter than WAVEFORMAT's 14")
    raw = src.read(chunk.body, min(chunk.size, 40))
    tag, channels, rate, bytes_per_second, block_align = struct.unpack_from("<HHIIH", raw)
    if tag == WAVE_FORMAT_EXTENSIBLE and len(raw) >= 26:
        tag = struct.unpack_from("<H", raw, 24)[0]  # first bytes of the SubFormat GUID
    return WaveFormat(tag, channels, rate, bytes_per_second, block_align)


def _require_audio(src: Source, wave: Wave) -> None:
    if wave.data is not None:
        return
    if wave.form_end is not None and wave.form_end > src.size:
        raise Damage("truncated", f"the file ends after {src.size:,} bytes of headers, before the audio data")
    if wave.fmt is None:
        raise Damage("bad_structure", "neither a 'fmt ' nor a 'data' chunk in the WAVE form")
    raise Damage("bad_structure", "no audio data chunk in the WAVE form")


def _judge_data(wave: Wave) -> int | None:
    """The number of sample frames, once the data is known to be whole frames and not empty."""
    fmt, size = wave.fmt, wave.data.size
    if not fmt.framed:
        if size == 0:
            raise Damage("truncated", "the file holds its headers but no audio data")
        return None
    if size % fmt.block_align:
        reason = "truncated" if wave.data_streamed else "bad_structure"
        raise Damage(reason, f"the audio data ({size:,} bytes) ends inside a sample frame "
                             f"of {fmt.block_align} bytes")
    if size == 0:
        raise Damage("truncated", "the file holds its headers but no audio data")
    return size // fmt.block_align


def judge_form_end(src: Source, form, name: str, big_endian: bool) -> None:
    """The end of a RIFF or IFF form (``form`` has form_end, walked_to, stopped_early and
    missing, the bytes of sound data the file lacks when they are a tolerated few frames):
    cut short is truncation; after it, only harmless bytes (see harmless_tail)."""
    form_end = None if form.form_end is None else form.form_end - form.missing
    if form_cut(form_end, form.walked_to, src.size):
        raise Damage("truncated", f"the {name} declares {form.form_end:,} bytes but the file has "
                                  f"{src.size:,} ({percent(src.size, form.form_end)})")
    tail = form.walked_to if form.stopped_early else max(form.walked_to, form.form_end or 0)
    if tail < src.size and not harmless_tail(src, tail, big_endian=big_endian):
        raise Damage("trailing_data", f"{src.size - tail:,} bytes of unrecognised data after the audio "
                                      f"(from byte {tail:,})")


def _duration(wave: Wave, frames: int | None) -> float | None:
    fmt = wave.fmt
    if frames is None:
        frames = wave.sizes64[2] if wave.sizes64 and wave.sizes64[2] else wave.fact_samples
    if frames and fmt.rate:
        return frames / fmt.rate
    if fmt.bytes_per_second:
        return wave.data.size / fmt.bytes_per_second
    return None


def _describe(wave: Wave, frames: int | None) -> str:
    streamed = " (sizes left unfilled by a streaming writer)" if wave.data_streamed else ""
    if frames is None:
        return f"audio data complete: {wave.data.size:,} bytes{streamed}"
    return f"audio data complete: {frames:,} sample frames{streamed}"
