"""Hostile manifests and config files (issue 11, items 6 and 8): every bad row is a one-line
ManifestError naming the file and the row, never a traceback, a hang or a memory blow-up."""

from __future__ import annotations

import json
import os

import pytest

from poold import cli, manifest
from poold.config import ConfigError, load
from poold.manifest import ManifestError, Track, read_manifest

NESTED = "[" * 200_000 + "]" * 200_000


def _fail(path, *fragments: str) -> str:
    with pytest.raises(ManifestError) as error:
        list(read_manifest(path))
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _json_text(rows_json: list[str]) -> str:
    return '{"tracks": [\n' + ",\n".join(rows_json) + "\n]}\n"


def _write(tmp_path, suffix: str, second_row: str, *, csv_row: str | None = None):
    """A manifest whose first row is fine and whose second row is ``second_row`` (JSON
    text of one object; for CSV, ``csv_row``)."""
    first = '{"trackid": 1, "path": "ok.mp3"}'
    path = tmp_path / f"m.{suffix}"
    if suffix == "json":
        path.write_text(_json_text([first, second_row]), encoding="utf-8", errors="surrogatepass")
    elif suffix == "jsonl":
        path.write_text(first + "\n" + second_row + "\n", encoding="utf-8", errors="surrogatepass")
    else:
        path.write_text("trackid,path,size\n1,ok.mp3,\n" + csv_row + "\n", encoding="utf-8")
    return path


@pytest.fixture(params=[False, True], ids=["whole", "streamed"])
def json_mode(request, monkeypatch):
    """Run JSON cases through both the parse-it-whole fast path and the streaming reader."""
    if request.param:
        monkeypatch.setattr(manifest, "WHOLE_JSON_LIMIT", 0)
    return request.param


ROW_CASES = [
    # (id, JSON row text, CSV row text, expected fragment)
    ("nul", r'{"trackid": 2, "path": "a\u0000b.mp3"}', "2,a\x00b.mp3,", "NUL"),
    ("surrogate", r'{"trackid": 2, "path": "a\ud800b.mp3"}', None, "not valid Unicode"),
    ("escaped-byte", r'{"trackid": 2, "path": "a\udcffb.mp3"}', None, "not valid Unicode"),
    ("id-2^63", '{"trackid": 9223372036854775808, "path": "b.mp3"}', "9223372036854775808,b.mp3,",
     "trackid"),
    ("id-5000-digits", '{"trackid": ' + "9" * 5000 + ', "path": "b.mp3"}', "9" * 5000 + ",b.mp3,", "trackid"),
    ("id-superscript", '{"trackid": "\u00b2", "path": "b.mp3"}', "\u00b2,b.mp3,", "trackid"),
    ("id-arabic-digit", '{"trackid": "\u0663", "path": "b.mp3"}', "\u0663,b.mp3,", "trackid"),
    ("size-superscript", '{"trackid": 2, "path": "b.mp3", "size": "\u00b2"}', "2,b.mp3,\u00b2", "size"),
    ("size-2^63", '{"trackid": 2, "path": "b.mp3", "size": 9223372036854775808}', "2,b.mp3,9223372036854775808",
     "size"),
    ("size-5000-digits", '{"trackid": 2, "path": "b.mp3", "size": "' + "9" * 5000 + '"}',
     "2,b.mp3," + "9" * 5000, "size"),
    ("duration-huge-int", '{"trackid": 2, "path": "b.mp3", "duration": ' + "9" * 400 + "}", None, "duration"),
    ("nested-row", '{"trackid": 2, "path": "b.mp3", "x": ' + NESTED + "}", None, "nested"),
    ("path-4097-bytes", '{"trackid": 2, "path": "' + "/".join(["d" * 200] * 20) + "/" + "x" * 96 + '"}',
     "2," + "/".join(["d" * 200] * 20) + "/" + "x" * 96 + ",", "longer than 4096 bytes"),
    ("component-256-bytes", '{"trackid": 2, "path": "d/' + "x" * 256 + '"}', "2,d/" + "x" * 256 + ",",
     "longer than 255 bytes"),
    ("component-256-bytes-utf8", '{"trackid": 2, "path": "' + "\u00e9" * 128 + '"}', "2," + "\u00e9" * 128 + ",",
     "longer than 255 bytes"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case, row, csv_row, fragment", ROW_CASES, ids=[c[0] for c in ROW_CASES])
@pytest.mark.parametrize("reader", ["json-whole", "json-streamed", "jsonl", "csv"])
def test_hostile_rows_are_one_line_errors_naming_the_row(tmp_path, monkeypatch, reader, case, row, csv_row, fragment):
    suffix = reader.split("-")[0]
    if suffix == "csv" and csv_row is None:
        pytest.skip("CSV text cannot hold this (no escapes, no nesting)")
    if reader == "json-streamed":
        monkeypatch.setattr(manifest, "WHOLE_JSON_LIMIT", 0)
    path = _write(tmp_path, suffix, row, csv_row=csv_row)
    where = {"json": "track 2", "jsonl": "line 2", "csv": "line 3"}[suffix]
    _fail(path, where, fragment)


def test_the_longest_allowed_paths_are_accepted(tmp_path, json_mode):
    longest = "/".join(["d" * 255] * 16)  # 16 * 256 - 1 = 4095 bytes
    rows = [{"trackid": 2**63 - 1, "path": longest}, {"trackid": 1, "path": "\u00e9" * 127 + "x"}]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"tracks": rows}))
    assert list(read_manifest(path)) == [Track(2**63 - 1, longest), Track(1, "\u00e9" * 127 + "x")]


