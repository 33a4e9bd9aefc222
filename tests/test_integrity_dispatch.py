"""The dispatcher: sniffing the real format, what is never judged, and containment."""

import types
from fractions import Fraction

import av
import numpy as np
import pytest

import media
from poold.integrity import FORMAT_MODULES, MODULE_BY_EXTENSION, check_file, format_module, run_checker
from poold.integrity.base import Source

HTML = b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>\n"


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"\0" * 5000, "zero_filled"),
    (HTML, "not_audio"),
    (b'{"error": "download expired"}', "not_audio"),
    ("Gesperrt – Datei nicht verfügbar\n".encode() * 40, "not_audio"),
    (bytes(range(256)) * 30, "not_audio"),
])
@pytest.mark.parametrize("extension", [".mp3", ".mp4", ".flac", ".m4a", ".ogg", ".wav", ".aiff"])
def test_non_media_behind_media_names(tmp_path, content, reason, extension):
    path = tmp_path / f"file{extension}"
    path.write_bytes(content)
    verdict = check_file(path)
    assert (verdict.status, verdict.reason) == ("corrupt", reason), verdict


@pytest.mark.parametrize("name", ["notes.txt", "cover.jpg", "noextension", "set.m3u8"])
def test_unknown_types_are_unchecked_never_corrupt(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HTML)
    assert check_file(path).status == "unchecked"


@pytest.mark.parametrize("kind, name", [("flac", "song.mp3"), ("mp3", "song.m4a"), ("m4a", "clip.mp4")])
def test_complete_file_of_another_format(tmp_path, encoded, kind, name):
    path = tmp_path / name
    path.write_bytes(encoded(kind).read_bytes())
    if kind == "m4a" and name.endswith(".mp4"):
        assert check_file(path).status == "ok"  # one family: MP4 audio in .mp4 is normal
        return
    verdict = check_file(path)
    assert (verdict.status, verdict.reason) == ("corrupt", "wrong_format"), verdict


def test_truncated_file_of_another_format_reports_the_damage(tmp_path, encoded):
    path = tmp_path / "song.mp3"
    path.write_bytes(encoded("flac").read_bytes())
    media.truncate(str(path), 0.5)
    assert check_file(path).reason == "truncated"


def test_raw_aac_behind_mp3_name_is_unchecked(tmp_path):
    path = tmp_path / "song.mp3"
    with av.open(str(path), "w", format="adts") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "stereo"
        rng = np.random.default_rng(1)
        for index in range(20):
            frame = av.AudioFrame.from_ndarray((0.1 * rng.standard_normal((2, 1024))).astype(np.float32),
                                               format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 44100, index * 1024, Fraction(1, 44100)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    verdict = check_file(path)
    assert (verdict.status, verdict.reason) == ("unchecked", "wrong_format")


def test_a_checker_bug_is_unchecked_not_corrupt(tmp_path):
    def broken_check(src):
        raise IndexError("bug")

    module = types.SimpleNamespace(FORMAT="fake", check=broken_check)
    path = tmp_path / "x.bin"
    path.write_bytes(b"data")
    with Source(path) as src:
        verdict = run_checker(module, src)
    assert (verdict.status, verdict.reason) == ("unchecked", "check_error")


def test_missing_file_is_unreadable(tmp_path):
    verdict = check_file(tmp_path / "gone.mp3")
    assert verdict.reason == "unreadable"


def test_bounded_reads_on_absurd_requests(tmp_path):
    path = tmp_path / "tiny.mp3"
    path.write_bytes(b"ID3\x04\x00\x00\x7f\x7f\x7f\x7fxyz")  # 13 bytes claiming a 256 MiB tag
    with Source(path) as src:
        assert src.read(0, 1 << 40) == path.read_bytes()
        assert src.read(-5, 10) == b"" and src.read(100, 10) == b""
    assert check_file(path).status == "corrupt"


def test_the_extension_map_agrees_with_the_format_modules():
    declared = {ext: name for name in FORMAT_MODULES for ext in format_module(name).EXTENSIONS}
    assert declared == MODULE_BY_EXTENSION
