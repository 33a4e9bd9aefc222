"""The audit: join the manifest with the library and judge every track.

For each manifest track, in order: does the file exist; does its size match the
manifest (a file smaller than the download was is damage; a larger one is usually a
retag and is only noted); is its structure sound (:mod:`poold.integrity`); does its
length match the manifest's duration; with ``verify``, do its hashes match.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import logging
import operator
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .integrity import LOGIC_VERSION, check_file
from .integrity.base import CORRUPT, OK, UNCHECKED, NotAFile, Verdict, open_regular, unreadable
from .manifest import Track
from .state import CachedCheck, FileCache, file_key, logic_number

log = logging.getLogger(__name__)

MISSING = "missing"
DURATION_TOLERANCE = 3.0  # seconds, or 3 %: manifests round durations, encoders pad


class Finding(NamedTuple):
    """The outcome for one manifest track (a tuple: one is made for every track)."""

    trackid: int
    path: str
    status: str  # ok | missing | corrupt | unchecked
    reason: str
    detail: str
    # The audio identities (poold.integrity.identity) when this scan checked the file or
    # read its full cached row; None when a plain ok came from the cache (ask
    # FileCache.identity then: loading every identity would slow the warm audit).
    identity: str | None = None
    full_identity: str | None = None

    def as_json(self) -> dict:
        return {name: self[index] for index, name in enumerate(REPORTED_FIELDS)}


class FindingList:
    """Findings, read back in track-ID order: in memory up to SPILL_AFTER, beyond that
    in sorted runs in a temporary file, merged when read. A library gone missing gives
    a finding for every track; a million of them must not need memory each (about
    200 bytes a finding)."""

    SPILL_AFTER = 50_000
    CHUNK = 1_000  # findings a pickle in the file: the merge holds one chunk a run

    def __init__(self, findings: Iterable[Finding] = ()):
        self._memory: list[Finding] = []
        self._runs: list[tuple[int, int]] = []  # (offset, chunks) of each sorted run in _file
        self._file = None
        self._count = 0
        for finding in findings:
            self.append(finding)

    def append(self, finding: Finding) -> None:
        self._memory.append(finding)
        self._count += 1
        if len(self._memory) >= self.SPILL_AFTER:
            self._spill()

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Finding]:
        in_memory = sorted(self._memory, key=_trackid)
        if not self._runs:
            return iter(in_memory)
        return heapq.merge(*(self._read_run(*run) for run in self._runs), in_memory, key=_trackid)

    def _spill(self) -> None:
        import pickle  # loaded only by an audit that spills
        import tempfile

        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="poold-findings-")
        self._memory.sort(key=_trackid)
        start = self._file.seek(0, os.SEEK_END)
        for offset in range(0, len(self._memory), self.CHUNK):
            pickle.dump(self._memory[offset:offset + self.CHUNK], self._file, pickle.HIGHEST_PROTOCOL)
        self._runs.append((start, -(-len(self._memory) // self.CHUNK)))
        self._memory = []

    def _read_run(self, position: int, chunks: int) -> Iterator[Finding]:
        import pickle

        for _ in range(chunks):  # other runs read the same file in between: seek every time
            self._file.seek(position)
            chunk = pickle.load(self._file)
            position = self._file.tell()
            yield from chunk


_trackid = operator.itemgetter(0)
REPORTED_FIELDS = ("trackid", "path", "status", "reason", "detail")  # what a report shows of a finding


@dataclass
class AuditReport:
    library: str
    manifest: str
    checked: int = 0
    ok: int = 0
    missing: int = 0
    problems: FindingList = field(default_factory=FindingList)   # missing and corrupt, by track ID
    unchecked: FindingList = field(default_factory=FindingList)
    ok_trackids: set[int] = field(default_factory=set)  # only those that had open incidents
    guard: str | None = None  # why filing is withheld, when the library looks unavailable
    files_checked: int = 0    # files opened (not answered from the cache)
    deep_deferred: int = 0    # files left for the next deep slice
    moved: dict[int, str] = field(default_factory=dict)  # tracks found elsewhere: trackid -> new path
    retagged: int = 0         # --verify: tracks whose bytes changed but not their verified audio
    verified: list[tuple[int, str | None, str]] = field(default_factory=list)  # --verify: matched the hash now

    def add(self, finding: Finding, watched: frozenset[int] = frozenset()) -> None:
        """Count ``finding``; keep it when it is a problem, or its track ID when it is ok
        and ``watched`` (the tracks with open incidents)."""
        self.checked += 1
        if finding.status == OK:
            self.ok += 1
            if finding.trackid in watched:
                self.ok_trackids.add(finding.trackid)
        elif finding.status == UNCHECKED:
            self.unchecked.append(finding)
        else:
            self.missing += finding.status == MISSING
            self.problems.append(finding)


class LibraryUnavailable(Exception):
    """The library root is not there (drive unmounted, NAS down): nothing can be judged."""


def library_problem(root: Path, marker: str | None) -> str | None:
    """Why the library looks unavailable, or None when it looks present.

    The root must be a folder poold may list and look into: a root it has no
    permission for would make every track look unreadable at once."""
    try:
        info = root.stat()
    except FileNotFoundError:
        return f"the library folder {root} does not exist (drive unmounted or NAS down?)"
    except OSError as exc:
        return f"the library folder {root} cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(info.st_mode):
        return f"the library root {root} is not a folder"
    try:
        with os.scandir(root) as entries:  # one read of the folder, however large
            first = next(entries, None)
    except OSError as exc:
        return f"the library folder {root} cannot be read ({exc.strerror})"
    if first is not None and (denied := _search_denied(first.path)):
        return f"the library folder {root} cannot be read ({denied})"
    if marker and not (root / marker).exists():
        return f"the marker file {marker} is missing from {root} (wrong or unmounted drive?)"
    return None


def _search_denied(entry: str) -> str | None:
    """Why the folder holding ``entry`` cannot be looked into (no search permission),
    or None. Another error (the entry was deleted meanwhile) is not the folder's."""
    try:
        os.lstat(entry)
    except PermissionError as exc:
        return exc.strerror
    except OSError:
        pass
    return None


