"""Download manifests (JSON, JSON Lines, CSV) -> validated Track records, streamed.

A manifest maps POOL track IDs to the files they should be in the library. All three
formats are read incrementally, one record at a time, so a manifest of a million rows
costs memory for the duplicate checks (16 bytes a row), not for the rows.
Any bad row stops the read with a :class:`ManifestError` naming the file and row: poold
never acts on a manifest it could not read completely.

Hostile input is bounded: only a regular file is opened (never a FIFO or a device), at
most MAX_MANIFEST_BYTES of it is read, a row may hold at most _MAX_RECORD characters, a
track ID is 1 to 2^63 - 1 (SQLite's INTEGER), and a path must be valid Unicode without
NUL, at most MAX_PATH_BYTES long in UTF-8 with no name longer than MAX_NAME_BYTES.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import posixpath
import re
import stat
from array import array
from collections.abc import Iterator
from itertools import compress, islice, repeat
from operator import eq, itemgetter, lt
from pathlib import Path
from typing import NamedTuple

FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_HEX = {"sha256": re.compile(r"[0-9a-fA-F]{64}"), "md5": re.compile(r"[0-9a-fA-F]{32}")}  # fullmatch: no "$\n"
_CHUNK = 1 << 16
_MAX_RECORD = 1 << 20  # characters in one row (a JSON Lines line, a CSV record, a JSON track object)
MAX_MANIFEST_BYTES = 2 << 30
MAX_PATH_BYTES, MAX_NAME_BYTES = 4096, 255  # Linux's PATH_MAX and NAME_MAX, in UTF-8 bytes
MAX_TRACKID = (1 << 63) - 1


class ManifestError(Exception):
    """A manifest that cannot be used; the message names the file and the row."""


class Track(NamedTuple):
    trackid: int
    path: str  # POSIX-style, relative to the library root, normalised
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    duration: float | None = None


def read_manifest(path: str | Path) -> Iterator[Track]:
    """Yield every track of the manifest at ``path``, validating as it goes."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ManifestError(f"{path}: unknown manifest type {path.suffix!r} (use .json, .jsonl or .csv)")
    if kind == "json" and (tracks := _small_json_tracks(path)) is not None:
        yield from tracks
        return
    rows = _READERS[kind]
    seen = _DuplicateGuard(path)
    try:
        with open_manifest(path) as f:
            for location, row in rows(f, path):
                track = _plain_track(row) or parse_row(row, _Where(path, location))
                seen.add(track)
                yield track
        seen.check()
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: {_first_bad_byte(path)}") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None


WHOLE_JSON_LIMIT = 16 * 1024 * 1024


def _small_json_tracks(path: Path) -> list[Track] | None:
    """A small JSON manifest's tracks, parsed in one call at the C decoder's speed.

    Only the common, valid manifest takes this path: None for a big file (which must
    stream) and for anything the checks would reject, so that the streaming reader
    reads it again and names the exact row and line. The row limit is the streaming
    reader's: here the file's own size (WHOLE_JSON_LIMIT) bounds every row, and the
    field checks bound what is kept of one.
    """
    try:
        with open_manifest(path) as f:
            if os.fstat(f.fileno()).st_size > WHOLE_JSON_LIMIT:
                return None
            rows = json.load(f)["tracks"]
        tracks = _plain_tracks(rows)
        if tracks is None:
            tracks = [_plain_track(row) or parse_row(row, "") for row in rows]
        del rows
        if len({track.trackid for track in tracks}) != len(tracks) or len({t.path for t in tracks}) != len(tracks):
            return None
        return tracks
    except (OSError, ValueError, TypeError, KeyError, RecursionError, ManifestError):
        return None


def open_manifest(path: Path, binary: bool = False):
    """The manifest, opened for reading only if it is a regular file (a FIFO would block
    the open, a device never end); reading past MAX_MANIFEST_BYTES raises ManifestError."""
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    _require_regular(path, before)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
        _require_regular(path, opened)  # replaced between the stat and the open
        if opened.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES:,} bytes, the most poold reads of a manifest")
    except BaseException:
        os.close(fd)
        raise
    buffered = io.BufferedReader(_CappedFile(fd, path), _CHUNK)
    return buffered if binary else io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")


