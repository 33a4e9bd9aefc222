"""Deep mode: real encoded files decode clean; flipped bytes in the audio data are caught."""

from __future__ import annotations

import os
import random
import shutil
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

import media
from poold.integrity import base, check_file, deep
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


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 64, 1000, 5000])
def test_crc16_arc_matches_reference(size):
    data = random.Random(size).randbytes(size)
    assert deep._crc16_arc(data) == reference_crc16_arc(data)
    assert deep._crc16_arc(b"123456789") == 0xBB3D  # the catalogued check value of CRC-16/ARC


def test_crc16_arc_streams_across_chunks(tmp_path, monkeypatch):
    data = random.Random(1).randbytes(10_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    monkeypatch.setattr(deep, "CHUNK", 777)
    with base.Source(path) as src:
        assert deep.crc16_arc_of(src, 5, 9_990) == reference_crc16_arc(data[5:9_990])
