"""The audit's scan: the incremental cache, worker processes, deep slices, manifest checks."""

import hashlib
import json
import os
import random

import pytest

import media
from conftest import write_manifest
from poold import app
from poold.manifest import read_manifest
from poold.scan import DEEP, QUICK, Finding, FindingList, ScanOptions, Scanner, audit
from poold.state import State, file_key, logic_number


def run(library, **options):
    config = library.config()
    return app.run_audit(config, options=ScanOptions(**options)).report


def test_warm_audit_opens_no_file_and_agrees(make_library):
    library = make_library(["mp3", "m4a", "flac", "ogg"] * 3)
    media.truncate(str(library.paths[1002]), 0.5)
    cold = run(library)
    warm = run(library)
    assert cold.files_checked == 12 and warm.files_checked == 0
    assert [(p.trackid, p.reason) for p in warm.problems] == [(p.trackid, p.reason) for p in cold.problems]
    assert [p.trackid for p in warm.problems] == [1002]


def test_changed_files_are_checked_again(make_library):
    library = make_library(["mp3", "flac", "m4a", "mp3"])
    run(library)
    media.zero_tail(str(library.paths[1001]), 0.3)  # same size: mtime and ctime change
    media.truncate(str(library.paths[1003]), 0.9)
    report = run(library)
    assert report.files_checked == 2
    assert {p.trackid: p.reason for p in report.problems} == {1001: "zero_filled", 1003: "truncated"}


