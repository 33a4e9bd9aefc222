"""Talking to systemd without libsystemd: sd_notify messages and journald-friendly logs.

sd_notify is one datagram of ``KEY=value`` lines sent to the unix socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace). Without that
variable (not started by systemd as ``Type=notify``) every call is a no-op, so the
daemon can call these unconditionally.

When stderr is the journal (``$JOURNAL_STREAM`` names stderr's device and inode),
log lines carry a ``<N>`` syslog priority prefix and no timestamp: journald adds
its own and files each line under that priority.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time

log = logging.getLogger(__name__)

# logging level -> syslog priority, as journald reads it from a "<N>" prefix
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7


def socket_address(value: str | None) -> str | bytes | None:
    """The address to send to for a ``$NOTIFY_SOCKET`` value; None if it is unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:...", which needs a socket family poold does not use


def watchdog_interval(environ=os.environ, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, or None when off.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; any
    other process (a child that inherited the environment) must not ping.
    """
    pid = os.getpid() if pid is None else pid
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid.strip() != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


def one_line(text: str) -> str:
    """A value fit for one ``KEY=value`` line."""
    return " ".join(text.split())


class Notifier:
    """Sends sd_notify messages; every method is a no-op outside systemd."""

    def __init__(self, environ=os.environ):
        self.address = socket_address(environ.get("NOTIFY_SOCKET"))
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; False if it could not be sent."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(assignments).encode(), self.address)
            return True
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={one_line(text)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """RELOADING=1 with the monotonic timestamp systemd 253+ requires for notify-reload."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


# --- logging ------------------------------------------------------------------------

def stderr_is_journal(environ=os.environ, stream=None) -> bool:
    """True when ``$JOURNAL_STREAM`` ("device:inode") is the file stderr writes to."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def priority(levelno: int) -> int:
    for level, value in PRIORITIES:
        if levelno >= level:
            return value
    return DEBUG_PRIORITY


class JournalFormatter(logging.Formatter):
    """``<N>message``, every line prefixed, so a traceback stays at its record's priority."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def service_formatter(journal: bool) -> logging.Formatter:
    """The daemon's log format: bare lines for journald, timestamped lines for a log file."""
    if journal:
        return JournalFormatter("%(message)s")
    return logging.Formatter("%(asctime)s poold[%(process)d]: %(levelname)s: %(message)s")


def configure_service_logging(journal: bool | None = None) -> None:
    """Switch the handlers set up by the CLI to the service format, logging at INFO or more.

    A service's log is its only record, so the CLI's quiet default (warnings only)
    is raised to INFO; ``-vv`` (DEBUG) is kept.
    """
    journal = stderr_is_journal() if journal is None else journal
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(service_formatter(journal))
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
