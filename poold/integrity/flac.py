"""Native FLAC: the metadata blocks up front and the last frame at the end must be whole.

References are to RFC 9639 (Free Lossless Audio Codec). A FLAC stream is the "fLaC"
marker, metadata blocks (section 8) and audio frames (section 9). Frames carry no
length, so the end of the stream is judged from the last frame: its header is
found by its sync code and CRC-8, and the frame's CRC-16 footer must close exactly
at the end of the stream. Its position (coded number) plus its block size must then
reach the total number of samples STREAMINFO declares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import tags
from .base import BeyondLimits, Damage, Source, Verdict, is_zero, ok, zero_run_at_end
from .crc import crc8, crc16

FORMAT = "flac"
EXTENSIONS = frozenset({".flac"})

MARKER = b"fLaC"
BLOCK_HEADER = 4
STREAMINFO = 0
STREAMINFO_SIZE = 34
VORBIS_COMMENT = 4
FORBIDDEN_BLOCK_TYPE = 127
# A real file has a handful of metadata blocks (STREAMINFO, SEEKTABLE, VORBIS_COMMENT,
# PICTURE, PADDING); a million empty ones is a hostile file, judged `unchecked`.
MAX_METADATA_BLOCKS = 1024  # section 8.1: would be confused with a frame sync code
MAX_FRAME_HEADER = 16  # 2 sync + 2 codes + 7 coded number + 2 block size + 2 rate + 1 CRC
# How many candidate headers (valid CRC-8) near the end are tried before concluding
# that no frame closes the stream. A false sync inside the last frame that also passes
# CRC-8 is rare; more than a few in a row means the stream does not end on a frame.
LAST_FRAME_CANDIDATES = 4
MIN_TAIL_WINDOW = 64 * 1024
MAX_TAIL_WINDOW = 4 * 1024 * 1024
# A run of zeros this long at the end is a zero-filled tail, not a chance ending. A real
# frame ends in its CRC-16; even a frame of digital silence (constant subframes, 8
# channels of 32 bits) with a CRC of 0x0000 ends in at most 42 zero bytes. Zeros
# appended after a frame cannot be seen by its CRC: feeding zeros to a zero CRC
# register keeps it zero, so the zero run is measured separately.
ZERO_RUN = 64


@dataclass(frozen=True)
class StreamInfo:
    """The fields of the STREAMINFO block (section 8.2) the check uses."""

    max_block_size: int
    min_frame_size: int  # 0 = unknown
    max_frame_size: int  # 0 = unknown
    sample_rate: int
    channels: int
    bits_per_sample: int
    total_samples: int  # 0 = unknown


@dataclass(frozen=True)
class Frame:
    """A frame header (section 9.1) found at ``offset``."""

    offset: int
    variable_block_size: bool
    number: int  # frame number (fixed block size) or first sample number (variable)
    block_size: int
    header_size: int = MAX_FRAME_HEADER  # bytes up to and including the CRC-8
    channel_code: int = 0  # section 9.1.3: channel count and stereo decorrelation
    depth_code: int = 0  # section 9.1.4: bits per sample, 0 = STREAMINFO's


@dataclass(frozen=True)
class Timeline:
    """Where frames sit in sample time, counted from the first frame.

    Section 9.1.5: a variable-block-size frame carries its first sample number; a
    fixed-block-size one its frame number, in blocks of the common size (the first
    frame's). Counting from the first frame keeps streams that were cut out of a longer
    one (first frame number not 0) consistent with the total STREAMINFO declares.
    """

    nominal_block_size: int
    origin: int

    @classmethod
    def from_first(cls, first: Frame) -> "Timeline":
        nominal = first.block_size
        return cls(nominal, first.number if first.variable_block_size else first.number * nominal)

    def start_of(self, frame: Frame) -> int:
        absolute = frame.number if frame.variable_block_size else frame.number * self.nominal_block_size
        return absolute - self.origin


def sniff(head: bytes) -> bool:
    """The marker at the start, or behind ID3v2 tags (some taggers put one there)."""
    offset = 0
    while (size := tags.id3v2_size(head[offset:offset + tags.ID3V2_HEADER])) is not None:
        offset += size
    return head[offset:offset + len(MARKER)] == MARKER


def check(src: Source) -> Verdict:
    start = tags.leading_tags_end(src)
    if src.read(start, len(MARKER)) != MARKER:
        raise Damage("bad_structure", f"no fLaC marker at byte {start}")
    info, audio_start = read_metadata(src, start + len(MARKER))
    stream_end = tags.trailing_tags_start(src, audio_start)
    if stream_end <= audio_start:
        raise Damage("truncated", "the file holds only the FLAC metadata blocks, no audio frames")
    timeline = Timeline.from_first(first_frame(src, audio_start, stream_end))
    last = find_last_frame(src, info, timeline, audio_start, stream_end)
    samples = timeline.start_of(last.frame) + last.frame.block_size
    _check_sample_count(samples, info)
    padding = f"; {last.padding:,} zero bytes of padding follow it" if last.padding else ""
    return ok(FORMAT, f"{samples:,} samples, last frame complete{padding}", _duration(samples, info))


# --- metadata (section 8) -------------------------------------------------------------

def read_metadata(src: Source, offset: int) -> tuple[StreamInfo, int]:
    """Walk the metadata block headers from ``offset``; return STREAMINFO and where audio starts.

    Section 8.1: every block has a 4-byte header (last-block flag, 7-bit type, 24-bit
    length); STREAMINFO must come first; the block flagged last is followed by frames.
    """
    info = None
    index = 0
    while True:
        if index == MAX_METADATA_BLOCKS:
            raise BeyondLimits(f"more than {MAX_METADATA_BLOCKS:,} metadata blocks")
        header = src.read(offset, BLOCK_HEADER)
        if len(header) < BLOCK_HEADER:
            raise Damage("truncated", f"the file ends inside the metadata, at block {index + 1}'s header")
        is_last, kind, length = header[0] >> 7, header[0] & 0x7F, int.from_bytes(header[1:], "big")
        _check_block_header(src, offset, index, kind, length)
        end = offset + BLOCK_HEADER + length
        if end > src.size:
            raise Damage("truncated", f"metadata block {index + 1} (type {kind}) claims {length:,} bytes "
                                      f"but the file ends {src.size - offset - BLOCK_HEADER:,} bytes into it")
        if index == 0:
            info = parse_streaminfo(src.read(offset + BLOCK_HEADER, STREAMINFO_SIZE))
        if is_last:
            return info, end
        offset, index = end, index + 1


def tag_items(src: Source, limit: int) -> int:
    """How many Vorbis comments the VORBIS_COMMENT blocks hold (section 8.6), up to
    ``limit``: what FFmpeg reads into its dictionary (see :mod:`.tags`). Blocks past
    MAX_FFMPEG_TAG_BYTES in all are BeyondLimits rather than read."""
    offset = tags.leading_tags_end(src) + len(MARKER)
    count, comment_bytes = 0, 0
    for _ in range(MAX_METADATA_BLOCKS):
        header = src.read(offset, BLOCK_HEADER)
        if len(header) < BLOCK_HEADER:
            break
        kind, length = header[0] & 0x7F, int.from_bytes(header[1:], "big")
        if kind == VORBIS_COMMENT:
            comment_bytes += length
            if comment_bytes > tags.MAX_FFMPEG_TAG_BYTES:
                raise BeyondLimits(f"its Vorbis comments exceed {tags.MAX_FFMPEG_TAG_BYTES // 2**20} MiB")
            count += tags.vorbis_comment_count(src.read(offset + BLOCK_HEADER, length), limit - count)
        if header[0] >> 7 or count >= limit:
            break
        offset += BLOCK_HEADER + length
    return count


def _check_block_header(src: Source, offset: int, index: int, kind: int, length: int) -> None:
    """Section 8.1: type 127 is forbidden; STREAMINFO (34 bytes, section 8.2) comes first
    and only first. Other types, including reserved ones, are skipped by decoders."""
    first = index == 0
    valid = kind != FORBIDDEN_BLOCK_TYPE and (kind == STREAMINFO) == first
    if valid and (not first or length == STREAMINFO_SIZE):
        return
    if is_zero(src.read(offset, 64)):
        raise Damage("zero_filled", f"zero bytes where metadata block {index + 1} should start (byte {offset:,})")
    if first:
        raise Damage("bad_structure", f"the first metadata block is type {kind}, {length} bytes, "
                                      f"not the {STREAMINFO_SIZE}-byte STREAMINFO the format requires")
    raise Damage("bad_structure", f"metadata block {index + 1} has an invalid type ({kind})")


def parse_streaminfo(data: bytes) -> StreamInfo:
    """Section 8.2: block sizes, frame sizes, then a 64-bit field of rate/channels/depth/samples."""
    packed = int.from_bytes(data[10:18], "big")
    return StreamInfo(
        max_block_size=int.from_bytes(data[2:4], "big"),
        min_frame_size=int.from_bytes(data[4:7], "big"),
        max_frame_size=int.from_bytes(data[7:10], "big"),
        sample_rate=packed >> 44,
        channels=((packed >> 41) & 0x7) + 1,
        bits_per_sample=((packed >> 36) & 0x1F) + 1,
        total_samples=packed & ((1 << 36) - 1),
    )


# --- frame headers (section 9.1) -------------------------------------------------------

def parse_frame_header(data: bytes | memoryview, offset: int = 0) -> Frame | None:
    """The frame header at the start of ``data``, or None if these bytes are not one.

    Every field is checked against the values section 9.1 reserves or forbids, and the
    header's CRC-8 (section 9.1.8) must match, so random bytes pass with odds of
    under 1 in 8 million.
    """
    if len(data) < 6 or data[0] != 0xFF or data[1] not in (0xF8, 0xF9):
        return None
    block_code, rate_code = data[2] >> 4, data[2] & 0x0F
    channel_code, depth_code = data[3] >> 4, (data[3] >> 1) & 0x7
    if block_code == 0 or rate_code == 15 or channel_code > 10 or depth_code == 3 or data[3] & 1:
        return None
    variable = bool(data[1] & 1)
    coded = _coded_number(data, 4, max_bytes=7 if variable else 6)
    if coded is None:
        return None
    number, pos = coded
    block_size, pos = _block_size(data, pos, block_code)
    pos += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)  # section 9.1.7: uncommon sample rate
    if block_size is None or pos >= len(data) or crc8(bytes(data[:pos])) != data[pos]:
        return None
    return Frame(offset, variable, number, block_size, pos + 1, channel_code, depth_code)


def _coded_number(data, pos: int, max_bytes: int) -> tuple[int, int] | None:
    """Section 9.1.5: a UTF-8-like variable-length number; returns (value, next position)."""
    lead = data[pos]
    if lead < 0x80:
        return lead, pos + 1
    length = 8 - (lead ^ 0xFF).bit_length()  # the count of leading 1 bits
    if length < 2 or length > max_bytes or pos + length > len(data):  # 1 = a stray continuation byte
        return None
    value = lead & (0x7F >> length)
    for byte in data[pos + 1:pos + length]:
        if byte & 0xC0 != 0x80:
            return None
        value = (value << 6) | (byte & 0x3F)
    return value, pos + length


def _block_size(data, pos: int, code: int) -> tuple[int | None, int]:
    """Sections 9.1.1 and 9.1.6: the block size from its code, or stored after the coded number."""
    if code == 1:
        return 192, pos
    if code <= 5:
        return 576 << (code - 2), pos
    if code >= 8:
        return 1 << code, pos
    width = 1 if code == 6 else 2
    if pos + width > len(data):
        return None, pos
    stored = int.from_bytes(bytes(data[pos:pos + width]), "big")
    return (None if stored == 0xFFFF else stored + 1), pos + width  # 65536 is forbidden


def first_frame(src: Source, audio_start: int, stream_end: int) -> Frame:
    """The frame that must follow the last metadata block directly (section 6)."""
    data = src.read(audio_start, min(MAX_FRAME_HEADER, stream_end - audio_start))
    frame = parse_frame_header(data, audio_start)
    if frame is not None:
        return frame
    if is_zero(data):
        raise Damage("zero_filled", f"zero bytes where the first audio frame should start (byte {audio_start:,})")
    if len(data) < MAX_FRAME_HEADER:
        raise Damage("truncated", "the file ends inside the first audio frame")
    raise Damage("bad_structure", f"no valid frame header right after the metadata (byte {audio_start:,})")


# --- the last frame ---------------------------------------------------------------------

@dataclass(frozen=True)
class LastFrame:
    frame: Frame
    padding: int  # zero bytes between the frame's end and the end of the stream


def find_last_frame(src: Source, info: StreamInfo, timeline: Timeline, audio_start: int, stream_end: int) -> LastFrame:
    """The frame whose CRC-16 footer (section 9.3) closes exactly at ``stream_end``.

    Searched backwards from the end through a window that must hold one whole frame:
    STREAMINFO's maximum frame size, or the size of an uncompressed (verbatim) frame
    of the largest block, whichever is larger.
    """
    window_start = max(audio_start, stream_end - _tail_window(info))
    data = src.read(window_start, stream_end - window_start)
    view = memoryview(data)
    zeros = zero_run_at_end(data)
    tried = 0
    for frame in _headers_backwards(data, window_start):
        if crc16(view[frame.offset - window_start:]) == 0:
            padding = _zero_padding(data, frame.offset - window_start, frame, info, timeline) if zeros >= ZERO_RUN else 0
            return LastFrame(frame, padding)
        tried += 1
        if tried == LAST_FRAME_CANDIDATES:
            break
    raise _diagnose_unfinished_end(data, window_start, info, timeline)


def _zero_padding(data: bytes, pos: int, frame: Frame, info: StreamInfo, timeline: Timeline) -> int:
    """How many zero bytes follow the frame at ``data[pos:]``, when they are padding.

    The frame's CRC-16 closes at the end of ``data`` although ``data`` ends in zeros:
    feeding zeros to a zero CRC register keeps it zero, so the frame ends somewhere in
    the zero run. Its subframes say exactly where. The zeros are padding after a
    complete stream only when this is the final frame (its samples reach STREAMINFO's
    total) and its CRC-16 closes where its subframes end; otherwise frames are missing
    and zeros stand in their place.
    """
    total = info.total_samples
    if total and timeline.start_of(frame) + frame.block_size == total:
        try:
            length = frame_length(data, pos, frame, info)
        except (FrameCut, FrameInvalid):
            length = None
        if length is not None and crc16(data[pos:pos + length]) == 0 and is_zero(data[pos + length:]):
            return len(data) - pos - length
    raise Damage("zero_filled", f"{zero_run_at_end(data):,} zero bytes follow the final frame")


def _tail_window(info: StreamInfo) -> int:
    verbatim = info.max_block_size * info.channels * (info.bits_per_sample + 1) // 8 + 64
    return min(MAX_TAIL_WINDOW, max(MIN_TAIL_WINDOW, info.max_frame_size + 64, verbatim))


def _headers_backwards(data: bytes, window_start: int):
    """Valid frame headers in ``data``, last first, found by the sync code 0xFFF8/0xFFF9."""
    pos = len(data)
    while (pos := data.rfind(b"\xff", 0, pos)) >= 0:
        if pos + 1 < len(data) and data[pos + 1] in (0xF8, 0xF9):
            frame = parse_frame_header(data[pos:pos + MAX_FRAME_HEADER], window_start + pos)
            if frame is not None:
                yield frame


def _diagnose_unfinished_end(data: bytes, window_start: int, info: StreamInfo, timeline: Timeline) -> Damage:
    """Why no frame ends at the end of the stream: zeros, a cut, a damaged frame or junk.

    The last frame header is followed through its subframes (section 9.2) to where the
    frame really ends: if the file ends first, the file was cut inside it; if its
    CRC-16 fails there, it is damaged; if it is whole, what follows it is either the
    next frames, cut, or data that is not FLAC after the final frame.
    """
    zeros = zero_run_at_end(data)
    if zeros >= ZERO_RUN:
        at_least = "at least " if zeros == len(data) else ""
        return Damage("zero_filled", f"the stream ends in {at_least}{zeros:,} zero bytes instead of a complete frame")
    last = next(_headers_backwards(data, window_start), None)
    if last is None:
        return Damage("truncated", "no complete frame at the end of the stream: the file was cut short")
    total = info.total_samples
    final = timeline.start_of(last) + last.block_size == total
    pos, where = last.offset - window_start, f"{'final ' if final else ''}frame at {_where(last, info, timeline)}"
    try:
        length = frame_length(data, pos, last, info)
    except FrameCut:
        return Damage("truncated", f"the file was cut inside the {where}")
    except FrameInvalid as problem:
        return Damage("crc_mismatch", f"the {where} is damaged: {problem}")
    if crc16(data[pos:pos + length]) != 0:
        return Damage("crc_mismatch", f"the {where} fails its CRC-16: it is damaged")
    rest, frame_end = data[pos + length:], last.offset + length
    if final or (not total and not _starts_a_header(rest)):
        return Damage("trailing_data", f"{len(rest):,} bytes of data that is not FLAC follow the "
                                       f"{'final' if final else 'last'} frame (from byte {frame_end:,})")
    return Damage("truncated", f"the file was cut after the complete {where}")


def _where(frame: Frame, info: StreamInfo, timeline: Timeline) -> str:
    start, total = timeline.start_of(frame), info.total_samples
    if total:
        return f"sample {start:,} of the {total:,} STREAMINFO declares ({start / total:.0%})"
    return f"byte {frame.offset:,}"


def _starts_a_header(rest: bytes) -> bool:
    """``rest`` could be the start of a frame header that the end of the file cut short."""
    return len(rest) < MAX_FRAME_HEADER and rest[:1] == b"\xff" and rest[1:2] in (b"", b"\xf8", b"\xf9")


# --- where a frame ends (section 9.2) -------------------------------------------------------

class FrameCut(Exception):
    """The data ends before the frame does."""


class FrameInvalid(Exception):
    """The frame uses a value section 9.2 reserves or forbids."""


# Section 9.1.4: bits per sample by code; 0 means STREAMINFO's, 3 is reserved.
DEPTHS = {1: 8, 2: 12, 4: 16, 5: 20, 6: 24, 7: 32}
# Section 9.1.3: left/side, side/right and mid/side stereo; the side channel has one bit more.
SIDE_CHANNEL = {8: 1, 9: 0, 10: 1}
NONZERO = re.compile(rb"[^\x00]")


def frame_length(data: bytes, pos: int, frame: Frame, info: StreamInfo) -> int:
    """The length in bytes, CRC-16 included, of the frame whose header is at ``data[pos:]``.

    Frames carry no length: it follows from walking the subframes (section 9.2), one
    per channel, then the zero padding to a byte boundary and the CRC-16 (section 9.3).
    Raises FrameCut if ``data`` ends first and FrameInvalid on a reserved value.
    """
    depth = DEPTHS.get(frame.depth_code, info.bits_per_sample)
    channels = 2 if frame.channel_code in SIDE_CHANNEL else frame.channel_code + 1
    bits = _Bits(data, 8 * (pos + frame.header_size))
    for channel in range(channels):
        side = SIDE_CHANNEL.get(frame.channel_code) == channel
        _skip_subframe(bits, depth + side, frame.block_size)
    end = (bits.pos + 7) // 8 + 2
    if end > len(data):
        raise FrameCut()
    return end - pos


def _skip_subframe(bits: "_Bits", depth: int, block_size: int) -> None:
    """Section 9.2.1: a zero bit, the 6-bit type, the wasted-bits flag (and count, unary)."""
    if bits.read(1):
        raise FrameInvalid("a subframe header does not start with its zero bit")
    kind = bits.read(6)
    if bits.read(1):
        depth -= bits.unary() + 1
        if depth <= 0:
            raise FrameInvalid("more wasted bits than bits per sample")
    if kind == 0:  # constant (9.2.3)
        bits.skip(depth)
    elif kind == 1:  # verbatim (9.2.4)
        bits.skip(depth * block_size)
    elif 8 <= kind <= 12:  # fixed predictor of order 0-4 (9.2.5)
        order = kind - 8
        bits.skip(order * depth)
        _skip_residual(bits, order, block_size)
    elif kind >= 32:  # linear predictor of order 1-32 (9.2.6)
        order = kind - 31
        bits.skip(order * depth)
        precision = bits.read(4)
        if precision == 15:
            raise FrameInvalid("a predictor coefficient precision of 0b1111")
        bits.skip(5 + order * (precision + 1))
        _skip_residual(bits, order, block_size)
    else:
        raise FrameInvalid(f"reserved subframe type {kind:#08b}")


def _skip_residual(bits: "_Bits", order: int, block_size: int) -> None:
    """Section 9.2.7: Rice-coded partitions, each with its parameter or an escape to raw bits."""
    method = bits.read(2)
    if method > 1:
        raise FrameInvalid(f"reserved residual coding method {method:#04b}")
    parameter_bits = 4 + method
    escape = (1 << parameter_bits) - 1
    partition_order = bits.read(4)
    partitions = 1 << partition_order
    if block_size % partitions or block_size // partitions < order:
        raise FrameInvalid(f"a partition order of {partition_order} does not fit a block of {block_size}")
    for index in range(partitions):
        count = block_size // partitions - (order if index == 0 else 0)
        parameter = bits.read(parameter_bits)
        if parameter == escape:
            bits.skip(count * bits.read(5))
        else:
            bits.skip_rice(count, parameter)


class _Bits:
    """A read position in bits over ``data``, most significant bit first."""

    def __init__(self, data: bytes, pos: int):
        self.data = data
        self.pos = pos
        self.limit = 8 * len(data)

    def skip(self, n: int) -> None:
        self.pos += n
        if self.pos > self.limit:
            raise FrameCut()

    def read(self, n: int) -> int:
        end = self.pos + n
        if end > self.limit:
            raise FrameCut()
        first, last = self.pos >> 3, (end + 7) >> 3
        value = int.from_bytes(self.data[first:last], "big") >> ((last << 3) - end)
        self.pos = end
        return value & ((1 << n) - 1)

    def unary(self) -> int:
        """The number of 0 bits before the next 1 bit; the 1 bit is consumed too."""
        start = self.pos
        self.skip_rice(1, 0)
        return self.pos - start - 1

    def skip_rice(self, count: int, parameter: int) -> None:
        """Skip ``count`` Rice codes: a unary quotient (zeros ended by a one), then
        ``parameter`` bits. The hot loop of :func:`frame_length`, so kept flat."""
        data, pos, size = self.data, self.pos, len(self.data)
        for _ in range(count):
            index = pos >> 3
            if index >= size:
                raise FrameCut()
            byte = data[index] & (0xFF >> (pos & 7))
            if not byte:
                match = NONZERO.search(data, index + 1)
                if match is None:
                    raise FrameCut()
                index = match.start()
                byte = data[index]
            pos = (index << 3) + 9 - byte.bit_length() + parameter
        if pos > self.limit:
            raise FrameCut()
        self.pos = pos


# --- sample count --------------------------------------------------------------------

def _check_sample_count(samples: int, info: StreamInfo) -> None:
    """The frames must cover the total STREAMINFO declares (0 = unknown, section 8.2)."""
    total = info.total_samples
    if not total or samples == total:
        return
    if samples < total:
        raise Damage("truncated", f"the stream ends on a complete frame at {samples / total:.0%} of the "
                                  f"{total:,} samples STREAMINFO declares")
    raise Damage("bad_structure", f"the frames hold {samples:,} samples, more than the "
                                  f"{total:,} STREAMINFO declares")


def _duration(samples: int, info: StreamInfo) -> float | None:
    if not info.sample_rate:
        return None
    return (info.total_samples or samples) / info.sample_rate
