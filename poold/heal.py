"""Healing: fetch a requeued track back from POOL, verify it, swap it in atomically.

Only tracks whose redownload request poold itself filed and POOL accepted in full are
healed (:meth:`poold.state.State.healable`): nothing the DJ or the POOL app may be
downloading on their own. Each track is a job in the state database, and each step
is recorded before the next one starts::

    queued -> downloading -> verifying -> swapping -> swapped -> confirmed
                  (any of them) -> waiting (for a person, with the reason)

- downloading: ``/download/queue`` gives a dl_token and media hosts; the file is
  streamed into ``.poold-heal-<trackid><ext>`` beside the track (a name the watcher
  always ignores), resumed with ``Range`` from the bytes on disk after an interruption
  or a restart, from the next server when one fails.
- verifying: the quick check (and the deep check with PyAV), the manifest's size and
  sha256, the duration rule of the audit. The copy's own size and sha256 (as POOL
  served it, before any tag is carried onto it) are recorded in the job; when its
  bytes match the manifest's hash, its full audio identity is recorded as verified
  (so a later ``--verify`` audit calls the retagged, healed file ok). A copy that
  fails is fetched once more from another server; a second failure waits for a person. A copy of another format
  (POOL sends the account's default media type) is never swapped in: it is kept in
  the quarantine folder and the job says what to change in the POOL preferences.
- swapping: the quarantine path is recorded first; the damaged file is hard-linked
  there (so it stays at the track's path until the new copy replaces it); tags still
  readable in it are copied onto the new copy (:mod:`poold.heal_tags`); the new copy
  is fsynced and renamed over the track's path, and the folder fsynced. The job is
  ``swapped`` and the incident closed in one transaction.
- swapped: the manifest's size and sha256 are set to the copy's as served (``update_manifest``), then
  ``POST /download/success``; a crash before its answer is recorded sends it again,
  so the confirmation is delivered at least once.

After ``kill -9`` at any moment, the next run finishes every job from its recorded
stage: a track's path only ever holds the old file or the complete new one (rename is
atomic), the damaged copy is linked into the quarantine before the rename, and a
swap is recognised as done when its temporary file is gone.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .errors import PoolError, RejectedError
from .filing import CAUSE_PHRASES, DAY
from .integrity import check_file
from .manifest import Track, read_manifest
from .report import describe_stage
from .scan import _duration_mismatch, _hash_mismatch, library_problem
from .state import State
from .worker import Worker

if TYPE_CHECKING:
    from .heal_download import HealClient, Throttle

log = logging.getLogger(__name__)

LOCK_NAME = "heal.lock"
TEMP_PREFIX = ".poold-heal-"
MAX_VERIFY_FAILURES = 2  # the first copy, and one more from another server
MAX_ROUNDS = 3  # runs in which every server failed before a person must look
MAX_CONFIRM_REFUSALS = 3
PROGRESS_EVERY = 1 << 20  # record download progress every MiB (a hint: the file's size is the truth)
QUARANTINE_ENTRY = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9]+")
ACTIVE_STAGES = ("queued", "downloading", "verifying", "swapping", "swapped")
# The last word of a queue answer's file_type ("mp3", "wav", "720 mp4") -> the extensions a file
# of that media type has; the first is the one a copy kept aside gets.
FILE_TYPES = {"mp3": (".mp3",), "m4a": (".m4a",), "aac": (".m4a",), "mp4": (".mp4", ".m4v", ".mov"),
              "wav": (".wav",), "aiff": (".aiff", ".aif", ".aifc"), "aif": (".aif", ".aiff", ".aifc"),
              "flac": (".flac",)}

# Tests only (tests/test_heal.py, the kill -9 test): seconds to sleep between the steps of
# a swap, so that a kill lands inside them. Unset in real use.
TEST_STEP_DELAY = float(os.environ.get("POOLD_TEST_HEAL_STEP_DELAY") or 0)

_own_writes: set[tuple[str, int, int]] = set()
_own_writes_lock = threading.Lock()


def is_own_write(path: str) -> bool:
    """True while the file at ``path`` is the one healing renamed there (same size and
    mtime): the daemon does not judge poold's own writes as changes."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    with _own_writes_lock:
        return (path, info.st_size, info.st_mtime_ns) in _own_writes