def check_track(root: Path, track: Track, verify: bool = False,
                checker: Callable[[str], Verdict] = check_file, follow_symlinks: bool = False) -> Finding:
    """Judge one manifest track against the file in the library (no cache, in this process)."""
    path = os.path.join(root, track.path)
    triaged = _triage(path, track, None if follow_symlinks else Confinement(root))
    if isinstance(triaged, Finding):
        return triaged
    return conclude_judged(judge(Job(track, path, triaged, QUICK, verify), checker))


def _triage(path: str, track: Track, confine: Confinement | None = None) -> Finding | tuple[int, int, int, int]:
    """A finding decided by stat alone, or the file's identity for checking.

    With ``confine``, symbolic links are not followed out of the library: the path is
    looked at with lstat (as cheap as stat), and only a link costs more work."""
    try:
        if confine is None:
            info = os.stat(path)
        else:
            info = os.lstat(path)
            # The common case, costing a dict lookup: not a link, in a folder already found inside.
            if _is_link(info.st_mode) or confine.folders.get(track.path.rpartition("/")[0], _ABSENT) is not None:
                if (escape := confine.escape(track.path, path, info)) is not None:
                    return escape.finding(track)
                if _is_link(info.st_mode):  # a link that stays inside: its target is the track
                    info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _finding(track, MISSING, MISSING, "no file at this path")
    except OSError as exc:
        verdict = unreadable(exc)
        return _finding(track, verdict.status, verdict.reason, verdict.detail)
    if not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            return _finding(track, MISSING, MISSING, "a folder, not a file, is at this path")
        verdict = unreadable(NotAFile(path, info.st_mode))
        return _finding(track, verdict.status, verdict.reason, verdict.detail)
    if track.size is not None and info.st_size < track.size:
        if info.st_size == 0:
            return _finding(track, CORRUPT, "empty", "the file is 0 bytes long")
        return _finding(track, CORRUPT, "size_mismatch",
                        f"{info.st_size:,} bytes, the download was {track.size:,} ({info.st_size / track.size:.0%})")
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)


_is_link = stat.S_ISLNK


class Escape(NamedTuple):
    """A symbolic link on a track's path that leads out of the library."""

    link: str
    target: str

    def finding(self, track: Track) -> Finding:
        return _finding(track, UNCHECKED, "outside_library",
                        f"{self.link} is a symbolic link to {self.target}, outside the library: not followed "
                        "(set [library] follow_symlinks = true to check such files)")


