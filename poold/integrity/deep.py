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
The video is demuxed in a thread beside the audio decode, from a second demuxer: both
spend their time inside FFmpeg, which releases the GIL, so a second core runs it.
Memory stays bounded: the file is streamed packet by packet and chunk by chunk.

What the quick check established is not redone: FFmpeg is told the container format
instead of probing for it (see :data:`DEMUXERS`).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import check_file, format_module
from .base import CORRUPT, OK, UNCHECKED, BeyondLimits, Damage, Source, Verdict
from .crc import BIT_REVERSED, crc16_arc, ogg_page_crc_matches
from .tags import MAX_FFMPEG_TAG_ITEMS, leading_tags_end, skip_leading_tags, trailing_tags_start


log = logging.getLogger(__name__)


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
            too_many_tags = _tag_load(src, quick.format)
            if too_many_tags:
                return _without_decode(quick, notes + [f"FFmpeg decode skipped: {too_many_tags}"])
            decoded = _decode(av, _opened_path(src), quick.format, decode_video)
        notes += decoded.verify(quick.duration)
    except Damage as damage:
        return Verdict(CORRUPT, damage.reason, damage.detail, quick.format, quick.duration)
    except _Undecodable as exc:
        return Verdict(UNCHECKED, "check_error", str(exc), quick.format, quick.duration)
    except OSError as exc:
        return Verdict(UNCHECKED, "check_error", f"reading it failed during the deep check: {exc}",
                       quick.format, quick.duration)
    except Exception as exc:  # a bug in the deep check, or PyAV's, is not evidence of damage
        log.warning("deep check failed on %s: %s: %s", path, type(exc).__name__, exc)
        return Verdict(UNCHECKED, "check_error", f"poold's deep check failed: {type(exc).__name__}",
                       quick.format, quick.duration)
    detail = "; ".join([f"decoded fully: {decoded.describe()}"] + notes)
    duration = quick.duration if quick.duration is not None else decoded.seconds
    return Verdict(OK, "ok", detail, quick.format, duration, quick.identity)


def _without_decode(quick: Verdict, notes: list[str]) -> Verdict:
    """The quick verdict, its detail extended by what the deep check did and did not do."""
    detail = "; ".join([quick.detail] + notes)
    return Verdict(quick.status, quick.reason, detail, quick.format, quick.duration, quick.identity)


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise DeepUnavailable("deep checks need PyAV: pip install 'poold[deep]'") from exc
    return av


class _Undecodable(Exception):
    """FFmpeg could not handle the file for a reason that is not evidence of damage."""


# --- tag bombs ------------------------------------------------------------------------

# Formats whose tag items FFmpeg reads in time quadratic in their number (see
# tags.MAX_FFMPEG_TAG_ITEMS); ID3v2 tags at the start are skipped instead (tags.skip_leading_tags).
TAG_COUNTED_FORMATS = ("flac", "ogg", "mp4")


def _tag_load(src: Source, fmt: str | None) -> str | None:
    """Why FFmpeg must not be handed this file, or None.

    FFmpeg reads every tag item before the first packet, in time quadratic in their
    number, so a tag bomb of hundreds of thousands of items keeps it busy for hours. The
    items are counted first (bounded: up to the limit), and past the limit the file is
    judged without FFmpeg: by the quick check and the checksums read straight from the
    file (every Ogg page's CRC). Giving FFmpeg a view of the file without its tags would
    decode it too, but would mean rewriting FLAC metadata blocks, Ogg header pages (and
    their CRCs) or MP4 boxes (and every sample offset) on the fly. A bomb is no evidence
    of damage, so it never makes the verdict worse.
    """
    if fmt not in TAG_COUNTED_FORMATS:
        return None
    limit = MAX_FFMPEG_TAG_ITEMS
    try:
        items = format_module(fmt).tag_items(src, limit + 1)
    except BeyondLimits as beyond:
        return str(beyond)
    except Damage:  # the count is no check: what it cannot read, FFmpeg judges
        return None
    if items > limit:
        return f"more than {limit:,} tag items (FFmpeg reads them in time quadratic in their number)"
    return None