def _remember_own_write(path: str) -> None:
    info = os.stat(path)
    with _own_writes_lock:
        _own_writes.add((path, info.st_size, info.st_mtime_ns))


@dataclass
class HealReport:
    """One run: every job it touched, as it stands now; ``busy`` when another process heals."""

    jobs: list[dict] = field(default_factory=list)
    busy: bool = False
    error: str | None = None

    @property
    def waiting(self) -> list[dict]:
        return [job for job in self.jobs if job["stage"] == "waiting"]

    def as_json(self) -> dict:
        return {"busy": self.busy, "error": self.error, "jobs": [public_job(job) for job in self.jobs]}


def public_job(job: dict) -> dict:
    """A job as ``poold heal --json`` and ``poold status --json`` show it (no dl_token)."""
    keys = ("trackid", "path", "stage", "reason", "file_type", "server", "bytes", "total", "quarantine_path",
            "failures", "last_error", "created", "updated")
    return {key: job.get(key) for key in keys}


# --- one run ----------------------------------------------------------------------------

def heal_command(config: Config) -> HealReport:
    """``poold heal``: one run, only when healing is turned on."""
    from .app import SetupError

    if not config.heal.enabled:
        raise SetupError(f"{config.path}: healing is off; set [heal] enabled = true to let poold fetch "
                         "requeued tracks back and swap them in")
    return heal_once(config)


def heal_once(config: Config, client: HealClient | None = None, stop: threading.Event | None = None) -> HealReport:
    """Finish the jobs under way, start jobs for newly healable tracks (daily cap), run them."""
    stop = stop or threading.Event()
    if problem := library_problem(config.library.root, config.guard.marker):
        log.warning("healing waits: %s", problem)  # never write into a vanished or unmounted library
        return HealReport(error=problem)
    with State(config.state.dir) as state, heal_lock(state) as locked:
        if not locked:
            return HealReport(busy=True)
        prune_quarantine(config.quarantine, config.heal.keep_days)
        start_jobs(state, config)
        job_ids = [job["id"] for job in state.heal_jobs(ACTIVE_STAGES)]
        if not job_ids:
            return HealReport()
        owned = client is None
        client = client or make_heal_client(config)
        try:
            tracks = manifest_tracks(config, state, {job["trackid"] for job in state.heal_jobs(ACTIVE_STAGES)})
            run_jobs(config, client, job_ids, tracks, stop)
        finally:
            if owned:
                client.pool.close()
        return HealReport(jobs=[state.heal_job(job_id) for job_id in job_ids])


def make_heal_client(config: Config) -> HealClient:
    from . import app
    from .heal_download import HealClient

    return HealClient(app.make_client(config), allow_plain_http=config.heal.allow_plain_http)


def heal_lock(state: State):
    """One healing process per state directory (see :meth:`State.try_lock`)."""
    return state.try_lock(LOCK_NAME)


def start_jobs(state: State, config: Config, now: float | None = None) -> list[int]:
    """Create jobs for healable incidents, at most ``max_tracks_per_day`` in 24 hours."""
    now = time.time() if now is None else now
    room = config.heal.max_tracks_per_day - state.heal_jobs_started_since(now - DAY)
    created = []
    for incident in state.healable()[:max(room, 0)]:
        if (job_id := state.create_heal_job(incident, incident.path, now)) is not None:
            created.append(job_id)
            log.info("healing track %d: fetching it back from POOL", incident.trackid)
    return created


def manifest_tracks(config: Config, state: State, trackids: set[int]) -> dict[int, Track]:
    """The manifest's rows for these tracks, at their current (relocated) paths."""
    from .app import relocated

    wanted = {}
    for track in relocated(read_manifest(config.library.manifest), state.locations()):
        if track.trackid in trackids:
            wanted[track.trackid] = track
    return wanted


