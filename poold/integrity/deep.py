"""Deep mode: decode every sample and verify every checksum the format carries.

The quick check (:func:`poold.integrity.check_file`) judges a file's structure from a
few reads; it cannot see damage inside the coded audio, such as a flipped byte or a
zeroed block in the middle of a complete file. Deep mode runs the quick check first,
then decodes the whole file with FFmpeg (through PyAV, the optional ``poold[deep]``
extra) with its error detection turned up, and verifies what the formats define:

- FLAC (also in Ogg): the MD5 of the decoded samples and the total sample count that
  STREAMINFO records (RFC 9639 section 8.2). FFmpeg's decoder checks every frame's
  CRC-16 (section 9.3), its parser drops frames whose CRC fails; the count catches it.
- Ogg: the CRC-32 of every page (RFC 3533 section 6).
- MP3 with a LAME tag: the CRC-16 of the music data (LAME tag specification,
  gabriel.mp3-tech.org/mp3infotag.html, "Music CRC"); FFmpeg checks the optional
  per-frame CRC (ISO/IEC 11172-3 section 2.4.3.1, protection_bit).
- Every format: the decoder must not fail, the file must decode to some audio, and the
  decoded length must match the length the quick check established.

Video tracks are demuxed packet by packet (every packet must be readable); decoding
them costs tens of seconds per music video, so it is opt-in (``decode_video=True``).
Memory stays bounded: the file is streamed packet by packet and page by page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from . import check_file
from .base import CORRUPT, OK, UNCHECKED, Damage, Source, Verdict
from .crc import crc32_ogg
from .tags import leading_tags_end, trailing_tags_start


class DeepUnavailable(RuntimeError):
    """PyAV, which deep mode decodes with, is not installed."""


# AVCodecContext.err_recognition (FFmpeg libavcodec/options_table.h "err_detect"):
# verify embedded CRCs, treat bitstream and buffer violations as errors, and make the
# decoder return an error ("explode") instead of concealing the damage.
STRICT_DECODING = {"err_detect": "crccheck+bitstream+buffer+explode"}

# How far the decoded length may stray from the quick check's before it is damage:
# decoders trim encoder delay and padding (LAME tag, MP4 edit lists, Opus pre-skip),
# which structural durations may or may not account for. A lost middle block of any
# consequence (a failed download segment is megabytes, many seconds) is far larger.
LENGTH_TOLERANCE_SECONDS = 0.2
LENGTH_TOLERANCE_FRACTION = 0.005

CHUNK = 4 * 1024 * 1024


def deep_check(path, *, decode_video: bool = False) -> Verdict:
    """Quick check, then a full decode and the format's checksums."""
    av = _import_av()
    quick = check_file(path)
    if quick.status != OK:
        return quick
    try:
        with Source(path) as src:
            notes = _verify_checksums(src, quick.format)
        decoded = _decode(av, path, decode_video)
        notes += decoded.verify(quick.duration)
    except Damage as damage:
        return Verdict(CORRUPT, damage.reason, damage.detail, quick.format, quick.duration)
    except _Undecodable as exc:
        return Verdict(UNCHECKED, "check_error", str(exc), quick.format, quick.duration)
    except OSError as exc:
        return Verdict(UNCHECKED, "check_error", f"reading it failed during the deep check: {exc}",
                       quick.format, quick.duration)
    detail = "; ".join([f"decoded fully: {decoded.describe()}"] + notes)
    duration = quick.duration if quick.duration is not None else decoded.seconds
    return Verdict(OK, "ok", detail, quick.format, duration)


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise DeepUnavailable("deep checks need PyAV: pip install 'poold[deep]'") from exc
    return av


class _Undecodable(Exception):
    """FFmpeg could not handle the file for a reason that is not evidence of damage."""


# --- checksums read straight from the file --------------------------------------------

def _verify_checksums(src: Source, fmt: str | None) -> list[str]:
    """Checks that need the raw bytes rather than the decoder; returns notes for the detail."""
    if fmt == "ogg":
        return [_verify_ogg_pages(src)]
    if fmt == "mp3":
        return [_verify_lame_crc(src)]
    return []


OGG_HEADER = 27