def test_replaced_file_with_same_size_and_mtime_is_checked_again(make_library):
    """A copy that restores size and mtime still changes inode and ctime."""
    library = make_library(["mp3", "mp3"])
    run(library)
    path = library.paths[1001]
    info = path.stat()
    damaged = path.with_suffix(".new")
    damaged.write_bytes(path.read_bytes()[: info.st_size // 2] + bytes(info.st_size - info.st_size // 2))
    os.replace(damaged, path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    report = run(library)
    assert report.files_checked == 1 and [p.trackid for p in report.problems] == [1001]


def test_full_ignores_the_cache(make_library):
    library = make_library(["mp3", "flac"])
    run(library)
    assert run(library, full=True).files_checked == 2


def test_new_check_logic_voids_cached_verdicts(make_library):
    library = make_library(["mp3", "flac"])
    run(library)
    with State(library.config().state.dir) as state:  # as an older poold would have left them
        rows = state.db.execute("SELECT path, size, mtime_ns, inode, ctime_ns FROM files").fetchall()
        for path, *identity in rows:
            state.db.execute("UPDATE files SET logic = 'older', stamp = ? WHERE path = ?",
                             (file_key(path, tuple(identity), logic_number("older")), path))
    assert run(library).files_checked == 2


def test_worker_processes_agree_with_one_worker(make_library):
    kinds = ["mp3", "m4a", "flac", "ogg", "opus", "wav", "aiff", "mp4"] * 6
    library = make_library(kinds)
    for trackid in (1003, 1010, 1021, 1044):
        media.truncate(str(library.paths[trackid]), 0.6)
    library.paths[1030].unlink()
    single = run(library, workers=1, full=True)
    parallel = run(library, workers=2, full=True)
    assert parallel.files_checked == single.files_checked == len(kinds) - 1
    assert [p.as_json() for p in parallel.problems] == [p.as_json() for p in single.problems]
    assert [p.trackid for p in parallel.problems] == [1003, 1010, 1021, 1030, 1044]


def test_deep_slices_resume_where_the_last_stopped(make_library):
    """With a time limit, the first files get the deep check; the next run deep-checks the rest."""
    library = make_library(["flac"] * 4 + ["mp3"] * 4)
    config = library.config()
    ticks = iter(range(1000))
    clock = lambda: next(ticks)  # noqa: E731 - each call is one second later
    tracks = list(read_manifest(config.library.manifest))
    with State(config.state.dir) as state:
        cache = state.file_cache()
        first = Scanner(config.library.root, cache, ScanOptions(level=DEEP, time_limit=3), clock=clock)
        assert all(f.status == "ok" for f in first.findings(tracks))
        assert first.deep_deferred == 5
        levels = dict(state.db.execute("SELECT path, level FROM files"))
        assert sorted(levels.values()) == [DEEP] * 3 + [QUICK] * 5
        second = Scanner(config.library.root, cache, ScanOptions(level=DEEP), clock=clock)
        list(second.findings(tracks))
        assert second.checked_files == 5  # only those the first slice left
        assert set(dict(state.db.execute("SELECT path, level FROM files")).values()) == {DEEP}


def test_verify_compares_hashes_and_caches_digests(make_library):
    library = make_library(["mp3", "flac"])
    rows = [{"trackid": t, "path": str(p.relative_to(library.root)), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for t, p in library.paths.items()]
    rows[1]["sha256"] = "0" * 64
    write_manifest(library.manifest, rows)
    assert list(run(library).problems) == []  # hashes are compared only with --verify
    report = run(library, verify=True)  # 1002 never matched its hash: a retag or damage, poold cannot tell
    assert list(report.problems) == [] and [(u.trackid, u.reason) for u in report.unchecked] == [(1002, "unverified")]
    assert report.files_checked == 2
    again = run(library, verify=True)
    assert again.files_checked == 0 and [u.trackid for u in again.unchecked] == [1002]


def test_manifest_size_and_duration(make_library):
    library = make_library(["mp3", "flac", "m4a"])
    sizes = {t: p.stat().st_size for t, p in library.paths.items()}
    write_manifest(library.manifest, [
        {"trackid": 1001, "path": "crate2/track1001.mp3", "size": sizes[1001] + 500},   # smaller than downloaded
        {"trackid": 1002, "path": "crate0/track1002.flac", "size": sizes[1002] - 500},  # larger: a retag, fine
        {"trackid": 1003, "path": "crate1/track1003.m4a", "duration": 95},
    ])
    report = run(library)
    assert {p.trackid: p.reason for p in report.problems} == {1001: "size_mismatch", 1003: "duration_mismatch"}
    warm = run(library)  # the cached verdict keeps the file's duration for the comparison
    # The same report; only the cold run, which read the files, carries their identities.
    assert warm.files_checked == 0 and [p.as_json() for p in warm.problems] == [p.as_json() for p in report.problems]


def test_audit_keeps_only_watched_ok_ids(make_library):
    library = make_library(["mp3", "flac", "m4a"])
    config = library.config()
    report = audit(config.library.root, read_manifest(config.library.manifest), open_ids=frozenset({1002}))
    assert report.ok == 3 and report.ok_trackids == {1002}


@pytest.mark.parametrize("manifest_format", ["jsonl", "csv"])
def test_other_manifest_formats_audit_the_same(make_library, manifest_format):
    library = make_library(["mp3", "flac"], manifest_format=manifest_format)
    library.paths[1002].unlink()
    report = run(library)
    assert [(p.trackid, p.status) for p in report.problems] == [(1002, "missing")]


def test_moved_track_is_found_at_its_recorded_location(make_library):
    library = make_library(["mp3", "flac"])
    moved = library.root / "new crate" / "renamed.mp3"
    moved.parent.mkdir()
    library.paths[1001].rename(moved)
    with State(library.config().state.dir) as state:
        state.set_location(1001, "new crate/renamed.mp3", "crate2/track1001.mp3")
    report = run(library)
    assert not report.problems and report.checked == 2
    assert json.loads(library.manifest.read_text())["tracks"][0]["path"] == "crate2/track1001.mp3"


def test_findings_beyond_the_memory_limit_spill_and_come_back_in_order(monkeypatch):
    """A long list of findings goes to a temporary file in sorted runs; reading merges them."""
    monkeypatch.setattr(FindingList, "SPILL_AFTER", 100)
    monkeypatch.setattr(FindingList, "CHUNK", 7)
    trackids = list(range(1, 1001))
    random.Random(6).shuffle(trackids)
    findings = FindingList(Finding(t, f"crate/{t}.mp3", "missing", "missing", "no file at this path") for t in trackids)
    assert findings._runs and len(findings) == 1000
    assert [f.trackid for f in findings] == list(range(1, 1001))
    assert list(findings) == list(findings)  # it can be read again
    assert all(type(f) is Finding and f.path == f"crate/{f.trackid}.mp3" for f in findings)


def test_a_vanished_library_keeps_few_findings_in_memory(make_library, monkeypatch):
    monkeypatch.setattr(FindingList, "SPILL_AFTER", 4)
    library = make_library(["mp3"] * 3)
    rows = [{"trackid": t, "path": f"gone/{t}.mp3"} for t in range(20, 0, -1)]
    write_manifest(library.manifest, rows)
    report = run(library)
    assert report.missing == 20 and len(report.problems) == 20 and len(report.problems._memory) < 4
    assert [p.trackid for p in report.problems] == list(range(1, 21))


def test_cache_writes_leave_the_connection_durable(make_library):
    """Verdicts are committed without an fsync; the outbox's commits that follow must still have one."""
    library = make_library(["mp3", "flac"])
    with State(library.config().state.dir) as state:
        cache = state.file_cache()
        assert all(f.status == "ok" for f in Scanner(library.root, cache, ScanOptions()).findings(
            read_manifest(library.manifest)))
        assert state.db.execute("SELECT count(*) FROM files").fetchone()[0] == 2
        assert state.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
