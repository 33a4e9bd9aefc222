"""poold's memory in SQLite: incidents, the request outbox, the file-check cache, audits.

The outbox follows the rule of a careful mail queue: a request is written down as
``pending`` before anything is sent, marked ``sent`` (in its own committed
transaction) just before the POST, and settled as ``accepted``, ``partial`` or
``rejected`` after the answer, or put back to ``pending`` for another try. On start-up,
``sent`` rows whose answer never arrived (a crash mid-request) go back to ``pending``:
delivery is at least once, and only a request in flight at the moment of a crash can
be delivered twice. A request POOL refuses as a whole is ``split``: settled, and its
halves written as new ``pending`` requests for the same incidents, in one transaction.

A state dir that was used before is never silently started afresh: beside the database
lies a marker file holding the database's identity (a random id written into both when
the database is made). A database that is missing or empty while the marker is there
was lost, and poold refuses to work from it (an empty memory would file every problem
again) until ``poold reset-state`` starts over on purpose. Every failure to open or
write the database (a full or read-only disk, a damaged file) is a :class:`StateError`
with a one-line message.

The state dir also holds RESERVE_BYTES of disk space in a file of its own. A request is
sent only while that reserve is in place; if the disk fills up after the send, the
reserve is given up to write the answer down, so a full disk never makes poold send the
same request again.

Paths are str, decoded from the file system with surrogate escapes (os.fsdecode). One
that is not valid UTF-8 is stored as a BLOB of its bytes (see :func:`path_to_db`), so
the common path stays TEXT and lookups stay as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import errno
import functools
import json
import os
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

from .errors import SHOW_BYTES, StateError

SCHEMA_VERSION = 1
DB_NAME = "poold.sqlite3"
MARKER_NAME = "poold.state-id"
RESERVE_NAME, RESERVE_BYTES = "poold.space-reserve", 256 * 1024
RESET_HINT = "restore it from a backup, or start over on purpose with `poold reset-state`"

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    trackid INTEGER NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,          -- missing | corrupt
    reason TEXT NOT NULL,          -- reason code
    detail TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    resolved_at REAL               -- NULL while open
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open ON incidents(trackid) WHERE resolved_at IS NULL;

CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    batch TEXT NOT NULL UNIQUE,
    cause TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,           -- pending | sent | accepted | partial | rejected | split
    created REAL NOT NULL,
    updated REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    tracks_requeued INTEGER
);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state);

CREATE TABLE IF NOT EXISTS request_tracks (
    request_id INTEGER NOT NULL REFERENCES requests(id),
    trackid INTEGER NOT NULL,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    PRIMARY KEY (request_id, trackid)
);
CREATE INDEX IF NOT EXISTS request_tracks_track ON request_tracks(trackid);

CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,         -- relative to the library root
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    duration REAL,
    level TEXT NOT NULL,           -- quick | deep
    logic TEXT NOT NULL,           -- version of poold's check logic that gave the verdict
    sha256 TEXT,                   -- digests, when --verify computed them
    md5 TEXT,
    identity TEXT,                 -- the audio payload's sampled identity (integrity/identity.py)
    full_identity TEXT,            -- its full identity, when --verify or --deep read the whole file
    checked REAL NOT NULL,
    stamp INTEGER NOT NULL         -- file_key(path, identity, logic, deep): one number to compare
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    checked INTEGER,
    ok INTEGER,
    problems INTEGER,
    note TEXT
);

-- Tracks found at another path than the manifest's (moved by the DJ): trackid -> path.
CREATE TABLE IF NOT EXISTS locations (
    trackid INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    moved_from TEXT NOT NULL,
    found REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- Healing: one job per incident whose redownload request POOL accepted (poold/heal.py).
CREATE TABLE IF NOT EXISTS heal_jobs (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL UNIQUE REFERENCES incidents(id),
    trackid INTEGER NOT NULL,
    path TEXT NOT NULL,            -- where the track belongs, relative to the library root
    stage TEXT NOT NULL,           -- queued | downloading | verifying | swapping | swapped | confirmed | waiting
    reason TEXT,                   -- why it waits for a person (stage waiting)
    file_type TEXT,                -- what POOL queued: mp3 | m4a | wav | 720 mp4 ...
    dl_token TEXT,                 -- the download token, also needed by /download/success
    servers TEXT,                  -- JSON [{"host", "id"}] of the queue answer
    server TEXT,                   -- the media host the copy came from
    serverid INTEGER,
    temp_path TEXT,                -- absolute path of the download in progress
    bytes INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    quarantine_path TEXT,          -- where the damaged copy goes (recorded before it moves)
    copy_size INTEGER,             -- the downloaded copy's own size and sha256, as verified
    copy_sha256 TEXT,              -- (before tags are carried): what update_manifest writes
    failures INTEGER NOT NULL DEFAULT 0,  -- copies that failed verification
    rounds INTEGER NOT NULL DEFAULT 0,    -- download rounds in which every server failed
    last_error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS heal_jobs_stage ON heal_jobs(stage);

-- The audio identity of each track's file when last checked intact at its path (see
-- poold.integrity.identity): how a moved, renamed or retagged track is found again.
-- full_identity is the whole payload's, from --verify; verified is when the file's
-- bytes last matched the manifest's hash (full_identity then names that audio).
CREATE TABLE IF NOT EXISTS track_identity (
    trackid INTEGER PRIMARY KEY,
    identity TEXT,
    full_identity TEXT,
    verified REAL,
    seen REAL NOT NULL             -- when this identity was first recorded
);
"""