@pytest.mark.parametrize("suffix, where", [("json", "line 3"), ("jsonl", "line 2"), ("csv", "line 3")])
def test_a_byte_that_is_not_utf8_names_its_line(tmp_path, suffix, where):
    path = _write(tmp_path, suffix, '{"trackid": 2, "path": "b.mp3"}', csv_row="2,b.mp3,")
    text = path.read_bytes().replace(b"b.mp3", b"b\xff.mp3")
    path.write_bytes(text)
    _fail(path, where, "not UTF-8")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text", [
    '{"other": ' + NESTED + ', "tracks": []}',
    '{"tracks": ' + NESTED + "}",
])
def test_deep_nesting_anywhere_in_json_is_an_error(tmp_path, json_mode, text):
    path = tmp_path / "m.json"
    path.write_text(text)
    _fail(path, "nested")


def test_deep_nesting_in_a_jsonl_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"trackid": 1, "path": "a.mp3"}\n' + NESTED + "\n")
    _fail(path, "line 2", "nested")


BIG = 2 * 1024 * 1024  # past the 1 MiB row limit


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv"])
def test_a_row_past_the_row_limit_is_refused(tmp_path, monkeypatch, suffix):
    """A 2 MiB row (the issue's was 100 MB, stored as an incident) is refused, in every reader."""
    monkeypatch.setattr(manifest, "WHOLE_JSON_LIMIT", 0)
    filler = "x" * BIG
    if suffix == "csv":
        path = tmp_path / "m.csv"
        columns = ",".join(f"c{n}" for n in range(21))  # 21 fields of 100 kB: each under csv's own field limit
        path.write_text(f"trackid,path,{columns}\n1,a.mp3{',' * 21}\n2,b.mp3," + ",".join([filler[:100_000]] * 21) + "\n")
    else:
        path = _write(tmp_path, suffix, '{"trackid": 2, "path": "b.mp3", "artist": "' + filler + '"}')
    _fail(path, {"json": "track 2", "jsonl": "line 2", "csv": "line 3"}[suffix], "1 MiB")


def test_a_row_with_a_huge_path_is_refused_without_reading_it_all(tmp_path):
    """A 100 MB JSONL row: refused after the first MiB, with memory to match."""
    import tracemalloc

    path = tmp_path / "m.jsonl"
    with open(path, "w") as f:
        f.write('{"trackid": 1, "path": "')
        for _ in range(100):
            f.write("y" * 1024 * 1024)
        f.write('"}\n')
    tracemalloc.start()
    try:
        _fail(path, "line 1", "1 MiB")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, f"peak {peak:,} bytes to refuse a 100 MB row"


@pytest.mark.timeout(10)
def test_a_fifo_manifest_is_refused_at_once(tmp_path):
    path = tmp_path / "m.json"
    os.mkfifo(path)
    _fail(path, "not a regular file")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null"])
def test_a_manifest_linked_to_a_device_is_refused(tmp_path, target):
    path = tmp_path / "m.jsonl"
    path.symlink_to(target)
    _fail(path, "not a regular file")


def test_a_folder_named_like_a_manifest_is_refused(tmp_path):
    (tmp_path / "m.csv").mkdir()
    _fail(tmp_path / "m.csv", "not a regular file")


def test_a_manifest_linked_to_a_regular_file_is_read(tmp_path):
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"tracks": [{"trackid": 1, "path": "a.mp3"}]}))
    (tmp_path / "m.json").symlink_to(real)
    assert list(read_manifest(tmp_path / "m.json")) == [Track(1, "a.mp3")]


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv"])
def test_a_manifest_past_the_size_limit_is_refused(tmp_path, monkeypatch, suffix):
    path = _write(tmp_path, suffix, '{"trackid": 2, "path": "b.mp3"}', csv_row="2,b.mp3,")
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", path.stat().st_size - 1)
    _fail(path, "larger than")
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", path.stat().st_size)
    assert len(list(read_manifest(path))) == 2


