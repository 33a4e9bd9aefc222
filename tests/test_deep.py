"""Deep mode: real encoded files decode clean; flipped bytes in the audio data are caught."""

from __future__ import annotations

import os
import random
import shutil
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction

import av
import numpy as np
import pytest

import media
from poold.integrity import base, check_file, crc, deep
from poold.integrity.deep import DeepUnavailable, deep_check

# Formats whose checksums cover the coded audio, so any flip must be caught.
CHECKSUMMED = ("flac", "ogg", "opus", "ogg_flac", "mp3", "mp3_vbr", "mp3_id3v1")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """made(kind, **make_args) -> path of a real file, encoded once per module."""
    folder = tmp_path_factory.mktemp("deep")
    cache = {}

    def get(kind: str, **args) -> str:
        key = (kind, tuple(sorted(args.items())))
        if key not in cache:
            name = "_".join([kind] + [f"{k}{v}" for k, v in sorted(args.items())])
            cache[key] = media.make(folder / f"{name}{media.extension(kind)}", kind, seconds=2.0, **args)
        return cache[key]

    return get


@pytest.fixture
def copy_of(made, tmp_path):
    def copy(kind: str, **args) -> str:
        source = made(kind, **args)
        target = tmp_path / os.path.basename(source)
        shutil.copyfile(source, target)
        return str(target)

    return copy


def flip_bytes(path: str, count: int, seed: int = 0) -> None:
    """Invert one bit in each of ``count`` bytes between 35% and 65% of the file,
    inside the audio data of every kind tested here; the size stays the same."""
    size = os.path.getsize(path)
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for offset in rng.sample(range(int(size * 0.35), int(size * 0.65)), count):
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ (1 << rng.randrange(8))]))


@pytest.mark.parametrize("kind", media.ALL_KINDS)
def test_intact_files_pass(made, kind):
    verdict = deep_check(made(kind))
    assert verdict.status == base.OK, verdict
    assert verdict.detail.startswith("decoded fully")


@pytest.mark.parametrize("kind,args", [
    ("flac", {"channels": 1}), ("flac", {"rate": 48000}), ("mp3", {"channels": 1}),
    ("mp3_vbr", {"rate": 48000}), ("ogg", {"rate": 48000}), ("opus", {"channels": 1}),
    ("m4a", {"rate": 48000}), ("mp3", {"rate": 22050}),
])
def test_intact_variants_pass(made, kind, args):
    verdict = deep_check(made(kind, **args))
    assert verdict.status == base.OK, verdict


def test_checksums_are_verified_on_intact_files(made):
    assert "FLAC MD5 verified" in deep_check(made("flac")).detail
    assert "LAME music CRC verified" in deep_check(made("mp3")).detail
    assert "LAME music CRC verified" in deep_check(made("mp3", channels=1)).detail
    assert "Ogg pages verified" in deep_check(made("opus")).detail


@pytest.mark.parametrize("count", [1, 100])
@pytest.mark.parametrize("kind", CHECKSUMMED)
@pytest.mark.parametrize("seed", [0, 1])
def test_flipped_bytes_are_caught(copy_of, kind, count, seed):
    path = copy_of(kind)
    size = os.path.getsize(path)
    flip_bytes(path, count, seed)
    assert os.path.getsize(path) == size
    verdict = deep_check(path)
    assert verdict.status == base.CORRUPT, verdict


def test_quick_verdict_is_returned_when_not_ok(copy_of):
    path = copy_of("flac")
    media.truncate(path, 0.5)
    assert deep_check(path) == check_file(path)


def test_video_can_be_decoded_too(made):
    verdict = deep_check(made("mp4"), decode_video=True)
    assert verdict.status == base.OK, verdict
    assert "frames decoded" in verdict.detail


# --- the video is demuxed in a thread beside the audio decode ---

def video_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("poold-deep-video")]


def test_video_packets_are_demuxed_beside_the_audio(made):
    verdict = deep_check(made("mp4"))
    assert verdict.status == base.OK, verdict
    assert "aac" in verdict.detail and "video" in verdict.detail and "packets demuxed" in verdict.detail
    assert not video_threads()


