import json
import tracemalloc

import pytest

from conftest import write_manifest
from poold import manifest
from poold.manifest import ManifestError, Track, count_tracks, read_manifest

ROWS = [
    {"trackid": 356111, "path": "House/a.mp3", "size": 1234, "duration": 201.5},
    {"trackid": 356115, "path": "Video/b.mp4", "sha256": "ab" * 32, "md5": "CD" * 16},
]


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv"])
def test_reads_every_format(tmp_path, suffix):
    path = tmp_path / f"m.{suffix}"
    write_manifest(path, ROWS)
    tracks = list(read_manifest(path))
    assert tracks == [
        Track(356111, "House/a.mp3", size=1234, duration=201.5),
        Track(356115, "Video/b.mp4", sha256="ab" * 32, md5="cd" * 16),
    ]


def test_json_ignores_other_keys_and_extra_fields(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"generated": "x", "tracks": [{"trackid": "7", "path": "./a/../b.mp3", "artist": "A"}],
                                "more": {"nested": [1, 2]}}))
    assert list(read_manifest(path)) == [Track(7, "b.mp3")]


@pytest.mark.parametrize("row, fragment", [
    ({"trackid": "abc", "path": "a.mp3"}, "trackid 'abc' is not a positive integer"),
    ({"trackid": 1.5, "path": "a.mp3"}, "not a positive integer"),
    ({"trackid": True, "path": "a.mp3"}, "not a positive integer"),
    ({"path": "a.mp3"}, "missing trackid"),
    ({"trackid": 3}, "missing path"),
    ({"trackid": 3, "path": "../outside.mp3"}, "escapes the library root"),
    ({"trackid": 3, "path": "a/../../outside.mp3"}, "escapes the library root"),
    ({"trackid": 3, "path": "/etc/passwd"}, "must be relative"),
    ({"trackid": 3, "path": "C:\\x.mp3"}, "must be relative"),
    ({"trackid": 3, "path": "a.mp3", "size": -5}, "size -5"),
    ({"trackid": 3, "path": "a.mp3", "sha256": "xyz"}, "sha256"),
    ({"trackid": 3, "path": "a.mp3", "duration": "long"}, "duration"),
])
@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_bad_rows_name_the_row(tmp_path, row, fragment, suffix):
    path = tmp_path / f"m.{suffix}"
    write_manifest(path, [{"trackid": 1, "path": "ok.mp3"}, row])
    with pytest.raises(ManifestError) as error:
        list(read_manifest(path))
    message = str(error.value)
    assert fragment in message and str(path) in message
    assert ("track 2" if suffix == "json" else "line 2") in message


@pytest.mark.parametrize("second, fragment", [
    ({"trackid": 1, "path": "other.mp3"}, "trackid 1 already listed at line 2"),
    ({"trackid": 2, "path": "./a.mp3"}, "path 'a.mp3' already listed at line 2"),
])
def test_duplicates_are_errors(tmp_path, second, fragment):
    path = tmp_path / "m.csv"
    write_manifest(path, [{"trackid": 1, "path": "a.mp3"}, second])
    with pytest.raises(ManifestError, match="line 3") as error:
        list(read_manifest(path))
    assert fragment in str(error.value)


