"""``poold run`` as a real process: a real library of encoded files, real events, the
stand-in POOL server, a real NOTIFY_SOCKET and real signals.

Every wait polls a condition (what the sandbox received, the daemon's note in the state
database) until a deadline. To show that something was *not* requested, a test deletes a
"sentinel" track afterwards: it is judged after everything that happened before it, so
once its request has arrived any wrong request would have arrived too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import threading
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import media
from poold.config import load
from poold.daemon import Daemon as Service
from poold.drainer import Backoff, confirmed_batches
from poold.guard import LibraryGuard
from poold.manifest import rewrite_manifest
from poold.manifest import read_manifest
from poold.sandbox import Sandbox, slow
from poold.state import State
from poold.watch import LibraryWatcher

USERID, API_KEY, API_SECRET = 4321, "test-api-key-0001", "test-api-secret-0001"
SETTLE = 1.0
KINDS = ("flac", "m4a", "mp3", "ogg")
TRACK_COUNT = 20
FIRST_ID = 5000
WAIT = 15.0


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[Path]:
    """TRACK_COUNT real, distinct recordings (encoded once for the module)."""
    folder = tmp_path_factory.mktemp("seeds")
    return [Path(media.make(folder / f"seed{i}{media.extension(KINDS[i % len(KINDS)])}", KINDS[i % len(KINDS)],
                            seconds=1.0, seed=i)) for i in range(TRACK_COUNT)]


@pytest.fixture
def sandbox():
    with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET) as running:
        yield running


class Setup:
    """A library folder, its JSON manifest (with size and sha256) and a config file."""

    def __init__(self, workdir: Path, seeds: list[Path], base_url: str):
        self.workdir, self.base_url = workdir, base_url
        self.root = workdir / "library"
        self.manifest = workdir / "manifest.json"
        self.state_dir = workdir / "state"
        self.config = workdir / "config.toml"
        self.rows = []
        for i, seed in enumerate(seeds):
            relative = f"Crate{i % 3}/Artist {i} - Track {i}{seed.suffix}"
            (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(seed, self.root / relative)
            data = seed.read_bytes()
            self.rows.append({"trackid": FIRST_ID + i, "path": relative, "size": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()})
        self.write_manifest(self.rows)
        self.write_config()

    def path(self, trackid: int) -> Path:
        return self.root / self.rows[trackid - FIRST_ID]["path"]

    def write_manifest(self, rows: list[dict]) -> None:
        temporary = self.manifest.with_suffix(".tmp")
        temporary.write_text(json.dumps({"tracks": rows}, indent=1))
        os.replace(temporary, self.manifest)

    def write_config(self, library: str = "", guard: str = "", watch: str = "") -> None:
        self.config.write_text(
            f'[library]\nroot = "library"\nmanifest = "manifest.json"\n{library}\n'
            f'[pool]\nbase_url = "{self.base_url}"\nuserid = {USERID}\n'
            f'api_key = "{API_KEY}"\napi_secret = "{API_SECRET}"\n'
            f'[state]\ndir = "state"\n'
            f'[watch]\nsettle_seconds = {SETTLE}\n{watch}\n'
            f'[guard]\n{guard}\n')
        self.config.chmod(0o600)


class Daemon:
    """One ``poold run`` process and ways to wait for what it does."""

    def __init__(self, setup: Setup, env: dict[str, str] | None = None, stderr=None):
        self.setup = setup
        self.log_path = setup.workdir / "daemon.log"
        self.stderr = stderr or open(self.log_path, "w")
        environment = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")}
        self.process = subprocess.Popen([sys.executable, "-m", "poold", "run", "--config", str(setup.config)],
                                        stderr=self.stderr, env={**environment, **(env or {})})

    def note(self) -> dict:
        if not (self.setup.state_dir / "poold.sqlite3").exists():
            return {}
        with State(self.setup.state_dir) as state:
            return state.note("daemon") or {}

    def wait_for(self, condition, what: str, timeout: float = WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := condition():
                return value
            assert self.process.poll() is None, f"poold exited with {self.process.returncode}:\n{self.log()}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; note: {self.note()}\nlog:\n{self.log()}")

    def wait_watching(self, after_checks: int = 0) -> dict:
        return self.wait_for(lambda: (n := self.note()).get("state") == "watching"
                             and n.get("full_checks", 0) > after_checks and n, "the daemon to watch")

    def log(self) -> str:
        self.stderr.flush()
        return Path(self.stderr.name).read_text(errors="replace") if hasattr(self.stderr, "name") else ""

    def stop(self, timeout: float = 5.0) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


@pytest.fixture
def setup(tmp_path, seeds, sandbox) -> Setup:
    return Setup(tmp_path, seeds, sandbox.base_url)


@pytest.fixture
def start(setup):
    started: list[Daemon] = []

    def launch(**kwargs) -> Daemon:
        daemon = Daemon(setup, **kwargs)
        started.append(daemon)
        return daemon

    yield launch
    for daemon in started:
        daemon.kill()


def requeued(sandbox: Sandbox, trackid: int) -> bool:
    return sandbox.requeued[trackid] > 0


def requested_ids(sandbox: Sandbox) -> list[int]:
    return sorted(int(t) for r in sandbox.received for t in r.form.get("trackid_list", "").split(",") if t)


def delete_sentinel(setup: Setup, daemon: Daemon, sandbox: Sandbox, trackid: int) -> None:
    setup.path(trackid).unlink()
    daemon.wait_for(lambda: requeued(sandbox, trackid), f"the sentinel track {trackid} to be requested")


# --- the tests -------------------------------------------------------------------------

@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", ["native", "poll"])
def test_deleted_and_truncated_tracks_are_requested_once(setup, start, sandbox, mode):
    setup.write_config(watch=f'mode = "{mode}"')
    daemon = start()
    assert daemon.wait_watching()["watch_mode"] == mode
    deleted, truncated = FIRST_ID + 1, FIRST_ID + 4
    setup.path(deleted).unlink()
    media.truncate(str(setup.path(truncated)), 0.5)
    daemon.wait_for(lambda: requeued(sandbox, deleted) and requeued(sandbox, truncated), "both requests")

    checks = daemon.note()["full_checks"]
    daemon.process.send_signal(signal.SIGHUP)  # a full check finds both again: it must not ask again
    daemon.wait_watching(after_checks=checks)
    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 7)

    assert requested_ids(sandbox) == [deleted, truncated, FIRST_ID + 7]
    reasons = sorted(r.form["reason"] for r in sandbox.received)
    assert any("missing" in reason for reason in reasons) and any("smaller" in reason for reason in reasons)
    assert daemon.stop()[0] == 0


@pytest.mark.timeout(40)
def test_a_file_written_slowly_is_not_judged_half_way(setup, start, sandbox):
    daemon = start()
    daemon.wait_watching()
    track = setup.path(FIRST_ID + 2)
    data = track.read_bytes()
    download = setup.root / "Incoming" / "New Track.flac.part"
    download.parent.mkdir()
    chunks = 16  # over 4 settle times, a pause of a quarter of one between writes
    with open(track, "wb") as redownload, open(download, "wb") as partial:
        for i in range(chunks):
            for f in (redownload, partial):
                f.write(data[i * len(data) // chunks:(i + 1) * len(data) // chunks])
                f.flush()
            time.sleep(SETTLE / 4)  # the scenario's pace, not a wait for the daemon
    download.rename(download.with_suffix(""))

    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 9)
    assert requested_ids(sandbox) == [FIRST_ID + 9]
    with State(setup.state_dir) as state:
        assert state.open_trackids() == {FIRST_ID + 9}


@pytest.mark.timeout(40)
def test_moved_tracks_are_recorded_not_requested(setup, start, sandbox):
    setup.write_config(library="update_manifest = true")
    daemon = start()
    daemon.wait_watching()
    renamed, copied, recreated = FIRST_ID + 3, FIRST_ID + 5, FIRST_ID + 6
    (setup.root / "Sorted").mkdir()
    setup.path(renamed).rename(setup.root / "Sorted" / setup.path(renamed).name)
    shutil.copy2(setup.path(copied), setup.root / "Sorted" / setup.path(copied).name)  # copy, then delete
    setup.path(copied).unlink()
    data = setup.path(recreated).read_bytes()
    setup.path(recreated).unlink()  # delete first, the new copy appears a little later
    time.sleep(SETTLE * 0.3)
    (setup.root / "Sorted" / setup.path(recreated).name).write_bytes(data)

    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 8)
    assert requested_ids(sandbox) == [FIRST_ID + 8]
    expected = {t: "Sorted/" + setup.path(t).name for t in (renamed, copied, recreated)}
    with State(setup.state_dir) as state:
        assert state.locations() == expected
        assert state.open_trackids() == {FIRST_ID + 8}
    daemon.wait_for(lambda: {t.trackid: t.path for t in read_manifest(setup.manifest)
                             if t.trackid in expected} == expected, "the manifest to carry the new paths")


@pytest.mark.timeout(40)
def test_a_removed_library_files_nothing_and_resumes_when_back(setup, start, sandbox, tmp_path):
    daemon = start()
    daemon.wait_watching()
    backup = tmp_path / "backup"
    shutil.copytree(setup.root, backup)
    shutil.rmtree(setup.root)  # what an unplugged drive or a dead NAS looks like
    note = daemon.wait_for(lambda: (n := daemon.note()).get("state") == "guarded" and n, "the guard")
    assert "does not exist" in note["guard"] and note["status"].startswith("LIBRARY UNAVAILABLE")

    checks = note["full_checks"]
    copies = sorted(p for p in backup.rglob("*") if p.is_file())
    for copy in copies:  # files come back one by one, over about three settle times
        target = setup.root / copy.relative_to(backup)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(copy, target)
        time.sleep(3 * SETTLE / len(copies))  # the scenario's pace, not a wait for the daemon
    daemon.wait_watching(after_checks=checks)
    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 10)
    assert requested_ids(sandbox) == [FIRST_ID + 10]


@pytest.mark.timeout(40)
def test_systemd_notify_watchdog_journal_and_sigterm(setup, start, tmp_path):
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    journal = open(tmp_path / "journal.txt", "w")
    info = os.fstat(journal.fileno())
    daemon = start(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000",
                        "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}, stderr=journal)
    messages: list[str] = []

    def received(condition) -> bool:
        try:
            messages.append(listener.recv(4096).decode())
        except TimeoutError:
            pass
        return condition()

    daemon.wait_for(lambda: received(lambda: any("READY=1" in m for m in messages)
                                     and sum(m == "WATCHDOG=1" for m in messages) >= 3
                                     and any(m.startswith("STATUS=watching") for m in messages)),
                    "READY=1, STATUS=watching and WATCHDOG=1 pings")
    assert any("problem(s) open" in m and "request(s) pending" in m for m in messages if m.startswith("STATUS="))

    code, took = daemon.stop()
    assert code == 0 and took < 5
    while received(lambda: False):
        pass
    assert any("STOPPING=1" in m for m in messages)
    lines = [line for line in daemon.log().splitlines() if line]
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>") for line in lines), lines
    assert not any(line[3:7].isdigit() for line in lines), "journald adds timestamps itself"


@pytest.mark.timeout(40)
def test_sigterm_rolls_back_the_request_in_flight(setup, start, sandbox):
    daemon = start()
    daemon.wait_watching()
    sandbox.fault(slow(5))  # processed on arrival, answered five seconds later
    setup.path(FIRST_ID + 11).unlink()
    daemon.wait_for(lambda: sandbox.received, "the request to be in flight")

    code, took = daemon.stop()
    assert code == 0 and took < 5
    with State(setup.state_dir) as state:
        [request] = state.requests()
        assert request.state == "pending" and request.trackids == (FIRST_ID + 11,)
        assert state.note("daemon")["state"] == "stopped"


@pytest.mark.timeout(40)
def test_sighup_reloads_the_config(setup, start, sandbox):
    daemon = start()
    daemon.wait_watching()
    setup.write_config(guard='marker = "POOLD-LIBRARY"')
    daemon.process.send_signal(signal.SIGHUP)
    note = daemon.wait_for(lambda: (n := daemon.note()).get("state") == "guarded" and n, "the marker guard")
    assert "marker file POOLD-LIBRARY is missing" in note["guard"]

    (setup.root / "POOLD-LIBRARY").touch()
    daemon.wait_watching(after_checks=note["full_checks"])
    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 12)
    assert requested_ids(sandbox) == [FIRST_ID + 12]


@pytest.mark.timeout(40)
def test_manifest_changes_are_followed_and_a_bad_one_is_not_used(setup, start, sandbox):
    daemon = start()
    daemon.wait_watching()
    new = {"trackid": 9001, "path": "Crate0/Never Downloaded.mp3"}
    setup.write_manifest(setup.rows + [new])
    daemon.wait_for(lambda: requeued(sandbox, 9001), "the new manifest row to be checked and requested")

    setup.manifest.write_text('{"tracks": [{"trackid": 1, "path": "x.mp3"},')  # cut short
    daemon.wait_for(lambda: daemon.note().get("manifest_error"), "the bad manifest to be reported")
    delete_sentinel(setup, daemon, sandbox, FIRST_ID + 13)  # the manifest read before is still used
    assert requested_ids(sandbox) == sorted([9001, FIRST_ID + 13])
    assert daemon.note()["tracks"] == TRACK_COUNT + 1


# --- the daemon's pure pieces -------------------------------------------------------------

class FakeDisk:
    """The root's device and the mount point above it, as the guard sees them."""

    def __init__(self, device: int, point: str):
        self.device, self.point = device, point

    def guard(self, root: Path, marker: str | None = None) -> LibraryGuard:
        return LibraryGuard(root, marker, stat_device=lambda p: self.device, find_mount_point=lambda p: self.point)