class Confinement:
    """Which track paths a symbolic link leads out of the library root.

    A track's own name is judged from the lstat the triage makes in place of a stat.
    The folders above it are judged once each per audit (cached here), from a listing
    of their parent: the listing says which entries are links without a stat for
    each (libraries have tens of thousands of folders). Only a link is resolved
    (realpath). The root itself may be a link: its target is the library."""

    def __init__(self, root: str | os.PathLike):
        self.prefix = os.path.join(root, "")
        self.real_root = os.path.join(os.path.realpath(root), "")
        self.folders: dict[str, Escape | None] = {"": None}  # relative folder -> its way out, if any
        self._links: dict[str, frozenset[str]] = {}  # relative folder -> names of the links in it

    def escape(self, relative: str, path: str, info: os.stat_result) -> Escape | None:
        if stat.S_ISLNK(info.st_mode):
            return self._outside(path)
        return self._folder(relative.rpartition("/")[0])

    def _folder(self, folder: str) -> Escape | None:
        found = self.folders.get(folder, _ABSENT)
        if found is _ABSENT:
            parent, _, name = folder.rpartition("/")
            found = self._folder(parent)
            if found is None and name in self._links_in(parent):
                found = self._outside(self.prefix + folder)
            self.folders[folder] = found
        return found

    def _links_in(self, folder: str) -> frozenset[str]:
        links = self._links.get(folder)
        if links is None:
            try:
                with os.scandir(self.prefix + folder) as entries:
                    links = frozenset(entry.name for entry in entries if entry.is_symlink())
            except OSError:
                links = frozenset()  # the tracks' own stats say what is wrong
            self._links[folder] = links
        return links

    def _outside(self, path: str) -> Escape | None:
        real = os.path.realpath(path)
        return None if os.path.join(real, "").startswith(self.real_root) else Escape(path, real)


def _finding(track: Track, status: str, reason: str, detail: str) -> Finding:
    return Finding(track.trackid, track.path, status, reason, detail)


# --- checking files: in this process or in workers -------------------------------------

QUICK, DEEP = "quick", "deep"


@dataclass(frozen=True, slots=True)
class Job:
    track: Track
    path: str
    identity: tuple[int, int, int, int]
    level: str
    verify: bool


@dataclass(frozen=True, slots=True)
class Judged:
    job: Job
    verdict: Verdict
    sha256: str | None = None
    md5: str | None = None
    full_identity: str | None = None  # the audio payload's, when the whole file was read


def judge(job: Job, checker: Callable[[str], Verdict] | None = None) -> Judged:
    """Run the file check (and the digests ``verify`` needs). Runs in worker processes.

    The full audio identity is taken where the whole file is read anyway: in the pass
    that computes the digests, or after a deep check (the file is then in the page cache).
    """
    if checker is None:
        checker = _deep_checker() if job.level == DEEP else check_file
    verdict = checker(job.path)
    digests, full = {}, None
    if job.verify and (job.track.sha256 or job.track.md5) and verdict.reason != "unreadable":
        digests, full = _digests(job.path)
    elif job.level == DEEP and verdict.status == OK:
        full = _identity().full_identity(job.path)
    return Judged(job, verdict, digests.get("sha256"), digests.get("md5"), full)


def judge_batch(jobs: list[Job]) -> list[Judged]:
    return [judge(job) for job in jobs]


def _deep_checker():
    from .integrity.deep import deep_check

    return deep_check


def _digests(path: str) -> tuple[dict[str, str], str | None]:
    """The file's sha256 and md5 and its full audio identity, from one read of the file."""
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    try:
        full = _identity().hash_file(path, digests)
    except OSError:
        return {}, None
    return {name: digest.hexdigest() for name, digest in digests.items()}, full


def _identity():
    """poold.integrity.identity, imported when a file is read (it imports every format module)."""
    from .integrity import format_module

    return format_module("identity")


def conclude_judged(judged: Judged, verified: str | None = None) -> Finding:
    finding = conclude(judged.job.track, judged.verdict.status, judged.verdict.reason, judged.verdict.detail,
                       judged.verdict.duration, judged.job.verify, judged.sha256, judged.md5,
                       judged.full_identity, verified)
    return _with_identities(finding, judged.verdict.identity, judged.full_identity)


def _with_identities(finding: Finding, identity: str | None, full: str | None) -> Finding:
    if identity is None and full is None:
        return finding
    return finding._replace(identity=identity, full_identity=full)


