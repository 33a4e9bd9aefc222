"""The Ogg check (Vorbis, Opus, FLAC-in-Ogg) on real encoded files: intact variants pass,
every kind of damage is caught."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess

import pytest
from mutagen.oggvorbis import OggVorbis

import media
from poold.integrity import check_file, ogg
from poold.integrity.base import CORRUPT, OK
from poold.integrity.crc import crc32_ogg

DAMAGE = {"truncated", "zero_filled", "bad_structure", "crc_mismatch", "trailing_data"}
KIND_OF = {"vorbis": "ogg", "opus": "opus", "flac": "ogg_flac"}


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> path of one intact file, encoded once for the module.

    FFmpeg's own Vorbis encoder (PyAV ships no libvorbis) only encodes stereo, so the
    Vorbis files are stereo; Opus and FLAC-in-Ogg are mono.
    """
    folder = tmp_path_factory.mktemp("ogg")
    made = {}
    for codec, kind in KIND_OF.items():
        channels = 2 if codec == "vorbis" else 1
        ext = media.extension(kind)
        made[f"{codec}_30s"] = media.make(folder / f"{codec}_30s{ext}", kind, seconds=30, rate=48000,
                                          channels=channels)
        made[f"{codec}_1s"] = media.make(folder / f"{codec}_1s{ext}", kind, seconds=1)
    made["vorbis_big_comment"] = _with_big_comment(made["vorbis_1s"], folder / "big_comment.ogg")
    return made


def _with_big_comment(source, target):
    """A Vorbis comment packet spanning several pages, written by mutagen."""
    shutil.copyfile(source, target)
    tagged = OggVorbis(target)
    tagged["comment"] = "".join(random.Random(4).choices("abcdefgh ", k=300_000))
    tagged["title"] = "Big comment"
    tagged.save()
    return str(target)


def pages(path) -> list[tuple[int, int, int]]:
    """(offset, end, granule) of every page, read independently of the checker."""
    with open(path, "rb") as handle:
        data = handle.read()
    found, offset = [], 0
    while offset < len(data):
        assert data[offset:offset + 4] == b"OggS"
        granule, count = struct.unpack_from("<q", data, offset + 6)[0], data[offset + 26]
        end = offset + 27 + count + sum(data[offset + 27:offset + 27 + count])
        found.append((offset, end, granule))
        offset = end
    return found


def header_pages_end(path) -> int:
    """Header pages carry granule position 0 (Vorbis I spec A.2, RFC 7845 section 3, and
    the FLAC mapping); the first page with audio has a non-zero one."""
    return max(end for _offset, end, granule in pages(path) if granule == 0)


def rewrite_page(path, index, change):
    """Apply ``change(bytearray)`` to page ``index`` and store a correct CRC for it."""
    offset, end, _granule = pages(path)[index]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        page = bytearray(handle.read(end - offset))
        change(page)
        page[22:26] = bytes(4)
        page[22:26] = crc32_ogg(page).to_bytes(4, "little")
        handle.seek(offset)
        handle.write(page)


def verdict(path):
    return check_file(path)


ALL = [f"{codec}_{length}" for codec in KIND_OF for length in ("30s", "1s")]


# --- intact files --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL + ["vorbis_big_comment"])
def test_intact_files_pass(files, name):
    result = verdict(files[name])
    assert result.status == OK, result
    assert result.format == "ogg"


@pytest.mark.parametrize("name", ALL)
def test_duration_from_last_granule(files, name):
    expected = 30.0 if name.endswith("30s") else 1.0
    # Vorbis (FFmpeg's encoder) does not trim its last block, so it runs a few ms long.
    assert verdict(files[name]).duration == pytest.approx(expected, abs=0.03)


def test_opus_duration_subtracts_pre_skip(files):
    last_granule = pages(files["opus_1s"])[-1][2]
    assert last_granule > 48000
    assert verdict(files["opus_1s"]).duration == pytest.approx(1.0)


def test_big_comment_spans_several_pages(files):
    assert header_pages_end(files["vorbis_big_comment"]) > 5 * 65307 // 2


def test_sniff():
    assert ogg.sniff(b"OggS\x00\x02" + bytes(30))
    assert not ogg.sniff(b"OggS\x01\x02" + bytes(30))
    assert not ogg.sniff(b"fLaC")


# --- truncation, zeros, junk ---------------------------------------------------------------

@pytest.mark.parametrize("name", ALL + ["vorbis_big_comment"])
@pytest.mark.parametrize("fraction", [0.99, 0.9, 0.5, 0.1, 0.01])
def test_truncation_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.truncate(path, fraction)
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "truncated"), result


@pytest.mark.parametrize("name", ALL + ["vorbis_big_comment"])
def test_header_pages_alone_are_truncated(copy_of, name):
    path = copy_of(name)
    os.truncate(path, header_pages_end(path))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "truncated"), result
    assert "only the Ogg header pages" in result.detail