def test_guard_names_a_missing_root_and_a_missing_marker(tmp_path):
    disk = FakeDisk(1, "/")
    assert "does not exist" in disk.guard(tmp_path / "gone").problem()
    assert "marker file MARK is missing" in disk.guard(tmp_path, "MARK").problem()
    (tmp_path / "MARK").touch()
    assert disk.guard(tmp_path, "MARK").problem() is None


def test_guard_trips_when_the_drive_under_the_root_is_unmounted(tmp_path):
    disk = FakeDisk(41, "/media/dj/USB")
    guard = disk.guard(tmp_path)
    assert guard.problem() is None
    disk.device, disk.point = 1, "/"  # the bare mount-point folder on the system disk
    assert "no longer on the drive mounted at /media/dj/USB" in guard.problem()
    disk.device, disk.point = 57, "/media/dj/USB"  # plugged in again, a new device number
    assert guard.problem() is None
    assert guard.problem() is None and guard.baseline == (57, "/media/dj/USB")


def test_guard_accepts_a_drive_mounted_over_the_root_later(tmp_path):
    disk = FakeDisk(1, "/")  # poold started while the drive was not mounted yet
    guard = disk.guard(tmp_path)
    assert guard.problem() is None
    disk.device, disk.point = 41, "/media/dj/USB"
    assert guard.problem() is None


