"""MPEG audio (layers I, II and III): the stream must run, frame by frame, to its end.

An MPEG audio file is a plain sequence of frames, each opening with a 32-bit header
(ISO/IEC 11172-3 section 2.4.2.3, semantics 2.4.3.1; the lower sampling frequencies
of ISO/IEC 13818-3 section 2.4.2.3; "MPEG-2.5", Fraunhofer's extension to 8-12 kHz,
uses the otherwise reserved version bits 00). The header fixes the frame's length, so
from any frame start the next one can be computed. Tags may surround the stream
(see :mod:`.tags`). Encoders put a Xing/Info header (with LAME's extension) or a
Fraunhofer VBRI header into the first frame; they declare the stream's size.

The check finds the first frame after the leading tags, reads its Xing/VBRI header,
then walks the frame chain through a window before the trailing tags: the stream
must end with a complete frame, be as long as declared, and not be followed by zero
bytes or unexplained data.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, replace

from .base import UNCHECKED, WINDOW, Damage, Source, Verdict, is_zero, ok, zero_run_at_end
from .tags import id3v2_size, id3v2_text, leading_tags_end, trailing_tags_start

FORMAT = "mp3"
EXTENSIONS = frozenset({".mp3", ".mp2", ".mpa"})

# --- frame headers (ISO/IEC 11172-3 2.4.2.3 / 2.4.3.1, ISO/IEC 13818-3 2.4.2.3) ---

MPEG1, MPEG2, MPEG25 = 3, 2, 0  # the two ID bits (MPEG-2.5: Fraunhofer extension)
VERSION_NAMES = {MPEG1: "MPEG-1", MPEG2: "MPEG-2", MPEG25: "MPEG-2.5"}
# kbit/s for bitrate_index 1..14; 0 is "free format" and 15 is forbidden.
BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
SAMPLE_RATES = {MPEG1: (44100, 48000, 32000), MPEG2: (22050, 24000, 16000), MPEG25: (11025, 12000, 8000)}
SYNC_MASK = 0xFFE00000
# The bits every frame of one stream shares: sync, version, layer, sampling frequency
# (the same mask FFmpeg's demuxer uses to tell a stream from a false sync).
STREAM_KEY_MASK = 0xFFFE0C00
# The bits that decide a frame's meaning here (drops private, mode extension,
# copyright, original and emphasis), so decoded headers cache well.
DECODE_MASK = 0xFFFFFEC0
HEADER = 4

# --- search bounds ---

# Junk (often unaccounted ID3 padding) between the tags and the first frame that is
# skipped as players do; FFmpeg's MP3 demuxer searches the same 64 KiB.
FIRST_FRAME_SEARCH = 64 * 1024
# Consecutive frames that confirm a sync found after junk is a stream, not chance.
MIN_CHAIN = 3
# The longest frame any header allows: Layer II at 160 kbit/s and 8 kHz, padded.
MAX_FRAME = 2881
TAIL_WINDOW = WINDOW
# Non-frame, non-tag bytes tolerated after a complete last frame: fewer than an
# ID3v1 tag's 128, the leftovers of a tag editor. Appended pages or files are larger.
STRAY_BYTES = 127

# --- Xing/Info (LAME libmp3lame/VbrTag.c), LAME tag rev 1 (gabriel.mp3-tech.org/mp3infotag.html), VBRI ---

XING_FRAMES, XING_BYTES, XING_TOC, XING_SCALE = 1, 2, 4, 8
LAME_MUSIC_LENGTH = 28  # offset of "music length" in the LAME extension
LAME_VENDORS = (b"LAME", b"Lavf", b"Lavc", b"L3.99")
VBRI_OFFSET = HEADER + 32


@dataclass(frozen=True)
class Header:
    version: int
    layer: int
    bitrate: int  # bit/s
    sample_rate: int
    padding: int
    mono: bool
    key: int

    @property
    def mpeg1(self) -> bool:
        return self.version == MPEG1

    @property
    def length(self) -> int:
        """Frame length in bytes (ISO/IEC 11172-3 2.4.3.1, padding_bit; 13818-3 halves layer III)."""
        if self.layer == 1:
            return (12 * self.bitrate // self.sample_rate + self.padding) * 4
        factor = 72 if self.layer == 3 and not self.mpeg1 else 144
        return factor * self.bitrate // self.sample_rate + self.padding

    @property
    def samples(self) -> int:
        if self.layer == 1:
            return 384
        return 576 if self.layer == 3 and not self.mpeg1 else 1152

    @property
    def side_info(self) -> int:
        """Layer III side information size, where a Xing header starts after the header."""
        if self.mpeg1:
            return 17 if self.mono else 32
        return 9 if self.mono else 17

    def frame_length(self, bitrate_kbps: int, padding: int = 0) -> int:
        return replace(self, bitrate=bitrate_kbps * 1000, padding=padding).length

    @property
    def shortest(self) -> int:
        return self.frame_length(BITRATES[self.mpeg1, self.layer][0])

    @property
    def longest(self) -> int:
        return self.frame_length(BITRATES[self.mpeg1, self.layer][-1], padding=1)

    def describe(self) -> str:
        return f"{VERSION_NAMES[self.version]} Layer {'I' * self.layer}, {self.sample_rate} Hz"


@functools.lru_cache(maxsize=1024)
def _decode(word: int) -> Header | None:
    version = (word >> 19) & 3
    layer = 4 - ((word >> 17) & 3)
    bitrate_index = (word >> 12) & 15
    rate_index = (word >> 10) & 3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved version/layer/rate, free format (unsupported) or forbidden bitrate
    bitrate = BITRATES[version == MPEG1, layer][bitrate_index - 1] * 1000
    return Header(version, layer, bitrate, SAMPLE_RATES[version][rate_index], (word >> 9) & 1,
                  (word >> 6) & 3 == 3, word & STREAM_KEY_MASK)


def header_at(data: bytes, offset: int) -> Header | None:
    """The valid frame header at ``offset`` of ``data``, or None."""
    if offset < 0 or offset + HEADER > len(data):
        return None
    word = int.from_bytes(data[offset:offset + HEADER], "big")
    if word & SYNC_MASK != SYNC_MASK:
        return None
    return _decode(word & DECODE_MASK)


@dataclass(frozen=True)
class Chain:
    """A run of consecutive frames in a buffer, each where the previous one's length says."""

    start: int
    stop: int  # just past the last complete frame
    frames: int
    first: Header
    last: Header  # the last complete frame's header, or the first one if none is complete
    cut: Header | None  # a valid header whose frame runs past the end of the buffer
    bitrates: frozenset


