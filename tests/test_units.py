"""The service definitions: systemd units (key settings, and ``systemd-analyze verify`` where
it is installed, as in CI) and the launchd agent (parsed with plistlib)."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"
PLIST = REPO / "launchd" / "com.promoonly.poold.plist"
USER_UNITS = ("poold.service", "poold-audit.service", "poold-audit.timer")
SYSTEM_UNITS = ("poold@.service",)
POOLD_PATHS = ("%h/.local/bin/poold", "/usr/local/bin/poold")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value given (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key.strip()].append(value.strip())
    return sections


def one(unit: dict, section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"[{section}] {key}: {values}"
    return values[0]


@pytest.mark.parametrize("name", ["poold.service", "poold@.service"])
def test_service_is_a_notify_daemon_with_watchdog_reload_and_restart(name):
    service = parse_unit(SYSTEMD / name)["Service"]
    unit = {"Service": service}
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecStart").split()[:2][-1] == "run"
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartPreventExitStatus") == "2"
    assert int(one(unit, "Service", "WatchdogSec")) >= 60
    assert int(one(unit, "Service", "TimeoutStopSec")) > 5, "poold needs up to 5 s to stop"


@pytest.mark.parametrize("name", ["poold.service", "poold@.service", "poold-audit.service"])
def test_hardening_leaves_only_the_state_directory_writable(name):
    unit = parse_unit(SYSTEMD / name)
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "PrivateTmp") == "yes"
    assert one(unit, "Service", "StateDirectory").startswith("poold")
    assert one(unit, "Service", "UMask") == "0077"
    families = set(one(unit, "Service", "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}, "AF_UNIX carries sd_notify and the journal"
    assert "ReadWritePaths" not in unit["Service"]


def test_system_template_runs_as_the_instance_user_with_credentials():
    unit = parse_unit(SYSTEMD / "poold@.service")
    assert one(unit, "Service", "User") == "%i"
    assert "--config /etc/poold/%i/config.toml" in one(unit, "Service", "ExecStart")
    assert one(unit, "Service", "ProtectHome") == "read-only", "libraries often live in /home"
    assert sorted(unit["Service"]["LoadCredential"]) == ["api_key:/etc/poold/%i/api_key",
                                                         "api_secret:/etc/poold/%i/api_secret"]
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(unit, "Unit", "After")


def test_user_units_install_into_the_user_session():
    assert one(parse_unit(SYSTEMD / "poold.service"), "Install", "WantedBy") == "default.target"
    assert one(parse_unit(SYSTEMD / "poold-audit.timer"), "Install", "WantedBy") == "timers.target"


def test_audit_unit_is_a_oneshot_request_run_on_a_timer():
    service, timer = parse_unit(SYSTEMD / "poold-audit.service"), parse_unit(SYSTEMD / "poold-audit.timer")
    assert one(service, "Service", "Type") == "oneshot"
    assert one(service, "Service", "ExecStart").endswith("poold audit --request")
    assert one(service, "Service", "SuccessExitStatus") == "1", "problems found is not a failure"
    assert "Install" not in service, "started by the timer only"
    assert one(timer, "Timer", "OnCalendar") == "daily"
    assert one(timer, "Timer", "Persistent") == "true"


def exit_statuses(unit: dict, key: str) -> set[int]:
    return {int(value) for values in unit["Service"].get(key, []) for value in values.split()}


@pytest.mark.parametrize("name", ["poold.service", "poold@.service", "poold-audit.service"])
def test_exit_statuses_match_poold_s_codes(name):
    """Only "problems found" counts as success; a bad config is not restarted in a loop; an
    internal error is a failure everywhere (and restarted, within the start limit)."""
    from poold.cli import EXIT_ERROR, EXIT_INTERNAL, EXIT_PROBLEMS

    unit = parse_unit(SYSTEMD / name)
    success = exit_statuses(unit, "SuccessExitStatus")
    assert EXIT_INTERNAL not in success and EXIT_ERROR not in success
    if name == "poold-audit.service":
        assert success == {EXIT_PROBLEMS}
    else:
        assert success == set(), "the service never exits 1 on purpose"
        assert exit_statuses(unit, "RestartPreventExitStatus") == {EXIT_ERROR}
        assert one(unit, "Service", "Restart") == "on-failure"
        assert int(one(unit, "Unit", "StartLimitBurst")) <= 10


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (CI runs it)")
def test_systemd_names_the_internal_error_code():
    from poold.cli import EXIT_INTERNAL

    result = subprocess.run(["systemd-analyze", "exit-status", str(EXIT_INTERNAL)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and "SOFTWARE" in result.stdout, result.stdout + result.stderr


def test_launch_agent():
    with open(PLIST, "rb") as f:
        agent = plistlib.load(f)
    assert agent["Label"] == "com.promoonly.poold" == PLIST.stem
    assert agent["ProgramArguments"][0].endswith("/poold") and agent["ProgramArguments"][1:] == ["run"]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ExitTimeOut"] > 5
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert agent[key].startswith("/Users/") and agent[key].endswith(".log")


# --- systemd-analyze verify -------------------------------------------------------------


def verifiable_copy(names: tuple[str, ...], folder: Path) -> None:
    """The units with ExecStart pointing at an executable that exists here (verify checks it)."""
    executable = shutil.which("poold") or str(Path(sys.executable).with_name("poold"))
    for name in names:
        text = (SYSTEMD / name).read_text()
        for path in POOLD_PATHS:
            text = text.replace(path, executable)
        (folder / name).write_text(text)


def run_verify(arguments: list[str], folder: Path, env: dict[str, str]) -> list[str]:
    """Run verify; return every complaint about our units (host units may have their own)."""
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *arguments], capture_output=True, text=True,
                            env=env, timeout=60)
    output = (result.stdout + result.stderr).splitlines()
    ours = [line for line in output if str(folder) in line or "poold" in line]
    assert result.returncode == 0, "\n".join(output)
    return ours


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (CI runs it)")
@pytest.mark.timeout(120)
def test_systemd_analyze_verify(tmp_path):
    system, user, runtime = tmp_path / "system", tmp_path / "user", tmp_path / "runtime"
    for folder in (system, user, runtime):
        folder.mkdir(mode=0o700)
    verifiable_copy(SYSTEM_UNITS, system)
    verifiable_copy(USER_UNITS, user)
    env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR") or str(runtime)}
    complaints = run_verify([str(system / "poold@dj.service")], system, env)
    complaints += run_verify(["--user", *(str(user / name) for name in USER_UNITS)], user, env)
    assert complaints == []
