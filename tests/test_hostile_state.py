"""The state database on a failing disk (issue 11, items 5, 10 and 12): a lost, garbled,
read-only or full state dir is one clear line and exit 2, never a fresh start that files
everything again, and never a request sent twice once space comes back."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid

import pytest

import media
from poold.cli import main
from poold.errors import StateError
from poold.state import DB_NAME, MARKER_NAME, State

NO_GUARD = "[guard]\nmax_missing_fraction = 1.0\n"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- a lost database ------------------------------------------------------------------

def test_a_new_state_dir_gets_a_database_and_its_marker(tmp_path):
    with State(tmp_path / "state") as state:
        assert (tmp_path / "state" / DB_NAME).stat().st_size > 0  # before any checkpoint
        identity = state.note("identity")
    assert identity and (tmp_path / "state" / MARKER_NAME).read_text().strip() == identity
    with State(tmp_path / "state") as state:
        assert state.note("identity") == identity


@pytest.mark.parametrize("loss", ["truncated", "deleted"])
def test_a_lost_database_is_refused_not_replaced(tmp_path, loss):
    directory = tmp_path / "state"
    with State(directory) as state:
        state.record_problem(5, "a.mp3", "missing", "missing", "gone")
    database = directory / DB_NAME
    if loss == "truncated":
        os.truncate(database, 0)
    else:
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            (directory / name).unlink(missing_ok=True)
    with pytest.raises(StateError) as error:
        State(directory)
    assert "poold reset-state" in str(error.value) and str(database) in str(error.value)
    assert not database.exists() or database.stat().st_size == 0  # nothing was created in its place


def test_a_database_from_before_the_marker_is_adopted(tmp_path):
    directory = tmp_path / "state"
    with State(directory) as state:
        state.record_problem(5, "a.mp3", "missing", "missing", "gone")
    (directory / MARKER_NAME).unlink()  # as poold 0.x left it
    with State(directory) as state:
        assert state.open_trackids() == {5}
    assert (directory / MARKER_NAME).read_text().strip() == state_identity(directory)


def test_another_database_in_a_used_state_dir_is_refused(tmp_path):
    directory = tmp_path / "state"
    State(directory).close()
    (directory / MARKER_NAME).write_text(uuid.uuid4().hex + "\n")
    with pytest.raises(StateError, match="reset-state"):
        State(directory)


def state_identity(directory) -> str:
    with State(directory) as state:
        return state.note("identity")


def test_a_lost_database_stops_audit_request_until_reset(capsys, make_library, sandbox):
    library = make_library(["mp3", "mp3"], base_url=sandbox.base_url, extra=NO_GUARD)
    config = str(library.config_path)
    library.paths[1001].unlink()
    assert run(capsys, "audit", "--request", "--config", config)[0] == 1
    assert sandbox.requeued == {1001: 1}
    os.truncate(library.folder / "state" / DB_NAME, 0)
    for argv in (["audit", "--request"], ["audit"], ["status"], ["requests"]):
        code, out, err = run(capsys, *argv, "--config", config)
        assert code == 2 and "poold reset-state" in one_line(err), (argv, err)
    assert sandbox.requeued == {1001: 1}  # nothing filed again from an empty memory
    code, out, err = run(capsys, "reset-state", "--config", config)
    assert code == 0 and "poold.sqlite3" in out, err
    assert run(capsys, "audit", "--request", "--config", config)[0] == 1
    assert sandbox.requeued == {1001: 2}  # the deliberate fresh start files it again


def test_reset_state_keeps_the_old_database_aside(capsys, make_library):
    library = make_library(["mp3"])
    config = str(library.config_path)
    assert run(capsys, "audit", "--config", config)[0] == 0
    state_dir = library.folder / "state"
    old = state_identity(state_dir)
    code, out, err = run(capsys, "reset-state", "--config", config)
    assert code == 0, err
    kept = [p for p in state_dir.iterdir() if p.name.startswith(DB_NAME + ".reset-")]
    assert len(kept) == 1 and str(kept[0]) in out
    assert state_identity(state_dir) != old


# --- garbage, read-only, full -----------------------------------------------------------

def test_garbage_in_the_database_is_one_line_exit_2(capsys, make_library, sandbox):
    library = make_library(["mp3"], base_url=sandbox.base_url)
    config = str(library.config_path)
    assert run(capsys, "audit", "--config", config)[0] == 0
    database = library.folder / "state" / DB_NAME
    for name in (DB_NAME + "-wal", DB_NAME + "-shm"):
        (database.parent / name).unlink(missing_ok=True)
    database.write_bytes(os.urandom(8192))
    for argv in (["audit", "--request"], ["audit"], ["status"], ["requests"]):
        code, _, err = run(capsys, *argv, "--config", config)
        assert code == 2 and "not a database" in one_line(err), (argv, err)
    with pytest.raises(StateError, match="not a database"):
        State(database.parent)


def test_a_state_dir_that_cannot_be_made_is_a_state_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="cannot create"):
        State(tmp_path / "file" / "state")


@contextlib.contextmanager
def mounted_tmpfs(folder, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)


def test_a_read_only_state_dir_is_one_line_exit_2(capsys, make_library, sandbox):
    library = make_library(["mp3", "mp3"], base_url=sandbox.base_url, extra=NO_GUARD)
    config = str(library.config_path)
    with mounted_tmpfs(library.folder / "state", "4m") as state_dir:
        assert run(capsys, "audit", "--config", config)[0] == 0
        library.paths[1001].unlink()
        remount(state_dir, "ro")
        for argv in (["audit", "--request"], ["audit"], ["status"], ["requests"]):
            code, _, err = run(capsys, *argv, "--config", config)
            assert code == 2 and "read-only" in one_line(err), (argv, err)
        assert sandbox.requeued == {}
        remount(state_dir, "rw")
        assert run(capsys, "audit", "--request", "--config", config)[0] == 1
        assert sandbox.requeued == {1001: 1}


def test_a_full_disk_from_the_start_is_one_line_exit_2(capsys, make_library, sandbox):
    library = make_library(["mp3"], base_url=sandbox.base_url)
    config = str(library.config_path)
    with mounted_tmpfs(library.folder / "state", "64k") as state_dir:
        fill(state_dir, 0)
        for argv in (["audit", "--request"], ["audit"], ["status"], ["requests"]):
            code, _, err = run(capsys, *argv, "--config", config)
            assert code == 2 and "full" in one_line(err), (argv, err)


def fill(folder, leave: int) -> None:
    """Fill the file system of ``folder`` up to ``leave`` bytes free."""
    statvfs = os.statvfs(folder)
    free = statvfs.f_bavail * statvfs.f_frsize
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\1" * max(free - leave, 0))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("leave_kib", range(0, 480, 8))  # from before the first write to a run that fits
def test_a_disk_filling_mid_run_never_doubles_a_request(capsys, make_library, sandbox, leave_kib):
    """Whichever write the disk fills up at, the run ends in one line with exit 2 (or gets
    through); once space is back, the next run files each track exactly once in all."""
    kinds = ["mp3", "flac", "m4a", "mp3", "ogg", "wav"]
    library = make_library(kinds, base_url=sandbox.base_url,
                           extra=NO_GUARD + "[requests]\nbatch_size = 1\n")
    config = str(library.config_path)
    with mounted_tmpfs(library.folder / "state", "2m") as state_dir:
        assert run(capsys, "audit", "--config", config)[0] == 0  # a state dir in use
        library.paths[1001].unlink()
        library.paths[1002].write_bytes(b"<html>gone</html>")
        media.truncate(str(library.paths[1003]), 0.4)
        fill(state_dir, leave_kib * 1024)
        code, _, err = run(capsys, "audit", "--request", "--config", config)
        assert code == 1 or (code == 2 and "full" in one_line(err)), (code, err)
        (state_dir / "filler").unlink()
        code, _, err = run(capsys, "audit", "--request", "--config", config)
        assert code == 1, err
        assert sandbox.requeued == {1001: 1, 1002: 1, 1003: 1}
        with State(state_dir) as state:
            assert {r.state for r in state.requests()} == {"accepted"}


def test_state_writes_raise_state_error_when_the_disk_is_full(tmp_path):
    with mounted_tmpfs(tmp_path / "state", "1m") as state_dir:
        with State(state_dir) as state:
            fill(state_dir, 0)
            with pytest.raises(StateError, match="full"):
                for trackid in range(1, 2000):
                    state.record_problem(trackid, f"crate/{trackid:05d} some long name.mp3" * 4, "missing",
                                         "missing", "gone")


# --- names that are not UTF-8 -------------------------------------------------------------

NON_UTF8 = os.fsdecode(b"crate/\xff caf\xe9.mp3")


def test_state_keeps_paths_that_are_not_utf8(tmp_path):
    with State(tmp_path) as state:
        state.set_location(7, NON_UTF8, "crate/old.mp3")
        state.set_location(8, "crate/plain.mp3", NON_UTF8)
        assert state.locations() == {7: NON_UTF8, 8: "crate/plain.mp3"}
        incident = state.record_problem(7, NON_UTF8, "corrupt", "truncated", f"cut short: {NON_UTF8}")
        assert incident.path == NON_UTF8 and state.open_incidents()[0].path == NON_UTF8
        cache = state.file_cache()
        from poold.state import CachedCheck

        check = CachedCheck(10, 1, 2, 3, "ok", "ok", "fine", 1.5, "quick", "logic-1", None, None)
        cache.put(NON_UTF8, check)
        cache.put("crate/plain.mp3", check)
        cache.flush()
        assert cache.full(NON_UTF8) == check and cache.full("crate/plain.mp3") == check
    with State(tmp_path) as state:
        assert state.locations()[7] == NON_UTF8
        assert state.file_cache().full(NON_UTF8) is not None


def test_a_track_moved_to_a_name_that_is_not_utf8_is_audited_and_shown(capsys, make_library):
    """A real file named with byte 0xFF: the moved track is found, its verdict cached, its
    problem recorded and shown as text and as JSON without a crash."""
    library = make_library(["mp3", "flac"], extra="[guard]\nmax_missing_fraction = 1.0\n")  # 1 of 2 is damaged
    config = str(library.config_path)
    old = library.paths[1001]
    new_name = os.fsencode(old.parent) + b"/\xff moved.mp3"
    os.rename(old, new_name)
    moved = os.path.relpath(os.fsdecode(new_name), library.root)
    with State(library.folder / "state") as state:
        state.set_location(1001, moved, os.path.relpath(old, library.root))
    assert run(capsys, "audit", "--config", config)[0] == 0
    media.truncate(os.fsdecode(new_name), 0.4)
    code, out, err = run(capsys, "audit", "--json", "--config", config)
    assert code == 1, err
    problem = json.loads(out)["problems"][0]
    assert problem["trackid"] == 1001 and os.fsencode(problem["path"]).endswith(b"/\xff moved.mp3")
    code, out, err = run(capsys, "audit", "--config", config)
    assert code == 1 and "moved.mp3" in out, err
    code, out, err = run(capsys, "status", "--json", "--config", config)
    assert code == 0 and json.loads(out)["open_incidents"][0]["path"] == problem["path"]
    code, out, err = run(capsys, "status", "--config", config)
    assert code == 0 and "\\xff moved.mp3" in out, out


def test_a_damaged_page_found_by_a_read_is_a_state_error(tmp_path):
    """The header and the small tables read on opening are intact; the pages of the
    incidents, written last, are garbage: the read that meets them raises StateError."""
    with State(tmp_path) as state:
        state.record_problems([(n, f"crate/{n:05d}.mp3" * 8, "missing", "missing", "gone") for n in range(1, 3000)])
        page_size = state.db.execute("PRAGMA page_size").fetchone()[0]
        state.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    database = tmp_path / DB_NAME
    pages = database.stat().st_size // page_size
    with open(database, "r+b") as f:
        f.seek((pages // 2) * page_size)
        f.write(os.urandom((pages - pages // 2) * page_size))
    with State(tmp_path) as state, pytest.raises(StateError, match="not a usable poold state database"):
        state.open_incidents()


def test_processes_opening_a_new_state_dir_at_once_agree_on_its_identity(tmp_path):
    """The daemon and a `poold status` may both make the marker of a new state dir."""
    import concurrent.futures

    def open_and_read(_):
        with State(tmp_path / "state") as state:
            return state.note("identity")

    for attempt in range(10):
        directory = tmp_path / "state"
        shutil.rmtree(directory, ignore_errors=True)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            identities = set(pool.map(open_and_read, range(8)))
        assert len(identities) == 1 and (directory / MARKER_NAME).read_text().strip() in identities


def test_check_shows_a_name_that_is_not_utf8(capsys, tmp_path, encoded):
    folder = os.fsencode(tmp_path)
    shutil.copyfile(encoded("mp3"), folder + b"/\xff track.mp3")
    code, out, err = run(capsys, "check", str(tmp_path))
    assert code == 0 and "\\xff track.mp3" in out, out + err
    code, out, err = run(capsys, "check", "--json", str(tmp_path))
    assert code == 0 and os.fsencode(json.loads(out)["path"]) == folder + b"/\xff track.mp3", out + err