# --- checksums read straight from the file --------------------------------------------

def _verify_checksums(src: Source, fmt: str | None) -> list[str]:
    """Checks that need the raw bytes rather than the decoder; returns notes for the detail."""
    if fmt == "ogg":
        return [_verify_ogg_pages(src)]
    if fmt == "mp3":
        return [_verify_lame_crc(src)]
    return []


OGG_HEADER = 27
OGG_MAX_PAGE = OGG_HEADER + 255 + 255 * 255


def _verify_ogg_pages(src: Source) -> str:
    """Walk every page and verify its CRC-32 (RFC 3533 section 6).

    The checksum covers the whole page, header and body, with its own field zeroed.
    Pages follow each other without gaps, so each must start where the previous one
    ended, until the tag blocks some taggers append (see :mod:`.tags`) or the end.
    The file is read, and its bits reflected for the CRC, a chunk of many pages at a time.
    """
    offset = leading_tags_end(src)
    pages = 0
    chunk, chunk_start = b"", offset
    while offset < src.size:
        at = offset - chunk_start
        if len(chunk) - at < OGG_MAX_PAGE and chunk_start + len(chunk) < src.size:
            chunk, chunk_start, at = src.read(offset, CHUNK), offset, 0
            reflected = memoryview(chunk.translate(BIT_REVERSED))
        header = chunk[at:at + OGG_HEADER + 255]
        if header[:4] != b"OggS":
            if pages and trailing_tags_start(src, offset) == offset:
                break
            raise Damage("bad_structure", f"no Ogg page at byte {offset:,}, where page {pages:,} ends")
        lacing = header[OGG_HEADER:OGG_HEADER + header[26]] if len(header) >= OGG_HEADER else b""
        size = OGG_HEADER + len(lacing) + sum(lacing)
        if len(header) < OGG_HEADER or len(lacing) < header[26] or at + size > len(chunk):
            raise Damage("truncated", f"Ogg page {pages + 1:,} at byte {offset:,} runs past the end of the file")
        if not ogg_page_crc_matches(reflected[at:at + size]):
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
    if stored_tag_crc not in (crc16_arc([frame[:tag_crc_at]]), crc16_arc([ffmpeg_span])):
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


def crc16_arc_of(src: Source, start: int, end: int) -> int:
    """CRC-16/ARC of the file's bytes ``start:end``, read in bounded chunks."""
    return crc16_arc(src.read(offset, min(CHUNK, end - offset)) for offset in range(start, end, CHUNK))


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

    def decode(self, packet) -> None:
        for frame in packet.decode():
            self.samples += frame.samples
            if self.flac is not None:
                self.flac.update(frame)


@dataclass
class _VideoTally:
    decode_frames: bool
    packets: int = 0
    frames: int = 0
    seconds: float = 0.0
    ends: dict[int, int] = field(default_factory=dict)  # stream index -> largest pts + duration

    def add(self, packet) -> None:
        if packet.size:
            self.packets += 1
            if packet.pts is not None:  # in the stream's time base: compared as integers, converted once
                end = packet.pts + (packet.duration or 0)
                index = packet.stream_index
                self.ends[index] = max(end, self.ends.get(index, end))
        if self.decode_frames:
            self.frames += len(packet.decode())

    def finish(self, streams: list) -> None:
        """Convert the ends to seconds while the streams (and their container) are open."""
        by_index = {stream.index: stream for stream in streams}
        self.seconds = max((_seconds(by_index[index], end) for index, end in self.ends.items()), default=0.0)