FINAL_REQUEST_STATES = ("accepted", "partial", "rejected", "split")
ANSWERED_STATES = ("accepted", "partial", "rejected")  # what settle() records
HEAL_STAGES = ("queued", "downloading", "verifying", "swapping", "swapped", "confirmed", "waiting")
HEAL_FIELDS = frozenset({"stage", "reason", "file_type", "dl_token", "servers", "server", "serverid", "temp_path",
                         "bytes", "total", "quarantine_path", "failures", "rounds", "last_error", "path",
                         "copy_size", "copy_sha256"})
HEAL_PATHS = frozenset({"path", "temp_path", "quarantine_path"})  # stored with path_to_db


@dataclass(frozen=True)
class Incident:
    id: int
    trackid: int
    path: str
    status: str
    reason: str
    detail: str
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class OutboxRequest:
    id: int
    batch: str
    cause: str
    reason: str
    state: str
    created: float
    updated: float
    attempts: int
    last_error: str | None
    tracks_requeued: int | None
    trackids: tuple[int, ...]


def path_to_db(path: str) -> str | bytes:
    """A path as stored: itself when it is valid UTF-8 (nearly always), else a BLOB of the
    file name's own bytes (os.fsencode of a str decoded with surrogate escapes).

    SQLite cannot hold a lone surrogate as TEXT; a BLOB keeps the exact name, and never
    compares equal to a TEXT value, so the two forms cannot be confused."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")
    return path


def path_from_db(value: str | bytes) -> str:
    """The path :func:`path_to_db` stored."""
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


def _text(message: str) -> str:
    """A message to store as TEXT: a byte of a name that is not UTF-8 shown as \\xff."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return message.encode("utf-8", SHOW_BYTES).decode("utf-8")
    return message


# --- the state dir's marker and storage faults ------------------------------------------

def _read_marker(marker: Path) -> str | None:
    """The identity the marker remembers, None when there is no marker (a new state dir,
    or one from before markers)."""
    try:
        return marker.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {marker}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise StateError(f"{marker} is damaged (not the id poold wrote); {RESET_HINT}") from None


