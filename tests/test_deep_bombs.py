"""Deep mode on tag bombs: real files with tens of thousands of tag items are judged
with bounded work (FFmpeg reads tag items in time quadratic in their number), and the
files FFmpeg is spared are still judged by the quick check and their own checksums."""

from __future__ import annotations

import shutil
import time

import pytest
from mutagen.flac import FLAC
from mutagen.mp4 import MP4, MP4FreeForm
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

import media
from poold.integrity import base, check_file, tags
from poold.integrity.deep import deep_check

# A bomb FFmpeg would spend 10-30 s on (20,000 distinct items already take it 2-3 s).
BOMB_ITEMS = 50_000
BOMB_KINDS = ("flac", "ogg", "opus", "ogg_flac", "m4a")
VORBIS_COMMENTED = {"flac": FLAC, "ogg": OggVorbis, "opus": OggOpus, "ogg_flac": OggFLAC}
SKIPPED = "FFmpeg decode skipped: more than 10,000 tag items"
# The bomb's deep check may cost this many times the deep check of the same file with
# its few tags: a few times for the count, where FFmpeg would take hundreds of times.
GENEROUS_RATIO = 4


def add_items(path: str, kind: str, count: int, value: str = "v") -> str:
    """Add ``count`` items with distinct keys, as a tagger would write them."""
    if kind == "m4a":
        tagged = MP4(path)
        for i in range(count):
            tagged.tags[f"----:com.apple.iTunes:KEY{i}"] = [MP4FreeForm(value.encode())]
    else:
        tagged = VORBIS_COMMENTED[kind](path)
        tagged.tags.extend([(f"KEY{i}", value) for i in range(count)])
    tagged.save()
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """files(kind, items) -> a real 10 s file of that kind with ``items`` more tag items."""
    folder = tmp_path_factory.mktemp("bombs")
    cache: dict[tuple[str, int], str] = {}

    def get(kind: str, items: int = 0) -> str:
        if (kind, items) not in cache:
            plain = folder / f"{kind}{media.extension(kind)}"
            if not plain.exists():
                media.make(plain, kind, seconds=10.0)
            target = folder / f"{kind}_{items}{media.extension(kind)}"
            shutil.copyfile(plain, target)
            cache[kind, items] = add_items(str(target), kind, items) if items else str(target)
        return cache[kind, items]

    return get


def best_time(function, *args, runs: int = 3) -> float:
    """The fastest of a few runs: the least disturbed by other work on the machine."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.parametrize("kind", BOMB_KINDS)
def test_bomb_judged_with_bounded_work(files, kind):
    plain, bomb = files(kind), files(kind, BOMB_ITEMS)
    verdict = deep_check(bomb)
    assert verdict.status == base.OK, verdict
    assert SKIPPED in verdict.detail, verdict
    assert verdict.detail.startswith(check_file(bomb).detail), "the quick verdict stands, extended"
    baseline = best_time(deep_check, plain)
    assert deep_check(plain).detail.startswith("decoded fully"), "the baseline is a full decode"
    assert best_time(deep_check, bomb) <= GENEROUS_RATIO * baseline


@pytest.mark.parametrize("kind", ("ogg", "opus", "ogg_flac"))
def test_ogg_bomb_still_has_its_page_crcs_verified(files, kind):
    verdict = deep_check(files(kind, BOMB_ITEMS))
    assert "Ogg pages verified" in verdict.detail, verdict


@pytest.mark.parametrize("kind", ("flac", "m4a", "ogg"))
def test_items_under_the_limit_are_decoded(files, kind):
    """Files with many tags, but fewer than the limit, still get the full decode."""
    verdict = deep_check(files(kind, tags.MAX_FFMPEG_TAG_ITEMS - 100))
    assert verdict.status == base.OK, verdict
    assert verdict.detail.startswith("decoded fully"), verdict


@pytest.mark.parametrize("kind", BOMB_KINDS)
def test_cut_bomb_is_corrupt(files, tmp_path, kind):
    cut = tmp_path / f"cut{media.extension(kind)}"
    shutil.copyfile(files(kind, BOMB_ITEMS), cut)
    media.truncate(str(cut), 0.8)
    verdict = deep_check(cut)
    assert verdict.status == base.CORRUPT, verdict


def test_damaged_ogg_bomb_is_caught_by_its_page_crc(files, tmp_path):
    """FFmpeg is spared the bomb, but the CRC of every page is still verified."""
    damaged = tmp_path / "damaged.ogg"
    shutil.copyfile(files("ogg", BOMB_ITEMS), damaged)
    size = damaged.stat().st_size
    with open(damaged, "r+b") as f:
        f.seek(size * 3 // 4)  # in the audio pages, past the comment header
        byte = f.read(1)[0]
        f.seek(size * 3 // 4)
        f.write(bytes([byte ^ 0x10]))
    assert check_file(damaged).status == base.OK, "the quick check cannot see it"
    verdict = deep_check(damaged)
    assert (verdict.status, verdict.reason) == (base.CORRUPT, "crc_mismatch"), verdict


def test_one_key_repeated_is_counted_too(files, tmp_path):
    """FFmpeg appends the values of a repeated Vorbis comment key: quadratic in their bytes."""
    path = tmp_path / "repeated.flac"
    shutil.copyfile(files("flac"), path)
    tagged = FLAC(path)
    tagged.tags.extend([("COMMENT", "x" * 100)] * 20_000)
    tagged.save()
    assert SKIPPED in deep_check(path).detail


# --- the count itself ---------------------------------------------------------------------

def vorbis_comments(comments: list[bytes], declared: int | None = None) -> bytes:
    vendor = b"poold"
    body = len(vendor).to_bytes(4, "little") + vendor
    body += (len(comments) if declared is None else declared).to_bytes(4, "little")
    return body + b"".join(len(c).to_bytes(4, "little") + c for c in comments)


@pytest.mark.parametrize("body,limit,expected", [
    (vorbis_comments([b"A=1", b"B=2", b"C=3"]), 100, 3),
    (vorbis_comments([b"A=1", b"B=2", b"C=3"]), 2, 2),  # counted no further than the limit
    (vorbis_comments([b"A=1", b"B=2"], declared=1_000_000), 100, 2),  # present, not declared
    (vorbis_comments([b"A=1", b"B=2", b"C=3"], declared=2), 100, 2),  # a reader stops at the count
    (vorbis_comments([b"A=1", b"B=2"])[:-1], 100, 1),  # the last runs past the end
    (b"\xff\xff\xff\xff", 100, 0),  # a vendor string longer than the block
    (b"", 100, 0),
])
def test_vorbis_comment_count(body, limit, expected):
    assert tags.vorbis_comment_count(body, limit) == expected


@pytest.mark.parametrize("body,expected", [
    (b"\0\0\0\0" + b"\0\0\0\x21hdlr" + b"x" * 25, 4),  # a full box (ISOBMFF, iTunes)
    (b"\0\0\0\x21hdlr" + b"x" * 25, 0),  # a plain container (QuickTime)
    (b"\0\0\0\0" + b"abc" + b"hdlr" + b"x" * 25, None),  # not where FFmpeg looks, 4 bytes at a time
    (b"\0\0\0\0" + b"x" * 40, None),
])
def test_mp4_meta_children_start_where_ffmpeg_reads_them(body, expected):
    from poold.integrity import mp4

    assert mp4._meta_children_start_as_ffmpeg(body, 0, len(body)) == expected
