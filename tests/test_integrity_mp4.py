"""The MP4/M4A/MOV checker on real encoded files: intact variants pass, cuts and zero tails
are caught, hostile headers neither crash nor allocate."""

from __future__ import annotations

import os
import random
import struct
import time
from fractions import Fraction

import av
import mutagen.mp4
import numpy as np
import pytest

import media
from conftest import assert_corrupt
from poold.integrity import check_file, mp4

BASE_KINDS = ("m4a", "m4a_faststart", "alac", "mp4", "mp4_faststart", "mov")
CUTS = (0.99, 0.9, 0.5, 0.1, 0.01)
ZERO_TAILS = (0.1, 0.5)


# --- fixture making ------------------------------------------------------------------

def top_level_boxes(path: str) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level box, read independently of the checker."""
    boxes, offset, size = [], 0, os.path.getsize(path)
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            box_size, box_type = struct.unpack(">I4s", f.read(8))
            if box_size == 1:
                box_size = struct.unpack(">Q", f.read(8))[0]
            elif box_size == 0:
                box_size = size - offset
            boxes.append((box_type, offset, box_size))
            offset += box_size
    return boxes


def box_offset(path: str, box_type: bytes) -> int:
    return next(offset for btype, offset, _size in top_level_boxes(path) if btype == box_type)


def encode_image(codec: str, pix_fmt: str, side: int) -> bytes:
    """A real image of noise, encoded by FFmpeg's MJPEG or PNG encoder (one frame = one file)."""
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = side, side, pix_fmt
    context.time_base = Fraction(1, 25)
    noise = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(noise, format="rgb24").reformat(format=pix_fmt)
    return b"".join(bytes(packet) for packet in context.encode(frame) + context.encode(None))


JPEG = encode_image("mjpeg", "yuvj420p", 500)  # about 150 KB: more than the 64 KiB windows
PNG = encode_image("png", "rgb24", 160)  # about 77 KB


def cover_adder(image: bytes = JPEG, image_format=mutagen.mp4.MP4Cover.FORMAT_JPEG, padding: int | None = None):
    """Cover art through mutagen, which rewrites 'moov' and shifts 'stco'. By default mutagen
    leaves a 'free' box of padding after 'ilst'; ``padding=0`` puts the image last in 'moov'."""
    def add(path: str) -> None:
        tags = mutagen.mp4.MP4(path)
        tags["covr"] = [mutagen.mp4.MP4Cover(image, image_format)]
        tags["\xa9nam"] = ["Cover test"]
        tags.save(padding=None if padding is None else (lambda _info: padding))
    return add


add_cover = cover_adder()


def insert_free_before_moov(path: str, size: int = 4096) -> None:
    """A top-level 'free' box of zeros in front of a trailing 'moov' (QuickTime padding);
    nothing before it moves, so the chunk offsets stay right."""
    moov = box_offset(path, b"moov")
    with open(path, "rb") as f:
        data = f.read()
    free = struct.pack(">I4s", size, b"free") + bytes(size - 8)
    with open(path, "wb") as f:
        f.write(data[:moov] + free + data[moov:])


def append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def ftyp_to_free(path: str) -> None:
    """Turn 'ftyp' into a same-sized 'free': a QuickTime file from before 'ftyp' existed."""
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(b"free")


