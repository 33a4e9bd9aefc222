"""The command line as a user meets it: exit codes, output shapes, requests on the wire."""

import json
import subprocess
import sys

import pytest

import media
from conftest import API_KEY, API_SECRET, USERID, write_manifest
from poold.cli import main

NO_GUARD = "[guard]\nmax_missing_fraction = 1.0\n"  # tiny test libraries: one missing track is not an unplugged drive
HTML = b"<!DOCTYPE html><html><body>404 Not Found</body></html>"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_library_exits_0(capsys, make_library):
    library = make_library(["mp3", "m4a", "flac", "ogg", "wav", "mp4"])
    code, out, err = run(capsys, "audit", "--config", str(library.config_path))
    assert code == 0, out + err
    assert "Checked 6 tracks: 6 ok, 0 missing, 0 corrupt" in out


def test_problems_exit_1_with_json_document(capsys, make_library):
    library = make_library(["mp3", "m4a", "flac", "mp3"])
    library.paths[1001].unlink()
    library.paths[1002].write_bytes(HTML)
    media.truncate(str(library.paths[1004]), 0.5)
    code, out, err = run(capsys, "audit", "--json", "--config", str(library.config_path))
    assert code == 1
    document = json.loads(out)  # exactly one JSON document
    assert document["checked"] == 4 and document["ok"] == 1
    assert document["library"] == str(library.root) and document["manifest"] == str(library.manifest)
    problems = {p["trackid"]: p for p in document["problems"]}
    assert set(problems) == {1001, 1002, 1004}
    assert problems[1001]["status"] == "missing" and problems[1001]["reason"] == "missing"
    assert problems[1002]["status"] == "corrupt" and problems[1002]["reason"] == "not_audio"
    assert problems[1004]["status"] == "corrupt" and problems[1004]["reason"] == "truncated"
    for problem in document["problems"]:
        assert set(problem) == {"trackid", "path", "status", "reason", "detail"}
        assert isinstance(problem["trackid"], int) and problem["detail"]
    assert document["requests"] == []


def test_table_output_lists_problems(capsys, make_library):
    library = make_library(["mp3", "flac"])
    library.paths[1002].write_bytes(b"")
    code, out, _ = run(capsys, "audit", "--config", str(library.config_path))
    assert code == 1
    assert "1 corrupt" in out
    assert "1002" in out and "empty" in out and "crate" in out


def test_request_files_grouped_requests_on_the_wire(capsys, make_library, sandbox):
    library = make_library(["mp3", "mp3", "m4a"] + ["mp3"] * 8, base_url=sandbox.base_url, extra=NO_GUARD)
    library.paths[1001].unlink()
    library.paths[1002].unlink()
    library.paths[1003].write_bytes(HTML)
    code, out, err = run(capsys, "audit", "--request", "--json", "--config", str(library.config_path))
    assert code == 1, err
    document = json.loads(out)
    assert [r["state"] for r in document["requests"]] == ["accepted", "accepted"]
    posts = [r for r in sandbox.received if r.path.startswith("/download/")]
    assert len(posts) == 2
    forms = {p.form["trackid_list"]: p.form["reason"] for p in posts}
    assert set(forms) == {"1001,1002", "1003"}
    assert "2 files missing from the library" in forms["1001,1002"]
    assert "1 file not media" in forms["1003"]
    for post in posts:
        assert post.method == "POST"
        assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert post.headers["Authorization"].startswith("Bearer ")
        assert "?" not in post.path
    assert sandbox.requeued == {1001: 1, 1002: 1, 1003: 1}
    # A second audit files nothing new: the tracks have requests already.
    code, out, _ = run(capsys, "audit", "--request", "--json", "--config", str(library.config_path))
    assert json.loads(out)["requests"] == [] and sandbox.requeued == {1001: 1, 1002: 1, 1003: 1}


def test_dry_run_sends_nothing(capsys, make_library, sandbox):
    library = make_library(["mp3"], base_url=sandbox.base_url, extra="[requests]\ndry_run = true\n" + NO_GUARD)
    library.paths[1001].unlink()
    code, out, _ = run(capsys, "audit", "--request", "--json", "--config", str(library.config_path))
    assert code == 1
    assert json.loads(out)["requests"] == [
        {"cause": "missing", "reason": json.loads(out)["requests"][0]["reason"], "trackids": [1001], "state": "dry_run"}]
    assert sandbox.received == []


def test_request_without_pool_config_is_a_setup_error(capsys, make_library):
    library = make_library(["mp3"])
    code, _, err = run(capsys, "audit", "--request", "--config", str(library.config_path))
    assert code == 2
    assert "[pool] userid" in err and "Traceback" not in err