def run_jobs(config: Config, client: HealClient, job_ids: list[int], tracks: dict[int, Track],
             stop: threading.Event) -> None:
    from .heal_download import Throttle

    throttle = Throttle(config.heal.max_bytes_per_second)
    with ThreadPoolExecutor(max_workers=config.heal.max_parallel, thread_name_prefix="poold-heal") as workers:
        for future in [workers.submit(_run_job, config, client, throttle, stop, job_id, tracks) for job_id in job_ids]:
            future.result()


def _run_job(config: Config, client: HealClient, throttle: Throttle, stop: threading.Event, job_id: int,
             tracks: dict[int, Track]) -> None:
    """One job to its end or to where it must wait; in a worker thread, with its own State."""
    from .heal_download import Stopped

    with State(config.state.dir) as state:
        job = Job(config, client, throttle, stop, state, job_id, tracks)
        try:
            job.run()
        except Stopped:
            log.info("track %d: healing paused at stage %s", job.trackid, job.row["stage"])
        except PoolError as exc:
            state.update_heal_job(job_id, last_error=str(exc))
            log.warning("track %d: healing paused: %s", job.trackid, exc)
        except Exception as exc:  # a bug in one job must not stop the others
            log.exception("track %d: healing failed", job.trackid)
            state.update_heal_job(job_id, last_error=f"{type(exc).__name__}: {exc}")


# --- one job --------------------------------------------------------------------------

