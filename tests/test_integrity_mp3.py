"""MPEG audio checker: real encoded files pass; cuts, zero tails and garbage are judged right."""

from __future__ import annotations

import os
import random
import sys

import av
import mutagen.apev2
import mutagen.id3
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import media  # noqa: E402

from poold.integrity import check_file, mp3  # noqa: E402
from poold.integrity.base import WINDOW  # noqa: E402

# name -> (kind, make() arguments, post-processing)
VARIANTS = {
    "mp3": ("mp3", {}, None),
    "mp3_vbr": ("mp3_vbr", {}, None),
    "mp3_noxing": ("mp3_noxing", {}, None),
    "mp3_vbr_noxing": ("mp3_vbr_noxing", {}, None),
    "mp3_id3v1": ("mp3_id3v1", {}, None),
    "mp3_notag": ("mp3_notag", {}, None),
    "mono": ("mp3", {"channels": 1}, None),
    "48k": ("mp3", {"rate": 48000}, None),
    "22k_mpeg2": ("mp3", {"rate": 22050}, None),
    "11k_mpeg25": ("mp3", {"rate": 11025, "channels": 1}, None),
    "1s": ("mp3", {"seconds": 1.0}, None),
    "30s": ("mp3_vbr", {"seconds": 30.0}, None),
    "cover_art": ("mp3", {}, "cover"),
    "apev2": ("mp3", {}, "ape"),
    "id3v1_apev2": ("mp3_id3v1", {}, "ape"),
    "tlen": ("mp3_noxing", {}, "tlen"),
    "layer2": (None, {}, None),
}
XING_VARIANTS = ("mp3", "mp3_vbr", "mp3_id3v1", "mp3_notag", "mono", "48k", "22k_mpeg2", "11k_mpeg25",
                 "1s", "30s", "cover_art", "apev2", "id3v1_apev2")
CUTS = (0.99, 0.9, 0.5, 0.1, 0.01)
ZERO_TAILS = (0.1, 0.5)


def _make_layer2(path: str) -> None:
    """MPEG-1 Layer II at 44.1 kHz (padding varies, so frame lengths do too)."""
    with av.open(path, "w", format="mp2") as out:
        stream = media._audio_stream(out, "mp2", 44100, 2, {"bit_rate": 192000})
        media._write_audio(out, stream, 2.0, 44100, 2, 0)


def _post_process(path: str, step: str | None) -> None:
    if step == "cover":
        tag = mutagen.id3.ID3(path)
        tag.add(mutagen.id3.APIC(encoding=3, mime="image/jpeg", type=3, desc="cover",
                                 data=random.Random(1).randbytes(200_000)))
        tag.save()
    elif step == "ape":
        ape = mutagen.apev2.APEv2()
        ape["Title"] = "APE title"
        ape.save(path)
    elif step == "tlen":
        tag = mutagen.id3.ID3(path)
        tag.add(mutagen.id3.TLEN(encoding=3, text=["2037"]))
        tag.save()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("mp3")
    paths = {}
    for name, (kind, args, step) in VARIANTS.items():
        if kind is None:
            path = str(folder / f"{name}.mp2")
            _make_layer2(path)
        else:
            path = media.make(folder / f"{name}.mp3", kind, **args)
        _post_process(path, step)
        paths[name] = path
    return paths


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _first_frame(data: bytes) -> int:
    """Offset of the first frame header: after the ID3v2 tag, by its declared size."""
    tag = mp3.id3v2_size(data[:10]) or 0
    return data.index(b"\xff", tag)


def _frame_ends(data: bytes) -> list[int]:
    pos, ends = _first_frame(data), []
    while (header := mp3.header_at(data, pos)) is not None:
        pos += header.length
        ends.append(pos)
    return ends


# --- intact files ---

@pytest.mark.parametrize("name", VARIANTS)
def test_intact_variants_pass(files, name):
    verdict = check_file(files[name])
    assert (verdict.status, verdict.reason) == ("ok", "ok"), verdict
    assert verdict.format == "mp3"


@pytest.mark.parametrize("name", ["mp3", "mp3_vbr", "mp3_noxing", "mono", "48k", "22k_mpeg2", "30s", "layer2"])
def test_duration_from_xing_or_constant_bitrate(files, name):
    seconds = 30.0 if name == "30s" else 2.0
    duration = check_file(files[name]).duration
    assert duration == pytest.approx(seconds, abs=0.15)