def test_bad_manifest_exits_2_and_requests_nothing(capsys, make_library, sandbox):
    library = make_library(["mp3", "flac"], base_url=sandbox.base_url)
    library.paths[1001].unlink()
    write_manifest(library.manifest, [{"trackid": 1001, "path": "crate2/track1001.mp3"},
                                      {"trackid": 1002, "path": "../escape.flac"}])
    code, out, err = run(capsys, "audit", "--request", "--config", str(library.config_path))
    assert code == 2
    assert "track 2" in err and "escapes the library root" in err
    assert sandbox.received == [] and out == ""


def test_vanished_library_exits_2_and_requests_nothing(capsys, make_library, sandbox):
    library = make_library(["mp3"], base_url=sandbox.base_url)
    library.root.rename(library.folder / "unplugged")
    code, _, err = run(capsys, "audit", "--request", "--config", str(library.config_path))
    assert code == 2 and "does not exist" in err
    assert sandbox.received == []


def test_mostly_missing_library_trips_the_guard(capsys, make_library, sandbox):
    library = make_library(["mp3", "mp3", "flac", "m4a", "mp3"], base_url=sandbox.base_url)
    for trackid in (1001, 1002):
        library.paths[trackid].unlink()
    code, out, _ = run(capsys, "audit", "--request", "--json", "--config", str(library.config_path))
    document = json.loads(out)
    assert code == 1 and "the library looks partly unavailable" in document["guard"]
    assert sandbox.received == []


@pytest.mark.parametrize("argv", [["audit"], ["status"], ["requests"]])
def test_config_errors_exit_2_without_traceback(capsys, tmp_path, argv):
    bad = tmp_path / "bad.toml"
    bad.write_text('[library]\nroot = "x"\nmanifest = "m.json"\nfoo = 1\n')
    code, _, err = run(capsys, *argv, "--config", str(bad))
    assert code == 2
    assert f"{bad}:4: [library] foo: unknown key" in err and "Traceback" not in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--no-such-flag"])
    assert exit_info.value.code == 2


def test_check_json_lines(capsys, tmp_path, encoded):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "good.mp3").write_bytes(encoded("mp3").read_bytes())
    (folder / "page.mp3").write_bytes(HTML)
    (folder / "notes.txt").write_text("hello")
    code, out, _ = run(capsys, "check", "--json", str(folder))
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    by_name = {line["path"].rsplit("/", 1)[1]: line for line in lines}
    assert by_name["good.mp3"]["status"] == "ok"
    assert by_name["page.mp3"]["status"] == "corrupt" and by_name["page.mp3"]["reason"] == "not_audio"
    assert by_name["notes.txt"]["status"] == "unchecked"
    for line in lines:
        assert set(line) == {"path", "status", "reason", "detail"}


def test_status_and_requests_commands(capsys, make_library, sandbox):
    library = make_library(["mp3", "flac"], base_url=sandbox.base_url, extra=NO_GUARD)
    library.paths[1001].unlink()
    run(capsys, "audit", "--request", "--config", str(library.config_path))
    code, out, _ = run(capsys, "requests", "--json", "--config", str(library.config_path))
    history = json.loads(out)
    assert code == 0 and len(history) == 1
    assert history[0]["trackids"] == [1001] and history[0]["state"] == "accepted" and history[0]["attempts"] == 1
    code, out, _ = run(capsys, "status", "--json", "--config", str(library.config_path))
    summary = json.loads(out)
    assert [i["trackid"] for i in summary["open_incidents"]] == [1001]
    assert "already" in summary["open_incidents"][0]["waiting"] or "requested" in summary["open_incidents"][0]["waiting"]
    assert summary["quota"]["used_last_24h"] == 1 and summary["last_audit"]["problems"] == 1
    code, out, _ = run(capsys, "status", "--config", str(library.config_path))
    assert "Open problems: 1" in out


