"""Which file is which track: the manifest's tracks at their current paths, and where a
track went when its file is no longer at its path.

``poold audit`` (and so the timer), the full checks of ``poold run`` and the daemon's
own judging of a vanished file all use :class:`Relocator`, so a track the DJ moved,
renamed, retagged or copied from a Mac is found the same way in every mode.

Names. Manifest paths and names on disk are compared in one form: Unicode NFC, and on
a case-insensitive volume also case-folded (:class:`Volume`; whether the volume is
case-insensitive is learnt by probing the library folder, not from the OS name).

The relocation rule. A track is looked for only once it is missing at its path, among
the media files under the root that are no present track's file (one walk, however
many tracks are missing). A candidate must pass the quick integrity check; then, in
order of evidence, the first step with a match decides:

1. ``renamed``: the watcher of ``poold run`` saw the track's file renamed to it, and
   its size and sha256 match the manifest's where given, or its identity matches;
2. ``identity``: its audio identity (:mod:`poold.integrity.identity`, blind to tags and
   names) is the one recorded when the track was last seen intact;
3. ``sha256``: the manifest gives the track's size and sha256, and the file has both;
4. ``name``: the same file name (NFC; case-folded on a case-insensitive volume, so the
   extension is the same too), and the same size and sha256 where the manifest gives
   them, and not an identity other than the recorded one. A converted file (WAV to
   AIFF, another bitrate) fails all four: its identity, hash, size or name differs.

Several matches in one step (duplicate copies: a laptop folder and a USB export) are
settled, never by a request, in this order: the path equal to the track's own after
normalisation; the same file name; the most leading folders in common with the old
path; the most recently modified; the first path in sorting order. A file is the new
home of one track only. A candidate still being written (the daemon's settle time)
is not checked: a track that might have gone there waits.

A match is a move: the new path is recorded in the state (``locations``), nothing is
requested, and with ``[library] update_manifest`` it is written into the manifest,
except where only the name's Unicode form or case differs (the manifest's path names
that file already).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import logging
import os
import posixpath
import unicodedata
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .integrity.base import OK, open_regular
from .manifest import ManifestError, Track, read_manifest, rewrite_manifest

log = logging.getLogger(__name__)


# --- the manifest in memory ---------------------------------------------------------

def relocated(tracks: Iterable[Track], locations: dict[int, str]) -> Iterable[Track]:
    """The manifest's tracks, with the paths of tracks poold saw moved replaced."""
    return _relocated(tracks, locations) if locations else tracks


def _relocated(tracks: Iterable[Track], locations: dict[int, str]) -> Iterator[Track]:
    for track in tracks:
        moved_to = locations.get(track.trackid)
        yield track._replace(path=moved_to) if moved_to else track


class Library:
    """The manifest's tracks at their current paths (moves applied), by id and by path.

    With a :class:`Volume`, :meth:`at` also finds a track by a name on disk that differs
    from its path only where the volume does not tell names apart (case on a
    case-insensitive volume), or only in Unicode form (a name written decomposed).
    """

    def __init__(self, tracks: Iterable[Track] = (), volume: "Volume | None" = None):
        self.tracks: dict[int, Track] = {track.trackid: track for track in tracks}
        self.by_path: dict[str, int] = {track.path: track.trackid for track in self.tracks.values()}
        self._volume = volume
        self._by_key: dict[str, int] | None = None  # built on the first lookup that needs it

    @property
    def volume(self) -> "Volume | None":
        return self._volume

    @volume.setter
    def volume(self, volume: "Volume | None") -> None:
        self._volume, self._by_key = volume, None

    @classmethod
    def read(cls, manifest: Path, locations: dict[int, str], volume: "Volume | None" = None) -> "Library":
        return cls(relocated(read_manifest(manifest), locations), volume)

    def __len__(self) -> int:
        return len(self.tracks)

    def at(self, relative: str) -> Track | None:
        trackid = self.by_path.get(relative)
        if trackid is None and self._volume is not None:
            if self._by_key is None:
                self._by_key = {self._volume.key(path): trackid for path, trackid in self.by_path.items()}
            trackid = self._by_key.get(self._volume.key(relative))
        return None if trackid is None else self.tracks[trackid]

    def under(self, folder: str) -> list[Track]:
        prefix = folder.rstrip("/") + "/"
        return [track for track in self.tracks.values() if track.path.startswith(prefix)]

    def relocate(self, trackid: int, path: str) -> None:
        track = self.tracks[trackid]
        del self.by_path[track.path]
        self.tracks[trackid] = track._replace(path=path)
        self.by_path[path] = trackid
        self._by_key = None

    def diff(self, newer: "Library") -> tuple[list[Track], set[int]]:
        """Tracks of ``newer`` that are new or different here, and the ids it no longer has."""
        changed = [track for trackid, track in newer.tracks.items() if self.tracks.get(trackid) != track]
        return changed, set(self.tracks) - set(newer.tracks)