class Job:
    """Drives one heal job through its stages, recording each before the next starts."""

    def __init__(self, config: Config, client: HealClient, throttle: Throttle, stop: threading.Event,
                 state: State, job_id: int, tracks: dict[int, Track]):
        self.config, self.client, self.throttle, self.stop, self.state = config, client, throttle, stop, state
        self.id = job_id
        self.row = state.heal_job(job_id)
        self.trackid = self.row["trackid"]
        self.track = tracks.get(self.trackid) or Track(self.trackid, self.row["path"])

    @property
    def target(self) -> Path:
        return self.config.library.root / self.track.path

    @property
    def temp(self) -> Path:
        return self.target.with_name(f"{TEMP_PREFIX}{self.trackid}{self.target.suffix.lower()}")

    def record(self, durable: bool = True, **fields) -> None:
        self.state.update_heal_job(self.id, durable, **fields)
        self.row.update(fields)

    def run(self) -> None:
        steps = {"queued": self.download, "downloading": self.download, "verifying": self.verify,
                 "swapping": self.swap, "swapped": self.confirm}
        while (step := steps.get(self.row["stage"])) is not None:
            if self.stop.is_set():
                return
            if self.row["stage"] in ("queued", "downloading", "verifying") and self._healed_elsewhere():
                return
            try:
                if step() is False:
                    return
            except _Waiting:
                return

    def wait_for_person(self, reason: str) -> None:
        self.record(stage="waiting", reason=reason)
        log.warning("track %d waits for a person: %s", self.trackid, reason)

    def _healed_elsewhere(self) -> bool:
        """The incident closed before the swap (the file checks ok again): replace nothing."""
        if self.state.open_incident(self.trackid) is not None:
            return False
        self.temp.unlink(missing_ok=True)
        self.wait_for_person("the track checked ok again before the swap (replaced by hand?): nothing was changed")
        return True

    # -- downloading --

    def download(self) -> bool:
        """Fetch the copy; False when it stays for the next run (every server failed)."""
        from .heal_download import ServerFailed, TokenExpired

        fresh = self.row["stage"] == "queued"  # a copy left from a failed verification is never resumed
        if fresh or not self.row["dl_token"]:
            self._queue_track()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.temp.unlink(missing_ok=True)
        self.record(stage="downloading", temp_path=str(self.temp))
        failures, renewed = [], False
        servers = self._server_order()
        index = 0
        while index < len(servers):
            server = servers[index]
            try:
                total = self.client.fetch(server["host"], self.row["dl_token"], str(self.temp), self._progress,
                                          self.throttle, self.stop)
            except TokenExpired as exc:
                if renewed:
                    failures.append(str(exc))
                    index += 1
                    continue
                self._queue_track()  # a fresh token; the bytes on disk are kept and resumed
                renewed = True
                continue
            except ServerFailed as exc:
                log.info("track %d: %s; trying the next server", self.trackid, exc)
                failures.append(str(exc))
                index += 1
                continue
            self.record(stage="verifying", server=server["host"], serverid=server["id"], bytes=total, total=total,
                        rounds=0, last_error=None)
            return True
        return self._every_server_failed(failures)

    def _queue_track(self) -> None:
        try:
            queued = self.client.queue(self.trackid)
        except RejectedError as exc:
            self.wait_for_person(f"POOL no longer has the track queued for this account ({exc})")
            raise _Waiting() from None
        self.record(dl_token=queued.dl_token, file_type=queued.file_type, servers=json.dumps(queued.servers))

    def _server_order(self) -> list[dict]:
        """The servers, starting after the one whose copy failed verification, if any."""
        servers = json.loads(self.row["servers"])
        failed = self.row["server"] if self.row["failures"] else None
        hosts = [s["host"] for s in servers]
        if failed in hosts and len(servers) > 1:  # the others, in the answer's order from the next one on
            at = hosts.index(failed)
            servers = servers[at + 1:] + servers[:at]
        return servers

    def _progress(self, written: int) -> None:
        if written - self.row["bytes"] >= PROGRESS_EVERY:
            self.record(durable=False, bytes=written)

    def _every_server_failed(self, failures: list[str]) -> bool:
        rounds = self.row["rounds"] + 1
        message = "; ".join(failures)[:500] or "no server to try"
        if rounds >= MAX_ROUNDS:
            self.wait_for_person(f"every media server failed in {rounds} tries: {message}")
        else:
            self.record(rounds=rounds, last_error=message)
            log.warning("track %d: every media server failed (%s); tried again at the next run", self.trackid, message)
        return False

    # -- verifying --

    def verify(self) -> bool:
        if not self.temp.exists():  # kept aside before a crash, or removed by hand
            self.record(stage="queued", bytes=0)
            return True
        verdict = _checker()(str(self.temp))
        if verdict.reason == "wrong_format" or self._other_format():
            return self._keep_other_format(verdict.format)
        if verdict.status != "ok":
            return self._verification_failed(verdict.reason, verdict.detail)
        copy = _read_copy(self.temp)
        if problem := self._mismatch(verdict, copy):
            return self._verification_failed(*problem)
        self._record_verified(verdict.identity, copy)
        self.record(stage="swapping", quarantine_path=self._quarantine_path(), copy_size=copy.size,
                    copy_sha256=copy.sha256)
        return True

    def _other_format(self) -> bool:
        """POOL queued another media type than the track's (an MP3 for a WAV, a video for an M4A)."""
        extensions = FILE_TYPES.get(_type_word(self.row["file_type"]))
        return extensions is not None and self.target.suffix.lower() not in extensions

    def _mismatch(self, verdict, copy: Copy) -> tuple[str, str] | None:
        track = self.track
        if track.size is not None and copy.size != track.size:
            return "size_mismatch", f"{copy.size} bytes, the manifest says {track.size}"
        if track.sha256 and copy.sha256 != track.sha256:
            return "checksum_mismatch", "its sha256 differs from the manifest's"
        if mismatch := _duration_mismatch(track, verdict.duration):
            return "duration_mismatch", mismatch
        recorded = self.state.track_identities([self.trackid]).get(self.trackid)
        if recorded and verdict.identity and verdict.identity != recorded:
            return "identity_mismatch", "its audio is not the audio poold recorded when it last saw the track intact"
        return None

    def _record_verified(self, identity: str | None, copy: Copy) -> None:
        """The copy's bytes match the manifest's hash: its audio is the track's verified
        audio, by which ``--verify`` tells the healed file, retagged by the carried tags
        (or later by the DJ), from damage."""
        track = self.track
        if copy.full_identity and (track.sha256 or track.md5) and not _hash_mismatch(track, copy.sha256, copy.md5):
            self.state.record_verified([(self.trackid, identity, copy.full_identity)])

    def _verification_failed(self, reason: str, detail: str) -> bool:
        failures = self.row["failures"] + 1
        phrase = CAUSE_PHRASES.get(reason, f"failing the check ({reason})")
        if failures >= MAX_VERIFY_FAILURES:
            self.record(failures=failures)
            self.wait_for_person(f"the redownloaded copy is also {phrase}: {detail}")
            self.temp.unlink(missing_ok=True)  # after recording: a crash between never fetches it again
            return False
        log.warning("track %d: the copy from %s is %s (%s); fetching it once more from another server",
                    self.trackid, self.row["server"], phrase, detail)
        self.record(stage="queued", failures=failures, bytes=0, last_error=f"copy from {self.row['server']}: {detail}")
        self.temp.unlink(missing_ok=True)
        return True

    def _keep_other_format(self, actual: str | None) -> bool:
        file_type = self.row["file_type"] or "?"
        word = _type_word(file_type)
        extension = FILE_TYPES.get(word, (f".{word}" if word.isalnum() else ".bin",))[0]
        aside = self._quarantine_folder() / f"{self.target.stem}.other-format{extension}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temp, aside)
        self.wait_for_person(
            f"POOL sent a {actual or file_type} copy (the account's default media type is {file_type!r}) for this "
            f"{self.target.suffix.lstrip('.').upper()} track; it is kept at {aside} and nothing was replaced. "
            f"Set the default media type in the POOL preferences to {self.target.suffix.lstrip('.').upper()}, "
            "then request the track again")
        return False

    # -- swapping --

    def _quarantine_folder(self) -> Path:
        stamp = datetime.datetime.fromtimestamp(self.row["created"]).strftime("%Y%m%d-%H%M%S")
        return self.config.quarantine / f"{stamp}-{self.trackid}"

    def _quarantine_path(self) -> str | None:
        """Where the damaged copy goes; None for a missing track (nothing to keep)."""
        return str(self._quarantine_folder() / self.track.path) if self.target.exists() else None

    def swap(self) -> bool:
        if not self.temp.exists():
            return self._after_lost_temp()
        if problem := library_problem(self.config.library.root, self.config.guard.marker):
            self.record(last_error=f"the swap waits for the library: {problem}")
            return False
        from .heal_tags import carry_tags

        quarantine = Path(self.row["quarantine_path"]) if self.row["quarantine_path"] else None
        if quarantine is None and self.target.exists():  # a file appeared where the track was missing
            quarantine = self._quarantine_folder() / self.track.path
            self.record(quarantine_path=str(quarantine))
        if quarantine is not None and self.target.exists():
            carried = carry_tags(self.target, self.temp)
            if carried:
                log.info("track %d: copied %s from the damaged file onto the new copy", self.trackid, carried)
            if not quarantine.exists():
                _keep_damaged(self.target, quarantine)
        _fsync_file(self.temp)
        _test_pause()
        os.replace(self.temp, self.target)
        _fsync_folder(self.target.parent)
        _remember_own_write(str(self.target))
        _test_pause()
        self._finish_swap()
        return True

    def _after_lost_temp(self) -> bool:
        """No new copy beside the track: renamed into place before a crash (the file there
        checks ok), or removed by hand (then it is fetched again)."""
        if self.target.exists() and check_file(self.target).status == "ok":
            self._finish_swap()
        else:
            self.record(stage="queued", bytes=0, last_error="the verified copy vanished before the swap")
        return True

    def _finish_swap(self) -> None:
        self.state.finish_swap(self.id, self.trackid)
        self.row.update(stage="swapped", temp_path=None)
        kept = f"; the damaged copy is in {self.row['quarantine_path']}" if self.row["quarantine_path"] else ""
        log.info("track %d healed: a verified copy from POOL is at %s%s", self.trackid, self.target, kept)

    # -- confirming --

    def confirm(self) -> bool:
        if self.config.library.update_manifest:
            update_manifest_row(self.config, self.track, self.row["copy_size"], self.row["copy_sha256"])
        try:
            self.client.success(self.trackid, self.row["serverid"], self.row["dl_token"])
        except RejectedError as exc:
            rounds = self.row["rounds"] + 1
            if rounds >= MAX_CONFIRM_REFUSALS:
                self.wait_for_person(f"the track is healed, but POOL refused the download confirmation: {exc}")
            else:
                self.record(rounds=rounds, last_error=str(exc))
            return False
        self.record(stage="confirmed", last_error=None)
        return False


