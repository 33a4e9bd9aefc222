"""``poold run`` under hostile input: bad manifests at start and on reload, names that
are not UTF-8, and a library damaged all at once. The daemon must stay up, say what is
wrong, and file nothing it should not.

The processes, the library and the waits are those of test_daemon.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import media
from test_daemon import (FIRST_ID, TRACK_COUNT, delete_sentinel, requested_ids, requeued,  # noqa: F401
                         sandbox, seeds, setup, start)
from test_hostile_files import open_folder  # noqa: F401  (a fixture)


def bad_manifests():
    """Manifests that must be refused whole, each with the row that is wrong."""
    row = {"trackid": 7, "path": "Crate0/x.mp3"}
    return {
        "bad trackid": json.dumps({"tracks": [{**row, "trackid": "seven"}]}),
        "NUL in a path": json.dumps({"tracks": [{**row, "path": "Crate0/x\u0000.mp3"}]}),
        "huge trackid": json.dumps({"tracks": [{**row, "trackid": 2 ** 63}]}),
        "deep nesting": '{"tracks": [' + "[" * 200_000 + "]" * 200_000 + "]}",
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(bad_manifests()))
def test_a_bad_manifest_on_reload_keeps_the_last_good_one(setup, start, sandbox, kind):
    daemon = start()
    daemon.wait_watching()
    good = setup.manifest.read_text()
    setup.manifest.write_text(bad_manifests()[kind])
    daemon.process.send_signal(signal.SIGHUP)
    note = daemon.wait_for(lambda: (n := daemon.note()).get("manifest_error") and n, "the bad manifest to be reported")
    assert "manifest" in note["status"] and note["tracks"] == TRACK_COUNT
    assert "Traceback" not in daemon.log()

    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 3)  # the manifest read before is still used
    setup.manifest.write_text(good)  # fixed: picked up again, the error is gone
    daemon.wait_for(lambda: daemon.note().get("manifest_error") is None, "the fixed manifest to be read")
    assert requested_ids(sandbox) == [FIRST_ID + 3]
    assert daemon.stop()[0] == 0


@pytest.mark.timeout(30)
def test_a_bad_manifest_at_start_is_exit_2_with_one_line(setup, start):
    setup.manifest.write_text(bad_manifests()["NUL in a path"])
    daemon = start()
    assert daemon.process.wait(20) == 2
    log = daemon.log()
    assert "Traceback" not in log and "manifest" in log


@pytest.mark.timeout(40)
def test_a_track_renamed_to_a_name_that_is_not_utf8_is_a_move(setup, start, sandbox):
    daemon = start()
    daemon.wait_watching()
    source = setup.path(FIRST_ID + 5)
    target = os.path.join(os.fsencode(source.parent), b"Caf\xe9 " + os.fsencode(source.name))  # Latin-1 e-acute
    os.rename(os.fsencode(source), target)
    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 6)
    assert requested_ids(sandbox) == [FIRST_ID + 6]
    assert daemon.process.poll() is None and "Traceback" not in daemon.log()
    assert daemon.stop()[0] == 0


@pytest.mark.timeout(60)
def test_a_library_damaged_all_at_once_files_nothing(setup, start, sandbox):
    """Every file zero-filled at once (a dying drive, a bad restore): the guard holds it all."""
    daemon = start()
    daemon.wait_watching()
    for index in range(TRACK_COUNT):
        path = setup.path(FIRST_ID + index)
        path.write_bytes(bytes(path.stat().st_size))
    note = daemon.wait_for(lambda: (n := daemon.note()).get("state") == "guarded" and n, "the damage guard")
    assert "damaged" in note["guard"]
    assert not sandbox.received
    assert daemon.stop()[0] == 0


@pytest.mark.timeout(60)
def test_a_few_damaged_tracks_are_still_requested(setup, start, sandbox):
    """The damage guard counts a fraction of the library: two truncations are filed as usual."""
    daemon = start()
    daemon.wait_watching()
    for trackid in (FIRST_ID + 1, FIRST_ID + 2):
        media.truncate(str(setup.path(trackid)), 0.5)
    daemon.wait_for(lambda: requeued(sandbox, FIRST_ID + 1) and requeued(sandbox, FIRST_ID + 2), "both requests")
    assert daemon.note()["guard"] is None
    assert daemon.stop()[0] == 0


@pytest.fixture
def small_state_disk(setup):
    """The state dir on a 1 MB tmpfs (root only), so that the disk can fill up under poold."""
    setup.state_dir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(setup.state_dir)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield setup.state_dir
    subprocess.run(["umount", "-l", str(setup.state_dir)], check=False)


def fill(folder) -> object:
    filler = folder / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(bytes(64 * 1024))
                out.flush()
        except OSError:
            pass
    return filler


@pytest.mark.timeout(60)
def test_a_full_state_disk_degrades_the_service_and_nothing_is_doubled_after(setup, start, sandbox, small_state_disk):
    daemon = start()
    daemon.wait_watching()
    filler = fill(small_state_disk)
    lost = FIRST_ID + 2
    setup.path(lost).unlink()
    daemon.wait_for(lambda: "DEGRADED" in daemon.log(), "the service to say it is degraded")
    assert daemon.process.poll() is None and not sandbox.received  # nothing filed that was not written down

    filler.unlink()
    daemon.wait_for(lambda: requeued(sandbox, lost), "the lost track to be requested once space is back")
    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 9)
    assert requested_ids(sandbox) == [lost, FIRST_ID + 9]
    assert "works again" in daemon.log()
    assert daemon.stop()[0] == 0


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="runs poold as `nobody`, which needs root to set up")
def test_poold_run_as_a_user_who_cannot_read_the_library_files_nothing(open_folder, encoded):
    """`poold run` as a user for whom the library root is closed (chmod 700, another
    owner): the guard holds, at start and after SIGHUP; nothing is judged damaged."""
    from test_hostile_files import CHILD, KINDS, NOBODY, Library

    library = Library(open_folder, encoded, KINDS)
    os.chown(library.root, 0, 0)
    library.root.chmod(0o700)
    log_path = open_folder / "daemon.log"
    environment = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", CHILD.replace("import poold.state", "import poold.daemon, poold.state"),
                                    str(NOBODY), "run", "--config", str(library.config_path)],
                                   stderr=log, env=environment, cwd="/")
    try:
        def read(sql: str) -> list:
            """Read the daemon's database without creating a file the daemon (nobody) could not write."""
            database = open_folder / "state" / "poold.sqlite3"
            if not database.exists():
                return []
            connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
            try:
                return connection.execute(sql).fetchall()
            except sqlite3.OperationalError:  # the daemon is still making its tables
                return []
            finally:
                connection.close()

        def note() -> dict:
            rows = read("SELECT value FROM meta WHERE key = 'daemon'")
            return json.loads(rows[0][0]) if rows else {}

        def guarded() -> bool:
            assert process.poll() is None, log_path.read_text()
            return note().get("state") == "guarded"

        wait_until(guarded)
        assert "cannot be read (Permission denied)" in note()["guard"]
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in log_path.read_text() or not process.poll() is None)
        wait_until(guarded)
        assert read("SELECT trackid FROM incidents WHERE resolved_at IS NULL") == []
        assert "would request" not in log_path.read_text() and "Traceback" not in log_path.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log_path.read_text()


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