def conclude(track: Track, status: str, reason: str, detail: str, duration: float | None,
             verify: bool, sha256: str | None, md5: str | None,
             full_identity: str | None = None, verified: str | None = None) -> Finding:
    """The finding for a judged file, with the manifest's hashes and duration applied.

    Bytes that differ from the manifest's hash say little on their own: DJ software
    writes cue points, keys and artwork into the files. So they are judged by the
    file's full audio identity against ``verified``, the one recorded when its bytes
    last matched the hash: the same audio is ok, retagged; other audio is
    ``checksum_mismatch``. With no verified identity (poold never saw the bytes match),
    a file whose structure is sound is ``unchecked``: a retag and damage inside the
    audio look alike, and a false "corrupt" costs a request.
    """
    if verify and (mismatch := _hash_mismatch(track, sha256, md5)):
        if verified is None and status == OK:
            return _finding(track, UNCHECKED, "unverified", UNVERIFIED)
        if full_identity is None or full_identity != verified:
            return _finding(track, CORRUPT, "checksum_mismatch", mismatch)
        if status == OK:
            detail = RETAGGED
    if status == OK and (mismatch := _duration_mismatch(track, duration)):
        return _finding(track, CORRUPT, "duration_mismatch", mismatch)
    return _finding(track, status, reason, detail)


def _duration_mismatch(track: Track, duration: float | None) -> str | None:
    if track.duration is None or duration is None:
        return None
    if abs(duration - track.duration) <= max(DURATION_TOLERANCE, 0.03 * track.duration):
        return None
    return f"plays {duration:.1f} s, the track is {track.duration:.1f} s"


def _hash_mismatch(track: Track, sha256: str | None, md5: str | None) -> str | None:
    for name, wanted, actual in (("sha256", track.sha256, sha256), ("md5", track.md5, md5)):
        if wanted and actual and wanted != actual:
            return f"{name} differs from the manifest: the file's bytes changed since download"
    return None


@dataclass(frozen=True)
class ScanOptions:
    level: str = QUICK
    verify: bool = False
    workers: int = 1
    full: bool = False                # ignore cached verdicts
    follow_symlinks: bool = False     # follow symbolic links that lead out of the library
    time_limit: float | None = None   # deep checks: stop deep-checking after this many seconds