def walk(data: bytes, start: int) -> Chain | None:
    """Follow frames from ``start`` while headers are valid and belong to one stream."""
    first = header_at(data, start)
    if first is None:
        return None
    pos, frames, last, bitrates = start, 0, first, set()
    while True:
        header = header_at(data, pos)
        if header is None or header.key != first.key:
            return Chain(start, pos, frames, first, last, None, frozenset(bitrates))
        if pos + header.length > len(data):
            return Chain(start, pos, frames, first, last, header, frozenset(bitrates))
        pos += header.length
        frames += 1
        last = header
        bitrates.add(header.bitrate)


def _syncs(data: bytes, start: int = 0, stop: int | None = None):
    """Offsets of 0xFF bytes that could open a frame header."""
    stop = len(data) if stop is None else stop
    pos = data.find(b"\xff", start, stop)
    while pos >= 0:
        if pos + 1 < len(data) and data[pos + 1] >= 0xE0:
            yield pos
        pos = data.find(b"\xff", pos + 1, stop)


def _explains_to_end(chain: Chain, data: bytes) -> bool:
    """The chain accounts for every byte of ``data`` from its start: ends exactly, or cut by the end."""
    return chain.cut is not None or chain.stop == len(data)


# --- sniffing ---

FOREIGN_MAGIC = (b"fLaC", b"OggS", b"RIFF", b"RIFX", b"RF64", b"FORM")


def sniff(head: bytes) -> bool:
    """An ID3v2 tag (not in front of FLAC etc.), or a chain of MPEG audio frames."""
    if head[:4] in FOREIGN_MAGIC or head[4:8] == b"ftyp":
        return False
    tag = id3v2_size(head[:10])
    if tag is not None:
        return head[tag:tag + 4] not in FOREIGN_MAGIC and head[tag + 4:tag + 8] != b"ftyp"
    for pos in _syncs(head):
        chain = walk(head, pos)
        if chain is None:
            continue
        if chain.frames >= MIN_CHAIN:
            return True
        # A file shorter than the head window that is one frame chain from byte 0:
        # a (possibly truncated) file of one or two frames.
        if pos == 0 and len(head) < WINDOW and _explains_to_end(chain, head):
            return True
    return False