@pytest.mark.parametrize("error,expected", [
    (base.Damage("decode_error", "a video packet is corrupt"), (base.CORRUPT, "decode_error")),
    (OSError(5, "Input/output error"), (base.UNCHECKED, "check_error")),
])
def test_a_failure_in_the_video_thread_is_the_verdict(made, monkeypatch, error, expected):
    def failing(*_args):
        raise error

    monkeypatch.setattr(deep, "_demux_video", failing)
    verdict = deep_check(made("mp4"))
    assert (verdict.status, verdict.reason) == expected, verdict
    assert not video_threads()


def test_damaged_audio_stops_and_joins_the_video_thread(made, monkeypatch):
    """The audio's verdict stands; the video thread is told to stop and is gone when it returns."""
    seen = {}
    real_demux_video = deep._demux_video

    def watched(av, path, fmt, decode_video, stop):
        seen["stop"] = stop
        result = real_demux_video(av, path, fmt, decode_video, stop)
        seen["finished"] = True
        return result

    def damaged_audio(_av, _container):
        raise base.Damage("decode_error", "decoding failed at 1.00 s (audio stream 1): Invalid data")

    monkeypatch.setattr(deep, "_demux_video", watched)
    monkeypatch.setattr(deep, "_decode_audio", damaged_audio)
    verdict = deep_check(made("mp4"))
    assert (verdict.status, verdict.reason) == (base.CORRUPT, "decode_error"), verdict
    assert seen["stop"].is_set() and seen.get("finished")
    assert not video_threads()


def test_cut_video_is_caught_without_the_quick_check(copy_of, monkeypatch):
    """With the index first, cutting the file loses the last packets of both tracks."""
    path = copy_of("mp4_faststart")
    intact = check_file(path)
    media.truncate(path, 0.9)
    monkeypatch.setattr(deep, "check_file", lambda _path: intact)
    verdict = deep_check(path)
    assert verdict.status == base.CORRUPT, verdict
    assert not video_threads()


def test_frame_threads_are_left_to_the_scan_in_its_worker_processes():
    assert deep._cores_to_spare()
    with ProcessPoolExecutor(1) as pool:
        assert not pool.submit(deep._cores_to_spare).result()


def test_length_is_compared_with_the_quick_check(made, monkeypatch):
    path = made("m4a")
    claimed = base.Verdict(base.OK, "ok", "stub", "mp4", 10.0)
    monkeypatch.setattr(deep, "check_file", lambda _path: claimed)
    verdict = deep_check(path)
    assert (verdict.status, verdict.reason) == (base.CORRUPT, "duration_mismatch"), verdict


def test_decoding_to_nothing_is_damage():
    silent = deep._Decoded(audio=[deep._AudioTally(0, "mp3float", 44100)])
    with pytest.raises(base.Damage, match="decodes to nothing"):
        silent.verify(None)


