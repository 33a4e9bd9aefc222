"""Tags around the audio: reading one ID3v2 text frame in bounded work, and tag bombs.

A DJ library holds files tagged by every tool there is, and some tags are absurd: a
"tag bomb" of 775,000 TXXX frames in a 15 MB ID3v2 tag made mutagen's frame reader take
16.5 minutes and 482 MB. The quick check reads only the frame it needs (TLEN) and walks
at most a bounded number of frame headers, so such a file is judged as fast as any other.
"""

from __future__ import annotations

import time
import tracemalloc

import mutagen.id3
import pytest

from poold.integrity import check_file, tags
from poold.integrity.base import Source
from poold.integrity.tags import leading_tags_end


def synchsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def frame(version: int, frame_id: bytes, content: bytes, flags: int = 0) -> bytes:
    """One ID3v2 frame: v2.2 (3-byte ID and size), v2.3 (plain size), v2.4 (synchsafe size)."""
    if version == 2:
        return frame_id[:3] + len(content).to_bytes(3, "big") + content
    size = synchsafe(len(content)) if version == 4 else len(content).to_bytes(4, "big")
    return frame_id + size + flags.to_bytes(2, "big") + content


def tag(version: int, frames: bytes, flags: int = 0, extended: bytes = b"") -> bytes:
    body = extended + frames
    return b"ID3" + bytes([version, 0, flags]) + synchsafe(len(body)) + body


def text_of(tmp_path, data: bytes, frame_id: bytes = b"TLEN") -> str | None:
    path = tmp_path / "tagged.mp3"
    path.write_bytes(data + b"\xff\xfb\x90\x00" + bytes(413))
    with Source(path) as src:
        return tags.id3v2_text(src, frame_id)


# --- reading one text frame ------------------------------------------------------------------

TXXX = b"\x03key\x00value"


@pytest.mark.parametrize("version", [2, 3, 4])
@pytest.mark.parametrize("encoding, text", [
    (b"\x00", "2037".encode("latin-1")), (b"\x01", "2037".encode("utf-16")),
    (b"\x02", "2037".encode("utf-16-be")), (b"\x03", b"2037\x00"),
])
def test_text_frame_after_other_frames(tmp_path, version, encoding, text):
    frames = frame(version, b"TXXX", TXXX) * 3 + frame(version, b"TLEN", encoding + text)
    assert text_of(tmp_path, tag(version, frames) + bytes(100)) == "2037"


def test_frame_absent_or_behind_padding(tmp_path):
    frames = frame(4, b"TXXX", TXXX)
    assert text_of(tmp_path, tag(4, frames)) is None
    assert text_of(tmp_path, tag(4, frames + bytes(64) + frame(4, b"TLEN", b"\x032037"))) is None


def test_extended_headers_are_skipped(tmp_path):
    v3 = tag(3, frame(3, b"TLEN", b"\x00123"), flags=0x40, extended=(6).to_bytes(4, "big") + bytes(6))
    v4 = tag(4, frame(4, b"TLEN", b"\x00456"), flags=0x40, extended=synchsafe(6) + b"\x01\x00")
    assert text_of(tmp_path, v3) == "123"
    assert text_of(tmp_path, v4) == "456"


def test_unsynchronisation_is_undone(tmp_path):
    """v2.3: the whole tag (header flag 0x80); v2.4: per frame (flag 0x0002), with a data
    length indicator (0x0001) and a group byte (0x0040) in front of the content."""
    v3_frames = frame(3, b"TXXX", b"\x00\xff\xe0") + frame(3, b"TLEN", b"\x00789")
    unsynchronised = v3_frames.replace(b"\xff", b"\xff\x00")  # sizes count the frames before it
    assert text_of(tmp_path, tag(3, unsynchronised, flags=0x80)) == "789"
    v4_content = b"\x07" + synchsafe(5) + b"\x00\xff\x00" + b"42"
    assert text_of(tmp_path, tag(4, frame(4, b"TLEN", v4_content, flags=0x0043))) == "\xff42"


def test_compressed_or_encrypted_frames_are_not_read(tmp_path):
    assert text_of(tmp_path, tag(3, frame(3, b"TLEN", b"\x00123", flags=0x0080))) is None
    assert text_of(tmp_path, tag(4, frame(4, b"TLEN", b"\x00123", flags=0x0004))) is None


@pytest.mark.parametrize("version", [3, 4])
def test_agrees_with_mutagen(tmp_path, version):
    path = tmp_path / "mutagen.mp3"
    path.write_bytes(b"\xff\xfb\x90\x00" + bytes(413))
    written = mutagen.id3.ID3()
    written.add(mutagen.id3.TIT2(encoding=1, text=["Title"]))
    written.add(mutagen.id3.APIC(encoding=3, mime="image/jpeg", type=3, desc="c", data=b"\xff\xd8" + bytes(5000)))
    written.add(mutagen.id3.TLEN(encoding=1, text=["183000"]))
    written.save(path, v2_version=version)
    with Source(path) as src:
        assert tags.id3v2_text(src, b"TLEN") == str(mutagen.id3.ID3(path)["TLEN"].text[0]) == "183000"


def test_walk_stops_at_the_frame_limit(tmp_path):
    frames = frame(4, b"TXXX", TXXX) * tags.MAX_ID3_FRAMES + frame(4, b"TLEN", b"\x032037")
    assert text_of(tmp_path, tag(4, frames)) is None
    assert text_of(tmp_path, tag(4, frame(4, b"TXXX", TXXX) * 100 + frame(4, b"TLEN", b"\x032037"))) == "2037"


