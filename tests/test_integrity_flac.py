"""The native FLAC check on real encoded files: intact variants pass, every kind of damage is caught."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess

import pytest
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, TIT2

import media
from poold.integrity import check_file, flac
from poold.integrity.base import CORRUPT, OK
from poold.integrity.crc import crc8, crc16, crc16_step, crc32_ogg

DAMAGE = {"truncated", "zero_filled", "bad_structure", "crc_mismatch", "trailing_data"}


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> path of one intact file, encoded once for the module."""
    folder = tmp_path_factory.mktemp("flac")
    made = {
        "mono48k_30s": media.make(folder / "mono48k_30s.flac", "flac", seconds=30, rate=48000, channels=1),
        "stereo44k_1s": media.make(folder / "stereo44k_1s.flac", "flac", seconds=1),
        "mono48k_1s": media.make(folder / "mono48k_1s.flac", "flac", seconds=1, rate=48000, channels=1),
    }
    base = made["stereo44k_1s"]
    made["picture"] = _with_picture(base, folder / "picture.flac")
    made["id3v1"] = _with_id3v1(base, folder / "id3v1.flac")
    made["id3v2"] = _with_id3v2(base, folder / "id3v2.flac")
    return made


def _with_picture(source, target):
    """200 KB PICTURE block plus Vorbis comments, written by mutagen."""
    shutil.copyfile(source, target)
    tagged = FLAC(target)
    picture = Picture()
    picture.type, picture.mime, picture.desc = 3, "image/jpeg", "cover"
    picture.width = picture.height = 1000
    picture.depth = 24
    picture.data = random.Random(1).randbytes(200 * 1024)
    tagged.add_picture(picture)
    tagged["album"], tagged["genre"] = "Club Hits", "House"
    tagged.save()
    return str(target)


def _with_id3v1(source, target):
    shutil.copyfile(source, target)
    tag = b"TAG" + b"Title".ljust(30, b"\0") + b"Artist".ljust(30, b"\0") + bytes(30) + b"2024" + bytes(30) + b"\x0c"
    with open(target, "ab") as handle:
        handle.write(tag)
    return str(target)


def _with_id3v2(source, target):
    shutil.copyfile(source, target)
    tag = ID3()
    tag.add(TIT2(encoding=3, text="Title"))
    tag.save(target)
    return str(target)


def audio_start(path) -> int:
    """Where the frames begin: past the ID3v2 tag, the marker and every metadata block."""
    with open(path, "rb") as handle:
        data = handle.read()
    offset = data.index(b"fLaC") + 4
    while True:
        header = data[offset:offset + 4]
        offset += 4 + int.from_bytes(header[1:], "big")
        if header[0] & 0x80:
            return offset


def frame_boundary(path, fraction) -> int:
    """The start of the first frame at or after ``fraction`` of the file."""
    with open(path, "rb") as handle:
        data = handle.read()
    pos = int(len(data) * fraction)
    while True:
        pos = data.index(b"\xff\xf8", pos + 1)
        if flac.parse_frame_header(data[pos:pos + flac.MAX_FRAME_HEADER]) is not None:
            return pos


def verdict(path):
    return check_file(path)


# --- intact files --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mono48k_30s", "stereo44k_1s", "mono48k_1s", "picture", "id3v1", "id3v2"])
def test_intact_files_pass(files, name):
    result = verdict(files[name])
    assert result.status == OK, result
    assert result.format == "flac"


@pytest.mark.parametrize("name, seconds", [("mono48k_30s", 30.0), ("stereo44k_1s", 1.0), ("picture", 1.0)])
def test_duration_from_streaminfo(files, name, seconds):
    assert verdict(files[name]).duration == pytest.approx(seconds)


def test_sniff_sees_marker_behind_id3v2(files):
    with open(files["id3v2"], "rb") as handle:
        head = handle.read(65536)
    assert head.startswith(b"ID3")
    assert flac.sniff(head)
    assert not flac.sniff(b"ID3" + bytes(60))


# --- truncation, zeros, junk ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["mono48k_30s", "stereo44k_1s", "picture", "id3v2"])
@pytest.mark.parametrize("fraction", [0.99, 0.9, 0.5, 0.1, 0.01])
def test_truncation_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.truncate(path, fraction)
    result = verdict(path)
    assert result.status == CORRUPT, result
    assert result.reason == "truncated", result