def _require_regular(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a special file")
        raise ManifestError(f"{path}: not a regular file ({kind}); a manifest must be a file")


class _CappedFile(io.RawIOBase):
    """A file descriptor read only up to MAX_MANIFEST_BYTES: a file that grows while it
    is read cannot make poold read forever."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path, self.left = fd, path, MAX_MANIFEST_BYTES

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def readinto(self, buffer) -> int:
        return self._counted(os.readv(self.fd, [buffer]))

    def readall(self) -> bytes:
        """The rest of the file, read in large pieces (a small JSON manifest is read whole)."""
        chunks = []
        while chunk := os.read(self.fd, 1 << 24):
            self._counted(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)

    def _counted(self, count: int) -> int:
        self.left -= count
        if self.left < 0:
            raise ManifestError(f"{self.path}: larger than {MAX_MANIFEST_BYTES:,} bytes, the most poold reads of a manifest")
        return count

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def _first_bad_byte(path: Path) -> str:
    """Where the manifest stops being UTF-8, as words naming the line (for an error)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with open_manifest(path, binary=True) as f:
        while True:
            chunk = f.read(_CHUNK)
            held = len(decoder.getstate()[0])  # the start of a character cut by the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                bad = offset - held + exc.start
                lines += chunk[:max(bad - offset, 0)].count(b"\n")
                return f"line {lines}: not UTF-8 text ({exc.reason} at byte {bad:,}); a manifest must be UTF-8"
            if not chunk:
                return "not UTF-8 text"
            offset += len(chunk)
            lines += chunk.count(b"\n")


def count_tracks(path: str | Path) -> int:
    """Validate the whole manifest and return its number of tracks."""
    return sum(1 for _ in read_manifest(path))


def estimate_rows(path: str | Path) -> int:
    """A quick count of the manifest's rows, for progress display only (no validation)."""
    path = Path(path)
    needle = b"\n" if FORMATS.get(path.suffix.lower()) == "csv" else b'"trackid"'
    count = 0
    try:
        with open_manifest(path, binary=True) as f:
            while chunk := f.read(1 << 20):
                count += chunk.count(needle)  # a needle cut by a chunk edge is lost: fine for an estimate
    except (OSError, ManifestError):
        return 0
    return max(count - (needle == b"\n"), 0)


class _DuplicateGuard:
    """Rejects a manifest that lists a track ID or a path twice, with little memory.

    It collects the IDs' and paths' hashes in arrays (16 bytes a row; sets of them
    cost about 120) and looks for a repeated one once the whole manifest has been
    read, by sorting. The tracks were yielded by then, but nothing acts on a manifest
    before its read is over, and the read ends with the error. A repeated hash re-reads
    the file, to tell a real duplicate from a collision and to name both rows.
    """

    def __init__(self, path: Path):
        self.path = path
        self.ids = array("q")
        self.paths = array("q")

    def add(self, track: Track) -> None:
        self.ids.append(hash(track.trackid))
        self.paths.append(hash(track.path))

    def check(self) -> None:
        for key in _repeated(self.ids):
            self._raise_if_repeated(key, lambda t: t.trackid, "trackid {}")
        for key in _repeated(self.paths):
            self._raise_if_repeated(key, lambda t: t.path, "path {!r}")

    def _raise_if_repeated(self, key: int, value, words: str) -> None:
        """Raise for the first row that repeats an earlier one among those whose
        ``value`` hashes to ``key``."""
        kind = FORMATS[self.path.suffix.lower()]
        first: dict[object, str] = {}
        with open_manifest(self.path) as f:
            for location, row in _READERS[kind](f, self.path):
                track = _plain_track(row) or parse_row(row, _Where(self.path, location))
                if hash(value(track)) != key:
                    continue
                if value(track) in first:
                    raise ManifestError(f"{self.path}: {describe(location)}: {words.format(value(track))} "
                                        f"already listed at {first[value(track)]}")
                first[value(track)] = describe(location)


def _repeated(keys: array) -> list[int]:
    """The values that occur more than once in ``keys``."""
    ordered = sorted(keys)
    return sorted(set(compress(ordered, map(eq, ordered, islice(ordered, 1, None)))))


class _Where:
    """A row's place for an error message, worked out only if one is made: for a JSON
    array element that means counting lines from the start of the file."""

    def __init__(self, path: Path, location: int | tuple[int, Path, int]):
        self.path, self.location = path, location

    def __str__(self) -> str:
        return f"{self.path}: {describe(self.location)}"


def describe(location: int | tuple[int, Path, int]) -> str:
    """A reader's location as words: a line number, or a JSON array index and its line."""
    if isinstance(location, tuple):
        index, path, offset = location
        return f"track {index} (line {line_at(path, offset)})"
    return f"line {location}"


# --- row validation -----------------------------------------------------------------

def _plain_track(row: object) -> Track | None:
    """The common row, {"trackid": int, "path": clean relative path}, without the full
    validation; None sends anything else through :func:`parse_row`."""
    if type(row) is not dict or len(row) != 2:
        return None
    trackid, path = row.get("trackid"), row.get("path")
    if type(trackid) is not int or not 0 < trackid <= MAX_TRACKID or type(path) is not str or not _is_clean(path):
        return None
    return Track(trackid, path)


def _plain_tracks(rows: list) -> list[Track] | None:
    """The tracks of rows that are all the common {"trackid": positive int, "path": clean
    path}, checked a column at a time by C code instead of a row at a time in Python
    (the same rules as :func:`_plain_track`); None when any row is anything else."""
    if not isinstance(rows, list) or set(map(type, rows)) - {dict} or set(map(len, rows)) - {2}:
        return None
    try:
        trackids, paths = list(map(itemgetter("trackid"), rows)), list(map(itemgetter("path"), rows))
    except KeyError:
        return None
    if rows and (set(map(type, trackids)) != {int} or min(trackids) <= 0 or max(trackids) > MAX_TRACKID
                 or set(map(type, paths)) != {str}):
        return None
    if not _all_clean(paths):
        return None
    nothing = repeat(None)
    return list(map(tuple.__new__, repeat(Track), zip(trackids, paths, nothing, nothing, nothing, nothing)))


# A line of "\n".join(paths) that is a drive letter's path or only white space.
_DRIVE_OR_BLANK_LINE = re.compile(r"\n(?:.:|[^\S\n]+\n)")


def _all_clean(paths: list[str]) -> bool:
    """:func:`_is_clean` for every path, searched in one string: framed by "/", each
    path's own frame sits between newlines, so a substring test finds any offender."""
    framed = "/" + "/\n/".join(paths) + "/"
    if framed.count("\n") != max(len(paths) - 1, 0):  # a path with a newline of its own
        return False
    if "//" in framed or "/./" in framed or "/../" in framed or "\n/\\" in framed or framed.startswith("/\\"):
        return False
    if "\0" in framed or not _all_fit(paths, framed):
        return False
    return not _DRIVE_OR_BLANK_LINE.search("\n" + "\n".join(paths) + "\n")


def _all_fit(paths: list[str], framed: str) -> bool:
    """:func:`_fits` for every path, in C a path at a time: only a path of more than
    MAX_NAME_BYTES bytes in all (rare) can hold a name that long, and only those are
    checked one by one."""
    if framed.isascii():
        lengths = map(len, paths)
    else:
        try:
            framed.encode("utf-8")  # fails on a lone surrogate anywhere
        except UnicodeEncodeError:
            return False
        lengths = map(len, map(str.encode, paths))
    return all(map(_fits, compress(paths, map(lt, repeat(MAX_NAME_BYTES), lengths))))


def _is_clean(path: str) -> bool:
    """True when normalise_path would return ``path`` unchanged."""
    framed = f"/{path}/"
    return (bool(path) and path[0] not in "/\\" and path[1:2] != ":" and "//" not in framed
            and "/./" not in framed and "/../" not in framed and not path.isspace() and "\0" not in path
            and (path.isascii() and len(path) <= MAX_NAME_BYTES or _fits(path)))


def _fits(path: str) -> bool:
    """True for valid Unicode of at most MAX_PATH_BYTES in UTF-8, no name over MAX_NAME_BYTES."""
    try:
        data = path.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return len(data) <= MAX_NAME_BYTES or (
        len(data) <= MAX_PATH_BYTES and max(map(len, data.split(b"/"))) <= MAX_NAME_BYTES)


def parse_row(row: object, where: object) -> Track:
    """One manifest record -> Track; ``where`` (formatted only for an error) prefixes every error."""
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected an object with trackid and path, got {type(row).__name__}")
    return Track(
        trackid=_trackid(row.get("trackid"), where),
        path=normalise_path(row.get("path"), where),
        size=_optional_int(row, "size", where),
        sha256=_optional_hex(row, "sha256", where),
        md5=_optional_hex(row, "md5", where),
        duration=_optional_duration(row, where),
    )


def _trackid(value: object, where: object) -> int:
    if type(value) is int and 0 < value <= MAX_TRACKID:
        return value
    if value is None or value == "":
        raise ManifestError(f"{where}: missing trackid")
    number = _whole_number(value)
    if number is None or not 0 < number <= MAX_TRACKID:
        raise ManifestError(f"{where}: trackid {_shown(value)} is not a positive integer below 2^63")
    return number


def _whole_number(value: object) -> int | None:
    """An int from a JSON integer or a string of ASCII digits (never "²" or "٣", which
    str.isdigit accepts), at most 19 digits; None for anything else."""
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None
    return value if type(value) is int else None


def _shown(value: object) -> str:
    """A value for an error message, cut short: one line, whatever the manifest holds."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


def normalise_path(value: object, where: object) -> str:
    """A clean relative POSIX path that stays inside the library root."""
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: missing path")
    if "\0" in value:
        raise ManifestError(f"{where}: path {_shown(value)} holds a NUL byte")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", value):
        raise ManifestError(f"{where}: path {_shown(value)} must be relative to the library root")
    clean = posixpath.normpath(value)
    if clean == ".." or clean.startswith("../") or clean == ".":
        raise ManifestError(f"{where}: path {_shown(value)} escapes the library root")
    if clean.isascii() and len(clean) <= MAX_NAME_BYTES:
        return clean
    try:
        data = clean.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"{where}: path {_shown(value)} is not valid Unicode (a lone surrogate)") from None
    if len(data) > MAX_PATH_BYTES:
        raise ManifestError(f"{where}: path {_shown(value)} is longer than {MAX_PATH_BYTES} bytes")
    if max(map(len, data.split(b"/"))) > MAX_NAME_BYTES:
        raise ManifestError(f"{where}: path {_shown(value)} has a name longer than {MAX_NAME_BYTES} bytes")
    return clean


def _optional_int(row: dict, key: str, where: object) -> int | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    number = _whole_number(value)
    if number is None or not 0 <= number <= MAX_TRACKID:
        raise ManifestError(f"{where}: {key} {_shown(value)} is not a whole number of bytes")
    return number


def _optional_hex(row: dict, key: str, where: object) -> str | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _HEX[key].fullmatch(value):
        raise ManifestError(f"{where}: {key} {_shown(value)} is not a hex {key} digest")
    return value.lower()


def _optional_duration(row: dict, where: object) -> float | None:
    value = row.get("duration")
    if value is None or value == "":
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ManifestError(f"{where}: duration {_shown(value)} is not a positive number of seconds")
    return seconds


# --- readers: each yields (where, row) -----------------------------------------------

_TOO_LONG = f"longer than 1 MiB ({_MAX_RECORD:,} characters), the most poold reads for one row"


def _lines(f, path: Path, used: list[int]) -> Iterator[str]:
    """The lines of a text file, none read past _MAX_RECORD characters. ``used[0]``
    counts the characters read since the caller last set it to 0 (for a CSV record
    spread over several lines)."""
    readline, number = f.readline, 0
    while line := readline(_MAX_RECORD + 1):
        number += 1
        used[0] += len(line)
        if used[0] > _MAX_RECORD:
            raise ManifestError(f"{path}: line {number}: {_TOO_LONG}")
        yield line


def _long_int_as_text(digits: str) -> int | str:
    """json's parse_int for a row that holds an integer past Python's 4300-digit limit:
    the digits stay text, which the field checks then refuse by name."""
    return int(digits) if len(digits) < 4000 else digits


_lenient_decode = json.JSONDecoder(parse_int=_long_int_as_text).raw_decode


def _jsonl_rows(f, path: Path) -> Iterator[tuple[object, object]]:
    readline, loads, number = f.readline, json.loads, 0
    while line := readline(_MAX_RECORD + 1):
        number += 1
        if len(line) > _MAX_RECORD:
            raise ManifestError(f"{path}: line {number}: {_TOO_LONG}")
        if not line.strip():
            continue
        try:
            row = loads(line)
        except (ValueError, RecursionError) as exc:
            row = _jsonl_fault(path, number, line, exc)
        yield number, row


def _jsonl_fault(path: Path, number: int, line: str, exc: Exception) -> object:
    """The row of a JSON Lines line that json.loads refused, or the ManifestError for it."""
    if isinstance(exc, RecursionError):
        raise ManifestError(f"{path}: line {number}: malformed JSON: nested too deeply") from None
    if isinstance(exc, json.JSONDecodeError):
        raise ManifestError(f"{path}: line {number}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    try:  # an integer of more than 4300 digits
        return json.loads(line, parse_int=_long_int_as_text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: line {number}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ManifestError(f"{path}: line {number}: malformed JSON: nested too deeply") from None


def _csv_rows(f, path: Path) -> Iterator[tuple[object, object]]:
    used = [0]
    reader = csv.DictReader(_lines(f, path, used), strict=True)
    try:
        if not reader.fieldnames or "trackid" not in reader.fieldnames or "path" not in reader.fieldnames:
            raise ManifestError(f"{path}: line 1: the CSV header must name at least the columns trackid and path")
        used[0] = 0
        for row in reader:
            if None in row:
                raise ManifestError(f"{path}: line {reader.line_num}: more fields than the header has columns")
            used[0] = 0
            yield reader.line_num, row
    except csv.Error as exc:
        raise ManifestError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None


def _json_rows(f, path: Path) -> Iterator[tuple[object, object]]:
    """Stream the elements of the top-level ``tracks`` array of a JSON document."""
    stream = _JsonStream(f, path)
    stream.expect("{")
    found = False
    while not stream.peek_is("}"):
        key = stream.value()
        if not isinstance(key, str):
            stream.fail("expected a key string")
        stream.expect(":")
        if key == "tracks":
            found = True
            yield from stream.array_items()
        else:
            stream.value()
        if not stream.peek_is("}"):
            stream.expect(",")
    stream.expect("}")
    stream.expect_end()
    if not found:
        raise ManifestError(f'{path}: a JSON manifest must be an object with a "tracks" array')


_SPACE = re.compile(r"[ \t\r\n]*")
_SEPARATOR = re.compile(r"[ \t\r\n]*([,\]])")


class _JsonStream:
    """A minimal incremental JSON reader: values come from json's own decoder, one at a
    time. Positions are kept as character offsets; line numbers are worked out only for
    an error message."""

    def __init__(self, f, path: Path):
        self.f, self.path = f, path
        self.buffer, self.pos, self.dropped = "", 0, 0
        self.decode = json.JSONDecoder().raw_decode
        self.row: int | None = None  # the index of the tracks element being read

    def fail(self, message: str, offset: int | None = None, malformed: bool = True):
        line = line_at(self.path, self.dropped + self.pos if offset is None else offset)
        where = f"track {self.row} (line {line})" if self.row else f"line {line}"
        raise ManifestError(f"{self.path}: {where}: {'malformed JSON: ' if malformed else ''}{message}")

    def _fill(self) -> bool:
        chunk = self.f.read(_CHUNK)
        if not chunk:
            return False
        self.dropped += self.pos
        self.buffer = self.buffer[self.pos:] + chunk
        self.pos = 0
        return True

    def _skip_space(self) -> None:
        while True:
            self.pos = _SPACE.match(self.buffer, self.pos).end()
            if self.pos < len(self.buffer) or not self._fill():
                return

    def peek_is(self, char: str) -> bool:
        self._skip_space()
        return self.buffer.startswith(char, self.pos)

    def expect(self, char: str) -> None:
        if not self.peek_is(char):
            found = self.buffer[self.pos:self.pos + 10] or "end of file"
            self.fail(f"expected {char!r}, found {found!r}")
        self.pos += 1

    def expect_end(self) -> None:
        self._skip_space()
        if self.pos < len(self.buffer):
            self.fail("unexpected data after the end of the document")

    def value(self):
        self._skip_space()
        while True:
            try:
                value, end = self._decode_one()
            except json.JSONDecodeError as exc:
                # A value cut by the end of the buffer: read more and try again
                # (a single record is small; past _MAX_RECORD it is refused).
                if len(self.buffer) - self.pos < _MAX_RECORD and self._fill():
                    continue
                if len(self.buffer) - self.pos >= _MAX_RECORD:
                    self.fail(f"{_TOO_LONG} (or not closed)", malformed=False)
                self.fail(exc.msg, self.dropped + exc.pos)
            if end == len(self.buffer) and self._fill():
                continue  # a number may go on in the next chunk
            if end - self.pos > _MAX_RECORD:
                self.fail(_TOO_LONG, malformed=False)
            self.pos = end
            return value

    def _decode_one(self):
        try:
            try:
                return self.decode(self.buffer, self.pos)
            except json.JSONDecodeError:
                raise
            except ValueError:  # an integer of more than 4300 digits
                return _lenient_decode(self.buffer, self.pos)
        except RecursionError:
            self.fail("nested too deeply")

    def _separator(self) -> str:
        """Consume the ',' or ']' after an array element."""
        while True:
            match = _SEPARATOR.match(self.buffer, self.pos)
            if match:
                self.pos = match.end()
                return match.group(1)
            if self.buffer[self.pos:].strip() or not self._fill():
                self.fail(f"expected ',' or ']', found {self.buffer[self.pos:self.pos + 10]!r}")

    def array_items(self) -> Iterator[tuple[tuple[int, Path, int], object]]:
        """(index, path, offset) and value of each element; the fast path decodes in
        place and leaves every buffer edge to the careful path."""
        self.expect("[")
        if self.peek_is("]"):
            self.pos += 1
            return
        decode, space, separator = self.decode, _SPACE.match, _SEPARATOR.match
        index = 0
        while True:
            index += 1
            buffer = self.buffer
            start = space(buffer, self.pos).end()
            try:
                value, end = decode(buffer, start)
                match = separator(buffer, end)
            except (ValueError, RecursionError):  # the careful path below names the fault
                match = None
            if match and match.end() < len(buffer) and end - start <= _MAX_RECORD:
                self.pos, closer = match.end(), match.group(1)
            else:
                self.row = index
                self.pos = start
                start = self.dropped + self.pos
                value = self.value()
                closer = self._separator()
                start -= self.dropped
                self.row = None
            yield (index, self.path, self.dropped + start), value
            if closer == "]":
                return


def line_at(path: Path, offset: int) -> int:
    """The line number of a character offset in a text file (for error messages)."""
    lines = 1
    with open_manifest(path) as f:
        while offset > 0 and (chunk := f.read(min(offset, 1 << 20))):
            lines += chunk.count("\n")
            offset -= len(chunk)
    return lines


# --- rewriting a manifest: moves, healed files -----------------------------------------

def rewrite_manifest(path: Path, moves: dict[int, str]) -> None:
    """Write the manifest again with moved tracks' new paths (see :func:`update_rows`)."""
    update_rows(path, {trackid: {"path": new_path} for trackid, new_path in moves.items()})


def update_rows(path: Path, fields: dict[int, dict[str, object]]) -> None:
    """Write the manifest again, in its own format, with fields of tracks' rows set (a
    move's ``path``, healing's new ``size`` and ``sha256``); only fields a row (or the CSV
    header) already has. Atomically: the new text is read back with the manifest reader
    before it replaces the old file, so poold never leaves a manifest it could not read."""
    with open_manifest(path) as f:  # keep the line endings as they are
        text = f.read()
    rewrite = {"json": _rewrite_json, "jsonl": _rewrite_jsonl, "csv": _rewrite_csv}[FORMATS[path.suffix.lower()]]
    _replace_atomically(path, rewrite(text, fields))


def _row_id(row: dict) -> int | None:
    return _whole_number(row.get("trackid"))


def _patched(row: object, fields: dict[int, dict[str, object]]) -> bool:
    """Set the row's fields that ``fields`` names for its track; True when it is one of them."""
    if not isinstance(row, dict) or (wanted := fields.get(_row_id(row))) is None:
        return False
    row.update({key: value for key, value in wanted.items() if key in row})
    return True


def _rewrite_json(text: str, fields: dict[int, dict[str, object]]) -> str:
    document = json.loads(text)
    for row in document["tracks"]:
        _patched(row, fields)
    indent = 2 if "\n" in text.strip() else None
    return _dumps(document, indent) + "\n"


def _dumps(value: object, indent: int | None = None) -> str:
    """JSON text that is valid UTF-8: escaped ASCII when a field poold ignores holds a
    lone surrogate (which JSON's \\u escapes can carry and UTF-8 cannot)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, indent=indent)
    return text


def _rewrite_jsonl(text: str, fields: dict[int, dict[str, object]]) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        row = json.loads(line) if line.strip() else None
        if _patched(row, fields):
            line = _dumps(row) + "\n"
        lines.append(line)
    return "".join(lines)


def _rewrite_csv(text: str, fields: dict[int, dict[str, object]]) -> str:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=reader.fieldnames, lineterminator="\r\n" if "\r\n" in text else "\n")
    writer.writeheader()
    for row in reader:
        _patched(row, fields)
        writer.writerow(row)
    return out.getvalue()


def _replace_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.stem}.poold-tmp{path.suffix}")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        count_tracks(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


_READERS = {"json": _json_rows, "jsonl": _jsonl_rows, "csv": _csv_rows}
