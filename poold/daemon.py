"""``poold run``: one process that checks the library, watches it and keeps the outbox drained.

Threads. The main thread makes every decision and owns the state connection. The
watchdog observer only posts changes; a full check (``app.run_audit``) and the drain
(``filing.drain``) each run in a thread of their own, with their own State
connection, and post their outcome back. The main loop sleeps until the next
deadline or until something is posted (a self-pipe, which signals also write to).

What gets filed. A track is requested only after the daemon itself judged it broken
once its file had settled (see :class:`poold.watch.Settler`): the findings of a full
check are judged again after the settle time before anything is filed, and a vanished
track is judged only when the library has stopped changing shape, so that a move's
other half or an unmount's cascade of deletions has arrived.

The library-loss guard. Nothing is filed while the root is missing, not a folder, no
longer on the drive it was on (unmounted), lacks the ``[guard] marker`` file, or more
than ``[guard] max_missing_fraction`` of the manifest is missing; the guard is checked
every second, before judging and again right before filing. poold says so in the log,
in ``poold status`` and in the systemd STATUS, and resumes by itself: when the library
is back it is checked in full, and what that check finds is settled before filing.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import select
import signal
import threading
import time
from pathlib import Path

from . import app, filing, heal
from .config import Config, ConfigError, load
from .drainer import Backoff, Drainer, DrainResult, Stopping, confirmed_batches
from .errors import StateError
from .guard import DamageWindow, LibraryGuard
from .integrity.base import CORRUPT, OK
from .library import CandidateChecker, Found, Library, Relocator, Volume, record_moves
from .manifest import ManifestError, Track
from .notify import Notifier, configure_service_logging, watchdog_interval
from .scan import MISSING, Finding, LibraryUnavailable, check_track
from .state import State
from .watch import Change, LibraryWatcher, Settler, is_ignored, signature

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 1.0  # seconds between checks of the guard, the observer and the drain thread
SHUTDOWN_DRAIN_WAIT = 2.5  # how long a request in flight may take to finish at SIGTERM
SHUTDOWN_CHECK_WAIT = 1.5  # how long a full check may take to stop its worker processes
FULL_CHECK_RETRY = 300.0  # after a full check that failed for a reason of its own
RESCAN_JITTER = 0.1
FAULT_PAUSE = 2.0  # seconds between tries while degraded
BUSY_HOLD = 60.0  # a file waits for a quiet library at most this long into a busy stretch
MANY_CHANGED_TRACKS = 100  # a manifest change this large is checked in full, not track by track


def run_daemon(config_path: Path) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean shutdown. Config errors raise (exit 2)."""
    configure_service_logging()
    return Daemon(config_path).run()


# --- waking the main loop -------------------------------------------------------------

class Waker:
    """A self-pipe: other threads and signal handlers wake the main loop through it.

    A signal handler must not take locks (the main thread may hold them when the signal
    arrives), so signals reach the loop through ``signal.set_wakeup_fd``.
    """

    def __init__(self):
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._armed = False

    def attach_signals(self) -> None:
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def wake(self) -> None:
        if not self._armed:
            self._armed = True
            try:
                os.write(self._write, b"\0")
            except BlockingIOError:
                pass  # full: the loop is awake already

    def wait(self, timeout: float) -> None:
        select.select([self._read], [], [], max(0.0, timeout))
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        self._armed = False

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self._read)
        os.close(self._write)


# --- the service --------------------------------------------------------------------

