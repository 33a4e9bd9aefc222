"""The WAV (RIFF, RF64, BW64) and AIFF/AIFF-C checkers on real encoded files: intact
variants pass, cuts are caught, zero tails (silence) are not reported, hostile headers
neither crash nor allocate."""

from __future__ import annotations

import os
import random
import shutil
import struct

import av
import mutagen.aiff
import mutagen.id3
import mutagen.wave
import numpy as np
import pytest

import media
from conftest import assert_corrupt
from poold.integrity import aiff, check_file, riff

CUTS = (0.99, 0.9, 0.5, 0.1, 0.01)
ZERO_TAILS = (0.1, 0.5)


# --- fixture making ------------------------------------------------------------------

class Pipe:
    """A write-only target: FFmpeg cannot seek back, so it leaves the sizes unfilled."""

    def __init__(self, path: str):
        self.file = open(path, "wb")

    def write(self, data: bytes) -> int:
        return self.file.write(data)


def encode(path: str, container: str, codec: str, *, rate: int = 44100, channels: int = 2,
           frames: int = 44100, options: dict | None = None, streamed: bool = False) -> None:
    """Encode a tone plus noise with FFmpeg's own muxer, for sample formats media.make lacks."""
    layout = "mono" if channels == 1 else "stereo"
    target = Pipe(path) if streamed else path
    rng = np.random.default_rng(0)
    with av.open(target, "w", format=container, options=options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        for start in range(0, frames, 1024):
            n = min(1024, frames - start)
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(start, start + n) / rate)
            samples = (tone + 0.1 * rng.standard_normal((channels, n))).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    if streamed:
        target.file.close()