class _Waiting(Exception):
    """The job now waits for a person (already recorded)."""


def _type_word(file_type: str | None) -> str:
    words = (file_type or "").lower().split()
    return words[-1] if words else ""


def _test_pause() -> None:
    if TEST_STEP_DELAY:
        time.sleep(TEST_STEP_DELAY)


def _checker():
    try:
        from .integrity.deep import deep_check

        import av  # noqa: F401
    except ImportError:
        return check_file
    return deep_check


@dataclass(frozen=True)
class Copy:
    """The downloaded copy as POOL served it (before any tag is carried onto it)."""

    size: int
    sha256: str
    md5: str
    full_identity: str | None  # its whole audio payload's (poold.integrity.identity)


def _read_copy(path: Path) -> Copy:
    """The copy's size, digests and full audio identity, from one read of the file."""
    from .integrity.identity import hash_file

    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    size = path.stat().st_size
    full = hash_file(path, digests)
    return Copy(size, digests["sha256"].hexdigest(), digests["md5"].hexdigest(), full)


def _keep_damaged(target: Path, quarantine: Path) -> None:
    """Hard-link the damaged file into the quarantine (it stays at its path until replaced);
    on a filesystem without hard links, copy it."""
    quarantine.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(target, quarantine)
    except OSError:
        shutil.copy2(target, quarantine)
        _fsync_file(quarantine)
    _fsync_folder(quarantine.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(path: Path) -> None:
    folder = os.open(path, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def prune_quarantine(folder: Path, keep_days: float, now: float | None = None) -> int:
    """Delete quarantine entries older than ``keep_days``; return how many went."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and QUARANTINE_ENTRY.fullmatch(entry.name) \
                and now - entry.stat(follow_symlinks=False).st_mtime > keep_days * DAY:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def update_manifest_row(config: Config, track: Track, size: int | None, sha256: str | None) -> None:
    """Write the copy's size and sha256 as POOL served it into the manifest row, where the
    row has them and they differ: the manifest holds the digest as downloaded, never the
    one after tags were carried onto the copy (the next heal of the track verifies
    against it). Nothing is written without the recorded values."""
    from .manifest import update_rows

    fields: dict[str, object] = {}
    if track.size is not None and size is not None and size != track.size:
        fields["size"] = size
    if track.sha256 is not None and sha256 is not None and sha256 != track.sha256:
        fields["sha256"] = sha256
    if not fields:
        return
    try:
        update_rows(config.library.manifest, {track.trackid: fields})
    except (OSError, ValueError, KeyError) as exc:
        log.warning("could not write track %d's new size and hash into the manifest (%s)", track.trackid, exc)


# --- the daemon's worker ------------------------------------------------------------------

class Healer(Worker):
    """Heals from a thread of its own in ``poold run``: when kicked (after a drain that
    settled requests) and every :attr:`INTERVAL` seconds, so that a slow download never
    stalls the watch. It stops between chunks when asked; the download resumes later."""

    NAME = "poold-heal"
    INTERVAL = 300.0

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    def work(self) -> None:
        try:
            report = heal_once(self.config, stop=self._stop)
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any one failure
            log.warning("healing failed: %s", exc, exc_info=not isinstance(exc, PoolError))
            return
        for job in report.jobs:
            log.info("track %d: %s", job["trackid"], describe_stage(job))


# --- status -----------------------------------------------------------------------------

def track_stages(state: State, enabled: bool = True) -> list[dict]:
    """Each healing track's stage for ``poold status``: requested (accepted by POOL, no
    job yet; only while healing is on), queued, downloading (bytes), verifying, swapping,
    swapped, confirmed, or waiting with a reason. Confirmed jobs older than a day are left out."""
    since = time.time() - DAY
    stages = [{"trackid": i.trackid, "path": i.path, "stage": "requested"} for i in state.healable()] if enabled else []
    stages += [public_job(job) for job in state.heal_jobs() if job["stage"] != "confirmed" or job["updated"] >= since]
    return stages
