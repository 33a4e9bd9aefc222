"""Real media files for tests and benchmarks, encoded by FFmpeg through PyAV.

``make(path, kind)`` writes one file of a named kind (see :data:`KINDS`). The signal
is a tone plus noise, so encoders produce realistic, well-filled frames rather than
the near-empty frames pure silence would give.
"""

from __future__ import annotations

import math
import os
import random
from fractions import Fraction

import av
import numpy as np

# kind -> (container format, extension, codec, container options, codec options/settings)
KINDS = {
    "mp3": ("mp3", ".mp3", "libmp3lame", {}, {"bit_rate": 128000}),
    "mp3_vbr": ("mp3", ".mp3", "libmp3lame", {}, {"qscale": 4}),
    "mp3_noxing": ("mp3", ".mp3", "libmp3lame", {"write_xing": "0"}, {"bit_rate": 128000}),
    "mp3_vbr_noxing": ("mp3", ".mp3", "libmp3lame", {"write_xing": "0"}, {"qscale": 4}),
    "mp3_id3v1": ("mp3", ".mp3", "libmp3lame", {"write_id3v1": "1"}, {"bit_rate": 128000}),
    "mp3_notag": ("mp3", ".mp3", "libmp3lame", {"id3v2_version": "0"}, {"bit_rate": 128000}),
    "flac": ("flac", ".flac", "flac", {}, {}),
    "m4a": ("ipod", ".m4a", "aac", {}, {"bit_rate": 128000}),
    "m4a_faststart": ("ipod", ".m4a", "aac", {"movflags": "faststart"}, {"bit_rate": 128000}),
    "alac": ("ipod", ".m4a", "alac", {}, {}),
    "ogg": ("ogg", ".ogg", "libvorbis", {}, {}),
    "opus": ("ogg", ".opus", "libopus", {}, {"bit_rate": 96000}),
    "ogg_flac": ("ogg", ".oga", "flac", {}, {}),
    "wav": ("wav", ".wav", "pcm_s16le", {}, {}),
    "aiff": ("aiff", ".aiff", "pcm_s16be", {}, {}),
}
VIDEO_KINDS = {
    "mp4": ("mp4", ".mp4", {}),
    "mp4_faststart": ("mp4", ".mp4", {"movflags": "faststart"}),
    "mov": ("mov", ".mov", {}),
}
ALL_KINDS = tuple(KINDS) + tuple(VIDEO_KINDS)

_ENCODER_FALLBACK = {"libvorbis": "vorbis"}


def extension(kind: str) -> str:
    return KINDS[kind][1] if kind in KINDS else VIDEO_KINDS[kind][1]


def make(path: str | os.PathLike, kind: str, seconds: float = 2.0, rate: int = 44100,
         channels: int = 2, seed: int = 0) -> str:
    """Encode ``seconds`` of sound (and video for video kinds) into ``path``; return the path."""
    path = os.fspath(path)
    if kind in VIDEO_KINDS:
        _make_video(path, kind, seconds, seed)
        return path
    fmt, _ext, codec, mux_options, settings = KINDS[kind]
    if codec == "libopus":
        rate = 48000  # the only rate Opus encodes at
    with av.open(path, "w", format=fmt, options=dict(mux_options)) as out:
        out.metadata.update({"title": f"Test {kind}", "artist": "poold"})
        stream = _audio_stream(out, codec, rate, channels, settings)
        _write_audio(out, stream, seconds, rate, channels, seed)
    return path


def _audio_stream(out, codec: str, rate: int, channels: int, settings: dict):
    try:
        stream = out.add_stream(codec, rate=rate)
    except (ValueError, av.error.FFmpegError):
        stream = out.add_stream(_ENCODER_FALLBACK[codec], rate=rate)
        stream.codec_context.options = {"strict": "experimental"}
    stream.layout = "mono" if channels == 1 else "stereo"
    if "bit_rate" in settings:
        stream.bit_rate = settings["bit_rate"]
    if "qscale" in settings:
        stream.codec_context.qscale = True
        stream.codec_context.global_quality = settings["qscale"] * 118  # FF_QP2LAMBDA
    return stream


def _signal(n: int, start: int, rate: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    t = (np.arange(n) + start) / rate
    tone = 0.3 * np.sin(2 * math.pi * 440 * t) + 0.2 * np.sin(2 * math.pi * 1234.5 * t)
    planes = [tone + 0.15 * rng.standard_normal(n) for _ in range(channels)]
    return np.clip(np.stack(planes), -1, 1).astype(np.float32)


def _write_audio(out, stream, seconds: float, rate: int, channels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    total = int(seconds * rate)
    frame_size = stream.codec_context.frame_size or 1024
    layout = "mono" if channels == 1 else "stereo"
    done = 0
    while done < total:
        n = min(frame_size, total - done)
        frame = av.AudioFrame.from_ndarray(_signal(n, done, rate, channels, rng), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = done
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
        done += n
    for packet in stream.encode(None):
        out.mux(packet)


def _make_video(path: str, kind: str, seconds: float, seed: int) -> None:
    fmt, _ext, mux_options = VIDEO_KINDS[kind]
    rng = random.Random(seed)
    fps = 25
    with av.open(path, "w", format=fmt, options=dict(mux_options)) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = _audio_stream(out, "aac", 44100, 2, {"bit_rate": 96000})
        for i in range(int(seconds * fps)):
            image = np.full((120, 160, 3), (i * 7) % 256, dtype=np.uint8)
            image[rng.randrange(100):, rng.randrange(140):] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        _write_audio(out, audio, seconds, 44100, 2, seed)


# --- corruptions -------------------------------------------------------------------

def truncate(path: str, fraction: float) -> None:
    """Cut the file to ``fraction`` of its size (at least one byte)."""
    size = os.path.getsize(path)
    os.truncate(path, max(1, int(size * fraction)))


def zero_tail(path: str, fraction: float) -> None:
    """Overwrite the last ``fraction`` of the file with zeros, keeping its size (preallocation)."""
    size = os.path.getsize(path)
    n = int(size * fraction)
    with open(path, "r+b") as f:
        f.seek(size - n)
        f.write(b"\0" * n)