class Daemon:
    """The service loop. Every method runs on the main thread unless it says otherwise."""

    def __init__(self, config_path: Path):
        self.config_path = config_path
        self.config = load(config_path)
        check_credentials(self.config)
        self.notifier = Notifier()
        self.waker = Waker()
        self.inbox: collections.deque[tuple] = collections.deque()
        self.state: State | None = None
        self.library = Library()
        self.guard = LibraryGuard(self.config.library.root, self.config.guard.marker)
        self.settler = Settler(self.config.watch.settle_seconds)
        self.watcher: LibraryWatcher | None = None
        self.drainer = Drainer(self.config, self.post)
        self.healer = heal.Healer(self.config) if self.config.heal.enabled else None  # opt-in
        self.backoff = Backoff()
        self.confirmed: set[int] = set()  # tracks judged broken after settling, by this process
        self.announced: set[int] = set()  # dry run: tracks already reported as "would request"
        self.renames: dict[str, str] = {}  # track path -> where the watcher saw it renamed to
        self.stopping = self.reload_requested = False
        self.root_problem: str | None = None  # the guard, for a missing / unmounted / unmarked library
        self.fraction_problem: str | None = None  # the guard, for too much of the manifest missing or damaged
        self.damage = DamageWindow()  # tracks found broken lately, for the fraction guard
        self.manifest_error: str | None = None
        self.watch_error: str | None = None
        self.pool_problem: str | None = None
        self.fault: str | None = None  # why the last step failed: the service is degraded until one succeeds
        self.fault_retry_at = 0.0
        self.check_running = False
        self.recheck_from: float | None = None  # fraction guard: check in full once quiet since then
        self.check_thread: threading.Thread | None = None
        self.full_checks = 0
        now = time.monotonic()
        self.next_full_check = self.next_health = now
        self.drain_retry_at: float | None = None
        self.last_event = self.last_reshape = self.busy_since = float("-inf")
        self.ping_every = watchdog_interval()
        self.next_ping = now
        self.since = time.time()
        self.last_note: dict | None = None

    # -- lifecycle --

    def run(self) -> int:
        self._install_signals()
        self._start()
        try:
            while not self.stopping:
                self.waker.wait(self._next_deadline() - time.monotonic())
                self._step_or_degrade(time.monotonic())
        finally:
            self._shutdown()
        return 0

    def _install_signals(self) -> None:
        self.waker.attach_signals()
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_stop_signal(self, signum, frame) -> None:
        self.stopping = True

    def _on_hangup(self, signum, frame) -> None:
        self.reload_requested = True

    def _start(self) -> None:
        self.state = State(self.config.state.dir)  # requests interrupted by a crash: filing.drain resends them
        config = self.config  # a bad manifest at start is exit 2 (ManifestError): there is no good one to keep
        self.library = Library.read(config.library.manifest, self.state.locations(), Volume.probe(config.library.root))
        log.info("manifest read: %d tracks", len(self.library))
        self.drainer.start()
        if self.healer:
            self.healer.start()
            self.healer.kick()  # finish jobs a restart interrupted
        self._check_health(time.monotonic())
        self._kick_drain(time.monotonic())
        self._publish()
        self.notifier.ready(self.last_note["status"])
        log.info("poold started (pid %d); library %s, manifest %s", os.getpid(), self.config.library.root,
                 self.config.library.manifest)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping")
        if self.watcher is not None:
            self.watcher.stop(timeout=1.0)
        # Still sending: the drain thread holds the outbox lock, so the request marked sent is ours.
        if not self.drainer.stop(SHUTDOWN_DRAIN_WAIT) and (rolled := self.state.recover_unconfirmed()):
            log.warning("%d request(s) in flight rolled back to pending: they are sent again at the next start", rolled)
        if self.check_thread is not None:
            self.check_thread.join(SHUTDOWN_CHECK_WAIT)
        if self.healer:
            self.healer.stop(SHUTDOWN_DRAIN_WAIT)  # a download in progress resumes at the next start
        self._publish(state="stopped", status="stopped")
        self.state.close()
        self.notifier.close()
        self.waker.close()

    def post(self, item: tuple) -> None:
        """Hand something to the main loop (any thread)."""
        self.inbox.append(item)
        self.waker.wake()

    # -- the loop --

    def _next_deadline(self) -> float:
        if self.fault:  # degraded: only the next try and the watchdog are due
            return min(self.fault_retry_at, self.next_ping if self.ping_every else self.fault_retry_at)
        deadlines = [self.next_health]
        if (due := self.settler.next_due(*self._settle_bounds())) is not None:
            deadlines.append(due)
        if not self.check_running:
            deadlines.append(self.next_full_check)
            if self.recheck_from is not None:
                deadlines.append(max(self.last_event, self.recheck_from) + self.settler.settle_seconds)
        if self.drain_retry_at is not None:
            deadlines.append(self.drain_retry_at)
        if self.ping_every:
            deadlines.append(self.next_ping)
        return min(deadlines)

    def _step(self, now: float) -> None:
        if self.stopping:
            return
        if self.reload_requested:
            self._reload(now)
        self._take_inbox(now)
        if now >= self.next_health:
            self._check_health(now)
        self._judge_due(now)
        self._maybe_full_check(now)
        if self.drain_retry_at is not None and now >= self.drain_retry_at:
            self.drain_retry_at = None
            self.drainer.kick()
        self._ping_watchdog(now)
        self._publish()

    def _step_or_degrade(self, now: float) -> None:
        """One step; a failure (the state disk full or read-only, a bug) degrades the
        service instead of ending it: it says so, keeps answering signals and the
        watchdog, and tries again every FAULT_PAUSE. While degraded, each try first
        writes the daemon's note: only a state database that takes writes again ends it.
        Nothing is filed from a step that failed, and the library is checked in full
        once poold works again (changes seen meanwhile may have been lost)."""
        if self.fault and now < self.fault_retry_at:
            self._ping_watchdog(now)
            return
        try:
            if self.fault:
                self.last_note = None  # written, not skipped as unchanged: the proof of recovery
                self._publish()
            self._step(now)
        except Exception as exc:  # noqa: BLE001 - the service outlives any one failure
            self._degrade(exc, now)
            self._ping_watchdog(now)
            return
        if self.fault:
            log.warning("poold works again (it was degraded: %s); checking the library in full", self.fault)
            self.fault = None
            self.next_full_check = now

    def _degrade(self, exc: Exception, now: float) -> None:
        message = str(exc) if isinstance(exc, StateError) else f"internal error: {type(exc).__name__}: {exc}"
        if message != self.fault:
            log.error("DEGRADED, retrying every %.0f s: %s", FAULT_PAUSE, message,
                      exc_info=not isinstance(exc, StateError))
        self.fault, self.fault_retry_at = message, now + FAULT_PAUSE
        self.notifier.status(f"DEGRADED, nothing is requested until it passes: {message}")

    def _take_inbox(self, now: float) -> None:
        while self.inbox:
            kind, *payload = self.inbox.popleft()
            if kind == "change":
                self._on_change(payload[0], now)
            elif kind == "trouble":
                self._on_trouble(payload[0], now)
            elif kind == "check":
                self._on_full_check_done(*payload, now)
            elif kind == "drain":
                self._on_drain_done(payload[0], now)

    def _ping_watchdog(self, now: float) -> None:
        if self.ping_every and now >= self.next_ping:
            self.notifier.watchdog()
            self.next_ping = now + self.ping_every

    # -- health: the guard, the observer, the drain thread --

    def _check_health(self, now: float) -> None:
        self.next_health = now + HEALTH_INTERVAL
        if problem := self.guard.problem():
            self._enter_guard(problem)
            return
        if self.root_problem:
            self._leave_guard(now)
        if self.watcher is None or not self.watcher.alive():
            self._restart_watcher(now, died=self.watcher is not None)
        if not self.drainer.alive():
            log.error("the drain thread ended; starting it again")
            self.drainer = Drainer(self.config, self.post)
            self.drainer.start()

    def _enter_guard(self, problem: str) -> None:
        if problem == self.root_problem:
            return
        self.root_problem = problem
        self.settler.clear()
        self.renames.clear()
        log.error("LIBRARY UNAVAILABLE: %s. Nothing is requested until it is back.", problem)

    def _leave_guard(self, now: float) -> None:
        log.warning("the library is back at %s: checking it in full before anything is requested", self.config.library.root)
        self.root_problem = None
        self.library.volume = Volume.probe(self.config.library.root)  # it may be another drive
        self.next_full_check = now
        self._restart_watcher(now, died=False)

    def _restart_watcher(self, now: float, died: bool) -> None:
        self._stop_watcher()
        if died:
            log.warning("the file watcher stopped (observer thread ended or the root changed): "
                        "restarting it and checking the library in full, as events may have been lost")
            self.next_full_check = now
        # Native events can fail to start (inotify's watch limit on a huge library): poll then.
        for mode in dict.fromkeys((self.config.watch.mode, "poll")):
            watcher = self._new_watcher(mode)
            try:
                watcher.start()
            except OSError as exc:
                self._report_watch_error(f"cannot watch {self.config.library.root} with the {watcher.mode} "
                                         f"observer: {exc}")
                continue
            self.watcher, self.watch_error = watcher, None
            return

    def _new_watcher(self, mode: str) -> LibraryWatcher:
        config = self.config
        return LibraryWatcher(config.library.root, config.library.manifest, mode, config.watch.settle_seconds,
                              lambda change: self.post(("change", change)),
                              lambda message: self.post(("trouble", message)))

    def _report_watch_error(self, message: str) -> None:
        """Log a failure to watch once, not at every health check that retries."""
        if message != self.watch_error:
            log.error("%s", message)
        self.watch_error = message

    def _on_trouble(self, message: str, now: float) -> None:
        log.warning("the file watcher reported trouble (%s): checking the library in full, events may be lost", message)
        self.next_full_check = min(self.next_full_check, now)

    # -- events and settling --

    def _on_change(self, change: Change, now: float) -> None:
        if self.root_problem:
            return  # the full check when the library is back covers everything
        if change.kind in ("dir_gone", "dir_moved"):
            relevant = self._on_folder_change(change, now)
        else:
            relevant = any([self._touch(path, now) for path in (change.path, change.dest) if path])
            if relevant and change.kind == "moved":
                self._remember_rename(change.path, change.dest)
        if relevant:
            if now > self.last_event + self.settler.settle_seconds:
                self.busy_since = now  # the library was quiet until now
            self.last_event = now
            if change.kind != "changed":
                self.last_reshape = now

    def _settle_bounds(self) -> tuple[float, float]:
        """(absent_not_before, not_before) for the settler: a vanished track waits until
        the library stops changing shape; every file waits until the library is quiet, so
        that files damaged together are judged together (and the damage guard sees them
        all at once), but never longer than BUSY_HOLD into a busy stretch."""
        settle = self.settler.settle_seconds
        quiet = min(self.last_event, self.busy_since + BUSY_HOLD)
        return self.last_reshape + settle, quiet + settle

    def _on_folder_change(self, change: Change, now: float) -> bool:
        """A folder went away or moved: its tracks may have, with no event of their own."""
        source = self._relative(change.path)
        if source is None:
            return False
        destination = self._relative(change.dest) if change.dest else None
        for track in self.library.under(source):
            self._touch_track(track, now)
            if destination is not None:
                self.renames[track.path] = destination + track.path[len(source):]
        return True

    def _remember_rename(self, source: str, destination: str) -> None:
        source_rel, destination_rel = self._relative(source), self._relative(destination)
        track = self.library.at(source_rel) if source_rel is not None else None
        if track is not None and destination_rel is not None:
            self.renames[track.path] = destination_rel

    def _relative(self, path: str) -> str | None:
        """The path relative to the library root, POSIX style; None outside the root."""
        root = str(self.config.library.root)
        if not path.startswith(root + os.sep):
            return None
        return path[len(root) + 1:].replace(os.sep, "/")

    def _touch(self, path: str, now: float) -> bool:
        """Start or restart the settle time of a path; False for a path poold does not care about."""
        relative = self._relative(path)
        if heal.is_own_write(path):
            return False  # a healed copy renamed into place: poold verified it already
        if path != str(self.config.library.manifest):
            if relative is None or is_ignored(relative, self.config.watch.ignore):
                return False
            extension = os.path.splitext(relative)[1].lower()
            if extension not in self.config.library.extensions and self.library.at(relative) is None:
                return False
        self.settler.touch(path, now, signature(path))
        return True

    def _touch_track(self, track: Track, now: float) -> None:
        self._touch(os.path.join(str(self.config.library.root), track.path), now)

    def _judge_due(self, now: float) -> None:
        due = self.settler.due(now, signature, *self._settle_bounds())
        if not due or self.root_problem:
            return
        if str(self.config.library.manifest) in due:
            self._reload_manifest(judge_changes=True)
        tracks = [track for path in due if (relative := self._relative(path)) and (track := self.library.at(relative))]
        if tracks:
            self._judge(tracks, now)

    # -- judging --

    def _judge(self, tracks: list[Track], now: float) -> None:
        """Check settled tracks, tell moves from losses, and record and file what is broken."""
        if problem := self.guard.problem():
            self._enter_guard(problem)
            return
        root = self.config.library.root
        findings = []
        for track in tracks:
            if self.stopping:
                return
            findings.append((track, check_track(root, track, follow_symlinks=self.config.library.follow_symlinks)))
        found = self._relocate([track for track, finding in findings if finding.status == MISSING], now)
        problems = [f for t, f in findings if f.status == CORRUPT or
                    (f.status == MISSING and t.trackid not in found.moves and t.trackid not in found.undecided)]
        if problem := self.guard.problem():  # the drive may have gone while we looked
            self._enter_guard(problem)
            return
        if self._too_much_damage(problems, now):
            return
        self._apply_moves(found, now)
        self._record(problems, [f.trackid for _t, f in findings if f.status == OK])
        self._file()

    def _relocate(self, vanished: list[Track], now: float) -> Found:
        """Where vanished tracks went (:mod:`poold.library`'s rule, with the watcher's renames
        as the strongest evidence); a track whose possible new home is still settling waits."""
        if not vanished:
            return Found({}, set())
        config = self.config
        root = str(config.library.root)
        relocator = Relocator(config.library.root, config.library.extensions, config.watch.ignore)
        gone = {track.path for track in vanished}
        candidates = relocator.unknown(relocator.walk(), (path for path in self.library.by_path if path not in gone))
        renames = {}
        for track in vanished:
            renamed_to = self.renames.pop(track.path, None)
            if renamed_to and self.library.at(renamed_to) is None and not is_ignored(renamed_to, config.watch.ignore):
                renames[track.path] = renamed_to
        check = CandidateChecker(config.library.root, self.state.file_cache(), app.scan_options(config).workers)
        found = relocator.find(vanished, candidates, identities=self.state.track_identities(t.trackid for t in vanished),
                               check=check, renames=renames,
                               settling=lambda relative: os.path.join(root, relative) in self.settler)
        for trackid in found.undecided:
            self._touch_track(self.library.tracks[trackid], now)
        return found

    def _too_much_damage(self, problems: list[Finding], now: float) -> bool:
        """The fraction guard: more of the library missing (these and those known missing)
        or found broken within the damage window than ``max_missing_fraction`` allows."""
        if not problems:
            return False
        self.damage.add((f.trackid for f in problems), now)
        limit = self.config.guard.max_missing_fraction
        allowed = limit * len(self.library)
        missing = {f.trackid for f in problems if f.status == MISSING}
        if missing:
            missing |= {i.trackid for i in self.state.open_incidents() if i.status == MISSING}
            if len(missing) > allowed:
                self._enter_fraction_guard(f"{len(missing)} of {len(self.library)} tracks are missing, more than "
                                           f"{limit:.0%}: the library looks partly unavailable", now)
                return True
        if (broken := self.damage.count(now)) > allowed:
            self._enter_fraction_guard(
                f"{broken} of {len(self.library)} tracks were found missing or damaged within "
                f"{self.damage.seconds / 60:.0f} minutes, more than {limit:.0%}: a failing drive or a bad restore "
                "looks like this, not downloads", now)
            return True
        return False

    def _enter_fraction_guard(self, problem: str, now: float) -> None:
        if problem != self.fraction_problem:
            log.error("LIBRARY GUARD: %s. Nothing is requested; it is checked again in full once it stops changing.",
                      problem)
        self.fraction_problem = problem
        if self.recheck_from is None:
            self.recheck_from = now

    def _apply_moves(self, found: Found, now: float) -> None:
        """Record where moved tracks are now; they are not losses and nothing is filed for them."""
        if not found.moves:
            return
        config = self.config
        record_moves(self.state, found.moves.values(), config.library.manifest if config.library.update_manifest else None)
        self._moved({trackid: move.destination for trackid, move in found.moves.items()}, now)

    def _moved(self, moves: dict[int, str], now: float) -> None:
        """Follow moves already recorded: the library in memory, incidents, what is confirmed."""
        for trackid, destination in moves.items():
            if trackid in self.library.tracks:
                self.library.relocate(trackid, destination)
                self._touch_track(self.library.tracks[trackid], now)  # judge the file at its new place
        self.state.resolve(moves)
        self.confirmed -= moves.keys()

    def _record(self, problems: list[Finding], ok_trackids: list[int]) -> None:
        self.state.record_problems((f.trackid, f.path, f.status, f.reason, f.detail) for f in problems)
        for finding in problems:
            if finding.trackid not in self.confirmed:
                log.warning("track %d is %s (%s): %s - %s", finding.trackid, finding.status, finding.reason,
                            finding.path, finding.detail)
        self.confirmed |= {finding.trackid for finding in problems}
        if ok_trackids:
            self.state.resolve(ok_trackids)
            self.confirmed -= set(ok_trackids)

    def _file(self) -> None:
        """Queue requests for confirmed problems (cooldown, quota and dry run honoured), then drain."""
        if self.root_problem or self.fraction_problem or not self.confirmed:
            return
        batches = confirmed_batches(self.state, self.config, self.confirmed)
        if not batches:
            return
        if problem := self.guard.problem():  # last look before anything is queued
            self._enter_guard(problem)
            return
        if self.config.requests.dry_run:
            self._announce_dry_run(batches)
            return
        for request_id, batch in zip(filing.enqueue(self.state, batches), batches):
            if request_id is not None:  # None: another poold process queued these tracks first
                log.info("request %d queued: tracks %s, \"%s\"", request_id, batch.trackids, batch.reason)
        self._kick_drain(time.monotonic())

    def _announce_dry_run(self, batches: list[filing.Batch]) -> None:
        for batch in batches:
            if not set(batch.trackids) <= self.announced:
                log.warning("dry run: would request tracks %s: \"%s\"", batch.trackids, batch.reason)
                self.announced |= set(batch.trackids)

    # -- full checks --

    def _maybe_full_check(self, now: float) -> None:
        if self.check_running or self.root_problem or self.stopping or self.fault:
            return
        quiet = (self.recheck_from is not None
                 and now >= max(self.last_event, self.recheck_from) + self.settler.settle_seconds)
        if now < self.next_full_check and not quiet:
            return
        self.check_running, self.recheck_from = True, None
        self.next_full_check = float("inf")  # a request for another check meanwhile sets it again
        self.check_thread = threading.Thread(target=self._full_check, args=(self.config,), name="poold-full-check",
                                             daemon=True)
        self.check_thread.start()

    def _full_check(self, config: Config) -> None:
        """Runs on its own thread: the audit (which records incidents); the outcome goes to the main loop."""
        def give_up_when_stopping(_finding) -> None:
            if self.stopping:
                raise Stopping()

        try:
            self.post(("check", app.run_audit(config, request=False, on_finding=give_up_when_stopping), None))
        except Stopping:
            pass
        except Exception as exc:
            self.post(("check", None, exc))

    def _on_full_check_done(self, outcome: app.AuditOutcome | None, error: Exception | None, now: float) -> None:
        self.check_running = False
        self.full_checks += 1
        if self.next_full_check == float("inf"):  # else another check was asked for while this one ran
            interval = self.config.watch.rescan_interval
            self.next_full_check = now + interval * random.uniform(1 - RESCAN_JITTER, 1 + RESCAN_JITTER)
        if isinstance(error, LibraryUnavailable):
            self._enter_guard(str(error))
        elif isinstance(error, ManifestError):
            self._manifest_failed(error)
        elif isinstance(error, StateError):
            self._degrade(error, now)
            self.next_full_check = now  # again once the state database takes writes
        elif error is not None:
            log.error("the full check failed: %s: %s", type(error).__name__, error)
            self.next_full_check = min(self.next_full_check, now + FULL_CHECK_RETRY)
        else:
            self._moved(outcome.report.moved, now)  # the check recorded them already
            if outcome.report.guard:
                self._on_guarded_full_check(outcome.report, now)
            else:
                self._on_clean_full_check(outcome.report, now)

    def _on_guarded_full_check(self, report, now: float) -> None:
        """Too much is missing even after the check looked for moved tracks (see
        :mod:`poold.library`): the library looks partly unavailable."""
        if problem := self.guard.problem():
            self._enter_guard(problem)
            return
        self._enter_fraction_guard(report.guard, now)

    def _on_clean_full_check(self, report, now: float) -> None:
        if self.fraction_problem:
            log.warning("the library looks whole again: requests resume")
        self.fraction_problem = None
        self.damage.clear()
        self.confirmed -= report.ok_trackids
        for finding in report.problems:  # judged again once settled, before anything is filed
            if (track := self.library.tracks.get(finding.trackid)) is not None:
                self._touch_track(track, now)
        log.info("full check: %d tracks, %d ok, %d problems, %d unchecked", report.checked, report.ok,
                 len(report.problems), len(report.unchecked))
        self._file()

    # -- the manifest and the config --

    def _reload_manifest(self, judge_changes: bool) -> None:
        """Read the manifest again; a bad one keeps the one read before (and says so)."""
        config = self.config
        try:
            library = Library.read(config.library.manifest, self.state.locations(), Volume.probe(config.library.root))
        except ManifestError as exc:
            self._manifest_failed(exc)
            return
        changed, removed = self.library.diff(library)
        self.library, self.manifest_error = library, None
        if removed:
            self.state.resolve(removed)
            self.confirmed -= removed
        if judge_changes and len(changed) > MANY_CHANGED_TRACKS:
            self.next_full_check = time.monotonic()
        elif judge_changes:
            for track in changed:
                self._touch_track(track, time.monotonic())
        log.info("manifest read again: %d tracks (%d new or changed, %d gone)", len(library), len(changed), len(removed))

    def _manifest_failed(self, error: ManifestError) -> None:
        if str(error) != self.manifest_error:
            log.error("%s; keeping the manifest read before (%d tracks)", error, len(self.library))
        self.manifest_error = str(error)

    def _reload(self, now: float) -> None:
        """SIGHUP: read the config and the manifest again, restart the watcher, check in full."""
        self.reload_requested = False
        self.notifier.reloading()
        try:
            config = load(self.config_path)
            check_credentials(config)
        except (ConfigError, app.SetupError) as exc:
            log.error("reload failed, the running configuration stays: %s", exc)
            self.notifier.ready()
            return
        self.config = config
        self.settler = Settler(config.watch.settle_seconds)
        self.renames.clear()
        self.guard = LibraryGuard(config.library.root, config.guard.marker)
        self.drainer.config = config
        self._reconfigure_healer(config)
        self.backoff.reset()
        self.drain_retry_at = None
        self._reload_manifest(judge_changes=False)
        self.root_problem = self.fraction_problem = None
        self._stop_watcher()
        self._check_health(now)
        self.next_full_check = now
        self._kick_drain(now)
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready()

    def _reconfigure_healer(self, config: Config) -> None:
        """Start, stop or re-point the heal thread after a reload: ``[heal] enabled`` may have changed."""
        if self.healer is not None and not config.heal.enabled:
            self.healer.stop(SHUTDOWN_DRAIN_WAIT)
            self.healer = None
        elif config.heal.enabled:
            if self.healer is None:
                self.healer = heal.Healer(config)
                self.healer.start()
            self.healer.config = config
            self.healer.kick()

    def _stop_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.stop(timeout=1.0)
            self.watcher = None

    # -- the drain --

    def _kick_drain(self, now: float) -> None:
        """Drain now, unless backing off after a failure (the retry comes at its time)."""
        if self.drain_retry_at is None or now >= self.drain_retry_at:
            self.drain_retry_at = None
            self.drainer.kick()

    def _on_drain_done(self, result: DrainResult, now: float) -> None:
        if result.outcome in ("retry", "error"):
            delay = self.backoff.failed()
            self.drain_retry_at = now + delay
            self.pool_problem = f"{result.message} (next try in {delay / 60:.0f} min)"
            log.warning("requests are waiting: %s", self.pool_problem)
        elif result.outcome == "ok":
            self.backoff.reset()
            self.pool_problem = None
            if self.healer:
                self.healer.kick()  # requests POOL accepted: their tracks can be fetched back

    # -- status --

    def _publish(self, state: str | None = None, status: str | None = None) -> None:
        """Write the daemon's note for ``poold status`` and the systemd STATUS, when they change."""
        open_problems = len(self.state.open_trackids())
        pending = len(self.state.requests(states=("pending", "sent")))
        state = state or self._state_word()
        status = status or self._status_text(state, open_problems, pending)
        note = {
            "state": state, "status": status, "pid": os.getpid(), "since": self.since,
            "guard": self.root_problem or self.fraction_problem, "manifest_error": self.manifest_error,
            "pool_problem": self.pool_problem, "problems_open": open_problems, "requests_pending": pending,
            "full_checks": self.full_checks, "watch_mode": self.watcher.mode if self.watcher else None,
            "tracks": len(self.library),
        }
        if note == self.last_note:
            return
        self.last_note = note
        self.state.put_note("daemon", {**note, "updated": time.time()})
        self.notifier.status(status)

    def _state_word(self) -> str:
        if self.root_problem or self.fraction_problem:
            return "guarded"
        return "checking" if self.check_running or self.full_checks == 0 else "watching"

    def _status_text(self, state: str, open_problems: int, pending: int) -> str:
        if state == "guarded":
            head = f"LIBRARY UNAVAILABLE, nothing is requested: {self.root_problem or self.fraction_problem}"
        elif state == "checking":
            head = f"checking {self.config.library.root}"
        else:
            head = f"watching {self.config.library.root}" + (f" ({self.watcher.mode})" if self.watcher else "")
        parts = [head, f"{open_problems} problem(s) open", f"{pending} request(s) pending"]
        if self.manifest_error:
            parts.append(f"manifest error, the previous one is used: {self.manifest_error}")
        if self.pool_problem:
            parts.append(f"POOL: {self.pool_problem}")
        return "; ".join(parts)


def check_credentials(config: Config) -> None:
    """Fail at start (exit 2) rather than at the first request when requests cannot be sent."""
    if not config.requests.dry_run:
        app.make_client(config).close()