def chunks_of(path: str, big_endian: bool) -> list[tuple[bytes, bytes]]:
    """(ID, data) of each chunk in the form, read independently of the checker."""
    with open(path, "rb") as f:
        data = f.read()
    order = ">I" if big_endian else "<I"
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        size = struct.unpack_from(order, data, pos + 4)[0]
        chunks.append((data[pos:pos + 4], data[pos + 8:pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def form(magic: bytes, form_type: bytes, chunks, big_endian: bool = False, size: int | None = None) -> bytes:
    order = ">I" if big_endian else "<I"
    body = b"".join(cid + struct.pack(order, len(data)) + data + b"\0" * (len(data) & 1) for cid, data in chunks)
    return magic + struct.pack(order, 4 + len(body) if size is None else size) + form_type + body


def write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def add_id3(path: str) -> None:
    """An ID3v2 tag in an 'id3 '/'ID3 ' chunk, the way mutagen (and most taggers) write it."""
    tagged = mutagen.wave.WAVE(path) if path.endswith(".wav") else mutagen.aiff.AIFF(path)
    tagged.add_tags()
    tagged.tags.add(mutagen.id3.TIT2(encoding=3, text=["Tagged"]))
    tagged.save()


def id3v1() -> bytes:
    return b"TAG" + b"Appended".ljust(30, b"\0") + bytes(95)


def patch(path: str, offset: int, value: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(value)


def chunk_offset(path: str, chunk_id: bytes) -> int:
    with open(path, "rb") as f:
        return f.read().index(chunk_id, 12)


MADE = {
    # name: (media kind, make() arguments)
    "wav": ("wav", {}), "wav_mono": ("wav", {"channels": 1}), "wav_48k": ("wav", {"rate": 48000}),
    "wav_1s": ("wav", {"seconds": 1.0}), "wav_30s": ("wav", {"seconds": 30.0}),
    "aiff": ("aiff", {}), "aiff_mono": ("aiff", {"channels": 1}), "aiff_48k": ("aiff", {"rate": 48000}),
    "aiff_1s": ("aiff", {"seconds": 1.0}), "aiff_30s": ("aiff", {"seconds": 30.0}),
}
ENCODED = {
    # name: (extension, container, codec, encode() arguments)
    "wav_s24_extensible": (".wav", "wav", "pcm_s24le", {"rate": 48000, "frames": 48000}),
    "wav_float": (".wav", "wav", "pcm_f32le", {}),
    "wav_rf64": (".wav", "wav", "pcm_s16le", {"options": {"rf64": "always"}}),
    "wav_u8_odd": (".wav", "wav", "pcm_u8", {"channels": 1, "frames": 1001}),
    "wav_alaw": (".wav", "wav", "pcm_alaw", {}),
    "wav_ima_adpcm": (".wav", "wav", "adpcm_ima_wav", {}),
    "wav_streamed": (".wav", "wav", "pcm_s16le", {"streamed": True}),
    "aiff_s24": (".aiff", "aiff", "pcm_s24be", {"channels": 1}),
    "aifc_float": (".aifc", "aiff", "pcm_f32be", {"rate": 48000, "frames": 48000}),
    "aifc_sowt": (".aifc", "aiff", "pcm_s16le", {}),
    "aifc_ulaw": (".aifc", "aiff", "pcm_mulaw", {}),
    "aiff_s8_odd": (".aif", "aiff", "pcm_s8", {"channels": 1, "frames": 1001}),
    "aiff_streamed": (".aiff", "aiff", "pcm_s16be", {"streamed": True}),
}


def bw64(made, folder):
    with open(made["wav_rf64"], "rb") as f:
        return write(str(folder / "bw64.wav"), b"BW64" + f.read()[4:])


def streamed_zero_sizes(made, folder):
    chunks = chunks_of(made["wav"], big_endian=False)
    data = form(b"RIFF", b"WAVE", chunks, size=0).replace(
        b"data" + struct.pack("<I", len(chunks[-1][1])), b"data" + struct.pack("<I", 0))
    return write(str(folder / "zero_sizes.wav"), data)


def copy_then(source: str, target: str, post) -> callable:
    def make(made, folder):
        path = str(folder / target)
        shutil.copy(made[source], path)
        post(path)
        return path
    return make


CRAFTED = {
    "wav_bw64": bw64,
    "wav_streamed_zero_sizes": streamed_zero_sizes,
    "wav_id3_chunk": copy_then("wav", "id3.wav", add_id3),
    "wav_id3v1_appended": copy_then("wav", "id3v1.wav", lambda p: append(p, id3v1())),
    "wav_chunk_appended": copy_then("wav", "outside.wav", lambda p: append(p, b"id3 " + struct.pack("<I", 6) + bytes(6))),
    "wav_pad_byte_uncounted": copy_then("wav_u8_odd", "uncounted.wav", lambda p: append(p, b"\0\0\0")),
    "wav_zero_padding": copy_then("wav", "padded.wav", lambda p: append(p, bytes(5000))),
    "aiff_id3_chunk": copy_then("aiff", "id3.aiff", add_id3),
    "aiff_id3v1_appended": copy_then("aiff", "id3v1.aiff", lambda p: append(p, id3v1())),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pcm")
    made = {}
    for name, (kind, arguments) in MADE.items():
        made[name] = media.make(str(folder / f"{name}{media.extension(kind)}"), kind, **arguments)
    for name, (ext, container, codec, arguments) in ENCODED.items():
        made[name] = str(folder / f"{name}{ext}")
        encode(made[name], container, codec, **arguments)
    for name, make in CRAFTED.items():
        made[name] = make(made, folder)
    return made


def assert_ok(path: str):
    verdict = check_file(path)
    assert verdict.status == "ok", verdict
    return verdict


ALL_INTACT = list(MADE) + list(ENCODED) + list(CRAFTED)
WAVS = [name for name in ALL_INTACT if name.startswith("wav")]
AIFFS = [name for name in ALL_INTACT if name.startswith("aif")]


# --- intact files ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_INTACT)
def test_intact_files_pass(files, name):
    verdict = assert_ok(files[name])
    assert verdict.format == ("wav" if name.startswith("wav") else "aiff")


@pytest.mark.parametrize("name, seconds", [
    ("wav", 2.0), ("wav_1s", 1.0), ("wav_30s", 30.0), ("wav_48k", 2.0), ("wav_rf64", 1.0), ("wav_bw64", 1.0),
    ("wav_streamed", 1.0), ("wav_s24_extensible", 1.0), ("wav_alaw", 1.0), ("aiff", 2.0), ("aiff_30s", 30.0),
    ("aifc_float", 1.0), ("aifc_ulaw", 1.0), ("aiff_streamed", 1.0), ("aiff_48k", 2.0),
])
def test_duration(files, name, seconds):
    assert check_file(files[name]).duration == pytest.approx(seconds, abs=0.01)


# --- truncation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", CUTS)
@pytest.mark.parametrize("name", ["wav", "wav_30s", "wav_rf64", "wav_s24_extensible", "wav_ima_adpcm", "wav_id3_chunk",
                                  "aiff", "aiff_30s", "aifc_float", "aifc_ulaw", "aiff_id3_chunk"])
def test_truncation_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.truncate(path, fraction)
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("name, chunk, fields", [("wav", b"data", 0), ("wav_rf64", b"data", 0),
                                                  ("aiff", b"SSND", 8), ("aifc_float", b"SSND", 8)])
def test_header_only_is_truncated(copy_of, name, chunk, fields):
    """Cut right after the headers: the data chunk's header (and SSND's offset/blockSize)."""
    path = copy_of(name)
    os.truncate(path, chunk_offset(path, chunk) + 8 + fields)
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("name, chunk", [("wav", b"data"), ("wav", b"fmt "), ("wav_rf64", b"ds64"),
                                         ("aiff", b"SSND"), ("aiff", b"COMM")])
@pytest.mark.parametrize("into", [0, 3, 12])
def test_cut_before_the_audio_is_truncated(copy_of, name, chunk, into):
    path = copy_of(name)
    os.truncate(path, chunk_offset(path, chunk) + into)
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("name", ["wav", "aiff"])
@pytest.mark.parametrize("size", [4, 5, 11, 12])
def test_cut_inside_the_form_header_is_truncated(copy_of, name, size):
    """From the 4-byte magic on (shorter files have no signature to recognise)."""
    path = copy_of(name)
    os.truncate(path, size)
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("name, chunk, fields", [("wav_streamed", b"data", 0), ("aiff_streamed", b"SSND", 8),
                                                  ("wav_streamed_zero_sizes", b"data", 0)])
@pytest.mark.parametrize("extra", [0, 1, 4001, 80003])
def test_streamed_file_cut_inside_a_frame_or_header_only(copy_of, name, chunk, fields, extra):
    """Unfilled sizes: only a partial sample frame, or no audio at all, shows the cut."""
    path = copy_of(name)
    os.truncate(path, chunk_offset(path, chunk) + 8 + fields + extra)
    assert_corrupt(path, "truncated")


# --- zero tails: silence, not reported --------------------------------------------------------------

@pytest.mark.parametrize("fraction", ZERO_TAILS)
@pytest.mark.parametrize("name", ["wav", "wav_30s", "wav_rf64", "wav_streamed", "wav_id3_chunk",
                                  "aiff", "aiff_30s", "aifc_float", "aiff_streamed"])
def test_zero_tail_is_silence_not_damage(copy_of, name, fraction):
    path = copy_of(name)
    media.zero_tail(path, fraction)
    assert_ok(path)


# --- structure ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["wav", "aiff"])
def test_trailing_garbage_is_reported(copy_of, name):
    path = copy_of(name)
    append(path, b"\x01\x02\xfe\xff" + random.Random(5).randbytes(600))
    assert_corrupt(path, "trailing_data")


def test_data_not_a_whole_number_of_frames(copy_of):
    path = copy_of("wav")
    at = chunk_offset(path, b"data") + 4
    with open(path, "rb") as f:
        f.seek(at)
        size = struct.unpack("<I", f.read(4))[0]
    patch(path, at, struct.pack("<I", size - 1))
    assert_corrupt(path, "bad_structure")


def test_data_before_fmt(files, tmp_path):
    chunks = chunks_of(files["wav"], big_endian=False)
    fmt = next(c for c in chunks if c[0] == b"fmt ")
    data = next(c for c in chunks if c[0] == b"data")
    path = write(str(tmp_path / "order.wav"), form(b"RIFF", b"WAVE", [data, fmt]))
    assert_corrupt(path, "bad_structure")


def test_complete_form_without_data_chunk(files, tmp_path):
    chunks = [c for c in chunks_of(files["wav"], big_endian=False) if c[0] != b"data"]
    assert_corrupt(write(str(tmp_path / "nodata.wav"), form(b"RIFF", b"WAVE", chunks)), "bad_structure")


def test_complete_form_without_ssnd_chunk(files, tmp_path):
    chunks = [c for c in chunks_of(files["aiff"], big_endian=True) if c[0] != b"SSND"]
    path = write(str(tmp_path / "nossnd.aiff"), form(b"FORM", b"AIFF", chunks, big_endian=True))
    assert_corrupt(path, "bad_structure")


@pytest.mark.parametrize("frames, status", [(100, "ok"), (441, "ok"), (442, "corrupt"), (10_000, "corrupt")])
def test_ssnd_shorter_than_comm_declares(files, tmp_path, frames, status):
    """Every chunk whole, but COMM counts more frames than SSND holds: a writer's
    miscount within 10 ms (441 frames at 44.1 kHz) plays completely; more is a cut."""
    chunks = chunks_of(files["aiff"], big_endian=True)
    chunks = [(cid, data[:-4 * frames] if cid == b"SSND" else data) for cid, data in chunks]
    path = write(str(tmp_path / "short.aiff"), form(b"FORM", b"AIFF", chunks, big_endian=True))
    verdict = check_file(path)
    assert verdict.status == status, verdict
    if status == "ok":
        assert f"{frames:,} sample frame(s)" in verdict.detail
    else:
        assert verdict.reason == "truncated"


FRAME_BYTES = {"wav": 4, "wav_48k": 4, "wav_mono": 2, "wav_rf64": 4, "wav_s24_extensible": 6, "wav_float": 8,
               "aiff": 4, "aiff_48k": 4, "aiff_mono": 2, "aiff_s24": 3, "aifc_float": 8}
RATES = {"wav_48k": 48000, "wav_s24_extensible": 48000, "aiff_48k": 48000, "aifc_float": 48000}


@pytest.mark.parametrize("name", list(FRAME_BYTES))
@pytest.mark.parametrize("share", [0.0, 1.0], ids=["one_frame", "10ms"])
def test_data_a_few_whole_frames_short_plays_completely(copy_of, name, share):
    """The file ends on a whole sample frame up to 10 ms before the count its header
    declares (the data/SSND chunk size, the RIFF/FORM size): ok, with a note."""
    path = copy_of(name)
    frames = max(1, int(share * RATES.get(name, 44100) // 100))
    os.truncate(path, os.path.getsize(path) - frames * FRAME_BYTES[name])
    verdict = assert_ok(path)
    assert f"{frames:,} sample frame(s)" in verdict.detail


@pytest.mark.parametrize("name", list(FRAME_BYTES))
def test_data_more_than_10ms_short_is_truncated(copy_of, name):
    path = copy_of(name)
    frames = RATES.get(name, 44100) // 100 + 1
    os.truncate(path, os.path.getsize(path) - frames * FRAME_BYTES[name])
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("name", [name for name, size in FRAME_BYTES.items() if size > 2])
@pytest.mark.parametrize("extra", [1, 2])
def test_data_ending_inside_a_frame_is_truncated(copy_of, name, extra):
    """A cut ends at an arbitrary byte: inside a sample frame is never a writer's count."""
    path = copy_of(name)
    os.truncate(path, os.path.getsize(path) - FRAME_BYTES[name] - extra)
    assert_corrupt(path, "truncated")


def test_sound_chunk_far_beyond_the_file_is_truncated_whatever_comm_says(copy_of):
    """One whole frame short of COMM's count, but SSND claims 2 GB: the chunk size too must
    be within the few frames."""
    path = copy_of("aiff")
    os.truncate(path, os.path.getsize(path) - 4)
    patch(path, chunk_offset(path, b"SSND") + 4, struct.pack(">I", 0x7FFFFFF0))
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("name", ["wav_ima_adpcm", "wav_id3_chunk", "aiff_id3_chunk"])
def test_few_bytes_short_without_the_rule_is_truncated(copy_of, name):
    """Compressed data has no frames to count, and a chunk after the data that the file
    lacks is missing whatever it holds."""
    path = copy_of(name)
    os.truncate(path, os.path.getsize(path) - 4)
    assert_corrupt(path, "truncated")


def test_rf64_without_ds64(files, tmp_path):
    chunks = [c for c in chunks_of(files["wav_rf64"], big_endian=False) if c[0] != b"ds64"]
    assert_corrupt(write(str(tmp_path / "nods64.wav"), form(b"RF64", b"WAVE", chunks)), "bad_structure")


@pytest.mark.parametrize("name", ["wav", "aiff"])
def test_zero_bytes_where_the_first_chunk_should_be(copy_of, name):
    path = copy_of(name)
    patch(path, 12, bytes(64))
    assert_corrupt(path, "zero_filled")


@pytest.mark.parametrize("junk", [b"\x07", b"\x01\x02\x03", id3v1()])
def test_small_or_tag_tails_are_tolerated(copy_of, junk):
    path = copy_of("aiff")
    append(path, junk)
    assert_ok(path)


@pytest.mark.parametrize("name, order", [("wav", "<I"), ("aiff", ">I"), ("wav_u8_odd", "<I")])
def test_form_size_counting_its_own_header_is_tolerated(copy_of, name, order):
    """A known writer slip: the form size includes the 8-byte header; every chunk is whole."""
    path = copy_of(name)
    patch(path, 4, struct.pack(order, os.path.getsize(path)))
    assert_ok(path)


def test_missing_last_chunk_is_truncated_despite_the_slack(files, tmp_path):
    """A form that declares a trailing chunk the file lacks entirely is cut."""
    chunks = chunks_of(files["wav"], big_endian=False) + [(b"LIST", b"INFOISFT" + bytes(30))]
    data = form(b"RIFF", b"WAVE", chunks)
    assert_corrupt(write(str(tmp_path / "cut_list.wav"), data[:-46]), "truncated")
    assert_corrupt(write(str(tmp_path / "cut_list_header.wav"), data[:-40]), "truncated")


# --- hostile and garbage input -----------------------------------------------------------------------

def assert_handled(path: str):
    verdict = check_file(path)
    assert verdict.reason != "check_error", verdict
    return verdict


@pytest.mark.parametrize("name, magic", [("tiny.wav", b"RIFF\xff\xff\xff\x7fWAVEf"), ("tiny.aiff", b"FORM\x7f\xff\xff\xffAIFFC"),
                                         ("tiny64.wav", b"RF64\xff\xff\xff\xffWAVEd")])
def test_thirteen_byte_file_with_the_magic(tmp_path, name, magic):
    assert_corrupt(write(str(tmp_path / name), magic), "truncated")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name, magic", [("random.wav", b"RIFF\x00\x10\x00\x00WAVE"), ("random.aiff", b"FORM\x00\x10\x00\x00AIFF"),
                                         ("random64.wav", b"RF64\xff\xff\xff\xffWAVE")])
def test_random_bytes_after_a_valid_header(tmp_path, seed, name, magic):
    path = write(str(tmp_path / name), magic + random.Random(seed).randbytes(4096))
    assert assert_handled(path).status == "corrupt"


def test_absurd_data_size(copy_of):
    path = copy_of("wav")
    patch(path, chunk_offset(path, b"data") + 4, struct.pack("<I", 0xFFFFFFF0))
    assert_corrupt(path, "truncated")


def test_absurd_ds64_sizes(copy_of):
    path = copy_of("wav_rf64")
    patch(path, chunk_offset(path, b"ds64") + 8, struct.pack("<QQ", 1 << 62, 1 << 62))
    assert_corrupt(path, "truncated")


def test_absurd_form_size(copy_of):
    path = copy_of("aiff")
    patch(path, 4, struct.pack(">I", 0xFFFFFFF0))
    assert_corrupt(path, "truncated")


def test_absurd_frame_count(copy_of):
    path = copy_of("aiff")
    patch(path, chunk_offset(path, b"COMM") + 10, struct.pack(">I", 0xFFFFFFFF))
    assert_corrupt(path, "truncated")


def test_absurd_sample_rate_gives_no_duration(copy_of):
    path = copy_of("aiff")
    patch(path, chunk_offset(path, b"COMM") + 16, b"\x7f\xfe" + b"\xff" * 8)
    verdict = assert_ok(path)
    assert verdict.duration is None


def test_endless_chunk_list_is_unchecked_not_corrupt(files, tmp_path):
    chunks = chunks_of(files["wav"], big_endian=False)
    padding = [(b"JUNK", b"")] * (riff.MAX_CHUNKS + 10)
    verdict = check_file(write(str(tmp_path / "many.wav"), form(b"RIFF", b"WAVE", padding + chunks)))
    assert (verdict.status, verdict.reason) == ("unchecked", "check_limit")


@pytest.mark.parametrize("seed", range(30))
def test_random_damage_to_headers_never_crashes(copy_of, seed):
    rng = random.Random(seed)
    path = copy_of("wav_rf64" if seed % 3 == 0 else "wav_id3_chunk" if seed % 3 == 1 else "aifc_float")
    for _ in range(rng.randint(1, 6)):
        patch(path, rng.randrange(120), bytes([rng.randrange(256)]) * rng.randint(1, 4))
    assert_handled(path)


# --- pieces ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, value", [
    (bytes.fromhex("400EAC44000000000000"), 44100.0),
    (bytes.fromhex("400EBB80000000000000"), 48000.0),
    (bytes.fromhex("4011BB80000000000000"), 384000.0),
    (bytes(10), None),
    (bytes.fromhex("7FFF8000000000000000"), None),
    (bytes.fromhex("C00EAC44000000000000"), None),
])
def test_extended_float(raw, value):
    assert aiff.extended_float(raw) == value


@pytest.mark.parametrize("head, module", [
    (b"RIFF\x24\0\0\0WAVEfmt ", riff), (b"RF64\xff\xff\xff\xffWAVEds64", riff), (b"BW64\xff\xff\xff\xffWAVEds64", riff),
    (b"FORM\0\0\0\x20AIFFCOMM", aiff), (b"FORM\0\0\0\x20AIFCFVER", aiff),
])
def test_sniff_accepts(head, module):
    assert module.sniff(head)


@pytest.mark.parametrize("head", [
    b"RIFF\x24\0\0\0AVI LIST", b"RIFF\x24\0\0\0WEBPVP8 ", b"FORM\0\0\0\x20ILBMBMHD", b"fLaC\0\0\0\x22",
    b"\0\0\0\x18ftypM4A \0\0\0\0", b"ID3\x04\0\0\0\0\0\x10", b"<html><body>",
])
def test_sniff_rejects_other_data(head):
    assert not riff.sniff(head) and not aiff.sniff(head)