def _write_marker(marker: Path, identity: str) -> None:
    """Write the marker atomically and durably: it outlives a lost database."""
    temporary = marker.with_name(f"{marker.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # two may race
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(identity + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, marker)
        folder = os.open(marker.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise _fault(marker.parent, "database or disk is full" if full else exc.strerror or str(exc)) from exc


def _is_storage_fault(exc: sqlite3.DatabaseError) -> bool:
    """A fault of the disk or the file (full, read-only, locked, damaged), not of poold's SQL."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def _fault(directory: Path, text: str) -> StateError:
    """A storage fault (SQLite's words in ``text``) as one line that says what to do."""
    database = directory / DB_NAME
    if "full" in text or "I/O error" in text and _nearly_full(directory):  # SQLite says I/O error for a full WAL
        return StateError(f"the disk holding the state database {database} is full ({text}); "
                          "free some space and run poold again")
    if "not a database" in text or "malformed" in text:
        return StateError(f"{database} is not a usable poold state database ({text}); {RESET_HINT}")
    if _read_only(directory) or "readonly" in text:
        return StateError(f"the state dir {directory} is read-only ({text}); poold must be able to write there")
    if "I/O error" in text:
        return StateError(f"the state database {database} could not be read or written ({text}): "
                          "the disk may be failing")
    return StateError(f"the state database {database} cannot be used: {text}")


def _is_empty(database: Path) -> bool:
    try:
        return database.stat().st_size == 0
    except FileNotFoundError:
        return True


def _nearly_full(folder: Path) -> bool:
    try:
        usage = os.statvfs(folder)
    except OSError:
        return False
    return usage.f_bavail * usage.f_frsize < 1 << 20


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _raise_fault(exc: sqlite3.DatabaseError, directory: Path) -> None:
    """Raise StateError for a storage fault; return for anything else (the caller re-raises)."""
    if _is_storage_fault(exc):
        raise _fault(directory, str(exc)) from exc


def _guarded(directory: Path, call, *args):
    """``call(*args)``, with a storage fault raised as StateError."""
    try:
        return call(*args)
    except sqlite3.DatabaseError as exc:
        _raise_fault(exc, directory)
        raise


class _Connection(sqlite3.Connection):
    """A connection whose execute and executemany raise StateError for a storage fault,
    in reading the rows too (a damaged page is found when it is read). ``directory`` is
    set once it is open. Cursors made with cursor() are plain, for bulk reads."""

    directory: Path

    def execute(self, *args) -> sqlite3.Cursor:
        return _guarded(self.directory, super().cursor(_Cursor).execute, *args)

    def executemany(self, *args) -> sqlite3.Cursor:
        return _guarded(self.directory, super().cursor(_Cursor).executemany, *args)


class _Cursor(sqlite3.Cursor):
    def __next__(self):
        return _guarded(self.connection.directory, super().__next__)

    def fetchone(self):
        return _guarded(self.connection.directory, super().fetchone)

    def fetchall(self):
        return _guarded(self.connection.directory, super().fetchall)


class State:
    """One connection to the state database. Not shared between threads."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.path = self.dir / DB_NAME
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"cannot create the state dir {self.dir}: {exc.strerror}") from exc
        remembered = _read_marker(self.dir / MARKER_NAME)
        if remembered and _is_empty(self.path):
            raise StateError(f"the state database {self.path} is missing or empty, but this state dir was in use "
                             f"(see {MARKER_NAME}): poold will not start afresh by itself; {RESET_HINT}")
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, factory=_Connection)
        except sqlite3.Error as exc:
            raise self._fault(exc) from exc
        self.db.directory = self.dir
        try:
            self._prepare(remembered)
        except BaseException:
            self.db.close()
            raise
        self._keep_reserve()

    def _prepare(self, remembered: str | None) -> None:
        """Set the connection up, make the schema, and match the database to the marker."""
        try:
            self.db.row_factory = sqlite3.Row
            self._use_wal()
            self.db.execute("PRAGMA synchronous=FULL")  # a settled request must survive power loss
            self.db.execute("PRAGMA foreign_keys=ON")
            _drop_old_file_cache(self.db)
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise self._fault(exc) from exc
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            if remembered is None:  # a new database, or one from before the marker: give it an identity
                db.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (json.dumps(uuid.uuid4().hex),))
            row = db.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        identity = json.loads(row[0]) if row else None
        if identity is None:
            raise StateError(f"the state database {self.path} holds no poold state, but this state dir was in use "
                             f"(see {MARKER_NAME}); {RESET_HINT}")
        if remembered is None:
            _write_marker(self.dir / MARKER_NAME, identity)
        elif remembered != identity:
            raise StateError(f"the state database {self.path} is not the one this state dir was made with "
                             f"({MARKER_NAME} names another); {RESET_HINT}")

    def _use_wal(self, patience: float = 30.0) -> None:
        """Switch to WAL. Two processes making a new database at once (the service and a
        command) may find it locked: SQLite does not wait for that lock, so this does."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except StateError as exc:
                if "locked" not in str(exc.__cause__) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @classmethod
    def reset(cls, directory: str | os.PathLike) -> Path | None:
        """Start over on purpose: move the database (with its WAL) aside, forget the
        marker, and make a new, empty database. Returns where the old database is kept."""
        directory = Path(directory)
        kept = directory / f"{DB_NAME}.reset-{time.strftime('%Y%m%d-%H%M%S')}"
        moved = False
        try:
            for suffix in ("", "-wal", "-shm"):
                source = directory / (DB_NAME + suffix)
                if source.exists():
                    os.replace(source, kept.with_name(kept.name + suffix))
                    moved = True
            (directory / MARKER_NAME).unlink(missing_ok=True)
        except OSError as exc:
            raise StateError(f"cannot reset the state dir {directory}: {exc.strerror}") from exc
        cls(directory).close()
        return kept if moved else None

    def _keep_reserve(self) -> bool:
        """Make sure the space reserve is in place; False when the disk has no room for it.
        The bytes are random so that no file system can store them compressed or shared."""
        reserve = self.dir / RESERVE_NAME
        with contextlib.suppress(OSError):
            if reserve.stat().st_size >= RESERVE_BYTES:
                return True
        try:
            with open(reserve, "wb") as f:
                f.write(os.urandom(RESERVE_BYTES))
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            with contextlib.suppress(OSError):
                reserve.unlink(missing_ok=True)
            return False

    def _give_up_reserve(self) -> bool:
        try:
            (self.dir / RESERVE_NAME).unlink()
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def try_lock(self, name: str) -> Iterator[bool]:
        """Hold the lock file ``name`` in the state directory; yields False when another
        process holds it. The kernel releases the lock when its holder exits, even by
        ``kill -9``, so a held lock always means a live holder."""
        with open(self.dir / name, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    def __enter__(self) -> "State":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable=False`` commits without waiting for the disk
        (WAL with synchronous=NORMAL): for what a power cut may lose, such as cached
        verdicts; the next durable commit syncs its pages too. A storage fault (full or
        read-only disk, damaged file) rolls back and raises StateError (see _Connection)."""
        if not durable:
            self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # SQLite may have rolled back by itself (a full disk)
                    with contextlib.suppress(sqlite3.Error, StateError):
                        self.db.execute("ROLLBACK")
                raise
        finally:
            if not durable:
                with contextlib.suppress(sqlite3.Error, StateError):
                    self.db.execute("PRAGMA synchronous=FULL")

    def _fault(self, exc: sqlite3.Error) -> StateError:
        return _fault(self.dir, str(exc))

    # --- incidents ------------------------------------------------------------------

    def record_problem(self, trackid: int, path: str, status: str, reason: str, detail: str, now: float | None = None) -> Incident:
        """Open an incident for the track, or refresh the open one."""
        self.record_problems([(trackid, path, status, reason, detail)], now)
        return self.open_incident(trackid)

    def record_problems(self, problems: Iterable[tuple[int, str, str, str, str]], now: float | None = None) -> None:
        """Open or refresh incidents for (trackid, path, status, reason, detail) rows, in one transaction."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            db.executemany(
                """INSERT INTO incidents (trackid, path, status, reason, detail, first_seen, last_seen)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (trackid) WHERE resolved_at IS NULL
                   DO UPDATE SET path=excluded.path, status=excluded.status, reason=excluded.reason,
                                 detail=excluded.detail, last_seen=excluded.last_seen""",
                ((trackid, path_to_db(path), status, reason, _text(detail), now, now)
                 for trackid, path, status, reason, detail in problems),
            )

    def resolve(self, trackids: Iterable[int], now: float | None = None) -> int:
        """Close the open incidents of tracks that checked ok; return how many closed."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            cursor = db.executemany(
                "UPDATE incidents SET resolved_at=? WHERE trackid=? AND resolved_at IS NULL",
                ((now, trackid) for trackid in trackids),
            )
            return cursor.rowcount

    def open_incident(self, trackid: int) -> Incident | None:
        row = self.db.execute("SELECT * FROM incidents WHERE trackid=? AND resolved_at IS NULL", (trackid,)).fetchone()
        return _incident(row) if row else None

    def open_incidents(self) -> list[Incident]:
        rows = self.db.execute("SELECT * FROM incidents WHERE resolved_at IS NULL ORDER BY trackid")
        return [_incident(row) for row in rows]

    def open_trackids(self) -> set[int]:
        return {row[0] for row in self.db.execute("SELECT trackid FROM incidents WHERE resolved_at IS NULL")}

    # --- outbox ---------------------------------------------------------------------

    def incident_requests(self, incident_id: int) -> list[tuple[float, str]]:
        """(created, state) of every request filed for one incident, oldest first. A
        ``split`` request does not count: its halves carry its tracks on."""
        rows = self.db.execute(
            """SELECT r.created, r.state FROM requests r JOIN request_tracks t ON t.request_id = r.id
               WHERE t.incident_id = ? AND r.state != 'split' ORDER BY r.created""", (incident_id,))
        return [(row[0], row[1]) for row in rows]

    def refusal(self, incident_id: int) -> str | None:
        """POOL's message when it refused a request for this incident's track alone: that
        track ID is what it refuses, and asking again would not help."""
        row = self.db.execute(
            """SELECT COALESCE(r.last_error, 'POOL refused it') FROM requests r
               JOIN request_tracks t ON t.request_id = r.id
               WHERE t.incident_id = ? AND r.state = 'rejected'
                 AND (SELECT COUNT(*) FROM request_tracks alone WHERE alone.request_id = r.id) = 1
               ORDER BY r.created DESC LIMIT 1""", (incident_id,)).fetchone()
        return row[0] if row else None

    def has_open_request(self, trackid: int) -> bool:
        row = self.db.execute(
            """SELECT 1 FROM requests r JOIN request_tracks t ON t.request_id = r.id
               WHERE t.trackid = ? AND r.state IN ('pending', 'sent') LIMIT 1""", (trackid,)).fetchone()
        return row is not None

    def tracks_requested_since(self, since: float) -> int:
        """How many distinct tracks were requested (written to the outbox) since then.
        A track counts once however many requests carried it: the halves of a split
        request repeat their parent's tracks, and the quota limits tracks, not requests."""
        row = self.db.execute(
            """SELECT COUNT(DISTINCT t.trackid) FROM requests r JOIN request_tracks t ON t.request_id = r.id
               WHERE r.created >= ?""", (since,)).fetchone()
        return row[0]

    def enqueue(self, batch: str, cause: str, reason: str, incidents: list[Incident], now: float | None = None) -> int | None:
        """Write a request as ``pending``, before anything is sent; return its id.

        Returns None, writing nothing, when any of its tracks already has an open request:
        another process (the daemon beside a manual audit) queued it first. The check and
        the insert share one write transaction, so two planners cannot both queue a track.
        """
        now = time.time() if now is None else now
        with self.transaction() as db:
            open_tracks = db.execute(
                f"""SELECT 1 FROM requests r JOIN request_tracks t ON t.request_id = r.id
                    WHERE r.state IN ('pending', 'sent') AND t.trackid IN ({','.join('?' * len(incidents))}) LIMIT 1""",
                [incident.trackid for incident in incidents]).fetchone()
            if open_tracks:
                return None
            cursor = db.execute(
                "INSERT INTO requests (batch, cause, reason, state, created, updated) VALUES (?, ?, ?, 'pending', ?, ?)",
                (batch, cause, reason, now, now),
            )
            db.executemany(
                "INSERT INTO request_tracks (request_id, trackid, incident_id) VALUES (?, ?, ?)",
                [(cursor.lastrowid, incident.trackid, incident.id) for incident in incidents],
            )
            return cursor.lastrowid

    def mark_sent(self, request_id: int) -> None:
        """Mark a request sent, just before it is; refused (StateError) unless the space
        reserve is in place, so that its answer can be written down however full the disk."""
        if not self._keep_reserve():
            raise StateError(f"the disk holding the state database {self.path} is full: poold sends no request "
                             "whose answer it could not write down; free some space and run poold again")
        with self.transaction() as db:
            db.execute(
                "UPDATE requests SET state='sent', attempts=attempts+1, updated=? WHERE id=?",
                (time.time(), request_id),
            )

    def settle(self, request_id: int, state: str, *, error: str | None = None, tracks_requeued: int | None = None) -> None:
        """Record the outcome of a send: a final state, or ``pending`` to try again later."""
        if state not in ANSWERED_STATES + ("pending",):
            raise ValueError(f"cannot settle a request as {state!r}")
        self._after_send(self._settle, request_id, state, error, tracks_requeued)

    def _after_send(self, write, *args):
        """Write down what POOL answered. On a full disk the space reserve is given up for
        it (that is what it is for): an answer not written down would be sent again."""
        try:
            return write(*args)
        except StateError:
            if not self._give_up_reserve():
                raise
            return write(*args)

    def _settle(self, request_id: int, state: str, error: str | None, tracks_requeued: int | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE requests SET state=?, last_error=COALESCE(?, last_error), tracks_requeued=COALESCE(?, tracks_requeued), "
                "updated=? WHERE id=?",
                (state, error, tracks_requeued, time.time(), request_id),
            )

    def split(self, request_id: int, parts: list[tuple[str, str, list[int]]], *, error: str) -> list[int]:
        """Settle a request POOL refused as a whole as ``split`` and write its ``parts``
        ((batch, reason, trackids), which must share out its tracks) as new pending
        requests for the same incidents: one transaction, so each track stays in exactly
        one open request. Returns the new ids; [] when the request was settled already.
        """
        return self._after_send(self._split, request_id, parts, error)

    def _split(self, request_id: int, parts: list[tuple[str, str, list[int]]], error: str) -> list[int]:
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT cause FROM requests WHERE id=? AND state IN ('pending', 'sent')",
                             (request_id,)).fetchone()
            if row is None:
                return []
            incidents = dict(db.execute(
                "SELECT trackid, incident_id FROM request_tracks WHERE request_id=?", (request_id,)).fetchall())
            shared_out = sorted(t for _, _, trackids in parts for t in trackids)
            if shared_out != sorted(incidents):
                raise ValueError(f"the parts of request {request_id} do not share out its tracks")
            ids = []
            for batch, reason, trackids in parts:
                cursor = db.execute(
                    "INSERT INTO requests (batch, cause, reason, state, created, updated) VALUES (?, ?, ?, 'pending', ?, ?)",
                    (batch, row[0], reason, now, now))
                db.executemany("INSERT INTO request_tracks (request_id, trackid, incident_id) VALUES (?, ?, ?)",
                               [(cursor.lastrowid, t, incidents[t]) for t in trackids])
                ids.append(cursor.lastrowid)
            note = f"{error}; split into requests {', '.join(map(str, ids))}"
            db.execute("UPDATE requests SET state='split', last_error=?, updated=? WHERE id=?", (note, now, request_id))
            return ids

    def recover_unconfirmed(self) -> int:
        """After a crash: requests marked sent whose answer never arrived become pending."""
        with self.transaction() as db:
            return db.execute(
                "UPDATE requests SET state='pending', last_error=COALESCE(last_error, 'interrupted while sending'), updated=? WHERE state='sent'",
                (time.time(),),
            ).rowcount

    def pending_requests(self) -> list[OutboxRequest]:
        return self.requests(states=("pending",))

    def requests(self, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[OutboxRequest]:
        sql = "SELECT * FROM requests"
        params: list = []
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params.extend(states)
        sql += " ORDER BY id" if states else " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._request(row) for row in self.db.execute(sql, params).fetchall()]

    def _request(self, row: sqlite3.Row) -> OutboxRequest:
        ids = tuple(r[0] for r in self.db.execute(
            "SELECT trackid FROM request_tracks WHERE request_id=? ORDER BY trackid", (row["id"],)))
        return OutboxRequest(
            id=row["id"], batch=row["batch"], cause=row["cause"], reason=row["reason"], state=row["state"],
            created=row["created"], updated=row["updated"], attempts=row["attempts"],
            last_error=row["last_error"], tracks_requeued=row["tracks_requeued"], trackids=ids,
        )

    # --- audits ---------------------------------------------------------------------

    def start_audit(self) -> int:
        with self.transaction() as db:
            return db.execute("INSERT INTO audits (started) VALUES (?)", (time.time(),)).lastrowid

    def finish_audit(self, audit_id: int, checked: int, ok: int, problems: int, note: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE audits SET finished=?, checked=?, ok=?, problems=?, note=? WHERE id=?",
                (time.time(), checked, ok, problems, note, audit_id),
            )

    def last_audit(self) -> dict | None:
        row = self.db.execute("SELECT * FROM audits WHERE finished IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
        return dict(row) if row else None

    # --- file-check cache ----------------------------------------------------------

    def file_cache(self) -> "FileCache":
        return FileCache(self)

    # --- moved tracks ---------------------------------------------------------------

    def set_location(self, trackid: int, path: str, moved_from: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO locations VALUES (?, ?, ?, ?)",
                       (trackid, path_to_db(path), path_to_db(moved_from), time.time()))

    def forget_location(self, trackid: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM locations WHERE trackid=?", (trackid,))

    def locations(self) -> dict[int, str]:
        """Where moved tracks are now, overriding the manifest's paths."""
        return {row[0]: path_from_db(row[1]) for row in self.db.execute("SELECT trackid, path FROM locations")}

    # --- small key/value notes (e.g. the guard's state) -------------------------------

    def put_note(self, key: str, value: object) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def note(self, key: str, default: object = None) -> object:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # --- heal jobs (poold/heal.py) ------------------------------------------------------

    def healable(self) -> list[Incident]:
        """Open incidents without a heal job whose latest redownload request POOL accepted
        in full: the only tracks healing may fetch (POOL's answer to a partial request
        does not say which tracks it requeued)."""
        rows = self.db.execute(
            """SELECT i.* FROM incidents i
               WHERE i.resolved_at IS NULL
                 AND NOT EXISTS (SELECT 1 FROM heal_jobs h WHERE h.incident_id = i.id)
                 AND (SELECT r.state FROM requests r JOIN request_tracks t ON t.request_id = r.id
                      WHERE t.incident_id = i.id ORDER BY r.created DESC, r.id DESC LIMIT 1) = 'accepted'
               ORDER BY i.trackid""")
        return [_incident(row) for row in rows]

    def create_heal_job(self, incident: Incident, path: str, now: float | None = None) -> int | None:
        """Write a job down as ``queued``; None when the incident has one already."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO heal_jobs (incident_id, trackid, path, stage, created, updated) "
                "VALUES (?, ?, ?, 'queued', ?, ?)", (incident.id, incident.trackid, path_to_db(path), now, now))
            return cursor.lastrowid if cursor.rowcount else None

    def update_heal_job(self, job_id: int, durable: bool = True, **fields) -> None:
        """Record a job's step (durably, before the next step starts); ``durable=False``
        for download progress, which the temporary file's size tells anyway."""
        unknown = set(fields) - HEAL_FIELDS
        if unknown or fields.get("stage", "queued") not in HEAL_STAGES:
            raise ValueError(f"cannot record {sorted(unknown) or fields['stage']!r} on a heal job")
        assignments = ", ".join(f"{name}=?" for name in fields)
        values = [path_to_db(value) if name in HEAL_PATHS and value is not None else value
                  for name, value in fields.items()]
        with self.transaction(durable) as db:
            db.execute(f"UPDATE heal_jobs SET {assignments}, updated=? WHERE id=?", (*values, time.time(), job_id))

    def finish_swap(self, job_id: int, trackid: int, now: float | None = None) -> None:
        """The new copy is in place: the job is ``swapped`` and the incident closed, together."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            db.execute("UPDATE heal_jobs SET stage='swapped', temp_path=NULL, updated=? WHERE id=?", (now, job_id))
            db.execute("UPDATE incidents SET resolved_at=? WHERE trackid=? AND resolved_at IS NULL", (now, trackid))

    def heal_jobs(self, stages: tuple[str, ...] | None = None) -> list[dict]:
        sql = "SELECT * FROM heal_jobs"
        params: tuple = ()
        if stages:
            sql += f" WHERE stage IN ({','.join('?' * len(stages))})"
            params = stages
        return [_heal_job(row) for row in self.db.execute(sql + " ORDER BY id", params)]

    def heal_job(self, job_id: int) -> dict | None:
        row = self.db.execute("SELECT * FROM heal_jobs WHERE id=?", (job_id,)).fetchone()
        return _heal_job(row) if row else None

    def heal_jobs_started_since(self, since: float) -> int:
        """Jobs created since ``since``: a job is created only when its download may start,
        so the daily cap counts these."""
        row = self.db.execute("SELECT COUNT(*) FROM heal_jobs WHERE created >= ?", (since,)).fetchone()
        return row[0]

    # --- moved tracks, in one transaction ------------------------------------------------

    def set_locations(self, moves: Iterable[tuple[int, str, str]]) -> None:
        """Record (trackid, path, moved_from) rows at once (an audit may find thousands)."""
        now = time.time()
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO locations VALUES (?, ?, ?, ?)",
                           ((trackid, path_to_db(path), path_to_db(moved_from), now) for trackid, path, moved_from in moves))

    # --- track identities -----------------------------------------------------------------

    def record_identities(self, rows: Iterable[tuple[int, str]], now: float | None = None) -> None:
        """Record (trackid, identity) of tracks seen intact. An unchanged row is not written;
        a changed identity (other audio) drops the verified full identity with it."""
        now = time.time() if now is None else now
        with self.transaction(durable=False) as db:
            db.executemany(
                """INSERT INTO track_identity (trackid, identity, seen) VALUES (?, ?, ?)
                   ON CONFLICT (trackid) DO UPDATE SET identity=excluded.identity, seen=excluded.seen,
                                                       full_identity=NULL, verified=NULL
                   WHERE identity IS NOT excluded.identity""",
                ((trackid, identity, now) for trackid, identity in rows))

    def record_verified(self, rows: Iterable[tuple[int, str | None, str]], now: float | None = None) -> None:
        """Record (trackid, identity, full_identity) of tracks whose bytes matched the manifest's hash."""
        now = time.time() if now is None else now
        rows = list(rows)
        if not rows:
            return
        with self.transaction() as db:
            db.executemany(
                """INSERT INTO track_identity (trackid, identity, full_identity, verified, seen) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (trackid) DO UPDATE SET identity=coalesce(excluded.identity, identity),
                          full_identity=excluded.full_identity, verified=excluded.verified""",
                ((trackid, identity, full, now, now) for trackid, identity, full in rows))

    def track_identities(self, trackids: Iterable[int]) -> dict[int, str]:
        """The recorded identities of these tracks (those that have one)."""
        found: dict[int, str] = {}
        ids = list(trackids)
        cursor = self.db.cursor()
        cursor.row_factory = None
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update(cursor.execute(
                f"SELECT trackid, identity FROM track_identity WHERE identity IS NOT NULL "
                f"AND trackid IN ({','.join('?' * len(chunk))})", chunk).fetchall())
        return found

    def verified_identities(self) -> dict[int, str]:
        """trackid -> full identity of the audio last verified against the manifest's hash."""
        cursor = self.db.cursor()
        cursor.row_factory = None
        return dict(cursor.execute("SELECT trackid, full_identity FROM track_identity WHERE verified IS NOT NULL "
                                   "AND full_identity IS NOT NULL"))


class CachedCheck(NamedTuple):
    """A verdict remembered for a file, valid while the file's stat identity is unchanged."""

    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int
    status: str
    reason: str
    detail: str
    duration: float | None
    level: str
    logic: str
    sha256: str | None
    md5: str | None
    audio_identity: str | None = None  # the sampled identity (``identity`` is the stat identity)
    full_identity: str | None = None

    @property
    def identity(self) -> tuple[int, int, int, int]:
        return self[:4]


FILE_COLUMNS = ("path, size, mtime_ns, inode, ctime_ns, status, reason, detail, duration, level, logic, "
                "sha256, md5, identity, full_identity, checked, stamp")


def _drop_old_file_cache(db: sqlite3.Connection) -> None:
    """The files table is only a cache: one without the identity columns (poold before
    audio identities) is dropped, to be created anew; its files are checked again once."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
    if columns and "full_identity" not in columns:
        db.execute("DROP TABLE IF EXISTS files")  # another process may have done it first


def file_key(path: str, identity: tuple[int, int, int, int], logic: int, deep: bool = False) -> int:
    """One 64-bit number for a cached verdict: the path, its file's stat identity, the
    check logic (see :func:`logic_number`) and, in the lowest bit, whether the check
    was deep. A warm scan loads these numbers and compares them instead of five
    columns a file.

    Python's hash of a tuple of integers is the same in every process (only str and
    bytes hashes are salted, so the path enters as its CRC-32), so it can be stored;
    were a future Python to hash differently, every key would just mismatch once and
    the files be checked again.
    """
    path_number = zlib.crc32(path.encode("utf-8", "surrogatepass"))
    return hash((path_number, identity, logic)) & ~1 | deep


@functools.lru_cache(maxsize=4)
def logic_number(logic: str) -> int:
    """The check-logic version as the number :func:`file_key` takes."""
    return int.from_bytes(logic.encode(), "little")


class FileCache:
    """The cache of file verdicts for one scan.

    On first use, the key of every cached verdict is loaded in one query (a scan asks
    about nearly every file, and one query is many times faster than one a file),
    with the duration of each plain ok verdict: the full row is read only for a
    verdict that is not ok. Writes are batched into one transaction per FLUSH_EVERY.
    """

    FLUSH_EVERY = 500
    LOOKUP_BATCH = 500  # paths a query in identities(): under SQLite's oldest limit of 999 parameters

    def __init__(self, state: State):
        self.db = state.db
        self.state = state
        self._writes: list[tuple] = []
        self._known: dict[int, float | None] | None = None

    @property
    def known(self) -> dict[int, float | None]:
        """file_key -> for an ok verdict its duration (0.0 when unknown), else None."""
        if self._known is None:
            cursor = self.db.cursor()
            cursor.row_factory = None  # plain tuples: dict() then builds the map without Python code a row
            try:
                self._known = dict(cursor.execute(
                    "SELECT stamp, CASE WHEN status = 'ok' THEN coalesce(duration, 0.0) END FROM files"))
            except sqlite3.DatabaseError as exc:
                _raise_fault(exc, self.state.dir)
                raise
        return self._known

    def full(self, path: str) -> CachedCheck | None:
        self.flush()
        row = self.db.execute(
            "SELECT size, mtime_ns, inode, ctime_ns, status, reason, detail, duration, level, logic, sha256, md5, "
            "identity, full_identity FROM files WHERE path=?", (path_to_db(path),)).fetchone()
        return CachedCheck._make(row) if row else None

    def identity(self, path: str) -> str | None:
        """The sampled audio identity cached with the path's verdict, if any. It is the
        identity of the file as it was at that check: a scan replaces the verdict of a
        file that changed, so after a scan it is the file's current one."""
        self.flush()
        row = self.db.execute("SELECT identity FROM files WHERE path=?", (path_to_db(path),)).fetchone()
        return row[0] if row else None

    def identities(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> sampled audio identity, for those of ``paths`` that have one cached."""
        self.flush()
        found: dict[str, str] = {}
        batch = list(paths)
        for start in range(0, len(batch), self.LOOKUP_BATCH):
            chunk = [path_to_db(path) for path in batch[start:start + self.LOOKUP_BATCH]]
            found.update((path_from_db(path), identity) for path, identity in self.db.execute(
                f"SELECT path, identity FROM files WHERE identity IS NOT NULL AND path IN ({','.join('?' * len(chunk))})",
                chunk))
        return found

    def put(self, path: str, check: CachedCheck) -> None:
        key = file_key(path, check.identity, logic_number(check.logic), check.level == "deep")
        if self._known is not None:
            self._known[key] = (check.duration or 0.0) if check.status == "ok" else None
        self._writes.append((path if path.isascii() else path_to_db(path), *check, time.time(), key))
        if len(self._writes) >= self.FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write the batched verdicts, without waiting for the disk: a verdict lost to a
        power cut is only a file checked again, and each fsync costs tens of milliseconds
        on slow disks (a cold audit of 100,000 files makes 200 of these writes). The
        next durable commit (an incident, the outbox) syncs these pages with its own."""
        if not self._writes:
            return
        with self.state.transaction(durable=False) as db:
            db.executemany(f"INSERT OR REPLACE INTO files ({FILE_COLUMNS}) VALUES ({', '.join('?' * 17)})",
                           self._writes)
        self._writes.clear()


def _incident(row: sqlite3.Row) -> Incident:
    fields = {key: row[key] for key in Incident.__dataclass_fields__}
    return Incident(**{**fields, "path": path_from_db(fields["path"])})


def _heal_job(row: sqlite3.Row) -> dict:
    job = dict(row)
    for name in HEAL_PATHS:
        if job[name] is not None:
            job[name] = path_from_db(job[name])
    return job