# --- names: one Unicode form, and the volume's rule for case --------------------------

def nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class Volume:
    """How the volume holding the library compares names."""

    case_insensitive: bool = False

    @classmethod
    def probe(cls, root: Path) -> "Volume":
        return cls(case_insensitive=is_case_insensitive(root))

    def key(self, path: str) -> str:
        """The form in which two names of this volume are compared."""
        text = nfc(path)
        return text.casefold() if self.case_insensitive else text


PROBE_FOLDERS = 20  # folders looked into for a name to probe, breadth first


def is_case_insensitive(root: Path) -> bool:
    """Whether names under ``root`` are looked up ignoring case, learnt from the volume.

    An entry whose name has letters is looked up with their case swapped; when that
    other spelling is not an entry of its own but resolves, lookups ignore case. (Inode
    numbers cannot tell: exFAT under FUSE gives each spelling a number of its own.)
    Nothing is written. With no such name to probe, the volume counts as case-sensitive:
    names then have to match exactly, which never relocates a track wrongly.
    """
    folders = [str(root)]
    for folder in folders[:PROBE_FOLDERS]:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        present = set(names)
        for name in sorted(names):
            swapped = name.swapcase()
            if swapped != name and swapped.swapcase() == name and swapped not in present:  # not "ß" -> "SS"
                return os.path.lexists(os.path.join(folder, swapped))
        folders.extend(os.path.join(folder, n) for n in sorted(names) if os.path.isdir(os.path.join(folder, n)))
    return False


# --- candidates: the media files that are no present track's file ---------------------

@dataclass(frozen=True)
class Candidate:
    """A media file under the root that may be where a missing track went."""

    path: str  # relative, POSIX, named as on disk
    size: int
    mtime: float


@dataclass(frozen=True)
class Checked:
    """A candidate's quick check: whether it is intact, and its audio identity."""

    ok: bool
    identity: str | None = None


NOT_CHECKED = Checked(False)


class Candidates:
    """The candidates of one search, by path, by size and by (compared) file name."""

    def __init__(self, files: Iterable[Candidate], volume: Volume):
        self.volume = volume
        self.files: dict[str, Candidate] = {}
        self.by_size: dict[int, list[str]] = defaultdict(list)
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for candidate in files:
            self.files[candidate.path] = candidate
            self.by_size[candidate.size].append(candidate.path)
            self.by_name[volume.key(posixpath.basename(candidate.path))].append(candidate.path)

    def __len__(self) -> int:
        return len(self.files)

    def named_like(self, track: Track) -> list[str]:
        return self.by_name.get(self.volume.key(posixpath.basename(track.path)), [])


@dataclass(frozen=True)
class Move:
    trackid: int
    source: str
    destination: str
    evidence: str  # renamed | identity | sha256 | name
    identity: str | None = None
    respelled: bool = False  # only the name's Unicode form or case differs: the manifest names it already


@dataclass
class Found:
    moves: dict[int, Move]
    undecided: set[int]  # no match yet, but a file that may be theirs is still being written


def never(_path: str) -> bool:
    return False


