"""The reason table: for every format and every kind of damage, the reason poold reports.

The reason goes to POOL and the detail to the DJ, so a damaged file must be corrupt for
the right cause, not merely corrupt. Each cell is one test case, named
``format-damage``. The files are real, encoded by FFmpeg through PyAV once per session
(conftest's ``encoded``); the positions of headers and data are found here, independently
of the checkers.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

import av
import pytest

import media
from poold.integrity import check_file

FORMATS = {
    # table row: media kind (tests/media.py)
    "mp3": "mp3",
    "m4a": "m4a",
    "m4a-faststart": "m4a_faststart",
    "mp4-video": "mp4",
    "flac": "flac",
    "ogg-vorbis": "ogg",
    "ogg-opus": "opus",
    "wav": "wav",
    "aiff": "aiff",
}
PCM = {"wav", "aiff"}

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
             b"<body><h1>Service Unavailable</h1><p>Try again later.</p></body></html>\n")
APPENDED = random.Random(13).randbytes(1024)
FEW_BYTES = 3  # short of the end: inside the last MP3/FLAC frame, Ogg page, MP4 box, PCM frame


# --- where the headers end, found without the checkers ------------------------------------------

def _id3v2_end(data: bytes) -> int:
    if data[:3] != b"ID3":
        return 0
    body = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return 10 + body + (10 if data[5] & 0x10 else 0)


def _mp3_header_end(data: bytes) -> int:
    """After the first frame, the one that carries the Xing/Info header (MPEG-1 Layer III)."""
    start = _id3v2_end(data)
    kbps = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[data[start + 2] >> 4]
    rate = (44100, 48000, 32000)[(data[start + 2] >> 2) & 3]
    return start + 144 * kbps * 1000 // rate + ((data[start + 2] >> 1) & 1)


def _flac_header_end(data: bytes) -> int:
    offset = _id3v2_end(data) + 4
    while True:
        last, length = data[offset] & 0x80, int.from_bytes(data[offset + 1:offset + 4], "big")
        offset += 4 + length
        if last:
            return offset


def _ogg_header_end(data: bytes) -> int:
    """After the pages with granule position 0: those hold only the codec headers."""
    offset = 0
    while struct.unpack_from("<q", data, offset + 6)[0] == 0:
        segments = data[offset + 26]
        offset += 27 + segments + sum(data[offset + 27:offset + 27 + segments])
    return offset


def _mp4_header_end(data: bytes) -> int:
    """The first byte of the 'mdat' payload: 'ftyp' (+ 'moov' when fast-start) and its header."""
    offset = 0
    while data[offset + 4:offset + 8] != b"mdat":
        offset += int.from_bytes(data[offset:offset + 4], "big")
    return offset + 8


def _chunk_body(data: bytes, chunk_id: bytes, byteorder: str, skip: int = 0) -> int:
    offset = 12
    while data[offset:offset + 4] != chunk_id:
        size = int.from_bytes(data[offset + 4:offset + 8], byteorder)
        offset += 8 + size + (size & 1)
    return offset + 8 + skip


HEADER_END = {
    "mp3": _mp3_header_end, "flac": _flac_header_end, "ogg": _ogg_header_end, "opus": _ogg_header_end,
    "m4a": _mp4_header_end, "m4a_faststart": _mp4_header_end, "mp4": _mp4_header_end,
    "wav": lambda data: _chunk_body(data, b"data", "little"),
    "aiff": lambda data: _chunk_body(data, b"SSND", "big", skip=8),  # SSND's offset and blockSize
}


# --- the damage -----------------------------------------------------------------------------------

def _cut_to(fraction: float):
    return lambda path, kind: media.truncate(path, fraction)


def _few_bytes_short(path: str, kind: str) -> None:
    os.truncate(path, os.path.getsize(path) - FEW_BYTES)


def _zero_tail(path: str, kind: str) -> None:
    media.zero_tail(path, 0.10)


def _appending(data: bytes):
    def append(path: str, kind: str) -> None:
        with open(path, "ab") as handle:
            handle.write(data)
    return append


def _header_only(path: str, kind: str) -> None:
    os.truncate(path, HEADER_END[kind](Path(path).read_bytes()))


def _html_page(path: str, kind: str) -> None:
    Path(path).write_bytes(HTML_PAGE)


DAMAGE = {
    "cut-1%": (_cut_to(0.01), "truncated"),
    "cut-50%": (_cut_to(0.50), "truncated"),
    "cut-99%": (_cut_to(0.99), "truncated"),
    "few-bytes-short": (_few_bytes_short, "truncated"),
    "zero-tail": (_zero_tail, "zero_filled"),  # PCM: silence, see expected()
    "appended-bytes": (_appending(APPENDED), "trailing_data"),
    "appended-page": (_appending(HTML_PAGE), "trailing_data"),  # an error page after a whole file
    "header-only": (_header_only, "truncated"),
    "html-page": (_html_page, "not_audio"),
    # Not damage: a complete stream, then padding (see docs/integrity.md for each format's proof).
    "zero-padding": (_appending(bytes(96)), "ok"),
}


def expected(row: str, damage: str) -> tuple[str, str]:
    """(status, reason) the cell must hold."""
    reason = DAMAGE[damage][1]
    if damage == "zero-tail" and row in PCM:
        reason = "ok"  # zeros in PCM are silence: no rule can tell them from sound
    return ("ok" if reason == "ok" else "corrupt"), reason


@pytest.fixture(scope="session")
def intact(encoded):
    """intact(row) -> the encoded file of that row (skipped when FFmpeg cannot encode it)."""
    def get(row: str) -> Path:
        try:
            return encoded(FORMATS[row])
        except (av.error.FFmpegError, ValueError) as exc:
            pytest.skip(f"this FFmpeg cannot encode {row}: {type(exc).__name__}: {exc}")
    return get


@pytest.mark.parametrize("row", list(FORMATS))
def test_intact_file_is_ok(intact, row):
    verdict = check_file(intact(row))
    assert (verdict.status, verdict.reason) == ("ok", "ok"), verdict


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("row", list(FORMATS))
def test_reason(intact, tmp_path, row, damage):
    source = intact(row)
    path = str(tmp_path / source.name)
    shutil.copyfile(source, path)
    DAMAGE[damage][0](path, FORMATS[row])
    verdict = check_file(path)
    assert (verdict.status, verdict.reason) == expected(row, damage), verdict
