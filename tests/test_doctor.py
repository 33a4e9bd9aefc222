"""``poold doctor``: one line per check, FAIL for what poold needs and lacks (exit 2),
warn for what limits it (exit 0); --online mints a token from the sandbox on 127.0.0.1."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import API_SECRET, write_manifest
from poold.cli import main
from poold.config import load
from poold.doctor import WARN, check_watch_limit

CHECKS = ["config", "library", "manifest", "state", "credentials", "watch"]


def doctor(capsys, config, *options):
    code = main(["doctor", "--config", str(config), *options])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    checks = {line[6:].split(":", 1)[0]: line for line in lines[:-1]}
    return code, checks, out + err


def level(line: str) -> str:
    return line.split()[0]


def test_a_working_config_passes_every_check_online(capsys, make_library, sandbox):
    library = make_library(["mp3", "flac", "m4a"], base_url=sandbox.base_url)
    code, checks, text = doctor(capsys, library.config_path, "--online")
    assert code == 0, text
    assert list(checks) == CHECKS
    assert all(level(line) == "ok" for line in checks.values()), text
    assert "3 tracks, 3 of them at their path" in checks["manifest"]
    assert f"{sandbox.base_url} issued a token for user" in checks["credentials"]
    assert sandbox.tokens_minted == 1 and sandbox.received == []
    assert text.endswith("poold has what it needs.\n")


def test_refused_credentials_fail_only_online(capsys, make_library, sandbox):
    library = make_library(["mp3"], base_url=sandbox.base_url)
    library.config_path.write_text(library.config_path.read_text().replace(API_SECRET, "wrong-secret-value"))
    code, checks, text = doctor(capsys, library.config_path)
    assert code == 0 and level(checks["credentials"]) == "ok" and "not tried" in checks["credentials"]
    assert sandbox.tokens_minted == 0
    code, checks, text = doctor(capsys, library.config_path, "--online")
    assert code == 2 and level(checks["credentials"]) == "FAIL"
    assert "refused the API key and secret" in checks["credentials"]
    assert "wrong-secret-value" not in text
    assert text.endswith("see FAIL above.\n")


def test_a_config_that_does_not_load_is_the_only_line(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[library\n")
    code, checks, text = doctor(capsys, bad)
    assert code == 2 and list(checks) == ["config"]
    assert level(checks["config"]) == "FAIL" and "not valid TOML" in checks["config"]


def test_a_manifest_that_does_not_load_fails(capsys, make_library):
    library = make_library(["mp3"])
    write_manifest(library.manifest, [{"trackid": 1, "path": "../outside.mp3"}])
    code, checks, _ = doctor(capsys, library.config_path)
    assert code == 2 and level(checks["manifest"]) == "FAIL" and "escapes the library root" in checks["manifest"]


def test_a_wrong_library_root_is_a_warning_about_the_guard(capsys, make_library):
    library = make_library(["mp3", "flac", "m4a"])
    (library.folder / "elsewhere").mkdir()
    library.config_path.write_text(library.config_path.read_text().replace('root = "library"', 'root = "elsewhere"'))
    code, checks, _ = doctor(capsys, library.config_path)
    assert code == 0 and level(checks["manifest"]) == WARN
    assert "0 of them at their path" in checks["manifest"] and "guard will hold every request" in checks["manifest"]


def test_state_dir_that_cannot_be_made_fails(capsys, make_library):
    library = make_library(["mp3"])
    (library.folder / "state").write_text("a file where the state folder should be")
    code, checks, _ = doctor(capsys, library.config_path)
    assert code == 2 and level(checks["state"]) == "FAIL" and "is not a folder" in checks["state"]
    library.config_path.write_text(library.config_path.read_text().replace('dir = "state"', 'dir = "state/below"'))
    code, checks, _ = doctor(capsys, library.config_path)
    assert code == 2 and level(checks["state"]) == "FAIL" and "cannot be created" in checks["state"]


def test_state_dir_is_written_to_or_will_be_created(capsys, make_library):
    library = make_library(["mp3"])
    code, checks, _ = doctor(capsys, library.config_path)
    assert code == 0 and "will be created on the first run" in checks["state"]
    assert not (library.folder / "state").exists(), "doctor creates nothing"
    (library.folder / "state").mkdir()
    code, checks, _ = doctor(capsys, library.config_path)
    assert "is writable" in checks["state"] and list((library.folder / "state").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any folder: permissions cannot fail")
def test_unlistable_library_and_unwritable_state_fail(capsys, make_library):
    library = make_library(["mp3"])
    (library.folder / "state").mkdir()
    library.root.chmod(0o300)
    (library.folder / "state").chmod(0o500)
    try:
        code, checks, _ = doctor(capsys, library.config_path)
    finally:
        library.root.chmod(0o700)
        (library.folder / "state").chmod(0o700)
    assert code == 2
    assert level(checks["library"]) == "FAIL" and "cannot be listed" in checks["library"]
    assert level(checks["state"]) == "FAIL" and "cannot write" in checks["state"]


def test_missing_credentials_warn_and_unreadable_ones_fail(capsys, make_library, monkeypatch):
    for name in ("POOLD_API_KEY", "POOLD_API_SECRET", "POOLD_TOKEN", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    library = make_library(["mp3"])
    code, checks, _ = doctor(capsys, library.config_path, "--online")
    assert code == 0 and level(checks["credentials"]) == WARN and "can audit, not file" in checks["credentials"]
    library.config_path.write_text(library.config_path.read_text()
                                   + '[pool]\nuserid = 5\napi_key_file = "gone"\napi_secret_file = "gone"\n')
    code, checks, _ = doctor(capsys, library.config_path)
    assert code == 2 and level(checks["credentials"]) == "FAIL"
    assert "[pool] api_key_file: cannot read" in checks["credentials"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inotify watch limit is Linux's")
def test_watch_limit_warns_near_the_limit_with_the_command_to_raise_it(make_library, tmp_path):
    library = make_library(["mp3", "flac", "m4a"])  # the root and three crate folders
    for number in range(6):
        (library.root / f"extra{number}" / "deeper").mkdir(parents=True)
    config = load(library.config_path)
    limit_file = tmp_path / "max_user_watches"
    limit_file.write_text("1000\n")
    roomy = check_watch_limit(config, limit_file)
    assert roomy.level == "ok" and roomy.text.startswith("16 folders to watch; the inotify limit is 1,000")
    limit_file.write_text("17\n")
    tight = check_watch_limit(config, limit_file)
    assert tight.level == WARN and "16 folders" in tight.text
    assert "sudo sysctl fs.inotify.max_user_watches=524288" in tight.text and "/etc/sysctl.d/" in tight.text
    library.config_path.write_text(library.config_path.read_text() + '[watch]\nmode = "poll"\n')
    polled = load(library.config_path)
    polling = check_watch_limit(polled, limit_file)
    assert polling.level == "ok" and "polls" in polling.text