class Relocator:
    """The walk for candidates and the relocation rule (see the module's docstring)."""

    def __init__(self, root: Path, extensions: frozenset[str], ignore: Iterable[str], volume: Volume | None = None):
        self.root = root
        self.extensions = extensions
        self.ignore = tuple(ignore)
        if volume is not None:
            self.volume = volume
        self._sha256: dict[str, str | None] = {}

    @functools.cached_property
    def volume(self) -> Volume:
        """Probed on first use: only a search for missing tracks needs it."""
        return Volume.probe(self.root)

    def walk(self) -> dict[str, list[str]]:
        """Every media file under the root (relative paths, no stat), by compared path."""
        from .watch import is_ignored  # watchdog loads only when something is looked for

        found: dict[str, list[str]] = defaultdict(list)
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            base = os.path.relpath(folder, self.root)
            base = "" if base == "." else base.replace(os.sep, "/") + "/"
            for name in files:
                relative = base + name
                if os.path.splitext(name)[1].lower() in self.extensions and not is_ignored(relative, self.ignore):
                    found[self.volume.key(relative)].append(relative)
        return found

    def unknown(self, walked: dict[str, list[str]], present: Iterable[str]) -> Candidates:
        """The walked files that are not the file of a present track (paths it was found at)."""
        for path in present:
            same = walked.get(self.volume.key(path))
            if same:
                # The track's file is one of these: named exactly so, or (looked up ignoring
                # case or Unicode form by the volume) the one other spelling.
                same.remove(path if path in same else same[0])
        return Candidates(self._stat(path for paths in walked.values() for path in paths), self.volume)

    def _stat(self, paths: Iterable[str]) -> Iterator[Candidate]:
        for relative in paths:
            try:
                info = os.stat(os.path.join(self.root, relative))
            except OSError:
                continue
            yield Candidate(relative, info.st_size, info.st_mtime)

    def find(self, missing: Iterable[Track], candidates: Candidates, *, identities: dict[int, str],
             check: Callable[[list[str]], dict[str, Checked]], checked: dict[str, Checked] | None = None,
             claimed: set[str] | None = None, renames: dict[str, str] | None = None,
             settling: Callable[[str], bool] = never) -> Found:
        """Where each missing track went, by the rule. ``checked`` and ``claimed`` may be
        shared between calls (tracks handled in chunks), so each candidate is checked once
        and is the home of one track only."""
        missing = sorted(missing)
        checked = {} if checked is None else checked
        claimed = set() if claimed is None else claimed
        renames = renames or {}
        if any(track.trackid in identities for track in missing):
            wanted = set(candidates.files)  # an identity can be anywhere, under any name
        else:
            wanted = {path for track in missing for path in self._pool(track, candidates, renames.get(track.path))}
        waiting = {path for path in wanted if settling(path)}
        unchecked = sorted(path for path in wanted - waiting if path not in checked)
        if unchecked:
            checked.update(check(unchecked))
        by_identity: dict[str, list[str]] = defaultdict(list)
        for path in sorted(wanted - waiting):
            if checked[path].ok and checked[path].identity:
                by_identity[checked[path].identity].append(path)

        def usable(path: str) -> bool:
            return path in checked and checked[path].ok and path not in claimed and path not in waiting

        found = Found({}, set())
        for track in missing:
            identity = identities.get(track.trackid)
            move = self._match(track, candidates, identity, checked, by_identity, usable, renames.get(track.path))
            if move is not None:
                found.moves[track.trackid] = move
                claimed.add(move.destination)
            elif waiting and (identity or waiting.intersection(self._pool(track, candidates, renames.get(track.path)))):
                found.undecided.add(track.trackid)
        return found

    def _pool(self, track: Track, candidates: Candidates, renamed_to: str | None) -> list[str]:
        """The candidates that could be a track's file when its identity is not known."""
        pool = list(candidates.named_like(track))
        if track.sha256 and track.size is not None:
            pool += candidates.by_size.get(track.size, [])
        if renamed_to in candidates.files:
            pool.append(renamed_to)
        return pool

    def _match(self, track: Track, candidates: Candidates, identity: str | None, checked: dict[str, Checked],
               by_identity: dict[str, list[str]], usable: Callable[[str], bool], renamed_to: str | None) -> Move | None:
        def move(path: str, evidence: str) -> Move:
            respelled = self.volume.key(path) == self.volume.key(track.path)
            return Move(track.trackid, track.path, path, evidence, checked[path].identity, respelled)

        if renamed_to is not None and usable(renamed_to) and (
                (identity is not None and checked[renamed_to].identity == identity)
                or self._same_download(track, candidates, renamed_to)):
            return move(renamed_to, "renamed")
        if identity is not None and (matches := [p for p in by_identity.get(identity, []) if usable(p)]):
            return move(self._best(track, matches, candidates), "identity")
        if track.sha256 and track.size is not None:
            matches = [p for p in candidates.by_size.get(track.size, [])
                       if usable(p) and self._sha256_of(p) == track.sha256]
            if matches:
                return move(self._best(track, matches, candidates), "sha256")
        matches = [p for p in candidates.named_like(track) if usable(p)
                   and (identity is None or checked[p].identity in (None, identity))
                   and self._same_download(track, candidates, p)]
        return move(self._best(track, matches, candidates), "name") if matches else None

    def _same_download(self, track: Track, candidates: Candidates, path: str) -> bool:
        """The size and sha256 the manifest gives (if any) are the file's."""
        if track.size is not None and candidates.files[path].size != track.size:
            return False
        return track.sha256 is None or self._sha256_of(path) == track.sha256

    def _best(self, track: Track, paths: list[str], candidates: Candidates) -> str:
        """The duplicate-copy rule (module docstring): a total order, so always one answer."""
        key = self.volume.key
        old_path, old_name = key(track.path), key(posixpath.basename(track.path))
        old_folders = old_path.split("/")[:-1]

        def rank(path: str):
            folders = key(path).split("/")[:-1]
            common = next((i for i, (a, b) in enumerate(zip(folders, old_folders)) if a != b),
                          min(len(folders), len(old_folders)))
            return (key(path) != old_path, key(posixpath.basename(path)) != old_name, -common,
                    -candidates.files[path].mtime, path)

        return min(paths, key=rank)

    def _sha256_of(self, relative: str) -> str | None:
        if relative not in self._sha256:
            try:
                with open_regular(os.path.join(self.root, relative)) as f:  # a named pipe never blocks it
                    self._sha256[relative] = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                self._sha256[relative] = None
        return self._sha256[relative]