@pytest.mark.parametrize("name", ["vorbis_30s", "opus_30s", "flac_30s"])
def test_cut_at_a_page_boundary_lacks_end_of_stream(copy_of, name):
    path = copy_of(name)
    os.truncate(path, pages(path)[-3][1])
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "truncated"), result
    assert "end-of-stream" in result.detail


def test_first_page_alone_is_truncated(copy_of):
    path = copy_of("opus_1s")
    os.truncate(path, pages(path)[0][1])
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "truncated"), result


@pytest.mark.parametrize("name", ALL + ["vorbis_big_comment"])
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_zero_filled_tail_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.zero_tail(path, fraction)
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "zero_filled"), result


def test_junk_after_the_last_page_is_trailing_data(copy_of):
    path = copy_of("opus_30s")
    with open(path, "ab") as handle:
        handle.write(random.Random(5).randbytes(900))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "trailing_data"), result


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("zeros", [10, 96, 5000, 200_000])
def test_zeros_after_the_end_of_stream_page_are_padding(copy_of, name, zeros):
    """The end-of-stream flag is set on the stream's last page only: the stream is whole."""
    path = copy_of(name)
    with open(path, "ab") as handle:
        handle.write(bytes(zeros))
    result = verdict(path)
    assert result.status == OK, result
    assert f"{zeros:,} zero bytes of padding" in result.detail


@pytest.mark.parametrize("zeros", [10, 5000])
def test_zeros_after_a_page_without_end_of_stream_are_zero_filled(copy_of, zeros):
    """A complete page that does not end the stream, then zeros: the pages after it are missing."""
    path = copy_of("vorbis_30s")
    os.truncate(path, pages(path)[-2][1])
    with open(path, "ab") as handle:
        handle.write(bytes(zeros))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "zero_filled"), result


def test_zeros_beyond_the_padding_limit_are_zero_filled(copy_of):
    path = copy_of("vorbis_1s")
    with open(path, "ab") as handle:
        handle.write(bytes(ogg.PADDING_LIMIT + 1))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "zero_filled"), result


def test_id3v1_after_the_last_page_is_tolerated(copy_of):
    path = copy_of("vorbis_1s")
    with open(path, "ab") as handle:
        handle.write(b"TAG" + bytes(125))
    assert verdict(path).status == OK


@pytest.mark.parametrize("page_index", [-1, 0, 1])
def test_flipped_bit_fails_the_page_crc(copy_of, page_index):
    path = copy_of("vorbis_30s")
    offset, end, _granule = pages(path)[page_index]
    with open(path, "r+b") as handle:
        handle.seek(end - 5)
        byte = handle.read(1)
        handle.seek(end - 5)
        handle.write(bytes([byte[0] ^ 0x04]))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "crc_mismatch"), result


def damage_last_page(path, at: int, value: bytes, last_byte: bytes | None = None) -> int:
    """Overwrite bytes of the last page's header (``at`` from its start), keeping its CRC
    field as it was; optionally set the file's last byte. Returns the page's offset."""
    offset, _end, _granule = pages(path)[-1]
    with open(path, "r+b") as handle:
        handle.seek(offset + at)
        handle.write(value)
        if last_byte is not None:
            handle.seek(-1, os.SEEK_END)
            handle.write(last_byte)
    return offset


def largest_lacing_index(path) -> int:
    offset, _end, _granule = pages(path)[-1]
    with open(path, "rb") as handle:
        handle.seek(offset + 26)
        lacing = handle.read(handle.read(1)[0])
    return lacing.index(max(lacing))


@pytest.mark.parametrize("name", ["vorbis_30s", "opus_30s", "flac_30s"])
@pytest.mark.parametrize("shorter", [1, 64])
def test_damaged_segment_table_is_a_damaged_page(copy_of, name, shorter):
    """A flipped bit in the last page's segment table ends the page early: the bytes left
    over are that page's own, not trailing data or a zero fill (here the very last byte is
    zero, as in a benchmark run that read "1 zero bytes follow the last Ogg page")."""
    path = copy_of(name)
    index = largest_lacing_index(path)
    with open(path, "rb") as handle:
        handle.seek(pages(path)[-1][0] + 27 + index)
        value = handle.read(1)[0]
    offset = damage_last_page(path, 27 + index, bytes([value - shorter]), last_byte=b"\0")
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "crc_mismatch"), result
    assert f"byte {offset:,}" in result.detail


