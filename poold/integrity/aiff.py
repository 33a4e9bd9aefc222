"""AIFF and AIFF-C: Apple's big-endian IFF form for sampled sound.

Apple, "Audio Interchange File Format: AIFF, A Standard for Sampled Sound Files", version
1.3 (1989), and the AIFF-C draft (1991): a "FORM" header (32-bit big-endian size, form type
"AIFF" or "AIFC") around chunks in any order, each an ID, a size and data padded to an even
length. The Common chunk ('COMM') gives channels, numSampleFrames, sampleSize and the sample
rate as an 80-bit IEEE 754 extended float; the Sound Data chunk ('SSND', required when
numSampleFrames > 0) holds offset and blockSize fields and then the sample frames.

For uncompressed sound the SSND data must hold numSampleFrames frames of channels x
ceil(sampleSize / 8) bytes; a file cut inside it holds fewer. Zero tails are silence and
not reported.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from .base import BeyondLimits, Damage, Source, Verdict, ok
from .riff import (CHUNK_HEADER, FORM_HEADER, MAX_CHUNKS, Chunk, bad_chunk_header, cut_chunk,
                   form_type_matches, frames_in, judge_form_end, percent, read_chunk, short_by_a_few_frames,
                   short_note)

FORMAT = "aiff"
EXTENSIONS = frozenset({".aif", ".aiff", ".aifc"})

FORM_TYPES = (b"AIFF", b"AIFC")
COMM_SIZE = 18
# AIFF-C compression types whose sound data is plain sample frames (AIFF-C draft, and the
# types QuickTime/Core Audio write: byte-swapped 'sowt', 8-bit offset 'raw ', 24/32-bit
# integer and 32/64-bit float), with the bytes per sample when sampleSize does not give
# it: A-law and mu-law store 8 bits per sample while COMM gives the decoded 16.
UNCOMPRESSED = frozenset({b"NONE", b"twos", b"sowt", b"raw ", b"in24", b"in32", b"fl32", b"FL32", b"fl64", b"FL64",
                          b"ulaw", b"ULAW", b"alaw", b"ALAW"})
COMPANDED = frozenset({b"ulaw", b"ULAW", b"alaw", b"ALAW"})


@dataclass
class Common:
    """The COMM chunk (AIFF 1.3 "Common Chunk"; AIFF-C adds compressionType)."""
    channels: int
    frames: int
    sample_size: int
    rate: float | None
    compression: bytes | None  # None for plain AIFF

    @property
    def uncompressed(self) -> bool:
        return self.compression is None or self.compression in UNCOMPRESSED

    @property
    def frame_bytes(self) -> int:
        sample_bytes = 1 if self.compression in COMPANDED else (self.sample_size + 7) // 8
        return self.channels * sample_bytes


@dataclass
class Sound:
    """Where the SSND sample frames are: after its 8 bytes of offset/blockSize, plus offset."""
    chunk: Chunk
    start: int
    streamed: bool

    @property
    def length(self) -> int:
        return max(0, self.chunk.end - self.start)


@dataclass
class Aiff:
    form_type: bytes
    form_end: int | None  # None when a streaming writer left the size 0
    common: Common | None = None
    sound: Sound | None = None
    walked_to: int = FORM_HEADER
    stopped_early: bool = False
    missing: int = 0  # bytes of sound the SSND chunk declares beyond the end of the file (a few frames)
    short_frames: int = 0  # sample frames COMM declares that the sound data lacks (a few)


def sniff(head: bytes) -> bool:
    """The FORM magic and an AIFF/AIFC form type (or its start, in a file cut shorter)."""
    return head[:4] == b"FORM" and form_type_matches(head, FORM_TYPES)


def check(src: Source) -> Verdict:
    header = src.read(0, FORM_HEADER)
    if len(header) < FORM_HEADER:
        raise Damage("truncated", f"the file ends inside the {FORM_HEADER}-byte FORM header")
    form_size = struct.unpack_from(">I", header, 4)[0]
    aiff = Aiff(header[8:12], None if form_size == 0 else 8 + form_size)
    _walk(src, aiff)
    _require_chunks(src, aiff)
    frames = _judge_sound(aiff)
    judge_form_end(src, aiff, "FORM", big_endian=True)
    rate = aiff.common.rate
    duration = frames / rate if frames and rate and aiff.common.uncompressed else None
    note = short_note(aiff.short_frames, rate) if aiff.short_frames else ""
    return ok(FORMAT, f"sound data complete: {frames:,} sample frames{note}", duration)


def _walk(src: Source, aiff: Aiff) -> None:
    limit = src.size if aiff.form_end is None else min(aiff.form_end, src.size)
    offset = FORM_HEADER
    for _ in range(MAX_CHUNKS):
        aiff.walked_to = offset
        if limit - offset < CHUNK_HEADER or (aiff.sound and aiff.sound.streamed):
            return
        chunk = read_chunk(src, offset, big_endian=True)
        if chunk is None:
            if aiff.common is None or aiff.sound is None:
                raise bad_chunk_header(src, offset)
            aiff.stopped_early = True  # past the sound: judged as part of the tail
            return
        chunk = _resolve_size(src, aiff, chunk)
        if chunk.end > src.size:
            chunk = _short_sound(src, aiff, chunk)
        _take(src, aiff, chunk)
        offset = chunk.next
    raise BeyondLimits(f"more than {MAX_CHUNKS:,} chunks")


def _resolve_size(src: Source, aiff: Aiff, chunk: Chunk) -> Chunk:
    """An SSND size of 0 is impossible (it has 8 bytes of fields): a streaming writer
    (FFmpeg on unseekable output) left it unfilled, and the sound runs to the end of the file."""
    if chunk.id == b"SSND" and chunk.size == 0:
        sound_chunk = Chunk(chunk.id, chunk.offset, max(0, src.size - chunk.body))
        aiff.sound = Sound(sound_chunk, _sound_start(src, sound_chunk), streamed=True)
        return sound_chunk
    return chunk


def _sound_start(src: Source, chunk: Chunk) -> int:
    fields = src.read(chunk.body, 8)
    offset = struct.unpack(">I", fields[:4])[0] if len(fields) >= 4 else 0
    return chunk.body + 8 + offset


def _take(src: Source, aiff: Aiff, chunk: Chunk) -> None:
    if chunk.id == b"COMM":
        aiff.common = _parse_common(src, chunk, aiff.form_type == b"AIFC")
    elif chunk.id == b"SSND" and aiff.sound is None:
        if chunk.size < 8:
            raise Damage("bad_structure", f"the SSND chunk is {chunk.size} bytes, too short for its offset and blockSize")
        aiff.sound = Sound(chunk, _sound_start(src, chunk), streamed=False)


def _short_sound(src: Source, aiff: Aiff, chunk: Chunk) -> Chunk:
    """A chunk that runs past the end of the file: SSND cut to what is there when that is
    whole sample frames, a few short (riff.SHORT_DATA_SECONDS); otherwise a cut."""
    common = aiff.common
    if chunk.id == b"SSND" and common is not None and common.uncompressed and common.frame_bytes:
        present = src.size - _sound_start(src, chunk)
        missing_frames = max(common.frames - max(0, present) // common.frame_bytes,
                             frames_in(chunk.end - src.size, common.frame_bytes))
        if present >= 0 and present % common.frame_bytes == 0 and short_by_a_few_frames(missing_frames, common.rate):
            aiff.missing = chunk.end - src.size
            return Chunk(chunk.id, chunk.offset, src.size - chunk.body)
    raise _cut(src, aiff, chunk)


def _cut(src: Source, aiff: Aiff, chunk: Chunk) -> Damage:
    """A chunk running past the end of the file; for sound data, say how much is there."""
    common = aiff.common
    if chunk.id != b"SSND" or common is None or not common.uncompressed or not common.frames or not common.frame_bytes:
        return cut_chunk(src, chunk, "the sound data" if chunk.id == b"SSND" else "a chunk")
    present = max(0, src.size - _sound_start(src, chunk)) // common.frame_bytes
    return Damage("truncated", f"the file ends after {percent(present, common.frames)} of the "
                               f"{common.frames:,} sample frames COMM declares")


def _parse_common(src: Source, chunk: Chunk, is_aifc: bool) -> Common:
    if chunk.size < COMM_SIZE:
        raise Damage("bad_structure", f"the COMM chunk is {chunk.size} bytes, shorter than its {COMM_SIZE}")
    raw = src.read(chunk.body, COMM_SIZE + 4)
    channels, frames, sample_size = struct.unpack_from(">HIH", raw)
    compression = raw[18:22] if is_aifc and len(raw) >= 22 else None
    if channels == 0:
        raise Damage("bad_structure", "the COMM chunk declares 0 channels")
    return Common(channels, frames, sample_size, extended_float(raw[8:18]), compression)


def extended_float(raw: bytes) -> float | None:
    """An 80-bit IEEE 754 extended value (sign, 15-bit exponent biased by 16383, 64-bit
    mantissa with explicit integer bit); None unless it is a positive finite number."""
    sign_exponent, mantissa = struct.unpack(">HQ", raw)
    exponent = sign_exponent & 0x7FFF
    if sign_exponent & 0x8000 or exponent in (0, 0x7FFF) or mantissa == 0:
        return None
    try:
        return math.ldexp(mantissa, exponent - 16383 - 63)
    except OverflowError:
        return None


def _require_chunks(src: Source, aiff: Aiff) -> None:
    """COMM is required; SSND is required when numSampleFrames > 0 (AIFF 1.3)."""
    cut = aiff.form_end is not None and aiff.form_end > src.size
    if aiff.common is None or (aiff.sound is None and aiff.common.frames):
        missing = "COMM" if aiff.common is None else "SSND"
        if cut:
            raise Damage("truncated", f"the file ends after {src.size:,} bytes, before its {missing} chunk")
        raise Damage("bad_structure", f"no {missing} chunk in the FORM")


def _judge_sound(aiff: Aiff) -> int:
    """The number of sample frames, once the sound data is known to hold all of them."""
    common, sound = aiff.common, aiff.sound
    frames = common.frames
    if sound is not None and common.uncompressed and common.frame_bytes:
        if sound.streamed and frames == 0:  # numSampleFrames was never filled in either
            frames = sound.length // common.frame_bytes
            if sound.length % common.frame_bytes:
                raise Damage("truncated", f"the sound data ends inside a sample frame of {common.frame_bytes} bytes")
        have = sound.length // common.frame_bytes
        if short_by_a_few_frames(frames - have, common.rate):
            aiff.short_frames, frames = frames - have, have
        if have < frames:
            raise Damage("truncated", f"the sound data holds {have:,} of the {frames:,} sample frames COMM "
                                      f"declares ({percent(have, frames)})")
    if frames == 0:
        raise Damage("truncated", "the file holds its headers but no sound")
    return frames