def _verify_ogg_pages(src: Source) -> str:
    """Walk every page and verify its CRC-32 (RFC 3533 section 6).

    The checksum covers the whole page, header and body, with its own field zeroed.
    Pages follow each other without gaps, so each must start where the previous one
    ended, until the tag blocks some taggers append (see :mod:`.tags`) or the end.
    """
    offset = leading_tags_end(src)
    pages = 0
    while offset < src.size:
        header = src.read(offset, OGG_HEADER + 255)
        if header[:4] != b"OggS":
            if pages and trailing_tags_start(src, offset) == offset:
                break
            raise Damage("bad_structure", f"no Ogg page at byte {offset:,}, where page {pages:,} ends")
        lacing = header[OGG_HEADER:OGG_HEADER + header[26]] if len(header) >= OGG_HEADER else b""
        size = OGG_HEADER + len(lacing) + sum(lacing)
        page = src.read(offset, size)
        if len(header) < OGG_HEADER or len(lacing) < header[26] or len(page) < size:
            raise Damage("truncated", f"Ogg page {pages + 1:,} at byte {offset:,} runs past the end of the file")
        stored = int.from_bytes(page[22:26], "little")
        if crc32_ogg(page[:22] + b"\0\0\0\0" + page[26:]) != stored:
            raise Damage("crc_mismatch", f"the CRC of Ogg page {pages + 1:,} (byte {offset:,}) does not match its data")
        offset += size
        pages += 1
    return f"CRC of all {pages:,} Ogg pages verified"