@pytest.mark.parametrize("name", ["vorbis_30s", "opus_30s", "flac_30s"])
def test_damaged_capture_pattern_of_the_last_page(copy_of, name):
    """The page before it is whole; what follows is the next page of the stream, its
    capture pattern hit: a damaged page, not non-Ogg trailing data."""
    path = copy_of(name)
    offset = damage_last_page(path, 1, b"x")
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "bad_structure"), result
    assert f"byte {offset:,}" in result.detail and "capture pattern" in result.detail


def test_flac_granule_short_of_streaminfo_total(copy_of):
    """FLAC-in-Ogg: the last granule must reach STREAMINFO's total sample count."""
    path = copy_of("flac_1s")

    def declare_more_samples(page):
        streaminfo = 28 + 17  # page header + lacing (1), then 17 bytes into the packet
        packed = int.from_bytes(page[streaminfo + 10:streaminfo + 18], "big")
        packed = (packed & ~((1 << 36) - 1)) | 88200
        page[streaminfo + 10:streaminfo + 18] = packed.to_bytes(8, "big")

    rewrite_page(path, 0, declare_more_samples)
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "truncated"), result
    assert "STREAMINFO" in result.detail


def test_missing_page_in_headers(copy_of):
    path = copy_of("vorbis_big_comment")
    rewrite_page(path, 2, lambda page: page.__setitem__(slice(18, 22), (7).to_bytes(4, "little")))
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "bad_structure"), result


def test_invalid_identification_header(copy_of):
    path = copy_of("vorbis_1s")
    rewrite_page(path, 0, lambda page: page.__setitem__(28 + 11, 0))  # zero channels
    result = verdict(path)
    assert (result.status, result.reason) == (CORRUPT, "bad_structure"), result


# --- garbage and absurd headers ----------------------------------------------------------------

def _page(flags=0x02, granule=0, serial=1, sequence=0, lacing=b"\x13", body=b"OpusHead\x01\x01" + bytes(9)):
    page = bytearray(b"OggS\x00" + struct.pack("<BqIII", flags, granule, serial, sequence, 0)
                     + bytes([len(lacing)]) + lacing + body)
    page[22:26] = crc32_ogg(page).to_bytes(4, "little")
    return bytes(page)


@pytest.mark.parametrize("data", [
    b"OggS\x00\x02" + bytes(7),  # 13 bytes
    _page()[:27] + b"\xff" * 255 + bytes(100),  # a segment table promising 65 KB
    _page() + random.Random(6).randbytes(70_000),
    _page() + bytes(70_000),
    b"OggS\x00" + random.Random(7).randbytes(200_000),
], ids=["13_bytes", "huge_segment_table", "random_after_page", "zeros_after_page", "random"])
def test_garbage_is_corrupt_without_crashing(tmp_path, data):
    path = tmp_path / "broken.opus"
    path.write_bytes(data)
    result = verdict(path)
    assert result.status == CORRUPT and result.reason in DAMAGE, result


def test_fabricated_minimal_opus_stream_passes(tmp_path):
    """Hand-built pages with CRCs computed here: ID header, tags, one audio page with EOS."""
    tags = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
    data = (_page()
            + _page(flags=0, sequence=1, lacing=bytes([len(tags)]), body=tags)
            + _page(flags=0x04, granule=48000 + 312, sequence=2, lacing=b"\x03", body=b"\xfc\xff\xfe"))
    data = data[:38] + struct.pack("<H", 312) + data[40:]  # pre-skip 312 in the ID header
    data = data[:22] + bytes(4) + data[26:]
    first = bytearray(data[:47])
    first[22:26] = crc32_ogg(first).to_bytes(4, "little")
    path = tmp_path / "tiny.opus"
    path.write_bytes(bytes(first) + data[47:])
    result = verdict(path)
    assert result.status == OK, result
    assert result.duration == pytest.approx(1.0)


# --- reference encoders (where installed) ------------------------------------------------------

REFERENCE_ENCODERS = {
    "oggenc": lambda wav, out: ["oggenc", "--quiet", "-o", out, wav],  # mono Vorbis: FFmpeg cannot
    "opusenc": lambda wav, out: ["opusenc", "--quiet", wav, out],
    "flac": lambda wav, out: ["flac", "--silent", "--force", "--ogg", "-o", out, wav],
}


@pytest.mark.parametrize("encoder", sorted(REFERENCE_ENCODERS))
def test_reference_encoder_output(tmp_path, encoder):
    if shutil.which(encoder) is None:
        pytest.skip(f"{encoder} is not installed")
    wav = media.make(tmp_path / "source.wav", "wav", seconds=30, rate=48000, channels=1)
    target = str(tmp_path / "reference.ogg")
    subprocess.run(REFERENCE_ENCODERS[encoder](wav, target), check=True)
    result = verdict(target)
    assert result.status == OK, result
    assert result.duration == pytest.approx(30.0, abs=0.03)
    media.zero_tail(target, 0.1)
    assert verdict(target).reason == "zero_filled"