class Scanner:
    """Turns manifest tracks into findings, reusing cached verdicts of unchanged files
    and checking the rest in a pool of worker processes (started only when there is
    enough work to pay for it). Results are joined here, in the one writer of the cache.
    """

    BATCH = 32

    def __init__(self, root: Path, cache: FileCache | None, options: ScanOptions, clock=time.monotonic,
                 verified: dict[int, str] | None = None, on_checked: Callable[[Finding], None] | None = None):
        self.root = root
        self.prefix = os.path.join(root, "")  # paths are joined as strings: pathlib costs more than the stat
        self.confine = None if options.follow_symlinks else Confinement(root)
        self.cache = cache
        self.options = options
        self.use_cache = cache is not None and not options.full
        self.known = cache.known if self.use_cache else {}  # file_key -> what is cached (see FileCache.known)
        self.logic = logic_number(LOGIC_VERSION)
        self.clock = clock
        self.started = clock()
        self.checked_files = 0      # files opened in this run (cache misses)
        self.deep_deferred = 0      # files that waited for a later deep slice
        self.verified = verified or {}  # trackid -> full identity of the audio last verified (--verify)
        self.verified_now: list[tuple[int, str | None, str]] = []  # (trackid, identity, full identity) verified now
        self.retagged = 0           # with --verify: files whose tags alone changed since verified
        self.on_checked = on_checked  # told each finding of a file opened in this run
        self._pool = None

    def findings(self, tracks: Iterable[Track]) -> Iterator[Finding]:
        buffer: list[Job] = []
        in_flight: set = set()
        prefix, from_cache, confine = self.prefix, self._from_cache if self.use_cache else None, self.confine
        level, sliced = self.options.level, self.options.time_limit is not None
        try:
            for track in tracks:
                path = prefix + track.path
                identity = _triage(path, track, confine)
                if identity.__class__ is Finding:
                    yield identity
                    continue
                if sliced:
                    level = self._level()
                finding = from_cache(track, identity, level) if from_cache else None
                if finding is not None:
                    yield finding
                    continue
                buffer.append(Job(track, path, identity, level, self.options.verify))
                if len(buffer) >= self.BATCH:
                    yield from self._dispatch(buffer, in_flight)
                    buffer = []
            yield from self._finish(buffer, in_flight)
        finally:
            if self._pool:
                self._pool.shutdown(cancel_futures=True)
            if self.cache:
                self.cache.flush()

    def _level(self) -> str:
        if self.options.level == DEEP and self.clock() - self.started > self.options.time_limit:
            self.deep_deferred += 1
            return QUICK
        return self.options.level

    def _from_cache(self, track: Track, identity: tuple, level: str) -> Finding | None:
        """The finding from the cached verdict, when it is for this very file, this check
        logic and (at least) this level; None when the file must be checked."""
        quick_key = file_key(track.path, identity, self.logic)
        duration = self.known.get(quick_key, _ABSENT) if level != DEEP else _ABSENT
        if duration is _ABSENT:
            duration = self.known.get(quick_key | 1, _ABSENT)  # a deep verdict answers for both levels
            if duration is _ABSENT:
                return None
        if duration is not None and not (self.options.verify and (track.sha256 or track.md5)):  # a plain ok
            if track.duration is None:
                return _new_finding((track.trackid, track.path, OK, "ok", UNCHANGED, None, None))
            return conclude(track, OK, "ok", UNCHANGED, duration or None, False, None, None)
        return self._from_full_row(track, identity, level)

    def _from_full_row(self, track: Track, identity: tuple, level: str) -> Finding | None:
        """The finding from a cached verdict that is not a plain ok, or needs its hashes."""
        hit = self.cache.full(track.path)
        if hit is None or hit.identity != identity or hit.logic != LOGIC_VERSION or (level == DEEP and hit.level != DEEP):
            return None
        if self.options.verify and ((track.sha256 and not hit.sha256) or (track.md5 and not hit.md5)):
            return None
        finding = conclude(track, hit.status, hit.reason, hit.detail, hit.duration, self.options.verify,
                           hit.sha256, hit.md5, hit.full_identity, self.verified.get(track.trackid))
        self.retagged += finding.detail == RETAGGED
        return _with_identities(finding, hit.audio_identity, hit.full_identity)

    def _dispatch(self, jobs: list[Job], in_flight: set) -> Iterator[Finding]:
        if self.options.workers <= 1:
            yield from self._record(judge_batch(jobs))
            return
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor  # loads multiprocessing: only when there is work

            self._pool = ProcessPoolExecutor(self.options.workers, mp_context=_pool_context())
        in_flight.add(self._pool.submit(judge_batch, jobs))
        if len(in_flight) >= 4 * self.options.workers:  # bounded: a few batches per worker
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                in_flight.discard(future)
                yield from self._record(future.result())

    def _finish(self, jobs: list[Job], in_flight: set) -> Iterator[Finding]:
        if jobs and self._pool is None:
            yield from self._record(judge_batch(jobs))  # too little work to start workers
        elif jobs:
            in_flight.add(self._pool.submit(judge_batch, jobs))
        for future in as_completed(list(in_flight)):
            yield from self._record(future.result())
        in_flight.clear()

    def _record(self, results: list[Judged]) -> Iterator[Finding]:
        for judged in results:
            self.checked_files += 1
            if self.cache is not None and judged.verdict.reason not in UNCACHED_REASONS:
                verdict = judged.verdict
                self.cache.put(judged.job.track.path, CachedCheck(
                    *judged.job.identity, verdict.status, verdict.reason, verdict.detail, verdict.duration,
                    judged.job.level, LOGIC_VERSION, judged.sha256, judged.md5, verdict.identity,
                    judged.full_identity))
            yield self._conclude(judged)

    def _conclude(self, judged: Judged) -> Finding:
        """The finding; with ``verify``, note the tracks whose bytes matched the manifest's
        hash (their audio identity becomes the verified one) and count the retagged."""
        track = judged.job.track
        finding = conclude_judged(judged, self.verified.get(track.trackid))
        if self.options.verify and judged.full_identity and (judged.sha256 or judged.md5):
            if not _hash_mismatch(track, judged.sha256, judged.md5):
                self.verified_now.append((track.trackid, judged.verdict.identity, judged.full_identity))
            self.retagged += finding.detail == RETAGGED
        if self.on_checked is not None:
            self.on_checked(finding)
        return finding


