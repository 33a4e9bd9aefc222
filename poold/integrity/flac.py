"""Native FLAC: the metadata blocks up front and the last frame at the end must be whole.

References are to RFC 9639 (Free Lossless Audio Codec). A FLAC stream is the "fLaC"
marker, metadata blocks (section 8) and audio frames (section 9). Frames carry no
length, so the end of the stream is judged from the last frame: its header is
found by its sync code and CRC-8, and the frame's CRC-16 footer must close exactly
at the end of the stream. Its position (coded number) plus its block size must then
reach the total number of samples STREAMINFO declares.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import tags
from .base import Damage, Source, Verdict, is_zero, ok, zero_run_at_end
from .crc import crc8, crc16, crc16_step

FORMAT = "flac"
EXTENSIONS = frozenset({".flac"})

MARKER = b"fLaC"
BLOCK_HEADER = 4
STREAMINFO = 0
STREAMINFO_SIZE = 34
FORBIDDEN_BLOCK_TYPE = 127  # section 8.1: would be confused with a frame sync code
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
    samples = timeline.start_of(last) + last.block_size
    _check_sample_count(samples, info)
    return ok(FORMAT, f"{samples:,} samples, last frame complete", _duration(samples, info))


# --- metadata (section 8) -------------------------------------------------------------

def read_metadata(src: Source, offset: int) -> tuple[StreamInfo, int]:
    """Walk the metadata block headers from ``offset``; return STREAMINFO and where audio starts.

    Section 8.1: every block has a 4-byte header (last-block flag, 7-bit type, 24-bit
    length); STREAMINFO must come first; the block flagged last is followed by frames.
    """
    info = None
    index = 0
    while True:
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
    return Frame(offset, variable, number, block_size)


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

def find_last_frame(src: Source, info: StreamInfo, timeline: Timeline, audio_start: int, stream_end: int) -> Frame:
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
            if zeros >= ZERO_RUN:
                raise Damage("zero_filled", f"{zeros:,} zero bytes follow the final frame")
            return frame
        tried += 1
        if tried == LAST_FRAME_CANDIDATES:
            break
    raise _diagnose_unfinished_end(data, window_start, info, timeline)


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
    """Why no frame ends at the end of the stream: zeros, junk after the final frame, or a cut."""
    zeros = zero_run_at_end(data)
    if zeros >= ZERO_RUN:
        at_least = "at least " if zeros == len(data) else ""
        return Damage("zero_filled", f"the stream ends in {at_least}{zeros:,} zero bytes instead of a complete frame")
    last = next(_headers_backwards(data, window_start), None)
    if last is None:
        return Damage("truncated", "no complete frame at the end of the stream: the file was cut short")
    total = info.total_samples
    if total and timeline.start_of(last) + last.block_size == total:
        return _diagnose_final_frame(data, last.offset - window_start, info)
    start = timeline.start_of(last)
    where = f"sample {start:,} of the {total:,} STREAMINFO declares ({start / total:.0%})" if total \
        else f"byte {last.offset:,}"
    return Damage("truncated", f"the file was cut inside the frame at {where}")


def _diagnose_final_frame(data: bytes, pos: int, info: StreamInfo) -> Damage:
    """The frame STREAMINFO's total makes the final one is there, but its CRC-16 fails.

    If its CRC closes earlier, what follows is junk. Otherwise it is cut short when it
    is smaller than the smallest frame of the stream (section 8.2), else damaged.
    """
    frame_end = _first_crc16_close(data, pos)
    if frame_end is not None:
        return Damage("trailing_data", f"{len(data) - frame_end:,} bytes of unknown data follow the final frame")
    present = len(data) - pos
    if present < info.min_frame_size:
        return Damage("truncated", f"the final frame is cut short: {present:,} bytes, "
                                   f"the smallest frame of the stream is {info.min_frame_size:,}")
    return Damage("crc_mismatch", "the final frame's CRC-16 does not match: it is damaged")


def _first_crc16_close(data: bytes, pos: int) -> int | None:
    """The first offset after ``pos`` at which the running CRC-16 is zero: where a frame
    starting at ``pos`` would end if its footer matched there."""
    crc = 0
    for index in range(pos, len(data)):
        crc = crc16_step(crc, data[index])
        if crc == 0 and index - pos >= MAX_FRAME_HEADER:
            return index + 1
    return None


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