def test_module_entry_point_and_demo():
    """`python -m poold demo` runs the whole loop on its own sample data and says so."""
    result = subprocess.run([sys.executable, "-m", "poold", "demo"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every damaged track was found and requeued, no others" in result.stdout
    assert "POST /download/redownload_request" in result.stdout
    for secret in ("demo-api-secret", "demo-api-key"):
        assert secret not in result.stdout + result.stderr


def test_secrets_from_environment_reach_the_server(capsys, make_library, sandbox, monkeypatch):
    library = make_library(["mp3"], base_url=None, extra=NO_GUARD)
    library.config_path.write_text(library.config_path.read_text() + f'[pool]\nbase_url = "{sandbox.base_url}"\nuserid = {USERID}\n')
    monkeypatch.setenv("POOLD_API_KEY", API_KEY)
    monkeypatch.setenv("POOLD_API_SECRET", API_SECRET)
    library.paths[1001].unlink()
    code, _, err = run(capsys, "audit", "--request", "--config", str(library.config_path))
    assert code == 1 and sandbox.requeued == {1001: 1}, err


def test_progress_line_appears_after_two_seconds_with_total_rate_and_eta(capsys, tmp_path):
    from poold.report import Progress
    from poold.scan import Finding

    manifest = tmp_path / "m.csv"
    write_manifest(manifest, [{"trackid": n, "path": f"{n}.mp3"} for n in range(1, 101)])
    now = [0.0]
    progress = Progress(manifest, clock=lambda: now[0])
    ok = Finding(1, "1.mp3", "ok", "ok", "")
    bad = Finding(2, "2.mp3", "corrupt", "truncated", "")
    for _ in range(10):
        progress.update(ok)
    assert capsys.readouterr().err == ""  # nothing during the first 2 s
    now[0] = 2.5
    progress.update(bad)
    line = capsys.readouterr().err
    assert "checked 11 of ~100 tracks" in line and "1 problem so far" in line and "s left" in line
    progress.close()
    assert capsys.readouterr().err == "\r\x1b[K"



# --- global options, help, wording -------------------------------------------------------


def test_global_options_go_before_or_after_the_command(capsys, make_library, tmp_path):
    library = make_library(["mp3"])
    config = str(library.config_path)
    for argv in (["--config", config, "audit"], ["-v", "--config", config, "audit"],
                 ["audit", "--config", config, "-v"], ["-v", "audit", "--config", config, "-vv"]):
        code, out, err = run(capsys, *argv)
        assert code == 0 and "Checked 1 track: 1 ok" in out, (argv, err)
    missing = str(tmp_path / "nowhere.toml")
    # Given in both places, the one after the command wins (it is also the later one).
    code, out, _ = run(capsys, "--config", missing, "audit", "--config", config)
    assert code == 0 and "1 ok" in out
    code, _, err = run(capsys, "--config", config, "audit", "--config", missing)
    assert code == 2 and f"{missing}: config file not found" in err


def test_verbose_counts_add_up_across_the_command():
    from poold.cli import parse_args

    assert parse_args(["audit"]).verbose == 0
    assert parse_args(["-v", "audit", "-v"]).verbose == 2
    assert parse_args(["-vv", "status"]).verbose == 2
    assert parse_args(["--config", "a.toml", "status"]).config == "a.toml"
    assert parse_args(["status", "--config", "b.toml"]).config == "b.toml"


def test_verbose_after_the_command_logs_info(capsys, make_library, sandbox):
    library = make_library(["mp3", "flac"], base_url=sandbox.base_url, extra=NO_GUARD)
    _, _, quiet = run(capsys, "audit", "--request", "--config", str(library.config_path))
    library.paths[1001].unlink()
    _, _, verbose = run(capsys, "audit", "--request", "--config", str(library.config_path), "-v")
    assert quiet == "" and "poold: INFO: request 1 accepted" in verbose


def test_every_command_option_and_argument_has_help():
    import argparse

    from poold.cli import build_parser

    def walk(parser, name):
        assert parser.description, f"{name}: no description"
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.option_strings or action.dest}"
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{name} {choice.dest}: no summary"
                for sub_name, sub_parser in action.choices.items():
                    walk(sub_parser, f"{name} {sub_name}")

    walk(build_parser(), "poold")
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"audit", "check", "status", "requests", "run", "demo", "init", "doctor"} <= set(commands)