def test_estimate_rows_reads_only_regular_files(tmp_path):
    path = tmp_path / "m.jsonl"
    path.symlink_to("/dev/zero")
    assert manifest.estimate_rows(path) == 0


@pytest.mark.parametrize("odd", ["a\x00b.mp3", "a\ud800.mp3", "a\udcff.mp3", "x" * 256, "\u00e9" * 128,
                                 "x" * 255, "\u00e9" * 127, "/".join(["d" * 255] * 16),
                                 "/".join(["d" * 255] * 16) + "x", "\U0001f3b5" * 63, "\U0001f3b5" * 64])
def test_column_check_agrees_with_the_row_check_on_hostile_paths(odd):
    paths = ["crate/first.mp3", odd, "crate/last.mp3"]
    assert manifest._all_clean(paths) == all(manifest._is_clean(p) for p in paths)
    try:
        normalised = manifest.normalise_path(odd, "row")
    except ManifestError:
        normalised = None
    assert manifest._is_clean(odd) == (normalised == odd)


def test_rewriting_keeps_rows_whose_ignored_fields_hold_lone_surrogates(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"tracks": [{"trackid": 1, "path": "a.mp3", "note": "\\ud800"}]}')
    manifest.rewrite_manifest(path, {1: "b.mp3"})
    assert list(read_manifest(path)) == [Track(1, "b.mp3")]


# --- through the command line ---------------------------------------------------------

@pytest.mark.parametrize("text", [
    '{"tracks": [{"trackid": 1, "path": "a\\u0000.mp3"}]}',
    '{"tracks": [{"trackid": 9223372036854775808, "path": "a.mp3"}]}',
    '{"tracks": [' + NESTED + "]}",
])
def test_the_cli_prints_one_line_and_exits_2(make_library, capsys, text):
    library = make_library(("mp3",))
    library.manifest.write_text(text)
    assert cli.main(["audit", "--config", str(library.config_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(library.manifest) in err, err


@pytest.mark.timeout(10)
def test_the_cli_refuses_a_fifo_manifest(make_library, capsys):
    library = make_library(("mp3",))
    library.manifest.unlink()
    os.mkfifo(library.manifest)
    assert cli.main(["audit", "--config", str(library.config_path)]) == 2
    assert "not a regular file" in capsys.readouterr().err


# --- the config file ---------------------------------------------------------------------

@pytest.mark.timeout(10)
def test_a_fifo_config_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        load(path)


@pytest.mark.timeout(10)
def test_a_config_linked_to_dev_zero_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        load(path)


def test_a_huge_config_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load(path)


def test_a_deeply_nested_config_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("a = " + "[" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load(path)


@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_a_huge_integer_in_a_field_poold_ignores_is_fine_but_later_faults_are_found(tmp_path, json_mode, suffix):
    path = _write(tmp_path, suffix, '{"trackid": 2, "path": "b.mp3", "plays": ' + "7" * 5000 + "}")
    assert [t.trackid for t in read_manifest(path)] == [1, 2]
    path = _write(tmp_path, suffix, '{"trackid": 2, "plays": ' + "7" * 5000 + ', "x": ' + NESTED + "}")
    _fail(path, "nested")
    path.write_text(path.read_text().replace(NESTED, "[1,]"))
    _fail(path, "malformed JSON")


def test_a_json_manifest_read_whole_is_bounded_by_its_size_not_the_row_limit(tmp_path):
    """Parsed in one go, a small JSON manifest may hold a long row (its 16 MiB bound it);
    only the checked fields are kept, so the track is the same small record."""
    path = _write(tmp_path, "json", '{"trackid": 2, "path": "b.mp3", "notes": "' + "x" * BIG + '"}')
    assert list(read_manifest(path)) == [Track(1, "ok.mp3"), Track(2, "b.mp3")]


@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_a_digest_with_a_trailing_newline_is_refused(tmp_path, suffix):
    """A regex "$" also matches before a final newline: "ab...ab\\n" would be kept and
    then never equal the file's digest, a false checksum_mismatch."""
    path = _write(tmp_path, suffix, json.dumps({"trackid": 2, "path": "b.mp3", "sha256": "ab" * 32 + "\n"}))
    _fail(path, "sha256")


@pytest.mark.timeout(20)
def test_a_secret_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    from poold.config import ConfigError, load

    os.mkfifo(tmp_path / "api_secret")
    (tmp_path / "api_key").write_text("key\n")
    config = tmp_path / "config.toml"
    config.write_text('[library]\nroot = "lib"\nmanifest = "m.json"\n[pool]\nuserid = 1\n'
                      'api_key_file = "api_key"\napi_secret_file = "api_secret"\n')
    secret = load(config).pool.api_secret
    with pytest.raises(ConfigError, match="not a regular file"):
        secret.reveal()