def test_backoff_doubles_from_a_minute_to_half_an_hour():
    backoff = Backoff()
    assert [backoff.failed() for _ in range(7)] == [60, 120, 240, 480, 960, 1800, 1800]
    backoff.reset()
    assert backoff.failed() == 60


MANIFESTS = {
    ".json": '{\n "source": "pool",\n "tracks": [\n  {"trackid": 1, "path": "A/a.mp3", "size": 3},\n'
             '  {"trackid": "2", "path": "A/b.mp3"}\n ]\n}\n',
    ".jsonl": '{"trackid": 1, "path": "A/a.mp3", "size": 3}\n\n{"trackid": 2, "path": "A/b.mp3", "note": "é"}\n',
    ".csv": "trackid,path,size\r\n1,A/a.mp3,3\r\n2,\"A/b, live.mp3\",\r\n",
}


@pytest.mark.parametrize("suffix", sorted(MANIFESTS))
def test_manifest_rewrite_keeps_its_format_and_other_fields(tmp_path, suffix):
    path = tmp_path / f"manifest{suffix}"
    path.write_text(MANIFESTS[suffix], encoding="utf-8", newline="")
    path.chmod(0o640)
    rewrite_manifest(path, {2: "Sorted/b.mp3"})
    assert {t.trackid: t.path for t in read_manifest(path)} == {1: "A/a.mp3", 2: "Sorted/b.mp3"}
    assert next(read_manifest(path)).size == 3
    assert (path.stat().st_mode & 0o777) == 0o640 and sorted(tmp_path.iterdir()) == [path]
    text = path.read_bytes().decode("utf-8")
    if suffix == ".json":
        assert json.loads(text)["source"] == "pool"
    if suffix == ".jsonl":
        assert '"note": "é"' in text
    if suffix == ".csv":
        assert text.startswith("trackid,path,size\r\n")