def test_no_duration_for_vbr_without_xing(files):
    assert check_file(files["mp3_vbr_noxing"]).duration is None


# --- corruptions ---

@pytest.mark.parametrize("fraction", CUTS)
@pytest.mark.parametrize("name", VARIANTS)
def test_truncation_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.truncate(path, fraction)
    verdict = check_file(path)
    assert (verdict.status, verdict.reason) == ("corrupt", "truncated"), verdict


@pytest.mark.parametrize("fraction", ZERO_TAILS)
@pytest.mark.parametrize("name", VARIANTS)
def test_zero_tail_is_caught(copy_of, name, fraction):
    path = copy_of(name)
    media.zero_tail(path, fraction)
    verdict = check_file(path)
    assert (verdict.status, verdict.reason) == ("corrupt", "zero_filled"), verdict


@pytest.mark.parametrize("name", VARIANTS)
def test_header_only_is_truncated(copy_of, name):
    """Tags plus the Xing frame (or, without one, the first frame header) and nothing else."""
    path = copy_of(name)
    data = _bytes(path)
    first = _first_frame(data)
    keep = _frame_ends(data)[0] if name in XING_VARIANTS else first + 4
    verdict = check_file(_write(path, data[:keep]))
    assert (verdict.status, verdict.reason) == ("corrupt", "truncated"), verdict


@pytest.mark.parametrize("extra", [0, 2])
@pytest.mark.parametrize("name", ["mp3", "cover_art"])
def test_tags_with_at_most_part_of_a_header_are_truncated(copy_of, name, extra):
    path = copy_of(name)
    data = _bytes(path)
    verdict = check_file(_write(path, data[:_first_frame(data) + extra]))
    assert (verdict.status, verdict.reason) == ("corrupt", "truncated"), verdict


@pytest.mark.parametrize("share", [0.95, 0.5, 0.05])
@pytest.mark.parametrize("name", ["mp3", "mp3_vbr", "30s"])
def test_cut_on_a_frame_boundary_is_caught_by_the_xing_header(copy_of, name, share):
    path = copy_of(name)
    data = _bytes(path)
    ends = _frame_ends(data)
    cut = ends[int(len(ends) * share)]
    verdict = check_file(_write(path, data[:cut]))
    assert (verdict.status, verdict.reason) == ("corrupt", "truncated"), verdict