# MPEG-1/2/2.5 Layer III frame header fields (ISO/IEC 11172-3 section 2.4.2.3,
# ISO/IEC 13818-3 section 2.4.2.3): kbit/s per bitrate_index, Hz per sampling index.
_L3_BITRATES = {
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_LAME_OFFSET = 120  # the LAME extension follows the 120-byte Xing/Info header
_LAME_SIZE = 36
_FIRST_FRAME_SEARCH = 64 * 1024  # as far as FFmpeg's MP3 demuxer looks for the first frame
_MP3GAIN_MARK = b"MP3GAIN_"  # APEv2/ID3 items MP3Gain leaves after rewriting frame gains


@dataclass(frozen=True)
class _LameTag:
    frame_start: int  # of the Info frame
    frame_size: int
    music_length: int
    music_crc: int
    mp3_gain: int


def _verify_lame_crc(src: Source) -> str:
    """Verify the LAME tag's CRC-16 of the music (CRC-16/ARC: polynomial 0x8005,
    bit-reflected, zero initial value), computed from the frame after the Info frame
    to the end of the music, whose length the tag records from the Info frame on.

    The music CRC is only trusted when the tag's own CRC (over the frame bytes before
    it) verifies, the recorded length matches the stream, and nothing is known to
    have rewritten the frames since encoding (MP3Gain changes their global gain).
    """
    tag = _lame_tag(src)
    if tag is None:
        return "no LAME tag, so no music CRC to verify"
    stream_end = trailing_tags_start(src, tag.frame_start)
    if tag.music_length != stream_end - tag.frame_start:
        return (f"LAME music length ({tag.music_length:,} bytes) differs from the stream "
                f"({stream_end - tag.frame_start:,} bytes); music CRC not verified")
    if tag.music_crc == 0 or tag.mp3_gain or _mp3gain_applied(src, tag.frame_start, stream_end):
        return "LAME music CRC not recorded or the frames were rewritten by a gain tool; not verified"
    start = tag.frame_start + tag.frame_size
    crc = crc16_arc_of(src, start, stream_end)
    if crc != tag.music_crc:
        raise Damage("crc_mismatch", f"the LAME tag's music CRC is {tag.music_crc:04X} "
                                     f"but the {stream_end - start:,} bytes of music give {crc:04X}")
    return "LAME music CRC verified"


def _lame_tag(src: Source) -> _LameTag | None:
    """The LAME tag of the first frame, if it has one whose own CRC verifies."""
    found = _info_frame(src)
    if found is None:
        return None
    frame_start, frame, xing_at = found
    lame_at = xing_at + _LAME_OFFSET
    if len(frame) < lame_at + _LAME_SIZE:
        return None
    lame = frame[lame_at:lame_at + _LAME_SIZE]
    tag_crc_at = lame_at + 34
    stored_tag_crc = int.from_bytes(lame[34:36], "big")
    # LAME covers every byte before the field. FFmpeg always covers 190 bytes, with the
    # field still zero and, past a shorter frame's end, its buffer's zero padding: the
    # same bytes for MPEG-1 stereo, where the field sits at byte 190.
    ffmpeg_span = (frame[:tag_crc_at] + b"\0\0" + frame[tag_crc_at + 2:]).ljust(190, b"\0")[:190]
    if stored_tag_crc not in (_crc16_arc(frame[:tag_crc_at]), _crc16_arc(ffmpeg_span)):
        return None
    return _LameTag(frame_start, len(frame), music_length=int.from_bytes(lame[28:32], "big"),
                    music_crc=int.from_bytes(lame[32:34], "big"), mp3_gain=lame[25])


def _info_frame(src: Source) -> tuple[int, bytes, int] | None:
    """(offset, bytes, Xing/Info offset in it) of the stream's first frame when that
    frame carries a Xing/Info header. Undeclared padding or junk may sit between the
    tags and the first frame, as players and the quick check allow; the marker at its
    fixed place in the frame confirms a sync found in it."""
    start = leading_tags_end(src)
    window = src.read(start, _FIRST_FRAME_SEARCH)
    sync = window.find(b"\xff")
    while sync >= 0:
        layout = _layer3_layout(window[sync:sync + 4])
        if layout is not None:
            frame_size, xing_at = layout
            frame = src.read(start + sync, frame_size)
            if frame[xing_at:xing_at + 4] in (b"Xing", b"Info"):
                return start + sync, frame, xing_at
            return None  # the first frame carries no Xing/Info header
        sync = window.find(b"\xff", sync + 1)
    return None


def _layer3_layout(header: bytes) -> tuple[int, int] | None:
    """(frame size, offset of the Xing/Info header) of a Layer III frame header, else None."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _L3_BITRATES[mpeg1][bitrate_index] * 1000
    rate = _SAMPLE_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    frame_size = (144 if mpeg1 else 72) * bitrate // rate + padding
    mono = header[3] >> 6 == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    crc_field = 0 if header[1] & 1 else 2
    return frame_size, 4 + crc_field + side_info


def _mp3gain_applied(src: Source, stream_start: int, stream_end: int) -> bool:
    """Whether MP3Gain's undo record sits in the leading or trailing tags."""
    tags = src.read(0, stream_start) + src.read(stream_end, src.size - stream_end)
    return _MP3GAIN_MARK in tags.upper()


# CRC-16/ARC over long data, fast in pure Python: a CRC is the remainder of the message
# polynomial over GF(2), and Python's big integers hold a whole chunk as one
# polynomial. Reducing it by folding its upper half onto the lower one (x^k mod P
# times the upper half, a carry-less product of a few shifts) costs a handful of
# big-integer operations per halving instead of one Python step per byte.
_ARC_POLY = 0x18005
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
_X_POW_2K = []  # x^(2^k) mod P for k = 0, 1, ...


def _clmul(a: int, b: int) -> int:
    """Carry-less (GF(2)) product of two polynomials held as integers."""
    product = 0
    while b:
        low = b & -b
        product ^= a << (low.bit_length() - 1)
        b ^= low
    return product


def _mod_small(value: int) -> int:
    while value.bit_length() > 16:
        value ^= _ARC_POLY << (value.bit_length() - 17)
    return value


def _x_pow_2k(k: int) -> int:
    while len(_X_POW_2K) <= k:
        _X_POW_2K.append(_mod_small(_clmul(_X_POW_2K[-1], _X_POW_2K[-1])) if _X_POW_2K else 2)
    return _X_POW_2K[k]


def _gf2_mod(value: int) -> int:
    while value.bit_length() > 64:
        k = (value.bit_length() - 1).bit_length() - 1
        half = 1 << k
        value = (value & ((1 << half) - 1)) ^ _clmul(value >> half, _x_pow_2k(k))
    return _mod_small(value)


def _arc_remainder(remainder: int, data: bytes) -> int:
    """Extend the running remainder (of the bit-reversed message) by ``data``."""
    polynomial = int.from_bytes(data.translate(_BIT_REVERSED), "big")
    return _gf2_mod((remainder << (8 * len(data))) ^ polynomial)


def _arc_finish(remainder: int) -> int:
    """The CRC-16/ARC value: the message times x^16 mod P, bit-reflected back."""
    return int(f"{_gf2_mod(remainder << 16):016b}"[::-1], 2)


def _crc16_arc(data: bytes) -> int:
    return _arc_finish(_arc_remainder(0, data))


def crc16_arc_of(src: Source, start: int, end: int) -> int:
    """CRC-16/ARC of the file's bytes ``start:end``, read in bounded chunks."""
    remainder = 0
    for offset in range(start, end, CHUNK):
        chunk = src.read(offset, min(CHUNK, end - offset))
        remainder = _arc_remainder(remainder, chunk)
    return _arc_finish(remainder)


# --- decoding -------------------------------------------------------------------------

# FFmpeg errors that a decoder or demuxer returns for bad data. Many decoders still
# "return -1" on a broken frame, which is AVERROR(EPERM): PyAV raises PermissionError.
def _data_errors(av) -> tuple[type, ...]:
    return av.error.InvalidDataError, av.error.EOFError, av.error.PermissionError


@dataclass
class _AudioTally:
    index: int
    codec: str
    rate: int
    samples: int = 0
    flac: _FlacStreamInfo | None = None

    @property
    def seconds(self) -> float:
        return self.samples / self.rate if self.rate else 0.0

    def add(self, frame) -> None:
        self.samples += frame.samples
        if self.flac is not None:
            self.flac.update(frame)


@dataclass
class _Decoded:
    audio: list[_AudioTally] = field(default_factory=list)
    video_packets: int = 0
    video_frames: int = 0
    video_seconds: float = 0.0

    def describe(self) -> str:
        parts = [f"{a.codec} {a.samples:,} samples ({a.seconds:.2f} s)" for a in self.audio]
        if self.video_packets:
            decoded = f", {self.video_frames:,} frames decoded" if self.video_frames else ""
            parts.append(f"video {self.video_packets:,} packets demuxed{decoded}")
        return ", ".join(parts)

    @property
    def seconds(self) -> float:
        return max([a.seconds for a in self.audio] + [self.video_seconds])

    def verify(self, expected: float | None) -> list[str]:
        """Raise Damage when what decoded contradicts the file's own description."""
        if self.audio and not any(a.samples for a in self.audio):
            raise Damage("decode_error", "decodes to nothing: no audio samples at all")
        if not self.audio and not self.video_packets:
            raise Damage("decode_error", "decodes to nothing: no audio or video")
        notes = [note for a in self.audio if a.flac for note in a.flac.verify(a.samples)]
        if expected is not None:
            tolerance = max(LENGTH_TOLERANCE_SECONDS, LENGTH_TOLERANCE_FRACTION * expected)
            if abs(self.seconds - expected) > tolerance:
                raise Damage("duration_mismatch", f"decodes to {self.seconds:.2f} s but its structure "
                                                  f"says {expected:.2f} s")
        return notes


def _decode(av, path, decode_video: bool) -> _Decoded:
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise _Undecodable(f"FFmpeg could not open it: {exc}") from exc
    with container:
        return _decode_streams(av, container, decode_video)


def _decode_streams(av, container, decode_video: bool) -> _Decoded:
    decoded = _Decoded()
    audio = [s for s in container.streams.audio]
    video = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    tallies = {s.index: _tally(s) for s in audio}
    decoded.audio = list(tallies.values())
    for stream in audio + (video if decode_video else []):
        stream.codec_context.options = dict(STRICT_DECODING)
    for stream in video if decode_video else []:
        stream.thread_type = "AUTO"
    video_end = {}
    packet = None  # the position string is built only for an error message: it is costly per packet
    try:
        # PyAV ends the demux with an empty packet per stream, which flushes its decoder.
        for packet in container.demux(*(audio + video)):
            if packet.is_corrupt:
                raise Damage("decode_error", f"the container marks the packet at {_where(packet)} as corrupt")
            if packet.stream.type == "audio":
                _decode_audio(packet, tallies[packet.stream.index])
                continue
            if packet.size:
                decoded.video_packets += 1
                if packet.pts is not None:  # in the stream's time base: compared as integers, converted once
                    end = packet.pts + (packet.duration or 0)
                    index = packet.stream_index
                    video_end[index] = max(end, video_end.get(index, end))
            if decode_video:
                decoded.video_frames += len(packet.decode())
    except _data_errors(av) as exc:
        raise Damage("decode_error", f"decoding failed at {_where(packet)}: {_ffmpeg_message(exc)}") from exc
    except av.error.FFmpegError as exc:
        raise _Undecodable(f"FFmpeg could not decode it at {_where(packet)}: {_ffmpeg_message(exc)}") from exc
    streams = {stream.index: stream for stream in video}
    decoded.video_seconds = max((_seconds(streams[index], end) for index, end in video_end.items()), default=0.0)
    return decoded


def _tally(stream) -> _AudioTally:
    context = stream.codec_context
    flac = _FlacStreamInfo.parse(context.extradata) if context.name == "flac" else None
    return _AudioTally(stream.index, context.name, context.sample_rate or 0, flac=flac)


def _decode_audio(packet, tally: _AudioTally) -> None:
    for frame in packet.decode():
        tally.add(frame)


def _seconds(stream, end_pts: int) -> float:
    """Where a video stream ends on its time line, in seconds."""
    if stream.time_base is None:
        return 0.0
    return float((end_pts - (stream.start_time or 0)) * stream.time_base)


def _where(packet) -> str:
    if packet is None:
        return "the start"
    if not packet.size:
        return f"the end of {packet.stream.type} stream {packet.stream.index}"
    if packet.pts is not None and packet.time_base is not None:
        return f"{float(packet.pts * packet.time_base):.2f} s ({packet.stream.type} stream {packet.stream.index})"
    return f"byte {packet.pos:,}" if packet.pos is not None and packet.pos >= 0 else "an unknown position"


def _ffmpeg_message(exc) -> str:
    return getattr(exc, "strerror", None) or str(exc)


# --- FLAC: STREAMINFO's MD5 and sample count (RFC 9639 section 8.2) ------------------

@dataclass
class _FlacStreamInfo:
    """What STREAMINFO promises about the decoded audio, and a running MD5 of it.

    The MD5 is over the samples as signed little-endian integers of the stream's
    bits per sample rounded up to whole bytes, channels interleaved. FFmpeg hands
    16-bit-or-narrower streams out as s16 and wider ones as s32, left-justified, so
    for 8, 16, 24 and 32 bits per sample the wanted bytes are a slice of each
    decoded sample; other widths would need arithmetic shifts and are not verified.
    """

    bits: int
    total_samples: int
    md5: bytes
    digest: Any = field(default_factory=hashlib.md5)

    @classmethod
    def parse(cls, extradata: bytes | None) -> _FlacStreamInfo | None:
        if not extradata:
            return None
        info = extradata[8:] if extradata[:4] == b"fLaC" else extradata
        if len(info) < 34:
            return None
        packed = int.from_bytes(info[10:18], "big")
        bits = ((packed >> 36) & 0x1F) + 1
        return cls(bits, packed & ((1 << 36) - 1), info[18:34])

    @property
    def md5_checkable(self) -> bool:
        return self.bits in (8, 16, 24, 32) and any(self.md5)

    def update(self, frame) -> None:
        if self.md5_checkable:
            self.digest.update(_flac_md5_bytes(frame, self.bits))

    def verify(self, decoded_samples: int) -> list[str]:
        if self.total_samples and decoded_samples != self.total_samples:
            raise Damage("duration_mismatch", f"decodes to {decoded_samples:,} samples per channel "
                                              f"but STREAMINFO declares {self.total_samples:,}")
        if not self.md5_checkable:
            return ["no usable MD5 in STREAMINFO" if not any(self.md5)
                    else f"MD5 not verified for {self.bits}-bit samples"]
        if self.digest.digest() != self.md5:
            raise Damage("checksum_mismatch", "the MD5 of the decoded audio does not match STREAMINFO's")
        return ["FLAC MD5 verified"]


def _flac_md5_bytes(frame, bits: int) -> bytes:
    """The frame's samples laid out as FLAC's MD5 wants them (see _FlacStreamInfo)."""
    width = frame.format.bytes  # 2 (s16) or 4 (s32)
    channels = len(frame.layout.channels)
    count = frame.samples * (1 if frame.format.is_planar else channels)
    planes = [bytes(plane)[:count * width] for plane in frame.planes]
    packed = planes[0] if len(planes) == 1 else _interleave(planes, width)
    keep = (bits + 7) // 8
    if keep == width:
        return packed
    # Left-justified: the sample's own bytes are the top ``keep`` of each little-endian word.
    out = bytearray(len(packed) // width * keep)
    for i in range(keep):
        out[i::keep] = packed[width - keep + i::width]
    return bytes(out)


def _interleave(planes: list[bytes], width: int) -> bytes:
    out = bytearray(len(planes[0]) * len(planes))
    stride = width * len(planes)
    for channel, plane in enumerate(planes):
        for byte in range(width):
            out[channel * width + byte::stride] = plane[byte::width]
    return bytes(out)