@pytest.mark.parametrize("command", ["audit", "check", "status", "requests", "run", "demo", "init", "doctor"])
def test_each_command_help_has_a_description_line(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    description = out.split("\n\n")[1]
    assert description.strip() and not description.startswith(("options", "positional"))


def test_plural_helper():
    from poold.report import plural

    assert [plural(n, "file") for n in (0, 1, 2, 1500)] == ["0 files", "1 file", "2 files", "1,500 files"]
    assert plural(1, "library", "libraries") == "1 library" and plural(3, "library", "libraries") == "3 libraries"
    assert plural(2, "index", "indexes") == "2 indexes"


def test_counts_of_one_read_as_one(capsys, make_library):
    library = make_library(["mp3", "flac"], extra=NO_GUARD)
    library.paths[1002].write_bytes(HTML)
    code, out, _ = run(capsys, "audit", "--config", str(library.config_path))
    assert code == 1
    assert "Checked 2 tracks: 1 ok, 0 missing, 1 corrupt, 0 unchecked (2 files opened," in out
    library.paths[1002].write_bytes(HTML + b"\n")  # changed: opened again; the other is cached
    code, out, _ = run(capsys, "audit", "--config", str(library.config_path))
    assert "(1 file opened," in out, out
    code, out, _ = run(capsys, "status", "--config", str(library.config_path))
    assert "2 checked, 1 problem\n" in out
    library.paths[1001].unlink()
    run(capsys, "audit", "--config", str(library.config_path))
    code, out, _ = run(capsys, "status", "--config", str(library.config_path))
    assert "2 checked, 2 problems\n" in out


def test_guard_is_said_once(capsys, make_library, sandbox):
    library = make_library(["mp3", "mp3", "flac", "m4a", "mp3"], base_url=sandbox.base_url)
    for trackid in (1001, 1002):
        library.paths[trackid].unlink()
    code, out, _ = run(capsys, "audit", "--request", "--config", str(library.config_path))
    assert code == 1
    assert "NOTHING REQUESTED: 2 of 5 tracks are missing, more than 20%: the library looks partly unavailable\n" in out
    assert out.lower().count("nothing is requested") + out.lower().count("nothing requested") == 1
    assert sandbox.received == []


def test_check_prints_one_sentence_per_file(capsys, tmp_path, encoded):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "good.flac").write_bytes(encoded("flac").read_bytes())
    cut = folder / "cut.mp3"
    cut.write_bytes(encoded("mp3").read_bytes()[:5000])
    (folder / "notes.txt").write_text("hello")
    code, out, _ = run(capsys, "check", str(folder))
    assert code == 1
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert set(lines) == {str(folder / name) for name in ("good.flac", "cut.mp3", "notes.txt")}
    good, bad, other = (lines[str(folder / name)] for name in ("good.flac", "cut.mp3", "notes.txt"))
    assert good.startswith("ok — 0:02, ")  # 1.5 s of audio
    assert bad.startswith("CORRUPT (truncated) — ")
    assert other.startswith("unchecked (unsupported_type) — ")
    for line in out.splitlines():
        assert "((" not in line and "  " not in line


def test_duration_text():
    from poold.report import duration_text

    assert [duration_text(s) for s in (0.4, 7, 205, 3600 + 127)] == ["0:00", "0:07", "3:25", "1:02:07"]


# --- requests sent in the same run ------------------------------------------------------


def test_a_request_sent_and_accepted_is_not_also_waiting(capsys, make_library, sandbox):
    from poold.sandbox import unavailable

    library = make_library(["mp3", "flac", "m4a"], base_url=sandbox.base_url, extra=NO_GUARD)
    library.paths[1001].unlink()
    sandbox.fault(unavailable(3600))  # longer than poold waits: the request stays pending
    code, out, err = run(capsys, "audit", "--request", "--json", "--config", str(library.config_path))
    assert [r["state"] for r in json.loads(out)["requests"]] == ["pending"], err
    code, out, _ = run(capsys, "audit", "--request", "--config", str(library.config_path))
    assert code == 1
    assert "accepted (1 of 1 requeued): [1001]" in out
    assert "already waiting" not in out and "Not requested now" not in out
    assert sandbox.requeued == {1001: 1}
    code, out, _ = run(capsys, "audit", "--request", "--json", "--config", str(library.config_path))
    document = json.loads(out)
    assert document["requests"] == [] and [h["trackid"] for h in document["held"]] == [1001]
    assert "cooldown" in document["held"][0]["why"]


# --- secrets are read only to send ------------------------------------------------------


def unreadable_key_config(library, base_url: str) -> str:
    text = library.config_path.read_text()
    library.config_path.write_text(text + f'[pool]\nbase_url = "{base_url}"\nuserid = {USERID}\n'
                                   'api_key_file = "no-such-key"\napi_secret_file = "no-such-secret"\n')
    return str(library.folder / "no-such-key")


@pytest.mark.usefixtures("no_secret_env")
def test_audit_without_request_needs_no_secret(capsys, make_library, sandbox):
    library = make_library(["mp3", "flac"], extra=NO_GUARD)
    key_path = unreadable_key_config(library, sandbox.base_url)
    library.paths[1001].unlink()
    code, out, err = run(capsys, "audit", "--config", str(library.config_path))
    assert code == 1 and "1 missing" in out and err == ""
    code, _, err = run(capsys, "audit", "--request", "--config", str(library.config_path))
    assert code == 2 and "[pool] api_key_file: cannot read " + key_path in err and "Traceback" not in err
    assert sandbox.received == []


@pytest.mark.usefixtures("no_secret_env")
@pytest.mark.timeout(60)
def test_run_with_requests_fails_at_start_when_the_secret_is_unreadable(make_library, sandbox):
    library = make_library(["mp3"])
    key_path = unreadable_key_config(library, sandbox.base_url)
    result = subprocess.run([sys.executable, "-m", "poold", "run", "--config", str(library.config_path)],
                            capture_output=True, text=True, timeout=50)
    assert result.returncode == 2, result.stderr
    assert "[pool] api_key_file: cannot read " + key_path in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def no_secret_env(monkeypatch):
    for name in ("POOLD_API_KEY", "POOLD_API_SECRET", "POOLD_TOKEN", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