@pytest.mark.parametrize("name, text, fragment", [
    ("m.json", '{"tracks": [{"trackid": 1, "path": "a.mp3"},\n {"trackid": 2 "path": "b.mp3"}]}', "line 2"),
    ("m.json", '{"tracks": [{"trackid": 1, "path": "a.mp3"}', "malformed JSON"),
    ("m.json", '[{"trackid": 1, "path": "a.mp3"}]', "malformed JSON"),
    ("m.json", '{"items": []}', '"tracks" array'),
    ("m.jsonl", '{"trackid": 1, "path": "a.mp3"}\n{"trackid": 2,\n', "line 2: malformed JSON"),
    ("m.csv", "id,file\n1,a.mp3\n", "header must name"),
    ("m.csv", 'trackid,path\n1,a.mp3,extra\n', "line 2: more fields"),
    ("m.csv", 'trackid,path\n1,"a.mp3\n', "malformed CSV"),
    ("m.xml", "<tracks/>", "unknown manifest type"),
])
def test_malformed_files(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ManifestError) as error:
        list(read_manifest(path))
    assert fragment in str(error.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        list(read_manifest(tmp_path / "none.json"))


def _peak(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix", ["json", "csv"])
def test_streams_with_bounded_memory(tmp_path, suffix, monkeypatch):
    monkeypatch.setattr(manifest, "WHOLE_JSON_LIMIT", 0)  # as for a manifest too big to parse whole
    """Memory grows only with the compact duplicate guard: a million rows stay far below 1 GB."""
    path = tmp_path / f"big.{suffix}"
    rows = [{"trackid": i, "path": f"crate/{i:07d} - some artist - some title.mp3", "size": 9_000_000 + i}
            for i in range(1, 10_001)]
    write_manifest(path, rows)
    del rows
    streamed = _peak(lambda: count_tracks(path))
    loaded = _peak(lambda: list(read_manifest(path)))  # the same rows kept in memory: the baseline
    assert streamed < loaded
    # The guard keeps 16 bytes a row and sorts them once at the end (about 40 more, for
    # a moment); 150 keeps a million rows near 100 MB.
    assert streamed / 10_000 < 150, f"{streamed / 10_000:.0f} bytes a row: a million rows would need {streamed * 100:,}"


def test_a_valid_streamed_manifest_never_counts_lines(tmp_path, monkeypatch):
    """Row locations are worked out only for an error message: counting lines from the
    start of the file for every row would make a big manifest take quadratic time."""
    monkeypatch.setattr(manifest, "WHOLE_JSON_LIMIT", 0)
    counted = []
    monkeypatch.setattr(manifest, "line_at", lambda *args: counted.append(args) or 1)
    path = tmp_path / "m.json"
    write_manifest(path, [{"trackid": i, "path": f"crate/{i}.mp3", "size": 1000 + i} for i in range(1, 300)])
    assert count_tracks(path) == 299 and counted == []


def test_small_json_parsed_whole_gives_the_same_tracks_as_streaming(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    rows = [{"trackid": i, "path": f"crate/{i}.mp3"} for i in range(1, 500)] + ROWS
    write_manifest(path, rows)
    whole = list(read_manifest(path))
    monkeypatch.setattr(manifest, "WHOLE_JSON_LIMIT", 0)
    assert list(read_manifest(path)) == whole and len(whole) == 501


ODD_PATHS = ["a.mp3", "a/b.mp3", "", " ", "\t", " a.mp3", "/a.mp3", "\\a.mp3", "a\\b.mp3", "C:/a.mp3",
             "c:a.mp3", "a:b.mp3", "ab:c.mp3", ".", "..", "./a.mp3", "../a.mp3", "a/./b.mp3", "a/../b.mp3",
             "a/.", "a/..", "a//b.mp3", "a/", "a/.hidden.mp3", "..a.mp3", "a..mp3", "a/\nb.mp3", "a\u00a0b.mp3",
             "\u00a0", "\u3000", "dj/ünïcödé.mp3", "a\rb.mp3"]


@pytest.mark.parametrize("odd", ODD_PATHS)
def test_column_check_of_paths_agrees_with_the_row_check(odd):
    """The C-speed check of a whole manifest's paths accepts exactly what the per-row check
    does, except a path with a newline, which it leaves to the per-row check."""
    paths = ["crate/first.mp3", odd, "crate/last.mp3"]
    agrees = (lambda column, row: column == row) if "\n" not in odd else (lambda column, row: not column)
    assert agrees(manifest._all_clean(paths), all(manifest._is_clean(p) for p in paths))
    assert agrees(manifest._all_clean([odd]), manifest._is_clean(odd))


@pytest.mark.parametrize("rows", [
    [{"trackid": 1, "path": "a.mp3"}, {"trackid": True, "path": "b.mp3"}],
    [{"trackid": 1, "path": "a.mp3"}, {"trackid": 0, "path": "b.mp3"}],
    [{"trackid": 1, "path": "a.mp3"}, {"trackid": "2", "path": "b.mp3"}],
    [{"trackid": 1, "path": "a.mp3"}, {"trackid": 2, "path": 3}],
    [{"trackid": 1, "path": "a.mp3"}, {"trackid": 2, "name": "b.mp3"}],
    [{"trackid": 1, "path": "a.mp3"}, {"trackid": 2, "path": "b.mp3", "size": 1}],
    [{"trackid": 1, "path": "a.mp3"}, ["b.mp3"]],
])
def test_plain_rows_only_take_the_column_path(rows):
    assert manifest._plain_tracks(rows) is None


def test_plain_rows_become_tracks():
    rows = [{"trackid": 7, "path": "a/b.mp3"}, {"path": "c.mp3", "trackid": 8}]
    assert manifest._plain_tracks(rows) == [Track(7, "a/b.mp3"), Track(8, "c.mp3")]
