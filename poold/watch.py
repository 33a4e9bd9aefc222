"""Watching the library: the watchdog observer, settling, ignore rules and mounts.

The pieces here know nothing of incidents or requests; :mod:`poold.daemon` decides.

* :class:`LibraryWatcher` runs one watchdog observer over the library root
  (recursive) and the manifest's folder, and hands each change to a callback. It uses
  the native observer (inotify, FSEvents) unless ``[watch] mode = "poll"`` or the root
  is on a network filesystem (read from the mount table), where native events for
  changes made elsewhere never arrive. Anything watchdog logs at WARNING or above
  (a kernel queue overflow, an observer error) is reported as trouble: events may
  have been lost, so the daemon runs a full check.
* :class:`Settler` holds a path back until it has stopped changing for the settle
  time: no event for it, and its size and mtime the same as when last looked at.

Where a vanished track went is :mod:`poold.library`'s to say.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver


log = logging.getLogger(__name__)

# Open and close-without-write events are left out on purpose: poold reads every
# file it checks, and those reads must not come back to it as changes.
WATCHED_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent,
                  DirDeletedEvent, DirMovedEvent]

# Filesystems where changes made by other machines raise no local events. All FUSE
# filesystems except the block-device-backed ones (fuseblk: ntfs-3g, exfat on USB drives)
# are treated alike: sshfs, rclone, s3fs, davfs2 ... are remote.
NETWORK_FSTYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "9p", "lustre",
    "gpfs", "beegfs", "davfs", "webdav", "afpfs", "sshfs", "fuse",
})


# --- ignore patterns ----------------------------------------------------------------

def is_ignored(relative: str, patterns: Iterable[str]) -> bool:
    """True for files named like downloads in progress (``*.part``, ``.~*`` ...).

    A pattern with a ``/`` is matched against the path relative to the library root,
    any other against the file name alone; both case-sensitively.
    """
    name = posixpath.basename(relative)
    return any(fnmatch.fnmatchcase(relative if "/" in pattern else name, pattern) for pattern in patterns)


# --- mounts -------------------------------------------------------------------------

@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    local: bool | None = None  # BSD/macOS mount(8) flags local filesystems; Linux does not say

    @property
    def is_network(self) -> bool:
        if self.fstype in NETWORK_FSTYPES or self.fstype.split(".")[0] in NETWORK_FSTYPES:
            return True
        return self.local is False


def _unescape_mountinfo(field_text: str) -> str:
    """Undo the octal escapes (``\\040`` for a space ...) of /proc/self/mountinfo fields."""
    if "\\" not in field_text:
        return field_text
    out, i = [], 0
    while i < len(field_text):
        chunk = field_text[i:i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field_text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts from Linux's /proc/self/mountinfo (see proc(5)), in mount order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        mounts.append(Mount(_unescape_mountinfo(fields[4]), fields[dash + 1], _unescape_mountinfo(fields[dash + 2])))
    return mounts


def parse_bsd_mount(text: str) -> list[Mount]:
    """Mounts from BSD/macOS ``mount`` output: ``source on /point (type, flag, ...)``."""
    mounts = []
    for line in text.splitlines():
        head, sep, flags = line.rpartition(" (")
        source, on, point = head.partition(" on ")
        if not (sep and on and flags.endswith(")")):
            continue
        fstype, *options = [part.strip() for part in flags[:-1].split(",")]
        mounts.append(Mount(point, fstype, source, local="local" in options))
    return mounts


def mount_table() -> list[Mount]:
    """This machine's mounts; empty when they cannot be read (then nothing counts as remote)."""
    try:
        if sys.platform.startswith("linux"):
            return parse_mountinfo(Path("/proc/self/mountinfo").read_text(errors="replace"))
        if sys.platform == "darwin" or "bsd" in sys.platform:
            output = subprocess.run(["/sbin/mount"], capture_output=True, text=True, timeout=10).stdout
            return parse_bsd_mount(output)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot read the mount table (%s); assuming a local filesystem", exc)
    return []


