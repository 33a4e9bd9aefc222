"""sd_notify over real unix datagram sockets (path and abstract), and the journald log format."""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest

from poold.notify import (JournalFormatter, Notifier, configure_service_logging, one_line, priority,
                          service_formatter, socket_address, stderr_is_journal, watchdog_interval)


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock, str(tmp_path / "notify")
    sock.close()


def test_addresses():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@/org/freedesktop/systemd1/notify") == b"\0/org/freedesktop/systemd1/notify"
    assert socket_address(None) is None and socket_address("") is None
    assert socket_address("vsock:2:1234") is None and socket_address("relative/path") is None


def test_messages_arrive_as_one_datagram_of_assignments(listener):
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("watching /music")
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching /music"
    notifier.status("two\nlines")
    assert sock.recv(4096) == b"STATUS=two lines"
    notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.reloading()
    reloading, monotonic = sock.recv(4096).decode().split("\n")
    assert reloading == "RELOADING=1" and monotonic.startswith("MONOTONIC_USEC=") and int(monotonic[15:]) > 0
    notifier.close()


def test_abstract_namespace_socket():
    name = f"poold-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_without_systemd_nothing_is_sent_and_nothing_fails(tmp_path):
    assert not Notifier({}).enabled
    assert Notifier({}).ready("x") is False
    nobody = Notifier({"NOTIFY_SOCKET": str(tmp_path / "no-such-socket")})
    assert nobody.enabled and nobody.status("x") is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_status_values_are_one_line():
    assert one_line("  a\n b\tc  ") == "a b c"


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("poold", level, __file__, 1, message, None, None)


def test_journal_lines_carry_syslog_priorities_and_no_timestamp():
    formatter = JournalFormatter("%(message)s")
    assert formatter.format(record(logging.ERROR, "library gone")) == "<3>library gone"
    assert formatter.format(record(logging.WARNING, "retrying")) == "<4>retrying"
    assert formatter.format(record(logging.INFO, "a\nb")) == "<6>a\n<6>b"
    assert [priority(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                                          logging.CRITICAL)] == [7, 6, 4, 3, 2]


def test_without_the_journal_lines_are_timestamped():
    text = service_formatter(False).format(record(logging.INFO, "hello"))
    assert text[:4].isdigit() and text.endswith("INFO: hello")


def test_journal_stream_must_name_stderr_itself(tmp_path):
    with open(tmp_path / "err", "w") as stream, open(tmp_path / "other", "w") as other:
        mine, theirs = os.fstat(stream.fileno()), os.fstat(other.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{mine.st_dev}:{mine.st_ino}"}, stream)
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{theirs.st_dev}:{theirs.st_ino}"}, stream)
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stream)
        assert not stderr_is_journal({}, stream)


def test_service_logging_switches_the_cli_handlers_and_logs_info():
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = logging.StreamHandler()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    try:
        configure_service_logging(journal=True)
        assert isinstance(handler.formatter, JournalFormatter) and root.level == logging.INFO
        root.setLevel(logging.DEBUG)
        configure_service_logging(journal=False)
        assert root.level == logging.DEBUG and not isinstance(handler.formatter, JournalFormatter)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