UNCHANGED = "unchanged since its last check"
RETAGGED = "retagged: its bytes differ from the download, its audio is the one verified before"
UNVERIFIED = ("its bytes differ from the manifest's hash and poold never saw them match, so a retag cannot be told "
              "from damage inside the audio; its structure is sound (--deep decodes it)")
_ABSENT = object()  # no cached verdict for this key
_new_finding = functools.partial(tuple.__new__, Finding)  # Finding() without its Python-level __new__: one a track

# Verdicts that say more about the moment than the file: checked again next time.
UNCACHED_REASONS = frozenset({"unreadable", "check_error"})


def _pool_context():
    """How to start workers. A plain fork is the cheapest (nothing to import again), and
    safe on Linux while this process runs a single thread, as a one-shot audit does.
    With other threads running (the daemon's watcher and drainer), a fork could copy a
    lock one of them holds into the child, so the workers come from a forkserver."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def audit(root: Path, tracks: Iterable[Track], *, cache: FileCache | None = None,
          options: ScanOptions = ScanOptions(), open_ids: frozenset[int] = frozenset(),
          max_missing_fraction: float = 1.0, marker: str | None = None,
          on_finding: Callable[[Finding], None] | None = None, manifest: str = "",
          relocate: Callable[[FindingList], Iterable[Finding]] | None = None,
          verified: dict[int, str] | None = None, on_checked: Callable[[Finding], None] | None = None) -> AuditReport:
    """Check every track; raise LibraryUnavailable when the root itself is gone.

    ``open_ids`` are tracks with open incidents: the report lists which of them are ok
    now, so they can be resolved, without keeping every ok track in memory.
    ``relocate`` (see :class:`poold.library.AuditRelocation`) is given the missing
    tracks' findings once every track was seen, and yields for each its finding at
    the place it was found, or the same "missing" finding. ``verified`` (for
    ``--verify``) maps tracks to the full audio identity last verified against the
    manifest's hash (see :func:`conclude`). ``on_checked`` is told the finding of
    each file opened (not answered from the cache).
    """
    if problem := library_problem(root, marker):
        raise LibraryUnavailable(problem)
    report = AuditReport(library=str(root), manifest=manifest)
    scanner = Scanner(root, cache, options, verified=verified, on_checked=on_checked)
    missing = FindingList()
    for finding in scanner.findings(tracks):
        if relocate is not None and finding.status == MISSING:
            missing.append(finding)
            continue
        report.add(finding, open_ids)
        if on_finding:
            on_finding(finding)
    report.files_checked, report.deep_deferred = scanner.checked_files, scanner.deep_deferred
    report.retagged, report.verified = scanner.retagged, scanner.verified_now
    for finding in relocate(missing) if len(missing) else ():
        report.add(finding, open_ids)
        if on_finding:
            on_finding(finding)
    if report.checked and len(report.problems) / report.checked > max_missing_fraction:
        report.guard = _damage_guard(report, max_missing_fraction)
    elif problem := library_problem(root, marker):  # vanished while we looked
        report.guard = problem
    return report


def _damage_guard(report: AuditReport, fraction: float) -> str:
    """Why nothing is requested when too much is missing or damaged at once. Missing and
    corrupt count together: a drive dying, a bad restore or a half-mounted share loses
    some files and mangles others, while downloads gone wrong come a few at a time."""
    count, missing = len(report.problems), report.missing
    if count == missing:
        return (f"{missing} of {report.checked} tracks are missing, more than {fraction:.0%}: "
                "the library looks partly unavailable")
    return (f"{count} of {report.checked} tracks are missing or damaged ({missing} missing, {count - missing} corrupt), "
            f"more than {fraction:.0%}: that looks like a failing drive or a bad copy or restore, not downloads "
            "gone wrong")


def walk_files(paths: Iterable[str | os.PathLike], extensions: frozenset[str] | None = None) -> Iterator[Path]:
    """Files named directly, and every file below named folders, in a stable order.
    A folder that cannot be read is named in a warning, not passed over in silence."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for folder, dirs, files in os.walk(path, onerror=_warn_unreadable_folder):
                dirs.sort()
                for name in sorted(files):
                    if extensions is None or os.path.splitext(name)[1].lower() in extensions:
                        yield Path(folder) / name
        else:
            yield path


def _warn_unreadable_folder(exc: OSError) -> None:
    log.warning("cannot read the folder %s (%s): its files are not checked", exc.filename, exc.strerror)