def mount_of(path: str | os.PathLike, mounts: list[Mount]) -> Mount | None:
    """The mount a path lives on: the longest mount point above it (the last one mounted wins)."""
    target = os.path.realpath(path)
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = target == point or target.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def mount_point(path: str | os.PathLike) -> str:
    """The mount point at or above an existing path (portable: uses os.path.ismount)."""
    current = os.path.realpath(path)
    while not os.path.ismount(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def choose_mode(mode: str, root: str | os.PathLike, mounts: list[Mount] | None = None) -> tuple[str, str]:
    """("native" or "poll", why) for ``[watch] mode`` and the filesystem the root is on."""
    if mode in ("native", "poll"):
        return mode, f'[watch] mode = "{mode}"'
    mount = mount_of(root, mount_table() if mounts is None else mounts)
    if mount is not None and mount.is_network:
        return "poll", f"{root} is on {mount.fstype} ({mount.source}), where native events do not arrive"
    return "native", f"{root} is on a local filesystem" + (f" ({mount.fstype})" if mount else "")


def poll_interval(settle_seconds: float) -> float:
    """How often the polling observer rescans: often enough for the settle time, at most every 30 s."""
    return min(max(settle_seconds / 2, 1.0), 30.0)


# --- settling -----------------------------------------------------------------------

Signature = tuple | None  # (size, mtime_ns), ("error", errno), or None when the path is absent


def signature(path: str) -> Signature:
    """What "the file changed" is measured by: its size and mtime."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return ("error", exc.errno)
    return (info.st_size, info.st_mtime_ns)


@dataclass
class _Pending:
    changed: float  # monotonic time of the last event or observed change
    signature: Signature


class Settler:
    """Paths waiting to stop changing. Pure bookkeeping: the caller supplies times and stats.

    A path is due once ``settle_seconds`` have passed since its last event and its
    signature is what it was then, and not before ``not_before``: the daemon sets that
    to the end of the settle time after the last change anywhere in the library, so
    that files rewritten together (a sync tool, a bad restore) are judged together. An
    absent path (a deletion) is in addition held until ``absent_not_before``: the end of
    the settle time after the last deletion, creation or move, so a vanished track is
    judged only once the library has stopped changing shape (a move's other half has
    arrived, an unmount's cascade of deletions is over).
    """

    def __init__(self, settle_seconds: float):
        self.settle_seconds = settle_seconds
        self._entries: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    def touch(self, path: str, now: float, current: Signature) -> None:
        self._entries[path] = _Pending(now, current)

    def discard(self, path: str) -> None:
        self._entries.pop(path, None)

    def clear(self) -> None:
        self._entries.clear()

    def _due_at(self, entry: _Pending, absent_not_before: float, not_before: float) -> float:
        due = max(entry.changed + self.settle_seconds, not_before)
        return max(due, absent_not_before) if entry.signature is None else due

    def next_due(self, absent_not_before: float = 0.0, not_before: float = 0.0) -> float | None:
        return min((self._due_at(e, absent_not_before, not_before) for e in self._entries.values()), default=None)

    def due(self, now: float, current: Callable[[str], Signature], absent_not_before: float = 0.0,
            not_before: float = 0.0) -> list[str]:
        """Take out the paths that have settled; re-arm those found still changing."""
        ready = []
        for path, entry in list(self._entries.items()):
            if now < self._due_at(entry, absent_not_before, not_before):
                continue
            seen = current(path)
            if seen != entry.signature:
                self._entries[path] = _Pending(now, seen)
                continue
            del self._entries[path]
            ready.append(path)
        return ready


# --- the observer -------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """One filesystem change, as the daemon sees it."""

    kind: str  # changed | created | deleted | moved | dir_gone | dir_moved
    path: str
    dest: str | None = None


class _Forwarder(FileSystemEventHandler):
    """Turns watchdog events into Changes; runs on the observer's thread."""

    def __init__(self, on_change: Callable[[Change], None]):
        self.on_change = on_change

    def dispatch(self, event: FileSystemEvent) -> None:
        change = _to_change(event)
        if change is not None:
            self.on_change(change)


def _to_change(event: FileSystemEvent) -> Change | None:
    src, dest = os.fsdecode(event.src_path), os.fsdecode(event.dest_path) if event.dest_path else None
    if isinstance(event, DirMovedEvent):
        return Change("dir_moved", src, dest)
    if isinstance(event, DirDeletedEvent):
        return Change("dir_gone", src)
    if event.is_directory:
        return None
    if isinstance(event, FileMovedEvent):
        return Change("moved", src, dest) if dest else Change("deleted", src)
    if isinstance(event, FileDeletedEvent):
        return Change("deleted", src)
    if isinstance(event, FileCreatedEvent):
        return Change("created", src)
    return Change("changed", src)


class _TroubleHook(logging.Handler):
    """Watchdog reports lost events (inotify queue overflow) and observer errors only in its log."""

    def __init__(self, on_trouble: Callable[[str], None]):
        super().__init__(logging.WARNING)
        self.on_trouble = on_trouble

    def emit(self, record: logging.LogRecord) -> None:
        self.on_trouble(record.getMessage())


class LibraryWatcher:
    """One observer over the library root (recursive) and the manifest's folder."""

    def __init__(self, root: Path, manifest: Path, mode: str, settle_seconds: float,
                 on_change: Callable[[Change], None], on_trouble: Callable[[str], None]):
        self.root = root
        self.manifest = manifest
        self.mode, self.why = choose_mode(mode, root)
        self.interval = poll_interval(settle_seconds)
        self.on_change = on_change
        self._hook = _TroubleHook(on_trouble)
        self._observer = None
        self._identity: tuple[int, int] | None = None

    def start(self) -> None:
        """Start watching; raises OSError when the root cannot be watched (e.g. inotify's limit)."""
        observer = PollingObserver(timeout=self.interval) if self.mode == "poll" else Observer()
        forwarder = _Forwarder(self.on_change)
        try:
            info = self.root.stat()
            observer.schedule(forwarder, str(self.root), recursive=True, event_filter=WATCHED_EVENTS)
            self._schedule_manifest(observer, forwarder)
            logging.getLogger("watchdog").addHandler(self._hook)
            observer.start()
        except OSError:
            logging.getLogger("watchdog").removeHandler(self._hook)
            observer.stop()  # the inotify observer runs a reader thread from its creation on
            raise
        self._observer, self._identity = observer, (info.st_dev, info.st_ino)
        log.info("watching %s with the %s observer: %s", self.root, self.mode, self.why)

    def _schedule_manifest(self, observer, forwarder: _Forwarder) -> None:
        folder = self.manifest.parent
        try:
            observer.schedule(forwarder, str(folder), recursive=False, event_filter=WATCHED_EVENTS)
        except OSError as exc:
            log.warning("cannot watch the manifest's folder %s (%s): changes to it are read on SIGHUP only",
                        folder, exc.strerror)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the observer. Watchdog's log is muted meanwhile: its emitters can race their
        own shutdown and log an ERROR that means nothing, and a DJ reading the log should not worry."""
        watchdog_log = logging.getLogger("watchdog")
        watchdog_log.removeHandler(self._hook)
        level = watchdog_log.level
        watchdog_log.setLevel(logging.CRITICAL)
        try:
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout)
                self._observer = None
        finally:
            watchdog_log.setLevel(level)

    def alive(self) -> bool:
        """False when the observer or one of its emitters died, or the root is another folder now."""
        observer = self._observer
        if observer is None or not observer.is_alive() or not all(e.is_alive() for e in observer.emitters):
            return False
        try:
            info = self.root.stat()
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._identity
