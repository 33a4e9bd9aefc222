"""Shared pieces of the format checkers: verdicts, the damage signal, bounded file reads.

Every format module judges a file from its structure (what the format's specification
says must be there) and reads only what it needs, usually the head and the tail.
A checker signals evidence of damage by raising :class:`Damage`, and a file it will
not judge by raising :class:`BeyondLimits`; anything else that goes wrong inside a
checker is poold's problem, not the file's, and becomes an ``unchecked`` verdict in
the dispatcher.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

OK = "ok"
CORRUPT = "corrupt"
UNCHECKED = "unchecked"

# The largest single read a checker may ask for. Size fields come from the file and
# may be absurd (a 13-byte file claiming a 4 GiB tag); reads are clamped to this and
# to the file size, so memory stays bounded whatever the file says.
MAX_READ = 16 * 1024 * 1024
WINDOW = 64 * 1024


@dataclass(frozen=True)
class Verdict:
    """What poold concluded about one file.

    ``status`` is ``ok``, ``corrupt`` or ``unchecked``; ``reason`` is a short code
    (documented in the README); ``detail`` one line for a human. ``duration`` is the
    stream length in seconds when the checker could establish it. ``identity`` is the
    audio payload's sampled identity (:mod:`.identity`), when it was taken.
    """

    status: str
    reason: str
    detail: str
    format: str | None = None
    duration: float | None = None
    identity: str | None = None


class Damage(Exception):
    """Raised by a format checker when the file's structure proves it is damaged."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class BeyondLimits(Exception):
    """Raised by a checker for a file beyond what the quick check reads (an index too
    large, too many boxes or chunks): not evidence of damage, so ``unchecked``."""


def ok(fmt: str, detail: str = "structure complete", duration: float | None = None) -> Verdict:
    return Verdict(OK, "ok", detail, fmt, duration)


class NotAFile(OSError):
    """The path names a folder, named pipe, socket or device: nothing poold reads."""

    def __init__(self, path: str | os.PathLike, mode: int):
        self.kind = describe_kind(mode)
        super().__init__(f"{os.fspath(path)} is {self.kind}, not a regular file")


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))


def describe_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike):
    """Open ``path`` for binary reading only if it is a regular file; raise NotAFile if not.

    Opening a named pipe waits for a writer, forever; opening a device can act on it
    (a tape rewinds). So the path is looked at first, opened without blocking, and the
    file actually opened is looked at again, in case the path was swapped in between.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotAFile(path, mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotAFile(path, mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# errno values that mean the medium failed to give the bytes back: the file (or the
# drive) is damaged. EBADMSG and EUCLEAN are what ext4, XFS and btrfs return for
# checksum failures and corrupted metadata (EFSBADCRC, EFSCORRUPTED).
DISK_ERRORS = frozenset({errno.EIO, errno.EBADMSG, getattr(errno, "EUCLEAN", errno.EIO)})
PERMISSION_ERRORS = frozenset({errno.EACCES, errno.EPERM})


def unreadable(exc: OSError) -> Verdict:
    """The verdict for a file that could not be read. Only the disk failing to give the
    bytes back is damage; no permission, a name too long, a link loop, the file
    vanishing meanwhile say nothing about the file, and a redownload would not help."""
    if isinstance(exc, NotAFile):
        return Verdict(UNCHECKED, "not_a_file", f"{exc.kind}, not a regular file: poold does not read it")
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in DISK_ERRORS:
        return Verdict(CORRUPT, "unreadable", f"reading it failed: {reason}")
    if exc.errno in PERMISSION_ERRORS:
        return Verdict(UNCHECKED, "unreadable", f"no permission to read it ({reason})")
    return Verdict(UNCHECKED, "unreadable", f"cannot read it ({reason})")


class Source:
    """Bounded random access to one open file.

    ``head`` and ``tail`` are cached windows of up to :data:`WINDOW` bytes; ``read``
    clamps every request to the file and to :data:`MAX_READ`. Only a regular file is
    opened (:func:`open_regular`).
    """

    def __init__(self, path: str | os.PathLike, fileobj=None):
        self.path = os.fspath(path)
        self._file = fileobj if fileobj is not None else open_regular(self.path)
        self.size = os.fstat(self._file.fileno()).st_size
        self._head: bytes | None = None
        self._tail: bytes | None = None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer at the end of the file."""
        if offset < 0 or offset >= self.size or length <= 0:
            return b""
        length = min(length, self.size - offset, MAX_READ)
        self._file.seek(offset)
        return self._file.read(length)

    @property
    def head(self) -> bytes:
        if self._head is None:
            self._head = self.read(0, WINDOW)
        return self._head

    @property
    def tail(self) -> bytes:
        """The last up to WINDOW bytes; ``tail_offset`` is where they start."""
        if self._tail is None:
            self._tail = self.read(self.tail_offset, WINDOW)
        return self._tail

    @property
    def tail_offset(self) -> int:
        return max(0, self.size - WINDOW)

    def fileno(self) -> int:
        return self._file.fileno()

    def fileobj(self) -> "BoundedReader":
        """The file, rewound, for parsers such as mutagen that read it themselves: its
        reads are clamped to what is left of the file, since a size field that lies
        would otherwise have Python allocate the whole declared size for one read."""
        self._file.seek(0)
        return BoundedReader(self._file, self.size)


class BoundedReader:
    """A read-only view of an open file whose ``read(n)`` never asks for more than is left."""

    def __init__(self, file, size: int):
        self._file, self._size = file, size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._file.tell())
        return self._file.read(left if n is None or n < 0 else min(n, left))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


def is_zero(data: bytes) -> bool:
    return not data.strip(b"\0")


def zero_run_at_end(data: bytes) -> int:
    """How many zero bytes ``data`` ends with."""
    return len(data) - len(data.rstrip(b"\0"))