def remux(source: str, target: str, container: str, movflags: str) -> None:
    """Copy the streams into a fragmented file (FFmpeg movflags)."""
    options = {"movflags": movflags, "frag_duration": "500000"}
    with av.open(source) as inp, av.open(target, "w", format=container, options=options) as out:
        streams = {stream.index: out.add_stream_from_template(stream) for stream in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def id3v1(title: str = "Appended") -> bytes:
    return b"TAG" + title.encode().ljust(30, b"\0") + bytes(95)


VARIANTS = {
    # name: (kind, make() arguments, post-processing)
    "m4a": ("m4a", {}, None),
    "m4a_faststart": ("m4a_faststart", {}, None),
    "alac": ("alac", {}, None),
    "mp4": ("mp4", {}, None),
    "mp4_faststart": ("mp4_faststart", {}, None),
    "mov": ("mov", {}, None),
    "m4a_mono": ("m4a", {"channels": 1}, None),
    "m4a_48k": ("m4a", {"rate": 48000}, None),
    "alac_mono_48k": ("alac", {"channels": 1, "rate": 48000}, None),
    "m4a_1s": ("m4a", {"seconds": 1.0}, None),
    "m4a_30s": ("m4a", {"seconds": 30.0}, None),
    "mp4_30s": ("mp4", {"seconds": 30.0}, None),
    "mov_1s": ("mov", {"seconds": 1.0}, None),
    "m4a_cover": ("m4a", {}, add_cover),
    "m4a_faststart_cover": ("m4a_faststart", {}, add_cover),
    "mp4_cover": ("mp4", {}, add_cover),
    "mp4_faststart_cover": ("mp4_faststart", {}, add_cover),
    "m4a_cover_last": ("m4a", {}, cover_adder(padding=0)),
    "mp4_cover_last": ("mp4", {}, cover_adder(padding=0)),
    "m4a_png_cover": ("m4a", {}, cover_adder(PNG, mutagen.mp4.MP4Cover.FORMAT_PNG)),
    "m4a_png_cover_last": ("m4a", {}, cover_adder(PNG, mutagen.mp4.MP4Cover.FORMAT_PNG, padding=0)),
    # Writers sometimes pad an image after its end marker: a few bytes, or a block of zeros.
    "m4a_jpeg_padded": ("m4a", {}, cover_adder(JPEG + b"\r\n\0", padding=0)),
    "m4a_jpeg_zero_padded": ("m4a", {}, cover_adder(JPEG + bytes(4096), padding=0)),
    "m4a_png_zero_padded": ("m4a", {}, cover_adder(PNG + bytes(1000), mutagen.mp4.MP4Cover.FORMAT_PNG, padding=0)),
    # Not an image at all, labelled JPEG, ending in zeros: nothing to judge by.
    "m4a_mislabelled_cover": ("m4a", {}, cover_adder(b"BM" + bytes(5000), padding=0)),
    "m4a_free_padding": ("m4a", {}, insert_free_before_moov),
    "mp4_free_at_end": ("mp4_faststart", {}, lambda p: append(p, struct.pack(">I4s", 2048, b"free") + bytes(2040))),
    "m4a_id3v1": ("m4a", {}, lambda p: append(p, id3v1())),
    "mov_without_ftyp": ("mov", {}, ftyp_to_free),
}
FRAGMENTED = {
    "mp4_fragmented": ("mp4", "mp4", "frag_keyframe+empty_moov"),
    "mp4_fragmented_no_mfra": ("mp4", "mp4", "frag_keyframe+empty_moov+default_base_moof+skip_trailer"),
    "mp4_fragmented_first_in_moov": ("mp4", "mp4", "frag_keyframe+faststart"),
    "m4a_fragmented": ("m4a", "ipod", "frag_keyframe+empty_moov+skip_trailer"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Every intact variant, encoded once for the module."""
    folder = tmp_path_factory.mktemp("mp4")
    made = {}
    for name, (kind, arguments, post) in VARIANTS.items():
        path = str(folder / f"{name}{media.extension(kind)}")
        media.make(path, kind, **arguments)
        if post:
            post(path)
        made[name] = path
    for name, (base, container, movflags) in FRAGMENTED.items():
        path = str(folder / f"{name}{media.extension(base)}")
        remux(made[base], path, container, movflags)
        made[name] = path
    return made


# --- intact files ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(VARIANTS) + list(FRAGMENTED))
def test_intact_files_pass(files, name):
    verdict = check_file(files[name])
    assert verdict.status == "ok", verdict
    assert verdict.format == "mp4"


@pytest.mark.parametrize("name, seconds", [("m4a", 2.0), ("mp4", 2.0), ("mov", 2.0), ("m4a_1s", 1.0),
                                           ("m4a_30s", 30.0), ("mp4_30s", 30.0), ("m4a_cover", 2.0)])
def test_duration_from_mvhd(files, name, seconds):
    assert check_file(files[name]).duration == pytest.approx(seconds, abs=0.1)


def test_every_track_is_probed_for_zero_samples(files):
    """AAC, ALAC and H.264 tracks are the codecs whose samples can never be all zero."""
    from poold.integrity.base import Source
    for name in ("m4a", "alac", "mp4", "mov"):
        with Source(files[name]) as src:
            boxes, _end = mp4._walk_top_level(src)
            moov = next(box for box in boxes if box.type == b"moov")
            tracks = mp4._tracks(mp4._read_body(src, moov))
        assert tracks and all(track.zero_proof for track in tracks), name


# --- truncation -------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", CUTS)
@pytest.mark.parametrize("name", BASE_KINDS + ("m4a_30s", "mp4_30s", "m4a_cover", "mp4_fragmented_no_mfra"))
def test_truncation_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.truncate(path, fraction)
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("name", BASE_KINDS)
def test_header_only_is_truncated(copy_of, name):
    """Cut right after the headers: 'ftyp' (+ 'moov' when fast-start) + the 'mdat' header."""
    path = copy_of(name)
    os.truncate(path, box_offset(path, b"mdat") + 8)
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("name", ["m4a_faststart", "mp4_faststart"])
def test_index_without_media_is_truncated(copy_of, name):
    """Exactly 'ftyp' + 'moov' (+ 'free') of a fast-start file: every box complete, no samples."""
    path = copy_of(name)
    os.truncate(path, box_offset(path, b"mdat"))
    verdict = assert_corrupt(path, "truncated")
    assert "beyond the end of the file" in verdict.detail


@pytest.mark.parametrize("name", BASE_KINDS)
def test_file_type_box_alone_is_truncated(copy_of, name):
    path = copy_of(name)
    os.truncate(path, top_level_boxes(path)[0][2])
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("extra", [1, 4, 7])
def test_cut_inside_a_box_header_is_truncated(copy_of, extra):
    """A complete movie, then the file ends a few bytes into the header of the next box."""
    path = copy_of("mp4_free_at_end")
    last_type, last_offset, _size = top_level_boxes(path)[-1]
    assert last_type == b"free"
    os.truncate(path, last_offset + extra)
    assert_corrupt(path, "truncated")


# --- zero-filled tails -------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", ZERO_TAILS)
@pytest.mark.parametrize("name", BASE_KINDS + ("m4a_30s", "mp4_30s", "m4a_faststart_cover",
                                               "mp4_fragmented", "mp4_fragmented_no_mfra", "m4a_fragmented"))
def test_zero_tail_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.zero_tail(path, fraction)
    assert_corrupt(path, "zero_filled")


@pytest.mark.parametrize("fraction", [0.01, 0.03])
@pytest.mark.parametrize("name", ["m4a_faststart", "mp4_faststart", "m4a", "mp4", "mp4_fragmented_no_mfra"])
def test_small_zero_tail_is_caught(copy_of, name, fraction):
    """Smaller than the targets: zeros over part of a trailing 'moov' or the last samples."""
    path = copy_of(name)
    media.zero_tail(path, fraction)
    assert_corrupt(path, "zero_filled")


COVER_VARIANTS = ("m4a_cover", "m4a_faststart_cover", "mp4_cover", "mp4_faststart_cover", "m4a_cover_last",
                  "mp4_cover_last", "m4a_png_cover", "m4a_png_cover_last")


@pytest.mark.parametrize("fraction", (0.05,) + ZERO_TAILS)
@pytest.mark.parametrize("name", COVER_VARIANTS)
def test_zero_tail_over_cover_art_is_caught(copy_of, name, fraction):
    """With 'moov' last, the zeros may land only in the cover art and the padding after it."""
    path = copy_of(name)
    media.zero_tail(path, fraction)
    assert_corrupt(path, "zero_filled")


def zero_image_tail(path: str, image: bytes, keep: int) -> None:
    """Zero the stored image from ``keep`` bytes into it up to its end, nothing else."""
    with open(path, "r+b") as f:
        at = f.read().index(image[:64]) + keep
        f.seek(at)
        f.write(bytes(len(image) - keep))


@pytest.mark.parametrize("name, image", [("m4a_cover", JPEG), ("m4a_cover_last", JPEG),
                                         ("m4a_faststart_cover", JPEG), ("m4a_png_cover", PNG)])
@pytest.mark.parametrize("keep", [0, 3, 1000, -300])
def test_zero_filled_image_is_caught(copy_of, name, image, keep):
    """Only the image's tail is zero, boxes and padding intact: its end marker is missing.
    ``keep=0`` zeroes even the signature: the data atom's type says what it was."""
    path = copy_of(name)
    zero_image_tail(path, image, keep % len(image))
    verdict = assert_corrupt(path, "zero_filled")
    assert "image in the 'covr' metadata item" in verdict.detail


def test_short_zero_run_in_an_image_is_not_judged(copy_of):
    """Under IMAGE_ZERO_RUN zeros at the end of an image without its marker: not enough to tell."""
    path = copy_of("m4a_cover")
    zero_image_tail(path, JPEG, len(JPEG) - 200)
    assert check_file(path).status == "ok"


def test_zero_hole_in_the_middle_of_fast_start_media(copy_of):
    """Samples spread through each track are probed, not only the last ones."""
    path = copy_of("m4a_30s")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 4)
        f.write(bytes(size // 3))
    assert_corrupt(path, "zero_filled")


# --- trailing data and tags ------------------------------------------------------------------------

def test_trailing_garbage_is_reported(copy_of):
    path = copy_of("mp4_faststart")
    append(path, b"\x01\x02\x03\x04\xfe\xff\x00\x01" + random.Random(3).randbytes(600))
    assert_corrupt(path, "trailing_data")


@pytest.mark.parametrize("name", ["m4a", "m4a_faststart", "mp4_faststart"])
@pytest.mark.parametrize("junk", [
    b"garbage that is not a box" * 20,  # reads as a 'rbag' box of 1,734,439,026 bytes
    b"<html>error: the download failed</html>\n" * 10,  # a 'l>er' box of 1,013,478,509 bytes
    struct.pack(">I4s", 0x7FFFFFFF, b"Zq9\x01") + bytes(300),  # an unreadable type
], ids=["text", "html", "binary_type"])
def test_bytes_appended_after_the_last_box_are_trailing_data(copy_of, name, junk):
    """Appended bytes parse as a box header whose size runs past the end of the file: a
    type no file puts at the top level is not taken for a cut box, and never quoted."""
    path = copy_of(name)
    size = os.path.getsize(path)
    append(path, junk)
    verdict = assert_corrupt(path, "trailing_data")
    assert f"from byte {size:,}" in verdict.detail
    assert junk[4:8].decode("latin-1") not in verdict.detail


@pytest.mark.parametrize("name", ["m4a", "m4a_faststart", "mp4", "mp4_faststart"])
@pytest.mark.parametrize("zeros", [8, 96, 5000])
def test_zeros_after_a_complete_movie_are_padding(copy_of, name, zeros):
    """Every box whole, every sample inside the file, no fragments: zeros after the last
    box belong to no box and nothing refers to them."""
    path = copy_of(name)
    append(path, bytes(zeros))
    verdict = check_file(path)
    assert verdict.status == "ok", verdict
    assert f"{zeros:,} zero bytes of padding" in verdict.detail


def test_zeros_after_the_last_fragment_are_zero_filled(copy_of):
    """A fragmented file may be missing fragments after the last complete one."""
    path = copy_of("mp4_fragmented_no_mfra")
    append(path, bytes(4096))
    assert_corrupt(path, "zero_filled")


@pytest.mark.parametrize("name", ["m4a", "m4a_faststart", "mp4_faststart"])
@pytest.mark.parametrize("brand", [b"M4B ", b"M4A ", b"isom"])
@pytest.mark.parametrize("wide", [False, True], ids=["32bit", "64bit"])
def test_index_larger_than_the_file_is_truncated(copy_of, name, brand, wide):
    """'ftyp' is sound, 'moov' declares more bytes than the file holds: a cut file, not
    "no media signature", whatever the brand and whichever size field 'ftyp' uses."""
    path = copy_of(name)
    data = bytearray(open(path, "rb").read())
    data[8:12] = brand
    at = box_offset(path, b"moov")
    data[at:at + 4] = struct.pack(">I", len(data) - at + 1000)
    if wide:  # the same 'ftyp' with a 64-bit size (ISOBMFF 4.2): 8 bytes longer
        ftyp_size = struct.unpack_from(">I", data)[0]
        data = struct.pack(">I4sQ", 1, b"ftyp", ftyp_size + 8) + data[8:]
    with open(path, "wb") as f:
        f.write(data)
    verdict = assert_corrupt(path, "truncated")
    assert "'moov'" in verdict.detail


def test_garbage_box_types_are_shown_in_hex(copy_of):
    """A damaged box inside 'moov' whose type is garbage: named by its hex code, not quoted."""
    path = copy_of("mp4_faststart")
    patch_table(path, b"trak", -8, struct.pack(">I4s", 0x7FFFFFFF, b"\x01>\x7fq"))
    verdict = assert_corrupt(path, "bad_structure")
    assert "a box of type 0x013e7f71" in verdict.detail, verdict


def test_trailing_apev2_tag_is_tolerated(copy_of):
    path = copy_of("m4a")
    item = struct.pack("<II", 5, 0) + b"Title\0" + b"Hello"
    footer = b"APETAGEX" + struct.pack("<IIII", 2000, len(item) + 32, 1, 0) + bytes(8)
    append(path, item + footer)
    assert check_file(path).status == "ok"


# --- hostile and garbage input ---------------------------------------------------------------------

def write(tmp_path, name: str, data: bytes) -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def assert_handled(path: str):
    """A verdict from the checker itself: never a crash turned into check_error."""
    verdict = check_file(path)
    assert verdict.reason != "check_error", verdict
    return verdict


def test_thirteen_byte_file_with_the_magic(tmp_path):
    path = write(tmp_path, "tiny.m4a", b"\0\0\0\x18ftypM4A ")
    assert_corrupt(path, "truncated")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_after_a_valid_file_type_box(tmp_path, seed):
    ftyp = struct.pack(">I4s4sI8s", 24, b"ftyp", b"isom", 512, b"isomiso2")
    path = write(tmp_path, "random.mp4", ftyp + random.Random(seed).randbytes(5000))
    verdict = assert_handled(path)
    assert verdict.status == "corrupt"


def test_absurd_64_bit_box_size(tmp_path):
    ftyp = struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0)
    path = write(tmp_path, "huge.mp4", ftyp + struct.pack(">I4sQ", 1, b"mdat", 1 << 62) + bytes(100))
    assert_corrupt(path, "truncated")


def test_impossible_box_size(tmp_path):
    ftyp = struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0)
    path = write(tmp_path, "small.mp4", ftyp + struct.pack(">I4s", 3, b"mdat") + bytes(100))
    assert_corrupt(path, "bad_structure")


def patch_table(path: str, table: bytes, offset_in_body: int, value: bytes) -> None:
    """Overwrite bytes of the first ``table`` box inside 'moov'."""
    with open(path, "r+b") as f:
        data = f.read()
        at = data.index(table, box_offset(path, b"moov")) + 4 + offset_in_body
        f.seek(at)
        f.write(value)


def test_sample_count_beyond_its_table(copy_of):
    path = copy_of("m4a")
    patch_table(path, b"stsz", 8, struct.pack(">I", 0xFFFFFFFF))
    assert_corrupt(path, "bad_structure")


def test_huge_uniform_sample_count_does_not_loop(copy_of):
    """A common sample size with 4 billion samples and 4 billion samples per chunk."""
    path = copy_of("m4a")
    patch_table(path, b"stsz", 4, struct.pack(">II", 700, 0xFFFFFFFF))
    patch_table(path, b"stsc", 12, struct.pack(">I", 0xFFFFFFFF))
    assert_corrupt(path, "truncated")


def test_chunk_offset_past_the_end(copy_of):
    path = copy_of("m4a")
    patch_table(path, b"stco", 8, struct.pack(">I", 0xFFFFFF00))
    assert_corrupt(path, "truncated")


def test_chunk_offset_into_the_file_type_box(copy_of):
    path = copy_of("m4a")
    patch_table(path, b"stco", 8, struct.pack(">I", 0))
    assert_corrupt(path, "bad_structure")


def test_overlong_box_inside_moov(copy_of):
    path = copy_of("mp4_faststart")
    patch_table(path, b"trak", -8, struct.pack(">I", 0x7FFFFFFF))  # its size field
    assert_corrupt(path, "bad_structure")


def _with_user_data(path: str, udta_body: bytes) -> None:
    """Append a 'udta' box to a trailing 'moov' (nothing after it moves)."""
    data = open(path, "rb").read()
    at = box_offset(path, b"moov")
    assert at + struct.unpack_from(">I", data, at)[0] == len(data)
    udta = struct.pack(">I4s", 8 + len(udta_body), b"udta") + udta_body
    moov = struct.pack(">I4s", len(data) - at + len(udta), b"moov") + data[at + 8:] + udta
    with open(path, "wb") as f:
        f.write(data[:at] + moov)


def _box(btype: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), btype) + body


def _best_time(path: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        verdict = check_file(path)
        best = min(best, time.perf_counter() - began)
    assert verdict.status == "ok", verdict
    return best


def test_metadata_bomb_is_judged_in_bounded_time(copy_of):
    """775,000 iTunes metadata items (walking them all took 31 s and 160 MB): the checks
    on metadata read only the first MAX_METADATA_ITEMS. Measured against the same file
    with metadata of the same size in one item (a long comment), which costs the same reads."""
    hdlr = _box(b"hdlr", bytes(8) + b"mdirappl" + bytes(9))
    items = _box(b"\xa9cmt", _box(b"data", b"\x00\x00\x00\x01\x00\x00\x00\x00x")) * 775_000
    one_item = _box(b"\xa9cmt", _box(b"data", b"\x00\x00\x00\x01\x00\x00\x00\x00" + b"x" * (len(items) - 24)))
    assert len(one_item) == len(items)
    paths = {}
    for name, ilst in (("bomb", items), ("one", one_item)):
        paths[name] = copy_of("m4a_30s")
        os.rename(paths[name], paths[name] + f".{name}.m4a")
        paths[name] += f".{name}.m4a"
        _with_user_data(paths[name], _box(b"meta", bytes(4) + hdlr + _box(b"ilst", ilst)))
    ratio = _best_time(paths["bomb"]) / _best_time(paths["one"])
    assert ratio < 20, f"the metadata bomb took {ratio:.0f} times the same file with one big item"


def test_container_with_too_many_boxes_is_beyond_the_check(copy_of):
    path = copy_of("m4a")
    data = open(path, "rb").read()
    at = box_offset(path, b"moov")
    frees = _box(b"free", b"") * (mp4.MAX_CHILD_BOXES + 1)
    moov = struct.pack(">I4s", len(data) - at + len(frees), b"moov") + data[at + 8:] + frees
    with open(path, "wb") as f:
        f.write(data[:at] + moov)
    verdict = check_file(path)
    assert (verdict.status, verdict.reason) == ("unchecked", "check_limit"), verdict


@pytest.mark.parametrize("seed", range(40))
def test_random_damage_to_moov_never_crashes(copy_of, seed):
    path = copy_of("mp4_faststart" if seed % 2 else "mov")
    rng = random.Random(seed)
    moov = box_offset(path, b"moov")
    with open(path, "r+b") as f:
        for _ in range(rng.randint(1, 8)):
            f.seek(moov + 8 + rng.randrange(2500))
            f.write(bytes([rng.randrange(256)]) * rng.randint(1, 4))
    assert_handled(path)


def test_oversized_moov_is_unchecked_not_corrupt(copy_of, monkeypatch):
    monkeypatch.setattr(mp4, "MOOV_LIMIT", 100)
    verdict = check_file(copy_of("m4a"))
    assert (verdict.status, verdict.reason) == ("unchecked", "check_limit")


# --- sniffing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", [
    struct.pack(">I4s4sI", 24, b"ftyp", b"M4A ", 0) + bytes(8),
    struct.pack(">I4s", 8, b"wide") + struct.pack(">I4s", 1000, b"mdat"),
    struct.pack(">I4s", 20, b"free") + bytes(12) + struct.pack(">I4s", 1000, b"moov"),
    struct.pack(">I4s", 0, b"mdat"),
])
def test_sniff_accepts_mp4_and_quicktime(head):
    assert mp4.sniff(head)


@pytest.mark.parametrize("head", [
    b"RIFF\x24\0\0\0WAVEfmt ", b"FORM\0\0\0\x20AIFFCOMM", b"fLaC\0\0\0\x22", b"OggS\0\x02" + bytes(20),
    b"ID3\x04\0\0\0\0\0\x10" + bytes(20), b"\xff\xfb\x90\x64" + bytes(40), b"<!DOCTYPE html><html>",
    struct.pack(">I4s", 4, b"free") + bytes(8),
    struct.pack(">I4s", 16, b"free") + bytes(8) + b"\0\x01\x02\x03\x04\x05\x06\x07",
    struct.pack(">I4s4s", 12, b"ftyp", b"isom"),
])
def test_sniff_rejects_other_data(head):
    assert not mp4.sniff(head)