@pytest.mark.parametrize("name", ["mono48k_30s", "stereo44k_1s", "picture"])
def test_metadata_alone_is_truncated(copy_of, name):
    path = copy_of(name)
    os.truncate(path, audio_start(path))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "truncated"), result
    assert "only the FLAC metadata" in result.detail


def test_cut_inside_picture_block_is_truncated(copy_of):
    path = copy_of("picture")
    os.truncate(path, 120 * 1024)
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "truncated"), result
    assert "metadata block" in result.detail


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_cut_at_a_frame_boundary_falls_short_of_streaminfo(copy_of, fraction):
    path = copy_of("mono48k_30s")
    os.truncate(path, frame_boundary(path, fraction))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "truncated"), result
    assert "complete frame" in result.detail


@pytest.mark.parametrize("name", ["mono48k_30s", "stereo44k_1s", "picture", "id3v1"])
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_zero_filled_tail_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.zero_tail(path, fraction)
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "zero_filled"), result


def test_zeros_appended_after_the_final_frame_are_padding(copy_of):
    """The final frame is whole (its samples reach STREAMINFO's total, its subframes end
    where its CRC-16 closes): zeros after it are padding, not damage."""
    path = copy_of("stereo44k_1s")
    with open(path, "ab") as handle:
        handle.write(bytes(4096))
    result = verdict(path)
    assert result.status == OK, result
    assert "4,096 zero bytes of padding" in result.detail


def test_zeros_after_a_complete_frame_that_is_not_the_final_one(copy_of):
    """A zero fill that starts exactly at a frame boundary leaves whole frames before it,
    but not the final one: the stream is missing frames."""
    path = copy_of("mono48k_30s")
    boundary = frame_boundary(path, 0.9)
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.seek(boundary)
        handle.write(bytes(size - boundary))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "zero_filled"), result


def test_zeros_after_the_last_frame_without_a_total_are_zero_filled(copy_of):
    """With STREAMINFO's total unknown (0), nothing proves the last frame is the final one."""
    path = copy_of("stereo44k_1s")
    with open(path, "r+b") as handle:
        data = bytearray(handle.read())
        at = data.index(b"fLaC") + 4 + 4 + 13  # STREAMINFO's 36-bit total: low 4 bits of byte 13, bytes 14-17
        data[at] &= 0xF0
        data[at + 1:at + 5] = bytes(4)
        handle.seek(0)
        handle.write(data + bytes(4096))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "zero_filled"), result


@pytest.mark.parametrize("junk", [700, 3, 20_000])
def test_junk_after_the_final_frame_is_trailing_data(copy_of, junk):
    path = copy_of("mono48k_30s")
    size = os.path.getsize(path)
    with open(path, "ab") as handle:
        handle.write(random.Random(2).randbytes(junk))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "trailing_data"), result
    assert f"{junk:,} bytes" in result.detail and f"from byte {size:,}" in result.detail


def _final_frame(path) -> tuple[int, int]:
    """(offset, length) of the final frame of an intact file, found by walking every frame."""
    data = open(path, "rb").read()
    pos = audio_start(path)
    info = flac.parse_streaminfo(data[data.index(b"fLaC") + 8:][:flac.STREAMINFO_SIZE])
    while True:
        frame = flac.parse_frame_header(data[pos:pos + flac.MAX_FRAME_HEADER], pos)
        length = flac.frame_length(data, pos, frame, info)
        if pos + length == len(data):
            return pos, length
        pos += length


@pytest.fixture(scope="module")
def chance_close(tmp_path_factory):
    """A file whose final frame's running CRC-16 passes through zero before the frame
    ends (a 1 in 65,536 chance per byte): a cut after that point looks, by the CRC
    alone, like a complete frame followed by junk. Returns (path, where it closes)."""
    folder = tmp_path_factory.mktemp("chance")
    for seed in (4, 15, 22, 27, *range(30, 60)):
        path = media.make(folder / f"seed{seed}.flac", "flac", seconds=1, seed=seed)
        offset, length = _final_frame(path)
        data = open(path, "rb").read()[offset:offset + length - 2]
        running = 0
        for index, byte in enumerate(data):
            running = crc16_step(running, byte)
            if running == 0 and index >= flac.MAX_FRAME_HEADER:
                return path, offset + index + 1
    pytest.skip("no encoded file has a chance CRC-16 close in its final frame (the encoder changed)")