# --- the check ---

@dataclass(frozen=True)
class Declared:
    """What the first frame's Xing/Info or VBRI header says about the stream."""

    source: str
    frames: int | None
    size: int | None  # bytes from the first frame to the end of the last one


@dataclass(frozen=True)
class Tail:
    """How the audio region ends: the last complete frame, and what follows it."""

    frame_end: int  # absolute offset just past the last complete frame
    last: Header
    bitrates: frozenset
    rest: bytes  # bytes between the last frame and the trailing tags


def check(src: Source) -> Verdict:
    tags_end = leading_tags_end(src)
    audio_end = trailing_tags_start(src, tags_end)
    found = _first_frame(src, tags_end, audio_end)
    if found is None:
        return _no_frames(src, tags_end, audio_end)
    first, header, head_bitrates = found
    declared = _declared(src, first, header)
    tail = _tail(src, first, header, audio_end)
    if tail is None:
        return Verdict(UNCHECKED, "unsupported_type",
                       "no run of MPEG audio frames found before the end of the file", FORMAT)
    stream = tail.frame_end - first
    unaccounted = (first - tags_end) + (src.size - audio_end)
    _check_declared(declared, header, stream, unaccounted, tail)
    note = _check_rest(tail, complete=declared is not None and declared.size == stream)
    duration = _duration(declared, header, stream, head_bitrates | tail.bitrates)
    if declared is None and duration is not None:
        _check_tlen(src, tags_end, duration)
    basis = f", {declared.source} header matches" if declared else ""
    return ok(FORMAT, f"{header.describe()}, ends with a complete frame{basis}{note}", duration)


def _first_frame(src: Source, start: int, end: int) -> tuple[int, Header, frozenset] | None:
    """The first frame after the leading tags: offset, header, bitrates seen after it.

    A header right after the tags (or after zero padding) is taken as it is, even if
    its frame is cut by the end of the file; after other junk, a sync must be confirmed
    by a chain of frames, or by one that accounts for every byte to the audio end.
    """
    data = src.read(start, min(end - start, FIRST_FRAME_SEARCH + MIN_CHAIN * MAX_FRAME))
    at_end = start + len(data) == end
    for pos in _syncs(data, 0, min(len(data), FIRST_FRAME_SEARCH)):
        chain = walk(data, pos)
        if chain is None:
            continue
        exact_end = at_end and chain.cut is None and chain.stop == len(data) and chain.frames > 0
        direct = is_zero(data[:pos])
        if chain.frames >= MIN_CHAIN or exact_end or direct:
            if direct and at_end and chain.cut is not None and chain.frames == 0:
                _raise_cut(start + chain.stop, chain.cut, end)
            return start + pos, chain.first, chain.bitrates
    return None


def _no_frames(src: Source, tags_end: int, audio_end: int) -> Verdict:
    if audio_end <= tags_end:
        raise Damage("truncated", "the file ends after its tags: no audio frames at all")
    data = src.read(tags_end, min(audio_end - tags_end, FIRST_FRAME_SEARCH))
    if is_zero(data):
        raise Damage("zero_filled", f"only zero bytes follow the tags (from byte {tags_end:,})")
    start = data.lstrip(b"\0")
    if len(start) < HEADER and start[0] == 0xFF and tags_end + len(data) == audio_end:
        raise Damage("truncated", f"the file ends inside the first frame header ({len(start)} of 4 bytes present)")
    return Verdict(UNCHECKED, "unsupported_type",
                   "no MPEG audio frame found after the tags (free format, or not MPEG audio)", FORMAT)


def _raise_cut(offset: int, header: Header, end: int) -> None:
    present = end - offset
    raise Damage("truncated", f"the file ends inside a frame: {present:,} of its {header.length:,} bytes "
                              f"are present (frame at byte {offset:,})")