# --- tag bombs ----------------------------------------------------------------------------------

BOMB_FRAMES = 775_000


@pytest.fixture(scope="module")
def audio(encoded) -> bytes:
    """A CBR MP3 stream without a Xing header (so the check would use TLEN), tags removed."""
    path = encoded("mp3_noxing")
    with Source(path) as src:
        start = leading_tags_end(src)
    return path.read_bytes()[start:]


def tagged(folder, name: str, audio: bytes, txxx_frames: int) -> str:
    """``audio`` behind an ID3v2.4 tag of ``txxx_frames`` distinct TXXX frames, then TLEN."""
    frames = b"".join(frame(4, b"TXXX", b"\x03k%d\x00v" % i) for i in range(txxx_frames))
    seconds = len(audio) * 8 / 128000
    path = folder / name
    path.write_bytes(tag(4, frames + frame(4, b"TLEN", b"\x03%d" % int(seconds * 1000))) + audio)
    return str(path)


def tags_end(path: str) -> int:
    with Source(path) as src:
        return leading_tags_end(src)


def best_time(path: str, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        verdict = check_file(path)
        best = min(best, time.perf_counter() - began)
    assert (verdict.status, verdict.reason) == ("ok", "ok"), verdict
    return best


@pytest.fixture(scope="module")
def bomb(tmp_path_factory, audio) -> tuple[str, str]:
    """(a file with a normal 10-frame tag, the same audio behind a 15 MB tag bomb)."""
    folder = tmp_path_factory.mktemp("bomb")
    return tagged(folder, "normal.mp3", audio, 10), tagged(folder, "bomb.mp3", audio, BOMB_FRAMES)


def test_tag_bomb_is_judged_about_as_fast_as_a_normal_file(bomb):
    """Generous: the bomb may cost 100 times the normal file (walking up to MAX_ID3_FRAMES
    frame headers costs about 25 times here); parsing it with mutagen cost millions of times."""
    normal, bombed = bomb
    ratio = best_time(bombed) / best_time(normal, runs=20)
    assert ratio < 100, f"the bomb took {ratio:.0f} times the normal file"


def test_tag_bomb_peak_memory_is_far_below_the_tag(bomb):
    normal, bombed = bomb
    peaks = {}
    for path in (normal, bombed):
        tracemalloc.start()
        check_file(path)
        peaks[path] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    tag_size = tags_end(bombed)
    assert tag_size > 15_000_000
    assert peaks[bombed] < 2 * peaks[normal] + 1_000_000 < tag_size // 4, peaks


def test_audio_behind_a_tag_bomb_is_still_checked(bomb, tmp_path):
    """A tag beyond the limits is not damage, and not a shield: a cut after it is caught."""
    _normal, bombed = bomb
    data = open(bombed, "rb").read()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[:len(data) - 300])
    verdict = check_file(cut)
    assert (verdict.status, verdict.reason) == ("corrupt", "truncated"), verdict


# --- stacks of tags -----------------------------------------------------------------------------

EMPTY_ID3V2 = b"ID3\x04\x00\x00\x00\x00\x00\x00"
ID3V1 = b"TAG" + bytes(125)


@pytest.mark.parametrize("head, tail", [(EMPTY_ID3V2 * 3, b""), (b"", ID3V1 * 2)], ids=["id3v2_x3", "id3v1_x2"])
def test_a_few_repeated_tags_are_skipped(tmp_path, audio, head, tail):
    path = tmp_path / "repeated.mp3"
    path.write_bytes(head + audio + tail)
    assert check_file(path).status == "ok"


@pytest.mark.parametrize("head, tail", [(EMPTY_ID3V2 * 1_000_000, b""), (b"", ID3V1 * 100_000)],
                         ids=["id3v2_x1000000", "id3v1_x100000"])
def test_thousands_of_stacked_tags_are_beyond_the_check(tmp_path, audio, head, tail):
    """Walking them took seconds per file; beyond MAX_TAG_BLOCKS the file is unchecked,
    never corrupt."""
    path = tmp_path / "stacked.mp3"
    path.write_bytes(head + audio + tail)
    verdict = check_file(path)
    assert (verdict.status, verdict.reason) == ("unchecked", "check_limit"), verdict


def test_deep_check_of_a_tag_bomb_skips_the_tag(bomb):
    """FFmpeg reads ID3v2 frames in time quadratic in their number (hours for this tag);
    the deep check starts FFmpeg past the tags, so the bomb costs about a normal file."""
    from poold.integrity.deep import deep_check

    def best(path: str) -> float:
        times = []
        for _ in range(3):
            began = time.perf_counter()
            verdict = deep_check(path)
            times.append(time.perf_counter() - began)
            assert (verdict.status, verdict.reason) == ("ok", "ok"), verdict
        return min(times)

    normal, bombed = bomb
    ratio = best(bombed) / best(normal)
    assert ratio < 50, f"the deep check of the bomb took {ratio:.0f} times the normal file"


def test_skip_leading_tags_names_where_the_audio_starts(bomb, tmp_path):
    normal, bombed = bomb
    assert tags.skip_leading_tags(bombed) == {"skip_initial_bytes": str(tags_end(bombed))}
    untagged = tmp_path / "untagged.mp3"
    untagged.write_bytes(b"\xff\xfb\x90\x00" + bytes(413))
    assert tags.skip_leading_tags(untagged) == {}