# --- checking candidates ---------------------------------------------------------------

class CandidateChecker:
    """Quick-checks candidates through the scanner: the file cache answers for those
    unchanged since an earlier search, and their verdicts are cached for the next one
    (and for the track's own check at its new path). ``opened`` counts files read."""

    def __init__(self, root: Path, cache, workers: int):
        self.root, self.cache, self.workers = root, cache, workers
        self.opened = 0

    def __call__(self, paths: list[str]) -> dict[str, Checked]:
        from .scan import ScanOptions, Scanner  # scan imports this module's users, not the other way

        tracks = [Track(-1 - number, path) for number, path in enumerate(paths)]  # no manifest track's id
        scanner = Scanner(self.root, self.cache, ScanOptions(workers=self.workers))
        identities = {finding.path: finding.identity for finding in scanner.findings(tracks) if finding.status == OK}
        self.opened += scanner.checked_files
        unknown = [path for path, identity in identities.items() if identity is None]  # plain oks from the cache
        if unknown and self.cache is not None:
            identities.update(self.cache.identities(unknown))
        results = {path: NOT_CHECKED for path in paths}
        results.update((path, Checked(True, identity)) for path, identity in identities.items())
        return results


# --- recording moves -------------------------------------------------------------------

def record_moves(state, moves: Iterable[Move], manifest: Path | None) -> None:
    """Write moves down: the state's locations always, the manifest when ``manifest`` is
    given (``update_manifest``), except moves that only respell the name's Unicode form
    or case. A manifest that cannot be written is logged: the state has the new paths."""
    moves = list(moves)
    if not moves:
        return
    state.set_locations((move.trackid, move.destination, move.source) for move in moves)
    state.record_identities((move.trackid, move.identity) for move in moves if move.identity)
    for move in moves:
        log.info("track %d moved: %s -> %s (found by %s; new location recorded, nothing requested)",
                 move.trackid, move.source, move.destination, move.evidence)
    rewrites = {move.trackid: move.destination for move in moves if not move.respelled}
    if manifest is None or not rewrites:
        return
    try:
        rewrite_manifest(manifest, rewrites)
    except (OSError, ValueError, KeyError, ManifestError) as exc:
        log.warning("could not write the new paths into %s (%s); poold keeps them in its state", manifest, exc)
    else:
        log.info("wrote %d new track path(s) into %s", len(rewrites), manifest)


# --- identities of tracks seen intact ---------------------------------------------------