def _declared(src: Source, first: int, header: Header) -> Declared | None:
    """The Xing/Info (with LAME's music length) or VBRI header in the first frame, if any."""
    frame = src.read(first, header.length)
    if header.layer == 3:
        xing = _xing(frame, HEADER + header.side_info)
        if xing is not None:
            return xing
    if frame[VBRI_OFFSET:VBRI_OFFSET + 4] == b"VBRI" and len(frame) >= VBRI_OFFSET + 18:
        size, frames = struct.unpack(">II", frame[VBRI_OFFSET + 10:VBRI_OFFSET + 18])
        return Declared("VBRI", frames or None, size or None)
    return None


def _xing(frame: bytes, at: int) -> Declared | None:
    """Parse a Xing/Info header: flags, then frames, bytes, TOC and scale as flagged.

    Per LAME (VbrTag.c), the frame count excludes the Xing frame and the byte count
    runs from the Xing frame's first byte to the end of the last frame; the LAME
    extension's "music length" (mp3infotag rev 1) repeats that byte count.
    """
    if frame[at:at + 4] not in (b"Xing", b"Info") or len(frame) < at + 8:
        return None
    flags = int.from_bytes(frame[at + 4:at + 8], "big")
    pos = at + 8
    frames = size = None
    if flags & XING_FRAMES:
        frames = int.from_bytes(frame[pos:pos + 4], "big") or None
        pos += 4
    if flags & XING_BYTES:
        size = int.from_bytes(frame[pos:pos + 4], "big") or None
        pos += 4
    pos += 100 * bool(flags & XING_TOC) + 4 * bool(flags & XING_SCALE)
    if size is None and frame[pos:pos + 4].startswith(LAME_VENDORS):
        size = int.from_bytes(frame[pos + LAME_MUSIC_LENGTH:pos + LAME_MUSIC_LENGTH + 4], "big") or None
    name = frame[at:at + 4].decode()
    return Declared(name, frames, size)


def _tail(src: Source, first: int, header: Header, end: int) -> Tail | None:
    """The last complete frame before ``end``, found by walking frame chains in a window.

    Candidates are tried from the start of the window; a chain of MIN_CHAIN frames (or
    the chain from the known first frame) is the stream. If it breaks before the end,
    the search goes on after the break, as a player resyncs; the last chain found
    decides. A chain whose last frame is cut by the end of the file means truncation.
    """
    window_start = max(first, end - TAIL_WINDOW)
    data = src.read(window_start, end - window_start)
    zeros = zero_run_at_end(data)
    if window_start > first and zeros == len(data):
        raise Damage("zero_filled", f"the audio ends in zero bytes: at least its last {len(data):,} bytes")
    best = None
    pos = 0
    while pos < len(data):
        chain = _next_chain(data, pos, anchored=window_start == first)
        if chain is None:
            break
        best = chain
        if chain.cut is not None:
            _raise_cut(window_start + chain.stop, chain.cut, end)
        if chain.stop >= len(data):
            break
        pos = chain.stop
    if best is None:
        if zeros > header.longest:
            raise Damage("zero_filled", f"the audio ends in {zeros:,} zero bytes")
        return None
    return Tail(window_start + best.stop, best.last, best.bitrates, data[best.stop:])


def _next_chain(data: bytes, start: int, anchored: bool) -> Chain | None:
    for pos in _syncs(data, start):
        chain = walk(data, pos)
        if chain is None:
            continue
        if chain.frames >= MIN_CHAIN or (anchored and pos == 0):
            return chain
    return None


def _check_declared(declared: Declared | None, header: Header, stream: int, unaccounted: int, tail: Tail) -> None:
    """The stream must be as long as its Xing/VBRI header declares.

    Bytes the stream cannot account for (junk before the first frame, trailing tags)
    are allowed for, in case a writer counted them; a cut file has no trailing tags.
    The frame count gives a floor: every frame is at least the lowest bitrate's size
    (one frame is allowed for writers that count the Xing frame itself).
    """
    if declared is None:
        return
    if declared.size is not None and declared.size > header.length and stream + unaccounted < declared.size:
        _raise_short(tail, f"the audio stream ends at {stream / declared.size:.0%} of the "
                           f"{declared.size:,} bytes its {declared.source} header declares")
    audio = stream - header.length
    if declared.frames is not None and audio < (declared.frames - 1) * header.shortest:
        _raise_short(tail, f"only {audio:,} bytes of audio follow the {declared.source} header, "
                           f"too few for the {declared.frames:,} frames it declares")