def test_only_tracks_the_daemon_confirmed_are_filed(setup):
    config = load(setup.config)
    with State(setup.state_dir) as state:
        for trackid in (1, 2, 3):
            state.record_problem(trackid, f"A/{trackid}.mp3", "missing", "missing", "no file at this path")
        state.record_problem(4, "A/4.mp3", "corrupt", "truncated", "cut short")
        batches = confirmed_batches(state, config, {2, 3, 4})
    assert [(b.cause, b.trackids) for b in batches] == [("missing", [2, 3]), ("truncated", [4])]
    assert "2 files missing" in batches[0].reason and "1 file truncated" in batches[1].reason


def test_native_watch_failure_falls_back_to_polling(setup, monkeypatch):
    real_start = LibraryWatcher.start

    def start(watcher):
        if watcher.mode == "native":
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        real_start(watcher)

    monkeypatch.setattr(LibraryWatcher, "start", start)
    threads_before = threading.active_count()
    service = Service(setup.config)
    try:
        service._restart_watcher(time.monotonic(), died=False)
        assert service.watcher.mode == "poll" and service.watcher.alive()
    finally:
        service._stop_watcher()
        service.waker.close()
    assert threading.active_count() == threads_before


def test_the_damage_window_counts_distinct_tracks_found_broken_lately():
    from poold.guard import DamageWindow

    window = DamageWindow(seconds=600)
    window.add([1, 2, 3], now=0)
    window.add([3, 4], now=300)  # 3 again: counted once, as of its latest finding
    assert window.count(now=300) == 4
    assert window.count(now=650) == 2  # 1 and 2 were found more than 600 s ago
    assert window.count(now=901) == 0
    window.add([5], now=1000)
    window.clear()
    assert window.count(now=1000) == 0
