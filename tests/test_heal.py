"""Healing against the sandbox on 127.0.0.1: real encoded files, real downloads, real renames."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from mutagen.id3 import GEOB, ID3, TKEY

import media
from conftest import USERID
from poold import app
from poold.cli import main
from poold.heal import heal_once, prune_quarantine, track_stages
from poold.heal_download import HealClient
from poold.integrity import check_file
from poold.pool import PoolClient
from poold.sandbox import CORRUPTED, DROPPED, MEDIA_ERROR, NOT_FOUND, TRUNCATED_FILE, Sandbox, partial, redirect, stalled
from poold.state import State

HEAL = "[heal]\nenabled = true\nallow_plain_http = true\n"
NO_GUARD = "[guard]\nmax_missing_fraction = 1.0\n"  # these small libraries are damaged past 20 % on purpose
FILE_TYPES = {"mp3": "mp3", "m4a": "m4a", "m4a_faststart": "m4a", "wav": "wav", "flac": "flac"}


@dataclasses.dataclass
class Setup:
    library: object
    originals: dict[int, bytes]
    damaged: dict[int, bytes]

    @property
    def config(self):
        return self.library.config()

    def path(self, trackid: int) -> Path:
        return self.library.paths[trackid]

    def job(self, trackid: int) -> dict:
        with State(self.config.state.dir) as state:
            return next(job for job in state.heal_jobs() if job["trackid"] == trackid)


@pytest.fixture
def healing(make_library, sandbox, tmp_path):
    """healing(kinds, damaged=(1001,), heal="", served=None, rows=None) -> Setup.

    Builds the library, registers each original with the sandbox (``served`` overrides
    kind -> (bytes, file_type)), damages the tracks (truncated to 60 %) and files the
    requests through a real audit, so that POOL accepted them.
    """

    def build(kinds=("mp3",), damaged=(1001,), heal="", served=None, sha256=False, audit=True) -> Setup:
        library = make_library(kinds, base_url=sandbox.base_url, extra=NO_GUARD + HEAL + heal)
        originals = {trackid: path.read_bytes() for trackid, path in library.paths.items()}
        if sha256:
            rows = [{"trackid": t, "path": p.relative_to(library.root).as_posix(),
                     "sha256": __import__("hashlib").sha256(originals[t]).hexdigest(), "size": len(originals[t])}
                    for t, p in library.paths.items()]
            library.manifest.write_text(json.dumps({"tracks": rows}))
        for (trackid, path), kind in zip(library.paths.items(), kinds):
            data, file_type = (served or {}).get(trackid, (originals[trackid], FILE_TYPES[kind]))
            sandbox.register_media(trackid, data, file_type)
        for trackid in damaged:
            media.truncate(str(library.paths[trackid]), 0.6)
        setup = Setup(library, originals, {t: library.paths[t].read_bytes() for t in damaged})
        if audit:
            outcome = app.run_audit(library.config(), request=True)
            assert {p.trackid for p in outcome.report.problems} == set(damaged)
        return setup

    return build


def client_with_timeout(config, seconds: float) -> HealClient:
    pool = PoolClient(dataclasses.replace(config.pool, timeout=seconds))
    return HealClient(pool, allow_plain_http=True)


def assert_healed(setup: Setup, trackid: int, sandbox) -> dict:
    path = setup.path(trackid)
    verdict = check_file(path)
    assert verdict.status == "ok", verdict
    assert path.read_bytes() == setup.originals[trackid]
    job = setup.job(trackid)
    assert job["stage"] == "confirmed"
    assert Path(job["quarantine_path"]).read_bytes() == setup.damaged[trackid]
    assert [(s.trackid, s.dl_token) for s in sandbox.successes] == [(trackid, job["dl_token"])]
    assert not list(path.parent.glob(".poold-heal-*"))
    with State(setup.config.state.dir) as state:
        assert state.open_incident(trackid) is None
    return job


def test_a_truncated_track_is_fetched_verified_and_swapped_in(healing, sandbox):
    setup = healing(("mp3", "flac"))
    report = heal_once(setup.config)
    assert [job["stage"] for job in report.jobs] == ["confirmed"]
    job = assert_healed(setup, 1001, sandbox)
    assert job["quarantine_path"].startswith(str(setup.library.root / ".poold-quarantine"))
    assert setup.path(1002).read_bytes() == setup.originals[1002]  # the intact track is not touched
    assert heal_once(setup.config).jobs == []  # nothing is fetched twice
    assert len(sandbox.successes) == 1
    with State(setup.config.state.dir) as state:
        assert state.verified_identities() == {}  # the manifest has no hash to verify the copy's audio against


def test_a_missing_track_is_written_at_its_manifest_path(healing, sandbox):
    setup = healing(("m4a",), damaged=(), audit=False)
    folder = setup.path(1001).parent
    setup.path(1001).unlink()
    folder.rmdir()
    app.run_audit(setup.config, request=True)
    heal_once(setup.config)
    assert setup.path(1001).read_bytes() == setup.originals[1001]
    assert setup.job(1001)["quarantine_path"] is None and setup.job(1001)["stage"] == "confirmed"


def test_a_truncated_media_body_is_fetched_again_from_the_other_server(healing, sandbox):
    setup = healing()
    sandbox.media_fault(TRUNCATED_FILE)
    heal_once(setup.config)
    assert_healed(setup, 1001, sandbox)
    hosts = [r.host for r in sandbox.media_received]
    assert len(hosts) == 2 and hosts[0] != hosts[1]
    assert setup.job(1001)["failures"] == 1


def test_a_second_bad_copy_waits_for_a_person_and_nothing_more_is_fetched(healing, sandbox):
    setup = healing()
    sandbox.media_fault(TRUNCATED_FILE, TRUNCATED_FILE)
    report = heal_once(setup.config)
    job = setup.job(1001)
    assert job["stage"] == "waiting" and "the redownloaded copy is also truncated" in job["reason"]
    assert [j["trackid"] for j in report.waiting] == [1001]
    assert setup.path(1001).read_bytes() == setup.damaged[1001]  # nothing moved
    assert sandbox.successes == [] and len(sandbox.media_received) == 2
    heal_once(setup.config)
    assert len(sandbox.media_received) == 2  # nothing downloaded again on its own
    with State(setup.config.state.dir) as state:
        assert state.open_incident(1001) is not None


def test_a_corrupted_body_fails_the_manifest_hash_and_is_fetched_again(healing, sandbox):
    setup = healing(sha256=True)
    sandbox.media_fault(CORRUPTED)
    heal_once(setup.config)
    assert_healed(setup, 1001, sandbox)
    assert setup.job(1001)["failures"] == 1 and [r.fault for r in sandbox.media_received] == ["corrupted", None]


@pytest.mark.parametrize("fault", [NOT_FOUND, MEDIA_ERROR], ids=["404", "500"])
def test_a_failing_media_server_is_skipped_for_the_next(healing, sandbox, fault):
    setup = healing()
    sandbox.media_fault(fault)
    heal_once(setup.config)
    assert_healed(setup, 1001, sandbox)
    assert [r.status for r in sandbox.media_received] == [fault.kind == "not_found" and 404 or 500, 200]
    assert setup.job(1001)["failures"] == 0


def test_a_first_server_that_refuses_connections(healing, sandbox):
    setup = healing()
    sandbox.dead_first_server = True
    heal_once(setup.config)
    job = assert_healed(setup, 1001, sandbox)
    assert job["server"] == sandbox.media_hosts[1] and sandbox.successes[0].serverid == 7


def test_a_stalled_server_times_out_and_the_next_resumes_with_range(healing, sandbox):
    setup = healing(("wav",))
    sandbox.media_fault(stalled(4))
    heal_once(setup.config, client=client_with_timeout(setup.config, 0.5))
    assert_healed(setup, 1001, sandbox)
    first, second = sandbox.media_received
    assert first.range_start is None and second.range_start and second.range_start > 0
    assert first.host != second.host


def test_a_dropped_connection_is_resumed_with_range(healing, sandbox):
    setup = healing(("flac",))
    sandbox.media_fault(DROPPED)
    heal_once(setup.config)
    assert_healed(setup, 1001, sandbox)
    assert sandbox.media_received[1].headers.get("Range") == f"bytes={sandbox.media_received[1].range_start}-"
    assert 0 < sandbox.media_received[1].range_start <= len(setup.originals[1001]) // 2  # what arrived whole


def test_an_interrupted_download_resumes_after_a_restart_with_an_expired_dl_token(healing, sandbox):
    setup = healing(("wav",))
    sandbox.media_rate = 100_000  # bytes per second: the download takes a while
    stop = threading.Event()
    temp = setup.path(1001).with_name(".poold-heal-1001.wav")
    threading.Thread(target=lambda: (_wait_for(lambda: temp.exists() and temp.stat().st_size > 50_000), stop.set()),
                     daemon=True).start()
    heal_once(setup.config, stop=stop)
    job = setup.job(1001)
    assert job["stage"] == "downloading" and temp.stat().st_size > 0
    first_token = job["dl_token"]
    sandbox.media_rate = None
    sandbox.expire_dl_tokens()
    heal_once(setup.config)
    job = assert_healed(setup, 1001, sandbox)
    assert job["dl_token"] != first_token
    statuses = [(r.status, "Range" in r.headers) for r in sandbox.media_received]
    assert statuses[-2:] == [(403, True), (206, True)]


def test_another_media_type_is_kept_aside_and_the_incident_says_what_to_change(healing, sandbox, encoded):
    mp3 = encoded("mp3").read_bytes()
    setup = healing(("wav",), served={1001: (mp3, "mp3")})
    heal_once(setup.config)
    job = setup.job(1001)
    assert job["stage"] == "waiting" and "preferences" in job["reason"] and "WAV" in job["reason"]
    assert setup.path(1001).read_bytes() == setup.damaged[1001]
    kept = list((setup.library.root / ".poold-quarantine").rglob("*.other-format.mp3"))
    assert len(kept) == 1 and kept[0].read_bytes() == mp3
    assert sandbox.successes == []


def test_a_copy_of_other_audio_than_the_track_had_is_not_swapped_in(healing, sandbox, tmp_path):
    other = Path(media.make(tmp_path / "other.mp3", "mp3", seconds=1.5, seed=99)).read_bytes()
    setup = healing(("mp3",), damaged=(), audit=False, served={1001: (other, "mp3")})
    app.run_audit(setup.config)  # seen intact: its audio identity is recorded
    media.truncate(str(setup.path(1001)), 0.6)
    damaged = setup.path(1001).read_bytes()
    app.run_audit(setup.config, request=True)
    heal_once(setup.config)
    job = setup.job(1001)
    assert job["stage"] == "waiting" and "other audio than the track poold last saw intact" in job["reason"]
    assert job["failures"] == 2 and len(sandbox.media_received) == 2  # once more from the other server
    assert setup.path(1001).read_bytes() == damaged and sandbox.successes == []


def test_plain_http_is_used_only_when_allowed(healing, sandbox):
    setup = healing(heal="", audit=True)
    setup.library.write_config(sandbox.base_url, NO_GUARD + "[heal]\nenabled = true\n")
    heal_once(setup.config)
    job = setup.job(1001)
    assert job["stage"] == "downloading" and "allow_plain_http" in job["last_error"]
    assert sandbox.media_received == []  # https was tried, and nothing was sent in clear
    assert setup.path(1001).read_bytes() == setup.damaged[1001]


def test_a_redirect_is_not_followed_and_no_other_host_sees_the_header(healing, sandbox):
    setup = healing()
    with Sandbox(userid=USERID) as elsewhere:
        sandbox.media_fault(redirect(f"http://{elsewhere.media_hosts[0]}/pool/v5/download/{'0' * 32}"))
        heal_once(setup.config)
        assert elsewhere.media_received == [] and elsewhere.received == []
    assert_healed(setup, 1001, sandbox)
    assert [r.status for r in sandbox.media_received] == [302, 200]
    assert all(r.host in sandbox.media_hosts for r in sandbox.media_received)


@pytest.mark.parametrize("update_manifest", [True, False], ids=["update_manifest", "manifest_kept"])
def test_a_healed_retagged_track_verifies_and_heals_again(healing, sandbox, capsys, update_manifest):
    """The manifest keeps the digest as downloaded (with update_manifest too): the
    carried-over cue points change the healed file's bytes, not POOL's. A --verify audit
    then finds the healed file ok, retagged (its audio is the copy's, verified against the
    hash at healing), and the track heals again when it breaks again."""
    setup = healing(damaged=(), audit=False, sha256=True)
    if update_manifest:
        text = setup.library.config_path.read_text()
        setup.library.config_path.write_text(text.replace('manifest = "manifest.json"\n',
                                                          'manifest = "manifest.json"\nupdate_manifest = true\n'))
    path = setup.path(1001)
    tags = ID3(path)
    tags.add(GEOB(encoding=0, mime="application/octet-stream", filename="", desc="Serato Markers2", data=b"cues" * 50))
    tags.save(path)
    served = (len(setup.originals[1001]), hashlib.sha256(setup.originals[1001]).hexdigest())  # POOL serves these
    manifest_before = setup.library.manifest.read_bytes()
    for round_ in (1, 2):
        media.truncate(str(path), 0.6)
        app.run_audit(setup.config, request=True)
        heal_once(setup.config)
        with State(setup.config.state.dir) as state:
            jobs = state.heal_jobs()
        assert [job["stage"] for job in jobs] == ["confirmed"] * round_, jobs[-1]["reason"]
        assert ID3(path).getall("GEOB")[0].data == b"cues" * 50  # carried over: the bytes differ from POOL's
        assert _audio_after_id3(path.read_bytes()) == _audio_after_id3(setup.originals[1001])
        assert (jobs[-1]["copy_size"], jobs[-1]["copy_sha256"]) == served
        row = json.loads(setup.library.manifest.read_text())["tracks"][0]
        assert (row["size"], row["sha256"]) == served
        assert setup.library.manifest.read_bytes() == manifest_before  # nothing to change: the copy matched it
        requests_before = len(sandbox.received)
        assert main(["audit", "--verify", "--request", "--json", "--config", str(setup.library.config_path)]) == 0
        audit = json.loads(capsys.readouterr().out)
        assert (audit["problems"], audit["unchecked"], audit["retagged"]) == ([], [], 1)
        assert len(sandbox.received) == requests_before  # nothing requested
    assert len(sandbox.successes) == 2


def test_update_manifest_writes_the_copys_recorded_size_and_sha256_not_the_files(tmp_path):
    """The rewrite itself: the recorded values of the copy as served go into the row,
    whatever the file at the track's path holds now; a row already holding them is not
    rewritten, and without recorded values nothing is written."""
    from poold.config import load
    from poold.heal import update_manifest_row
    from poold.manifest import Track

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"tracks": [{"trackid": 7, "path": "a.mp3", "size": 10, "sha256": "a" * 64}]}))
    config_path = tmp_path / "config.toml"
    config_path.write_text('[library]\nroot = "."\nmanifest = "manifest.json"\nupdate_manifest = true\n')
    config = load(config_path)
    track = Track(7, "a.mp3", size=10, sha256="a" * 64)
    before = manifest.stat().st_ino, manifest.read_text()  # a rewrite replaces the file
    update_manifest_row(config, track, 10, "a" * 64)
    update_manifest_row(config, track, None, None)
    assert (manifest.stat().st_ino, manifest.read_text()) == before
    update_manifest_row(config, track, 12, "b" * 64)
    assert json.loads(manifest.read_text())["tracks"][0] == {"trackid": 7, "path": "a.mp3", "size": 12,
                                                             "sha256": "b" * 64}


def test_only_tracks_whose_request_pool_accepted_in_full_are_healed(healing, sandbox):
    setup = healing(("mp3", "m4a"), damaged=(1001, 1002), audit=False)
    sandbox.fault(partial(1))
    app.run_audit(setup.config, request=True)
    assert heal_once(setup.config).jobs == []
    assert sandbox.media_received == []


def test_tags_of_the_damaged_file_are_carried_over_and_the_audio_is_unchanged(healing, sandbox):
    setup = healing(damaged=(), audit=False)
    path = setup.path(1001)
    tags = ID3(path)
    tags.add(GEOB(encoding=0, mime="application/octet-stream", filename="", desc="Serato Markers2", data=b"cues" * 50))
    tags.add(TKEY(encoding=3, text=["8A"]))
    tags.save(path)
    media.truncate(str(path), 0.6)
    setup.damaged[1001] = path.read_bytes()
    app.run_audit(setup.config, request=True)
    heal_once(setup.config)
    healed = ID3(path)
    assert healed.getall("GEOB")[0].data == b"cues" * 50 and str(healed["TKEY"]) == "8A"
    assert check_file(path).status == "ok"
    assert _audio_after_id3(path.read_bytes()) == _audio_after_id3(setup.originals[1001])
    assert setup.job(1001)["stage"] == "confirmed"


@pytest.mark.parametrize("kind", ["m4a_faststart", "flac"])
def test_mp4_freeform_atoms_and_vorbis_comments_are_carried_over(healing, sandbox, kind):
    import mutagen

    setup = healing((kind,), damaged=(), audit=False)
    path = setup.path(1001)
    tagged = mutagen.File(path)
    key = "----:com.serato.dj:markersv2" if kind != "flac" else "serato_markers_v2"
    value = [mutagen.mp4.MP4FreeForm(b"cue points")] if kind != "flac" else ["cue points"]
    tagged.tags[key] = value
    tagged.save()
    (media.zero_tail if kind != "flac" else media.truncate)(str(path), 0.3 if kind != "flac" else 0.6)
    setup.damaged[1001] = path.read_bytes()
    assert check_file(path).status == "corrupt"
    app.run_audit(setup.config, request=True)
    heal_once(setup.config)
    assert setup.job(1001)["stage"] == "confirmed"
    healed = mutagen.File(path)
    assert list(healed.tags[key]) == value and check_file(path).status == "ok"
    assert abs(check_file(path).duration - check_file(_original(setup, 1001)).duration) < 1e-6


def _original(setup: Setup, trackid: int) -> Path:
    copy = setup.library.folder / f"original{setup.path(trackid).suffix}"
    copy.write_bytes(setup.originals[trackid])
    return copy


def test_status_shows_each_tracks_stage(healing, sandbox, capsys):
    setup = healing(("mp3", "m4a"), damaged=(1001, 1002), heal="max_parallel = 1\n")
    with State(setup.config.state.dir) as state:
        assert [(s["trackid"], s["stage"]) for s in track_stages(state)] == [(1001, "requested"), (1002, "requested")]
    sandbox.media_fault(TRUNCATED_FILE, TRUNCATED_FILE)
    heal_once(setup.config)
    assert main(["status", "--config", str(setup.library.config_path), "--json"]) == 0
    healing_stages = {s["trackid"]: s["stage"] for s in json.loads(capsys.readouterr().out)["healing"]}
    assert sorted(healing_stages.values()) == ["confirmed", "waiting"]


def test_heal_command_exit_codes(healing, sandbox, capsys):
    setup = healing()
    config = str(setup.library.config_path)
    sandbox.media_fault(TRUNCATED_FILE, TRUNCATED_FILE)
    assert main(["heal", "--config", config]) == 1  # a track waits for a person
    assert "waiting" in capsys.readouterr().out
    assert main(["heal", "--config", config, "--json"]) == 0  # nothing left to do
    assert json.loads(capsys.readouterr().out) == {"busy": False, "error": None, "jobs": []}
    setup.library.write_config(sandbox.base_url, "")
    assert main(["heal", "--config", config]) == 2  # healing is off
    assert "enabled = true" in capsys.readouterr().err


def test_old_quarantine_entries_are_pruned(tmp_path):
    old, new, other = tmp_path / "20240101-000000-1", tmp_path / "20240301-000000-2", tmp_path / "keep-me"
    for folder in (old, new, other):
        folder.mkdir()
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    os.utime(other, (time.time() - 40 * 86400,) * 2)
    assert prune_quarantine(tmp_path, 30) == 1
    assert not old.exists() and new.exists() and other.exists()


def _audio_after_id3(data: bytes) -> bytes:
    """The bytes after an ID3v2 tag (its size is a 28-bit syncsafe integer)."""
    if data[:3] != b"ID3":
        return data
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return data[10 + size:]


def _wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


# --- kill -9 at random moments ------------------------------------------------------------

KILLS = 22
SEED = 20261202


def test_kill_9_at_random_moments_then_a_rerun_finishes_every_job(healing, sandbox):
    """``poold heal`` as a real process, killed at 22 random moments (fixed seed): in turn
    during a download (slowed media servers), a swap (a test-only pause between the
    swap's steps) and a confirmation (a slow /download/success), at a random point
    within 0.3 s of the phase starting; then run to completion.

    After every kill: a track's path holds the damaged file or the complete original,
    nothing else; when it holds the original, the quarantine holds the damaged copy.
    At the end: every track healed, its path never swapped twice (the healed file's inode
    never changes once in place), each confirmation sent at least once (a crash between
    the POST and recording its answer sends it again, with the same dl_token)."""
    import random
    import signal
    import subprocess
    import sys

    trackids = tuple(range(1001, 1007))
    setup = healing(("wav",) * len(trackids), damaged=trackids)
    sandbox.media_rate = 300_000
    sandbox.success_delay = 0.3
    env = {**os.environ, "POOLD_TEST_HEAL_STEP_DELAY": "0.2", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "poold", "heal", "--config", str(setup.library.config_path)]
    rng = random.Random(SEED)
    healed_inode: dict[int, int] = {}
    stages_hit = set()

    def check_invariants() -> None:
        for trackid in trackids:
            data = setup.path(trackid).read_bytes()
            assert data in (setup.damaged[trackid], setup.originals[trackid]), f"track {trackid}: a partial file"
            kept = list((setup.library.root / ".poold-quarantine").glob(f"*-{trackid}/**/*.wav"))
            assert all(k.read_bytes() == setup.damaged[trackid] for k in kept)
            if data == setup.originals[trackid]:
                assert len(kept) == 1, f"track {trackid} swapped without its damaged copy kept"
                inode = setup.path(trackid).stat().st_ino
                assert healed_inode.setdefault(trackid, inode) == inode, f"track {trackid} swapped twice"

    phases = {"download": ("downloading",), "swap": ("swapping",), "confirm": ("swapped",)}
    for number in range(KILLS):
        phase = ("download", "swap", "confirm")[number % 3]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: _heal_lock_held(setup.config.state.dir) or process.poll() is not None)
        _wait_for(lambda: _any_job_in(setup, phases[phase]) or process.poll() is not None)
        time.sleep(rng.uniform(0, 0.3))  # a random moment inside that phase
        process.send_signal(signal.SIGKILL)
        process.wait()
        with State(setup.config.state.dir) as state:
            stages_hit |= {job["stage"] for job in state.heal_jobs()}
        check_invariants()
    for _ in range(10):
        if subprocess.run(command, env=env, capture_output=True).returncode == 0 and all(
                setup.job(t)["stage"] == "confirmed" for t in trackids):
            break
    check_invariants()
    assert {"downloading", "swapping", "swapped"} <= stages_hit, stages_hit  # the kills landed inside the work
    for trackid in trackids:
        assert setup.path(trackid).read_bytes() == setup.originals[trackid]
        assert setup.job(trackid)["stage"] == "confirmed"
        confirmations = [s for s in sandbox.successes if s.trackid == trackid]
        assert confirmations and {s.dl_token for s in confirmations} == {setup.job(trackid)["dl_token"]}
    assert not list(setup.library.root.rglob(".poold-heal-*"))


def _heal_lock_held(state_dir: Path) -> bool:
    import fcntl

    with open(state_dir / "heal.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_poold_run_heals_a_damaged_track_on_its_own(healing, sandbox, tmp_path):
    """The daemon, with healing switched on by SIGHUP: damage a watched track; it is judged,
    requested, fetched, verified, swapped."""
    import signal
    import subprocess
    import sys

    kinds = ("mp3", "flac", "wav", "m4a", "mp3")
    setup = healing(kinds, damaged=(), audit=False)
    setup.library.write_config(sandbox.base_url, "[watch]\nsettle_seconds = 0.5\n")  # healing off at start
    log_path = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "poold", "run", "-v", "--config",
                                    str(setup.library.config_path)], stderr=log, env=env)
    try:
        _wait_for(lambda: _daemon_state(setup) == "watching", timeout=30)
        setup.library.write_config(sandbox.base_url, HEAL + "[watch]\nsettle_seconds = 0.5\n")
        process.send_signal(signal.SIGHUP)
        _wait_for(lambda: "configuration reloaded" in log_path.read_text(), timeout=30)
        media.truncate(str(setup.path(1003)), 0.5)
        damaged = setup.path(1003).read_bytes()
        _wait_for(lambda: setup.path(1003).read_bytes() == setup.originals[1003]
                  and setup.job(1003)["stage"] == "confirmed", timeout=60)
        assert setup.path(1003).read_bytes() == setup.originals[1003], log_path.read_text()
        assert setup.job(1003)["stage"] == "confirmed"
        assert Path(setup.job(1003)["quarantine_path"]).read_bytes() == damaged
        assert [r.form["trackid_list"] for r in sandbox.received] == ["1003"]
        time.sleep(1.5)  # the swap's rename is poold's own write: it is not judged again
        assert len(sandbox.received) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log_path.read_text()


def _daemon_state(setup: Setup) -> str | None:
    if not (setup.config.state.dir / "poold.sqlite3").exists():
        return None
    with State(setup.config.state.dir) as state:
        return (state.note("daemon") or {}).get("state")


def test_the_demo_shows_the_whole_loop_and_heals():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "poold", "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("confirmed - verified and in place") == 4
    assert "each was fetched back, verified and swapped in (healed)" in result.stdout
    assert "4 media downloads and 4 download confirmations" in result.stdout


def test_the_daily_cap_holds_tracks_back(healing, sandbox):
    setup = healing(("mp3", "m4a", "flac"), damaged=(1001, 1002), heal="max_tracks_per_day = 1\n")
    assert [job["trackid"] for job in heal_once(setup.config).jobs] == [1001]
    assert heal_once(setup.config).jobs == []  # the next run: the cap still holds
    with State(setup.config.state.dir) as state:
        assert (1002, "requested") in [(s["trackid"], s["stage"]) for s in track_stages(state)]
    assert setup.path(1002).read_bytes() == setup.damaged[1002]


def test_the_bandwidth_cap_slows_the_download_down(healing, sandbox):
    """A lower bound only (a loaded machine can only make it slower): at 100 kB/s, a
    ~265 kB WAV takes at least ~2.4 s."""
    setup = healing(("wav",), heal="max_bytes_per_second = 100000\n")
    started = time.monotonic()
    heal_once(setup.config)
    assert time.monotonic() - started >= 0.9 * (len(setup.originals[1001]) - 65536) / 100_000
    assert_healed(setup, 1001, sandbox)


def test_nothing_is_written_while_the_library_is_gone(healing, sandbox):
    setup = healing()
    config = setup.config
    moved = setup.library.root.with_name("unmounted")
    setup.library.root.rename(moved)
    report = heal_once(config)
    assert report.error  # the library guard's message
    assert not setup.library.root.exists() and sandbox.media_received == []
    moved.rename(setup.library.root)
    heal_once(config)
    assert_healed(setup, 1001, sandbox)


def _any_job_in(setup: Setup, stages: tuple[str, ...]) -> bool:
    with State(setup.config.state.dir) as state:
        return bool(state.heal_jobs(stages))


def test_heal_config_defaults_and_the_ignored_files(tmp_path):
    from poold.config import ConfigError, load
    from poold.watch import is_ignored

    path = tmp_path / "config.toml"
    path.write_text('[library]\nroot = "lib"\nmanifest = "m.json"\n[watch]\nignore = ["*.part"]\n')
    config = load(path)
    assert (config.heal.enabled, config.heal.allow_plain_http, config.heal.max_parallel, config.heal.keep_days,
            config.heal.max_bytes_per_second) == (False, False, 2, 30, 0)
    assert config.quarantine == tmp_path / "lib" / ".poold-quarantine"
    for healing_file in (".poold-heal-1001.mp3", "Crate/.poold-heal-tags-7.flac",
                         ".poold-quarantine/20261202-004936-1/Crate/x.mp3"):
        assert is_ignored(healing_file, config.watch.ignore), healing_file
    assert not is_ignored("Crate/x.mp3", config.watch.ignore)

    path.write_text('[library]\nroot = "lib"\nmanifest = "m.json"\n[heal]\nquarantine = "lib/Q"\n')
    assert is_ignored("Q/20261202-004936-1/x.mp3", load(path).watch.ignore)
    path.write_text('[library]\nroot = "lib"\nmanifest = "m.json"\n[heal]\nmax_parallel = 0\n')
    with pytest.raises(ConfigError, match=r"\[heal\] max_parallel"):
        load(path)


def test_a_server_that_trickles_is_given_up_for_the_next(healing, sandbox):
    """The low-speed rule, scaled down: a client that wants 150 kB/s averaged over 0.3 s
    gives up on servers sending 40 kB/s (each byte well within the read timeout)."""
    setup = healing(("wav",))
    sandbox.media_rate = 40_000
    pool = PoolClient(setup.config.pool)
    heal_once(setup.config, client=HealClient(pool, allow_plain_http=True, min_rate=150_000, window=0.3))
    job = setup.job(1001)
    assert job["stage"] == "downloading" and job["last_error"].count("slower than") == 2
    assert setup.path(1001).read_bytes() == setup.damaged[1001]
    sandbox.media_rate = None
    heal_once(setup.config)  # the next run resumes what arrived
    assert_healed(setup, 1001, sandbox)
    assert sandbox.media_received[-1].range_start


def test_a_new_copy_removed_before_the_swap_is_fetched_again_not_assumed_swapped(healing, sandbox, monkeypatch):
    """Recovery tells a swap done before a crash (the file at the path checks ok) from a
    new copy that vanished (removed by hand): the damaged track is not marked healed."""
    from poold.heal import Job
    from poold.heal_download import Stopped

    setup = healing()
    real_swap = Job.swap

    def crash_before_swapping(job):
        raise Stopped()

    monkeypatch.setattr(Job, "swap", crash_before_swapping)
    heal_once(setup.config)
    assert setup.job(1001)["stage"] == "swapping"
    setup.path(1001).with_name(".poold-heal-1001.mp3").unlink()
    monkeypatch.setattr(Job, "swap", real_swap)
    heal_once(setup.config)
    assert_healed(setup, 1001, sandbox)
    assert len([r for r in sandbox.media_received if r.status == 200]) == 2