@dataclass
class _Decoded:
    audio: list[_AudioTally] = field(default_factory=list)
    video: _VideoTally | None = None

    def describe(self) -> str:
        parts = [f"{a.codec} {a.samples:,} samples ({a.seconds:.2f} s)" for a in self.audio]
        if self.video is not None and self.video.packets:
            decoded = f", {self.video.frames:,} frames decoded" if self.video.frames else ""
            parts.append(f"video {self.video.packets:,} packets demuxed{decoded}")
        return ", ".join(parts)

    @property
    def seconds(self) -> float:
        return max([a.seconds for a in self.audio] + [self.video.seconds if self.video else 0.0])

    def verify(self, expected: float | None) -> list[str]:
        """Raise Damage when what decoded contradicts the file's own description."""
        if self.audio and not any(a.samples for a in self.audio):
            raise Damage("decode_error", "decodes to nothing: no audio samples at all")
        if not self.audio and not (self.video and self.video.packets):
            raise Damage("decode_error", "decodes to nothing: no audio or video")
        notes = [note for a in self.audio if a.flac for note in a.flac.verify(a.samples)]
        if expected is not None:
            tolerance = max(LENGTH_TOLERANCE_SECONDS, LENGTH_TOLERANCE_FRACTION * expected)
            if abs(self.seconds - expected) > tolerance:
                raise Damage("duration_mismatch", f"decodes to {self.seconds:.2f} s but its structure "
                                                  f"says {expected:.2f} s")
        return notes


# The FFmpeg demuxer of each format the quick check recognises: naming it skips FFmpeg's
# own format probing, which reads the file's start again (for MP3, scanning its frames).
DEMUXERS = {"mp3": "mp3", "flac": "flac", "ogg": "ogg", "mp4": "mov", "wav": "wav", "aiff": "aiff"}
# FFmpeg's WAV demuxer probes 16-bit PCM data for compressed audio carried as PCM (AC-3
# or DTS in S/PDIF bursts, libavformat/wavdec.c): over up to 32 packets, running every
# demuxer's probe again each time its buffer doubles, which costs several times the
# decode. With a probe size below one packet, the probe of the first packet is the last.
DEMUXER_OPTIONS = {"wav": {"probesize": "32"}}


def _decode(av, path, fmt: str | None, decode_video: bool) -> _Decoded:
    """Decode the audio here and the video tracks in a thread beside it, each from its own
    demuxer: the audio's skips the video's bytes, and the two run at once, mostly inside
    FFmpeg, which releases the GIL."""
    with _open(av, path, fmt) as container:
        video = _video_streams(av, container)
        if not video:
            return _Decoded(_decode_audio(av, container))
        for stream in video:
            stream.discard = av.stream.Discard.all
        stop = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="poold-deep-video") as beside:  # its exit joins the thread
            video_job = beside.submit(_demux_video, av, path, fmt, decode_video, stop)
            try:
                audio = _decode_audio(av, container)
            except BaseException:
                stop.set()  # the audio's verdict stands: end the video's demux early
                raise
            return _Decoded(audio, video_job.result())


def _opened_path(src: Source) -> str:
    """A name FFmpeg opens the very file ``src`` holds by: on Linux its /proc/self/fd
    link, which opens that inode again even if the path has been replaced meanwhile (by
    a named pipe, which would block FFmpeg's open forever); elsewhere the path itself."""
    by_fd = f"/proc/self/fd/{src.fileno()}"
    return by_fd if os.path.exists(by_fd) else src.path


def _open(av, path, fmt: str | None):
    """Open ``path`` in FFmpeg. Tags are never read by the deep check, and many are not
    the UTF-8 PyAV expects (Latin-1 ID3 frames, Serato's binary MP4 atoms): PyAV is
    told to drop undecodable bytes rather than fail the open."""
    try:
        return av.open(str(path), format=DEMUXERS.get(fmt),
                       options={**DEMUXER_OPTIONS.get(fmt, {}), **skip_leading_tags(path)}, metadata_errors="ignore")
    except av.error.FFmpegError as exc:  # its str() names the path FFmpeg was given, /proc/self/fd/N
        raise _Undecodable(f"FFmpeg could not open it: {_ffmpeg_message(exc)}") from exc


def _video_streams(av, container) -> list:
    """The video tracks, not the cover art FFmpeg also lists as video."""
    return [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]


def _strict_decoder(stream, threads: bool) -> None:
    stream.codec_context.options = dict(STRICT_DECODING)
    if threads:
        stream.thread_type = "AUTO"  # frame threads where the codec has them: FLAC, ALAC, H.264