class IdentityLog:
    """Writes down the audio identity of each track checked intact at its path.

    Told the finding of each file the audit opened (``scan.audit``'s ``on_checked``):
    a track answered from the cache had its identity written down when it was checked,
    so a warm audit of an unchanged library costs nothing here.
    """

    BATCH = 2000

    def __init__(self, state):
        self.state = state
        self._pending: list[tuple[int, str]] = []

    def __call__(self, finding) -> None:
        if finding.identity is not None and finding.status == OK and finding.trackid > 0:
            self._pending.append((finding.trackid, finding.identity))
            if len(self._pending) >= self.BATCH:
                self.flush()

    def flush(self) -> None:
        if self._pending:
            self.state.record_identities(self._pending)
            self._pending.clear()


# --- the audit's search -------------------------------------------------------------------

CHUNK = 50_000  # missing tracks matched at a time: a vanished library must not need memory for each


class SortedIds:
    """Membership in a sorted array of track IDs: 8 bytes an ID (a set takes ~60)."""

    def __init__(self, ids: Iterable[int]):
        self._ids = array("q", ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, trackid: int) -> bool:
        at = bisect.bisect_left(self._ids, trackid)
        return at < len(self._ids) and self._ids[at] == trackid


class AuditRelocation:
    """The hook :func:`poold.scan.audit` calls with the findings of its missing tracks.

    It walks the root once and reads the manifest's tracks again (``tracks_again``),
    to tell the present tracks' files from candidates and to pick up the missing
    tracks (kept in memory up to :data:`CHUNK`; beyond that they are read a chunk at a
    time), matches them, judges the moved tracks at their new paths (``judge``) and
    yields those findings in place of "missing". The moves are in :attr:`moves`
    afterwards, for the caller to record.
    """

    def __init__(self, relocator: Relocator, tracks_again: Callable[[], Iterable[Track]],
                 identities: Callable[[list[int]], dict[int, str]], check: Callable[[list[str]], dict[str, Checked]],
                 judge: Callable[[list[Track]], Iterable]):
        self.relocator, self.tracks_again = relocator, tracks_again
        self.identities, self.check, self.judge = identities, check, judge
        self.moves: list[Move] = []
        self._moved_tracks: list[Track] = []  # at their new paths

    def __call__(self, missing) -> Iterator:
        ids = SortedIds(finding.trackid for finding in missing)  # FindingList reads back in ID order
        walked = self.relocator.walk()
        if walked:
            lost: list[Track] = []
            candidates = self.relocator.unknown(walked, self._present_paths(ids, lost))
            if candidates:
                self._match(ids, candidates, lost if len(lost) <= CHUNK else None)
        if self._moved_tracks:
            yield from self.judge(self._moved_tracks)
        moved = {move.trackid for move in self.moves}
        for finding in missing:
            if finding.trackid not in moved:
                yield finding

    def _present_paths(self, ids: SortedIds, lost: list[Track]) -> Iterator[str]:
        """The present tracks' paths; the missing tracks go to ``lost``, the first CHUNK + 1."""
        for track in self.tracks_again():
            if track.trackid not in ids:
                yield track.path
            elif len(lost) <= CHUNK:
                lost.append(track)

    def _match(self, ids: SortedIds, candidates: Candidates, lost: list[Track] | None) -> None:
        checked: dict[str, Checked] = {}
        claimed: set[str] = set()
        if lost is not None:
            self._match_chunk(lost, candidates, checked, claimed)
            return
        chunk: list[Track] = []
        for track in self.tracks_again():
            if track.trackid in ids:
                chunk.append(track)
                if len(chunk) >= CHUNK:
                    self._match_chunk(chunk, candidates, checked, claimed)
                    chunk = []
        if chunk:
            self._match_chunk(chunk, candidates, checked, claimed)

    def _match_chunk(self, chunk: list[Track], candidates: Candidates, checked: dict, claimed: set) -> None:
        identities = self.identities([track.trackid for track in chunk])
        found = self.relocator.find(chunk, candidates, identities=identities, check=self.check,
                                    checked=checked, claimed=claimed)
        self.moves.extend(found.moves.values())
        self._moved_tracks.extend(track._replace(path=found.moves[track.trackid].destination)
                                  for track in chunk if track.trackid in found.moves)
