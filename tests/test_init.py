"""``poold init`` as a user meets it: in a script (no terminal) and in a terminal (a real
pseudo-terminal), then ``poold doctor`` on what it wrote."""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import sys
import time

import pytest

from conftest import API_KEY, API_SECRET, USERID
from poold.config import load


def poold(*argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "poold", *map(str, argv)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=50, **kwargs)


@pytest.fixture
def library(make_library):
    return make_library(["mp3", "flac"])


@pytest.mark.timeout(120)
def test_init_without_a_terminal_leaves_placeholders_and_says_so(library, tmp_path):
    config = tmp_path / "new" / "poold" / "config.toml"
    result = poold("init", library.root, library.manifest, "--config", config)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    text = config.read_text()
    assert "# userid = " in text and '# api_key_file = "api_key"' in text
    loaded = load(config)
    assert loaded.library.root == library.root and loaded.library.manifest == library.manifest
    assert loaded.pool.userid is None and loaded.pool.api_key is None
    assert "No terminal to ask on" in result.stdout and "commented out" in result.stdout
    assert f"poold doctor --config {config}" in result.stdout
    assert f"poold audit --config {config}" in result.stdout
    assert not (config.parent / "api_key").exists()
    doctor = poold("doctor", "--config", config)
    assert doctor.returncode == 0, doctor.stdout
    assert "warn  credentials:" in doctor.stdout and "FAIL" not in doctor.stdout


@pytest.mark.timeout(120)
def test_init_refuses_to_overwrite_unless_forced(library, tmp_path):
    config = tmp_path / "config2.toml"
    config.write_text("# mine\n")
    config.chmod(0o644)
    result = poold("init", library.root, library.manifest, "--config", config)
    assert result.returncode == 2 and "exists already" in result.stderr and "--force" in result.stderr
    assert config.read_text() == "# mine\n"
    result = poold("init", library.root, library.manifest, "--config", config, "--force")
    assert result.returncode == 0, result.stderr
    assert "[library]" in config.read_text() and stat.S_IMODE(config.stat().st_mode) == 0o600


@pytest.mark.timeout(120)
def test_init_notes_a_library_that_is_not_there(tmp_path):
    config = tmp_path / "c.toml"
    result = poold("init", tmp_path / "nowhere", tmp_path / "nowhere" / "m.json", "--config", config)
    assert result.returncode == 0
    assert "the library folder" in result.stdout and "does not exist" in result.stdout
    doctor = poold("doctor", "--config", config)
    assert doctor.returncode == 2
    assert "FAIL  library:" in doctor.stdout and "does not exist" in doctor.stdout


class Terminal:
    """poold in a pseudo-terminal: what it prints, and answers typed after a prompt."""

    def __init__(self, argv: list[str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: poold with the terminal as stdin, stdout and /dev/tty
            try:
                os.execv(sys.executable, [sys.executable, "-m", "poold", *argv])
            finally:
                os._exit(127)
        self.seen = b""

    def expect(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen!r}"
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"poold ended before {text!r}: {self.seen!r}")

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def finish(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.seen += chunk
        return bool(chunk)


@pytest.mark.timeout(120)
def test_init_in_a_terminal_asks_and_never_echoes_the_secrets(library, tmp_path, sandbox):
    config = tmp_path / "tty" / "config.toml"
    terminal = Terminal(["init", str(library.root), str(library.manifest), "--config", str(config)])
    terminal.expect("POOL User ID: ")
    terminal.type("12a")
    terminal.expect("is not a User ID")
    terminal.expect("POOL User ID: ")  # asked again
    terminal.type(str(USERID))
    terminal.expect("POOL API key (not shown): ")
    terminal.type(API_KEY)
    terminal.expect("POOL API secret (not shown): ")
    terminal.type(API_SECRET)
    assert terminal.finish() == 0, terminal.seen
    shown = terminal.seen.decode()
    assert API_KEY not in shown and API_SECRET not in shown
    assert "poold doctor --config" in shown
    for name, value in (("api_key", API_KEY), ("api_secret", API_SECRET)):
        path = config.parent / name
        assert path.read_text() == value + "\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    text = config.read_text()
    assert API_KEY not in text and API_SECRET not in text
    assert f"\nuserid = {USERID}\n" in text and '\napi_key_file = "api_key"\n' in text
    assert load(config).pool.api_secret.reveal() == API_SECRET

    # doctor --online mints a token with what init stored, against the sandbox on 127.0.0.1
    config.write_text(text.replace('# base_url = "https://api.promoonly.com"', f'base_url = "{sandbox.base_url}"'))
    doctor = poold("doctor", "--online", "--config", config)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"ok    credentials: {sandbox.base_url} issued a token for user {USERID}" in doctor.stdout
    assert sandbox.tokens_minted == 1 and sandbox.received == [], "doctor mints a token and files nothing"