def _cores_to_spare() -> bool:
    """Whether FFmpeg's frame threads may take another core for the audio: not in a
    worker process of the scan's pool, where every core already checks a file of its
    own. There the threads only contend: on a 2-core machine with the other core busy,
    FLAC and ALAC decode 10-30% slower with them; on an idle one, about 12% faster."""
    return multiprocessing.parent_process() is None


def _decode_audio(av, container) -> list[_AudioTally]:
    audio = list(container.streams.audio)
    for stream in audio:
        if stream.codec_context is None:  # FFmpeg knows the stream, not its codec: nothing to decode with
            raise _Undecodable(f"FFmpeg has no decoder for audio stream {stream.index}")
    tallies = {stream.index: _tally(stream) for stream in audio}
    threads = _cores_to_spare()
    for stream in audio:
        _strict_decoder(stream, threads)
    if len(audio) == 1:  # most files: no dispatch per packet
        _demux(av, container, audio, tallies[audio[0].index].decode)
    elif audio:  # demux() without streams would demux them all
        _demux(av, container, audio, lambda packet: tallies[packet.stream.index].decode(packet))
    return list(tallies.values())


def _demux_video(av, path, fmt: str | None, decode_video: bool, stop: threading.Event) -> _VideoTally:
    """Every video packet must be readable, so the video is demuxed even when not decoded."""
    with _open(av, path, fmt) as container:
        video = _video_streams(av, container)
        for stream in container.streams.audio:
            stream.discard = av.stream.Discard.all
        for stream in video if decode_video else []:
            _strict_decoder(stream, threads=True)  # tens of seconds per music video: worth any core
        tally = _VideoTally(decode_video)
        _demux(av, container, video, tally.add, stop)
        tally.finish(video)
        return tally


def _demux(av, container, streams: list, handle, stop: threading.Event | None = None) -> None:
    """Pass every packet of ``streams`` to ``handle``; FFmpeg's errors become verdicts."""
    packet = None  # the position string is built only for an error message: it is costly per packet
    try:
        # PyAV ends the demux with an empty packet per stream, which flushes its decoder.
        for packet in container.demux(*streams):
            if packet.is_corrupt:
                raise Damage("decode_error", f"the container marks the packet at {_where(packet)} as corrupt")
            handle(packet)
            if stop is not None and stop.is_set():
                return
    except _data_errors(av) as exc:
        raise Damage("decode_error", f"decoding failed at {_where(packet)}: {_ffmpeg_message(exc)}") from exc
    except av.error.FFmpegError as exc:
        raise _Undecodable(f"FFmpeg could not decode it at {_where(packet)}: {_ffmpeg_message(exc)}") from exc


def _tally(stream) -> _AudioTally:
    context = stream.codec_context
    flac = _FlacStreamInfo.parse(context.extradata) if context.name == "flac" else None
    return _AudioTally(stream.index, context.name, context.sample_rate or 0, flac=flac)


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


def _flac_md5_bytes(frame, bits: int) -> memoryview | bytearray:
    """The frame's samples laid out as FLAC's MD5 wants them (see _FlacStreamInfo)."""
    width = frame.format.bytes  # 2 (s16) or 4 (s32)
    channels = len(frame.layout.channels)
    count = frame.samples * (1 if frame.format.is_planar else channels)
    planes = [memoryview(plane)[:count * width] for plane in frame.planes]  # views: no copy
    packed = planes[0] if len(planes) == 1 else _interleave(planes, width)
    keep = (bits + 7) // 8
    if keep == width:
        return packed
    # Left-justified: the sample's own bytes are the top ``keep`` of each little-endian word.
    out = bytearray(len(packed) // width * keep)
    for i in range(keep):
        out[i::keep] = packed[width - keep + i::width]
    return out


def _interleave(planes: list[memoryview], width: int) -> bytearray:
    out = bytearray(len(planes[0]) * len(planes))
    stride = width * len(planes)
    for channel, plane in enumerate(planes):
        for byte in range(width):
            out[channel * width + byte::stride] = plane[byte::width]
    return out