def test_final_frame_cut_after_a_chance_crc_close_is_truncated(chance_close, tmp_path):
    path, closes_at = chance_close
    data = open(path, "rb").read()
    for short in [10, 11, 250, 999, 2000, len(data) - closes_at - 1]:
        if len(data) - short <= closes_at:
            continue
        cut = tmp_path / "cut.flac"
        cut.write_bytes(data[:len(data) - short])
        result = verdict(cut)
        assert (result.status, result.reason) == (CORRUPT, "truncated"), (short, result)


@pytest.mark.parametrize("name", ["mono48k_30s", "stereo44k_1s", "mono48k_1s"])
def test_frame_length_walks_every_frame(files, name):
    """Following the subframes from each header lands exactly on the next header, and the
    CRC-16 closes there: the walk the end-of-stream diagnosis relies on."""
    path = files[name]
    data = open(path, "rb").read()
    info = flac.parse_streaminfo(data[data.index(b"fLaC") + 8:][:flac.STREAMINFO_SIZE])
    pos, frames = audio_start(path), 0
    while pos < len(data):
        frame = flac.parse_frame_header(data[pos:pos + flac.MAX_FRAME_HEADER], pos)
        assert frame is not None, pos
        length = flac.frame_length(data, pos, frame, info)
        assert crc16(data[pos:pos + length]) == 0
        pos, frames = pos + length, frames + 1
    assert pos == len(data) and frames > 5
    with pytest.raises(flac.FrameCut):
        flac.frame_length(data[:-1], frame.offset, frame, info)


def test_damaged_final_frame_fails_its_crc16(copy_of):
    path = copy_of("mono48k_30s")
    with open(path, "r+b") as handle:
        handle.seek(-40, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-40, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0x20]))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "crc_mismatch"), result


def test_damaged_first_frame_header(copy_of):
    path = copy_of("stereo44k_1s")
    start = audio_start(path)
    with open(path, "r+b") as handle:
        handle.seek(start + 2)
        byte = handle.read(1)
        handle.seek(start + 2)
        handle.write(bytes([byte[0] ^ 0x01]))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "bad_structure"), result


def test_a_million_metadata_blocks_are_beyond_the_check(files, tmp_path):
    """Empty PADDING blocks one after another: a hostile file, unchecked, never walked for seconds."""
    data = open(files["stereo44k_1s"], "rb").read()
    streaminfo = bytearray(data[4:42])
    was_last = streaminfo[0] & 0x80
    streaminfo[0] &= 0x7F
    padding = b"\x01\x00\x00\x00" * 1_000_000
    if was_last:
        padding = padding[:-4] + b"\x81\x00\x00\x00"
    path = tmp_path / "blocks.flac"
    path.write_bytes(b"fLaC" + bytes(streaminfo) + padding + data[42:])
    result = verdict(path)
    assert (result.status, result.reason) == ("unchecked", "check_limit"), result


# --- garbage and absurd headers ----------------------------------------------------------------

STREAMINFO_HEADER = bytes([0x00, 0, 0, 34])


@pytest.mark.parametrize("data", [
    b"fLaC" + b"\x00\x00\x00\x22\x10",  # 13 bytes: the file ends inside STREAMINFO
    b"fLaC" + STREAMINFO_HEADER + bytes(34),  # STREAMINFO not flagged last, then nothing
    b"fLaC" + bytes([0x80, 0xFF, 0xFF, 0xFF]) + bytes(30),  # a 16 MiB STREAMINFO claim
    b"fLaC" + bytes([0x7F, 0, 0, 4]) + bytes(4),  # forbidden block type 127
], ids=["13_bytes", "no_last_block", "absurd_length", "type_127"])
def test_broken_metadata_is_corrupt_without_crashing(tmp_path, data):
    path = tmp_path / "broken.flac"
    path.write_bytes(data)
    result = verdict(path)
    assert result.status == CORRUPT and result.reason in DAMAGE, result