def test_missing_pyav_is_reported(made, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(DeepUnavailable, match=r"pip install 'poold\[deep\]'"):
        deep_check(made("mp3"))


def test_gain_rewritten_mp3_is_not_judged_by_its_music_crc(copy_of):
    """MP3Gain rewrites frames without updating the LAME CRC and leaves its undo record."""
    from mutagen.apev2 import APEv2

    path = copy_of("mp3")
    flip_bytes(path, 1, seed=3)  # a frame changed, as a gain tool would
    tag = APEv2()
    tag["MP3GAIN_UNDO"] = "+001,+001,N"
    tag.save(path)
    verdict = deep_check(path)
    assert verdict.status == base.OK, verdict
    assert "not verified" in verdict.detail


def test_lame_crc_is_found_behind_undeclared_padding(copy_of):
    """Zero bytes between the ID3v2 tag and the first frame, which players skip."""
    path = copy_of("mp3")
    data = open(path, "rb").read()
    frames = 10 + int.from_bytes(data[6:10], "big")  # ID3v2 header + body (no footer)
    with open(path, "wb") as f:
        f.write(data[:frames] + bytes(300) + data[frames:])
    assert "LAME music CRC verified" in deep_check(path).detail
    flip_bytes(path, 1)
    assert deep_check(path).reason == "crc_mismatch"


# --- 24-bit FLAC: the MD5 is over 3-byte samples, FFmpeg decodes to 4-byte ones ---

def make_flac_24(path: str, seconds: float = 1.0, rate: int = 48000) -> str:
    rng = np.random.default_rng(7)
    with av.open(path, "w") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout, stream.format = "stereo", "s32"
        step = 4096
        for start in range(0, int(seconds * rate), step):
            samples = (rng.integers(-2**20, 2**20, (1, 2 * step)) << 8).astype(np.int32)
            frame = av.AudioFrame.from_ndarray(samples, format="s32", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_flac_24_bit_md5(tmp_path):
    path = make_flac_24(str(tmp_path / "deep24.flac"))
    verdict = deep_check(path)
    assert verdict.status == base.OK and "FLAC MD5 verified" in verdict.detail, verdict
    flip_bytes(path, 1)
    assert deep_check(path).status == base.CORRUPT


# --- the CRC-16/ARC helper against a bit-by-bit reference ---

def reference_crc16_arc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 64, 1000, 5000, 32_767, 32_768, 100_000])
def test_crc16_arc_matches_reference(size):
    data = random.Random(size).randbytes(size)
    assert crc.crc16_arc([data]) == reference_crc16_arc(data)
    assert crc.crc16_arc([data[:size // 3], data[size // 3:]]) == reference_crc16_arc(data)
    assert crc.crc16_arc([b"123456789"]) == 0xBB3D  # the catalogued check value of CRC-16/ARC


def test_x_to_the_period_is_one_modulo_the_crc16_polynomial():
    """What lets crc.poly16_extend XOR 32,767-byte blocks together: x^(2^15) = x (mod P),
    computed by repeated squaring alone."""
    assert crc._x_pow_2k(15) == 2


def test_crc16_arc_streams_across_chunks(tmp_path, monkeypatch):
    data = random.Random(1).randbytes(10_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    monkeypatch.setattr(deep, "CHUNK", 777)
    with base.Source(path) as src:
        assert deep.crc16_arc_of(src, 5, 9_990) == reference_crc16_arc(data[5:9_990])


@pytest.mark.parametrize("size", [32_766, 32_767, 32_768, 100_000])
def test_flac_crc16_matches_reference_across_the_period(size):
    data = random.Random(size).randbytes(size)
    assert crc.crc16(data) == reference_crc16(data)


def reference_crc16(data: bytes) -> int:
    """FLAC's CRC-16 (RFC 9639 section 9.3) bit by bit: polynomial 0x8005, MSB first."""
    value = 0
    for byte in data:
        value ^= byte << 8
        for _ in range(8):
            value = ((value << 1) ^ 0x8005) & 0xFFFF if value & 0x8000 else (value << 1) & 0xFFFF
    return value


# --- Ogg pages are read a chunk at a time ---

def test_ogg_pages_are_verified_across_chunk_boundaries(copy_of, monkeypatch):
    path = copy_of("ogg")
    whole = deep_check(path).detail
    monkeypatch.setattr(deep, "CHUNK", deep.OGG_MAX_PAGE)  # the smallest chunk that holds any page
    assert deep_check(path).detail == whole
    flip_bytes(path, 1)
    assert deep_check(path).reason == "crc_mismatch"


def test_ogg_page_crc_helper_agrees_with_crc32_ogg():
    page = bytearray(random.Random(3).randbytes(5000))
    page[22:26] = crc.crc32_ogg(bytes(page[:22]) + bytes(4) + bytes(page[26:])).to_bytes(4, "little")
    assert crc.ogg_page_crc_matches(bytes(page).translate(crc.BIT_REVERSED))
    page[4000] ^= 0x10
    assert not crc.ogg_page_crc_matches(bytes(page).translate(crc.BIT_REVERSED))