def test_cut_on_a_frame_boundary_is_caught_by_tlen(copy_of):
    path = copy_of("tlen")
    data = _bytes(path)
    ends = _frame_ends(data)
    verdict = check_file(_write(path, data[:ends[len(ends) // 4]]))
    assert (verdict.status, verdict.reason) == ("corrupt", "truncated"), verdict
    assert "TLEN" in verdict.detail


def test_absurd_xing_counts_mean_truncation_not_a_crash(copy_of):
    path = copy_of("mp3")
    data = bytearray(_bytes(path))
    at = data.index(b"Info")
    data[at + 8:at + 16] = b"\xff" * 8
    verdict = check_file(_write(path, bytes(data)))
    assert (verdict.status, verdict.reason) == ("corrupt", "truncated"), verdict


# --- what may and may not follow the last frame ---

ID3V2_APPENDED = b"ID3\x03\x00\x00\x00\x00\x00\x15" + b"TIT2\x00\x00\x00\x0b\x00\x00\x00appended!!"


@pytest.mark.parametrize("suffix, expected", [
    (b"x" * 50, ("ok", "ok")),  # stray bytes a tag editor may leave
    (b"\0" * 300, ("ok", "ok")),  # less than a frame of zero padding
    (b"TAG" + b"a" * 60, ("ok", "ok")),  # a cut ID3v1 tag: the audio itself is whole
    (ID3V2_APPENDED, ("ok", "ok")),  # an ID3v2 tag appended without a footer
    (b"\0" * 3000, ("corrupt", "zero_filled")),
    (b"<html><body>502 Bad Gateway</body></html>" * 10, ("corrupt", "trailing_data")),
    (random.Random(2).randbytes(5000), ("corrupt", "trailing_data")),
    (b"\xff\xfb", ("corrupt", "truncated")),  # the file ends inside the next frame header
])
def test_bytes_after_the_last_frame(copy_of, suffix, expected):
    path = copy_of("mp3_noxing")
    verdict = check_file(_write(path, _bytes(path) + suffix))
    assert (verdict.status, verdict.reason) == expected, verdict


@pytest.mark.parametrize("name", ["mp3", "mp3_vbr", "48k", "22k_mpeg2"])
@pytest.mark.parametrize("zeros", [3000, 20_000])
def test_zeros_after_a_stream_as_long_as_its_info_header_are_padding(copy_of, name, zeros):
    """The Xing/Info header's byte count is met exactly: the stream is whole, zeros after it pad."""
    path = copy_of(name)
    verdict = check_file(_write(path, _bytes(path) + bytes(zeros)))
    assert verdict.status == "ok", verdict
    assert f"{zeros:,} zero bytes of padding" in verdict.detail


def test_zeros_after_a_complete_frame_short_of_the_info_header_are_zero_filled(copy_of):
    """Zeros from a frame boundary before the declared end: frames are missing."""
    path = copy_of("mp3")
    data = _bytes(path)
    at = _frame_ends(data)[-10]
    verdict = check_file(_write(path, data[:at] + bytes(len(data) - at)))
    assert (verdict.status, verdict.reason) == ("corrupt", "zero_filled"), verdict


def test_zero_tail_leaving_few_frames_in_the_window(copy_of):
    """Zeros fill all but the first few hundred bytes of the tail window."""
    path = copy_of("30s")
    data = bytearray(_bytes(path))
    zeros = WINDOW - 300
    data[-zeros:] = bytes(zeros)
    verdict = check_file(_write(path, bytes(data)))
    assert (verdict.status, verdict.reason) == ("corrupt", "zero_filled"), verdict


def test_junk_between_frames_near_the_end_is_resynced(copy_of):
    """Players skip junk between frames (e.g. a tag inside a stream rip); so does the tail walk."""
    path = copy_of("mp3_vbr")
    data = _bytes(path)
    at = _frame_ends(data)[-6]
    verdict = check_file(_write(path, data[:at] + b"junk" * 20 + data[at:]))
    assert (verdict.status, verdict.reason) == ("ok", "ok"), verdict


def test_junk_between_tag_and_first_frame_is_skipped(copy_of):
    path = copy_of("mp3_vbr")
    data = _bytes(path)
    first = _first_frame(data)
    padded = data[:first] + b"\0" * 100 + b"junk" * 40 + data[first:]
    verdict = check_file(_write(path, padded))
    assert (verdict.status, verdict.reason) == ("ok", "ok"), verdict


# --- sniffing and garbage ---

@pytest.mark.parametrize("name", VARIANTS)
def test_sniffs_encoded_files(files, name):
    assert mp3.sniff(_bytes(files[name])[:WINDOW])


@pytest.mark.parametrize("kind", ["flac", "ogg", "wav", "aiff", "m4a"])
def test_does_not_sniff_other_formats(tmp_path, kind):
    path = media.make(tmp_path / f"x{media.extension(kind)}", kind, seconds=0.5)
    assert not mp3.sniff(_bytes(path)[:WINDOW])


def test_does_not_sniff_id3_in_front_of_flac(files):
    tag = _bytes(files["mp3"])[:_first_frame(_bytes(files["mp3"]))]
    assert not mp3.sniff(tag + b"fLaC\x00\x00\x00\x22" + bytes(64))


@pytest.mark.parametrize("seed", range(5))
def test_does_not_sniff_random_bytes(seed):
    assert not mp3.sniff(random.Random(seed).randbytes(WINDOW))


@pytest.mark.parametrize("data", [
    b"ID3\x04\x00\x00\x7f\x7f\x7f\x7fabc",  # a 13-byte file claiming a 256 MiB tag
    b"\xff\xfb\x90\x00" + bytes(9),  # a 13-byte file: one frame header
    b"\xff\xfb\x90\x00" + random.Random(3).randbytes(100_000),  # a header, then noise
])
def test_garbage_never_crashes(tmp_path, data):
    verdict = check_file(_write(str(tmp_path / "garbage.mp3"), data))
    assert verdict.status in ("corrupt", "unchecked")
    assert verdict.reason != "check_error"


def test_id3_followed_by_no_mpeg_audio_is_unchecked(tmp_path, files):
    data = _bytes(files["mp3"])
    tag = data[:_first_frame(data)]
    verdict = check_file(_write(str(tmp_path / "x.mp3"), tag + bytes(range(0, 250)) * 400))
    assert verdict.status == "unchecked"
