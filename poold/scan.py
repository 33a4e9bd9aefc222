"""The audit: join the manifest with the library and judge every track.

For each manifest track, in order: does the file exist; does its size match the
manifest (a file smaller than the download was is damage; a larger one is usually a
retag and is only noted); is its structure sound (:mod:`poold.integrity`); does its
length match the manifest's duration; with ``verify``, do its hashes match.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .integrity import check_file
from .integrity.base import CORRUPT, OK, UNCHECKED, Verdict
from .manifest import Track

MISSING = "missing"
DURATION_TOLERANCE = 3.0  # seconds, or 3 %: manifests round durations, encoders pad


@dataclass(frozen=True)
class Finding:
    """The outcome for one manifest track."""

    trackid: int
    path: str
    status: str  # ok | missing | corrupt | unchecked
    reason: str
    detail: str

    def as_json(self) -> dict:
        return {"trackid": self.trackid, "path": self.path, "status": self.status,
                "reason": self.reason, "detail": self.detail}


@dataclass
class AuditReport:
    library: str
    manifest: str
    checked: int = 0
    ok: int = 0
    problems: list[Finding] = field(default_factory=list)
    unchecked: list[Finding] = field(default_factory=list)
    ok_trackids: set[int] = field(default_factory=set)
    guard: str | None = None  # why filing is withheld, when the library looks unavailable

    def add(self, finding: Finding) -> None:
        self.checked += 1
        if finding.status == OK:
            self.ok += 1
            self.ok_trackids.add(finding.trackid)
        elif finding.status == UNCHECKED:
            self.unchecked.append(finding)
        else:
            self.problems.append(finding)

    @property
    def missing(self) -> int:
        return sum(1 for p in self.problems if p.status == MISSING)


class LibraryUnavailable(Exception):
    """The library root is not there (drive unmounted, NAS down): nothing can be judged."""


def library_problem(root: Path, marker: str | None) -> str | None:
    """Why the library looks unavailable, or None when it looks present."""
    try:
        info = root.stat()
    except FileNotFoundError:
        return f"the library folder {root} does not exist (drive unmounted or NAS down?)"
    except OSError as exc:
        return f"the library folder {root} cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(info.st_mode):
        return f"the library root {root} is not a folder"
    if marker and not (root / marker).exists():
        return f"the marker file {marker} is missing from {root} (wrong or unmounted drive?)"
    return None


def check_track(root: Path, track: Track, verify: bool = False,
                checker: Callable[[str], Verdict] = check_file) -> Finding:
    """Judge one manifest track against the file in the library."""
    path = root / track.path
    try:
        info = path.stat()
    except FileNotFoundError:
        return _finding(track, MISSING, MISSING, "no file at this path")
    except OSError as exc:
        return _finding(track, CORRUPT, "unreadable", f"cannot stat the file: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return _finding(track, MISSING, MISSING, "the path is not a regular file")
    if track.size is not None and info.st_size < track.size:
        if info.st_size == 0:
            return _finding(track, CORRUPT, "empty", "the file is 0 bytes long")
        return _finding(track, CORRUPT, "size_mismatch",
                        f"{info.st_size:,} bytes, the download was {track.size:,} ({info.st_size / track.size:.0%})")
    if verify and (mismatch := _hash_mismatch(path, track)):
        return _finding(track, CORRUPT, "checksum_mismatch", mismatch)
    verdict = checker(str(path))
    if verdict.status == OK and (mismatch := _duration_mismatch(track, verdict)):
        return _finding(track, CORRUPT, "duration_mismatch", mismatch)
    return _finding(track, verdict.status, verdict.reason, verdict.detail)


def _finding(track: Track, status: str, reason: str, detail: str) -> Finding:
    return Finding(track.trackid, track.path, status, reason, detail)


def _duration_mismatch(track: Track, verdict: Verdict) -> str | None:
    if track.duration is None or verdict.duration is None:
        return None
    if abs(verdict.duration - track.duration) <= max(DURATION_TOLERANCE, 0.03 * track.duration):
        return None
    return f"plays {verdict.duration:.1f} s, the track is {track.duration:.1f} s"


def _hash_mismatch(path: Path, track: Track) -> str | None:
    wanted = {name: value for name, value in (("sha256", track.sha256), ("md5", track.md5)) if value}
    if not wanted:
        return None
    digests = {name: hashlib.new(name) for name in wanted}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for digest in digests.values():
                digest.update(chunk)
    for name, value in wanted.items():
        if digests[name].hexdigest() != value:
            return f"{name} differs from the manifest: the file's bytes changed since download"
    return None


def audit(root: Path, tracks: Iterable[Track], *, verify: bool = False,
          checker: Callable[[str], Verdict] = check_file, max_missing_fraction: float = 1.0, marker: str | None = None,
          on_finding: Callable[[Finding], None] | None = None, manifest: str = "") -> AuditReport:
    """Check every track; raise LibraryUnavailable when the root itself is gone."""
    if problem := library_problem(root, marker):
        raise LibraryUnavailable(problem)
    report = AuditReport(library=str(root), manifest=manifest)
    for finding in (check_track(root, track, verify, checker) for track in tracks):
        report.add(finding)
        if on_finding:
            on_finding(finding)
    if report.checked and report.missing / report.checked > max_missing_fraction:
        report.guard = (f"{report.missing} of {report.checked} tracks are missing, more than "
                        f"{max_missing_fraction:.0%}: the library looks partly unavailable, so nothing is requested")
    elif problem := library_problem(root, marker):  # vanished while we looked
        report.guard = problem
    return report


def walk_files(paths: Iterable[str | os.PathLike], extensions: frozenset[str] | None = None) -> Iterator[Path]:
    """Files named directly, and every file below named folders, in a stable order."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if extensions is None or os.path.splitext(name)[1].lower() in extensions:
                        yield Path(folder) / name
        else:
            yield path