def _streaminfo(max_block=65535, max_frame=0, rate=48000, channels=8, bits=32, total=1 << 35) -> bytes:
    packed = (rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | total
    return struct.pack(">HH", 16, max_block) + (0).to_bytes(3, "big") + max_frame.to_bytes(3, "big") \
        + packed.to_bytes(8, "big") + bytes(16)


@pytest.mark.parametrize("tail", [
    random.Random(3).randbytes(300_000),
    b"\xff\xf8" * 50_000,  # sync codes everywhere, none a valid frame
    bytes(100_000),
], ids=["random", "sync_codes", "zeros"])
def test_garbage_after_valid_metadata(tmp_path, tail):
    path = tmp_path / "garbage.flac"
    path.write_bytes(b"fLaC" + bytes([0x80, 0, 0, 34]) + _streaminfo() + tail)
    result = verdict(path)
    assert result.status == CORRUPT and result.reason in DAMAGE, result


def _frame(code_bytes: bytes, variable: bool = False, block_code: int = 1, stored_size: bytes = b"") -> bytes:
    """One mono 16-bit 8 kHz frame with a constant subframe, its CRCs computed here."""
    header = bytes([0xFF, 0xF9 if variable else 0xF8, (block_code << 4) | 4, 0x08]) + code_bytes + stored_size
    body = header + bytes([crc8(header)]) + b"\x00\x12\x34"  # constant subframe, value 0x1234
    return body + crc16(body).to_bytes(2, "big")


def _fabricated(tmp_path, frames: bytes, total: int, max_block: int = 192):
    path = tmp_path / "made.flac"
    info = _streaminfo(max_block=max_block, rate=8000, channels=1, bits=16, total=total)
    path.write_bytes(b"fLaC" + bytes([0x80, 0, 0, 34]) + info + frames)
    return path


def test_fabricated_fixed_block_stream_passes(tmp_path):
    frames = _frame(b"\x00") + _frame(b"\x01", block_code=6, stored_size=bytes([99]))
    result = verdict(_fabricated(tmp_path, frames, total=292))
    assert result.status == OK, result
    assert result.duration == pytest.approx(292 / 8000)


def test_fabricated_variable_block_stream_passes(tmp_path):
    """Variable block size: the coded number is the first sample (192 = UTF-8-style C3 80)."""
    frames = _frame(b"\x00", variable=True) + _frame(b"\xc3\x80", variable=True, block_code=6,
                                                      stored_size=bytes([99]))
    assert verdict(_fabricated(tmp_path, frames, total=292)).status == OK


@pytest.mark.parametrize("total", [400, 200])
def test_fabricated_stream_disagreeing_with_streaminfo(tmp_path, total):
    frames = _frame(b"\x00", variable=True) + _frame(b"\xc3\x80", variable=True, block_code=6,
                                                      stored_size=bytes([99]))
    result = verdict(_fabricated(tmp_path, frames, total=total))
    assert (result.status, result.reason) == (CORRUPT, "truncated" if total > 292 else "bad_structure"), result


@pytest.mark.skipif(shutil.which("flac") is None, reason="the reference encoder (flac) is not installed")
def test_reference_encoder_output_passes(tmp_path):
    wav = media.make(tmp_path / "source.wav", "wav", seconds=3, rate=48000, channels=1)
    target = tmp_path / "reference.flac"
    subprocess.run(["flac", "--silent", "--force", "-o", str(target), wav], check=True)
    result = verdict(target)
    assert result.status == OK, result
    assert result.duration == pytest.approx(3.0)
    media.truncate(str(target), 0.9)
    assert verdict(target).reason == "truncated"


# --- the checksums ---------------------------------------------------------------------------

def _bitwise_crc(data: bytes, poly: int, width: int) -> int:
    crc, top, mask = 0, 1 << (width - 1), (1 << width) - 1
    for byte in data:
        crc ^= byte << (width - 8)
        for _ in range(8):
            crc = (((crc << 1) ^ poly) if crc & top else (crc << 1)) & mask
    return crc


@pytest.mark.parametrize("length", [0, 1, 2, 7, 64, 1001])
def test_crcs_match_a_bitwise_reference(length):
    data = random.Random(length).randbytes(length)
    assert crc8(data) == _bitwise_crc(data, 0x07, 8)
    assert crc16(data) == _bitwise_crc(data, 0x8005, 16)
    assert crc32_ogg(data) == _bitwise_crc(data, 0x04C11DB7, 32)
    running = 0
    for byte in data:
        running = crc16_step(running, byte)
    assert running == crc16(data)


# --- where a frame ends ----------------------------------------------------------------------

def test_frame_length_of_fabricated_frames():
    info = flac.parse_streaminfo(_streaminfo(max_block=192, rate=8000, channels=1, bits=16, total=192))
    whole = _frame(b"\x00")
    frame = flac.parse_frame_header(whole)
    assert flac.frame_length(whole, 0, frame, info) == len(whole)
    reserved = bytearray(whole)
    reserved[frame.header_size] = 0b0_000010_0  # subframe type 000010 is reserved (RFC 9639 9.2.1)
    with pytest.raises(flac.FrameInvalid):
        flac.frame_length(bytes(reserved), 0, frame, info)
    with pytest.raises(flac.FrameCut):
        flac.frame_length(whole[:-1], 0, frame, info)
