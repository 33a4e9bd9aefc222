"""An unexpected error (a bug) exits 70, never 1 ("problems found") or 0: one line on
stderr, the traceback in a crash report in the state dir, secrets redacted."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from conftest import API_SECRET
from poold import app, cli
from poold.redact import register_secret


def boom(*_args, **_kwargs):
    raise RuntimeError(f"something impossible happened near {API_SECRET}\nsecond line")


def test_internal_error_exits_70_with_one_line_and_a_crash_report(capsys, make_library, monkeypatch):
    library = make_library(["mp3"])
    register_secret(API_SECRET)
    monkeypatch.setattr(app, "run_audit", boom)
    code = cli.main(["audit", "--config", str(library.config_path)])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_INTERNAL == 70
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("poold: internal error: RuntimeError: something impossible happened near ***; "
                          "the details are in ")
    reports = list((library.folder / "state").glob("crash-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in err
    details = reports[0].read_text()
    assert "Traceback" in details and "in boom" in details and "second line" in details
    assert API_SECRET not in details
    assert stat.S_IMODE(reports[0].stat().st_mode) == 0o600


def test_crash_report_goes_to_the_default_state_dir_without_a_config(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(app, "checker_for", boom)
    (tmp_path / "a.mp3").write_bytes(b"x")
    code = cli.main(["check", "--config", str(tmp_path / "none.toml"), str(tmp_path / "a.mp3")])
    err = capsys.readouterr().err
    assert code == 70
    reports = list((tmp_path / "xdg-state" / "poold").glob("crash-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in err


def test_unwritable_state_dir_still_gives_one_line(capsys, tmp_path, monkeypatch):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(app, "checker_for", boom)
    code = cli.main(["check", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 70 and err.count("\n") == 1
    assert "run again with -vv to see the details" in err


def test_vv_shows_the_traceback(capsys, make_library, monkeypatch):
    library = make_library(["mp3"])
    monkeypatch.setattr(app, "run_audit", boom)
    assert cli.main(["audit", "-vv", "--config", str(library.config_path)]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_only_the_newest_crash_reports_are_kept(tmp_path):
    from poold import crash

    for number in range(crash.KEEP + 3):
        old = tmp_path / f"crash-old-{number}.txt"
        old.write_text("old")
        os.utime(old, (1_000_000 + number, 1_000_000 + number))
    assert crash.write("new details", tmp_path) is not None
    kept = list(tmp_path.glob("crash-*.txt"))
    assert len(kept) == crash.KEEP and any(p.read_text() == "new details" for p in kept)


@pytest.mark.timeout(60)
def test_exit_codes_of_a_real_process(make_library, tmp_path):
    """0, 1 and 2 as a service manager sees them (70 is covered in process above)."""
    library = make_library(["mp3", "flac"], extra="[guard]\nmax_missing_fraction = 1.0\n")

    def poold(*argv):
        return subprocess.run([sys.executable, "-m", "poold", *argv], capture_output=True, text=True,
                              timeout=50).returncode

    assert poold("audit", "--config", str(library.config_path)) == 0
    library.paths[1001].unlink()
    assert poold("audit", "--config", str(library.config_path)) == 1
    assert poold("audit", "--config", str(tmp_path / "missing.toml")) == 2