def _raise_short(tail: Tail, shortfall: str) -> None:
    """The stream is shorter than declared: zero bytes in its place, or a cut."""
    if _zero_filled(tail):
        raise Damage("zero_filled", f"zero bytes from byte {tail.frame_end:,} on: {shortfall}")
    raise Damage("truncated", shortfall)


def _zero_filled(tail: Tail) -> bool:
    """Zeros follow the last frame: all of the rest, or more than any frame could hold."""
    zeros = zero_run_at_end(tail.rest)
    return bool(tail.rest) and (zeros == len(tail.rest) or zeros > tail.last.longest)


def _check_rest(tail: Tail, complete: bool) -> str:
    """Judge the bytes between the last complete frame and the trailing tags; a note for OK.

    Zeros there are padding when ``complete`` (the stream is exactly as many bytes as its
    Xing/Info or VBRI header declares) or when fewer than one frame could hold; more
    zeros after a stream of unknown length may stand where frames were.
    """
    rest = tail.rest
    if not rest:
        return ""
    if _is_tag_start(rest):
        return "; an appended or cut tag follows it"
    zeros = zero_run_at_end(rest)
    if zeros == len(rest) and (complete or zeros <= tail.last.longest):
        return f"; {zeros:,} zero bytes of padding follow it"
    if zeros > tail.last.longest:
        raise Damage("zero_filled", f"the last {zeros:,} bytes of the audio are zero bytes "
                                    f"(from byte {tail.frame_end + len(rest) - zeros:,})")
    if len(rest) < HEADER and rest[0] == 0xFF:
        raise Damage("truncated", f"the file ends inside a frame header ({len(rest)} of 4 bytes present)")
    if len(rest) > STRAY_BYTES:
        raise Damage("trailing_data", f"{len(rest):,} bytes that are neither audio frames nor a tag "
                                      f"follow the last frame (at byte {tail.frame_end:,})")
    return f"; {len(rest)} stray bytes follow it"


def _is_tag_start(rest: bytes) -> bool:
    """``rest`` is a tag the tag finder did not take, whole or cut short by the end of the file.

    An ID3v2 tag appended without a footer is whole; the others were cut. The audio
    before them is complete, so neither is damage to the track. ``rest`` must fit the
    size the tag declares: ID3v1 is 128 bytes, ID3v2 and APEv2 carry their size.
    """
    if rest.startswith(b"TAG"):
        return len(rest) < 128
    if rest.startswith(b"ID3"):
        size = id3v2_size(rest[:10])
        return len(rest) < 10 or (size is not None and len(rest) <= size)
    if rest.startswith(b"APETAGEX"):
        if len(rest) < 32:
            return True
        size = int.from_bytes(rest[12:16], "little")
        return len(rest) <= size + 32
    return rest.startswith(b"LYRICSBEGIN")


def _duration(declared: Declared | None, header: Header, stream: int, bitrates: frozenset) -> float | None:
    """Xing/VBRI frame count times samples per frame; else, for a constant bitrate, bytes over bitrate."""
    if declared is not None and declared.frames:
        return declared.frames * header.samples / header.sample_rate
    if declared is None and len(bitrates) == 1:
        (bitrate,) = bitrates
        return stream * 8 / bitrate
    return None


def _check_tlen(src: Source, tags_end: int, duration: float) -> None:
    """A CBR stream without a Xing header must last as long as its ID3v2 TLEN says.

    TLEN is "the length of the audio file in milliseconds" (ID3v2.4 frames, 4.2.3).
    Taggers round it and some count the encoder's delay and padding, so a shortfall
    below max(1 s, 2%) is not taken as evidence.
    """
    declared = _tlen(src, tags_end)
    if declared is None:
        return
    if duration + max(1.0, 0.02 * declared) < declared:
        raise Damage("truncated", f"the audio lasts {duration:.1f} s of the {declared:.1f} s "
                                  f"its ID3v2 TLEN frame declares")


def _tlen(src: Source, tags_end: int) -> float | None:
    if tags_end == 0:
        return None
    text = (id3v2_text(src, b"TLEN") or "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and int(text) > 0):
        return None
    return int(text) / 1000
