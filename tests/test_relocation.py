"""A DJ's ordinary library care never files a request: real encoded files, retagged with
mutagen the way DJ software and taggers do it, then moved into crates, renamed with
key/BPM prefixes, renamed to decomposed Unicode (NFD) and to another case, between two
``poold audit --request`` runs and under a running ``poold run``. True losses among them
(deleted, truncated, converted to another format) are requested, each exactly once, from
the POOL stand-in on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import unicodedata
from pathlib import Path

import pytest

import media
from conftest import API_KEY, API_SECRET, USERID
from poold.cli import main
from poold.manifest import read_manifest
from poold.state import State
from retag import RETAG, retag_mp3


def test_the_retaggers_change_the_bytes_and_keep_the_audio(tmp_path):
    """The premise: each retag changes the whole-file hash, and the file stays intact."""
    from poold.integrity import check_file

    for number, kind in enumerate(("mp3", "m4a", "m4a_faststart", "flac", "ogg", "wav")):
        path = Path(media.make(tmp_path / f"{kind}{media.extension(kind)}", kind, seconds=1.0, seed=number))
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        RETAG[path.suffix](path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() != before, kind
        verdict = check_file(path)
        assert verdict.status == "ok", (kind, verdict)


# --- a library and what the DJ does to it ---------------------------------------------------

# trackid -> (kind, path in the manifest)
TRACKS = {
    1001: ("mp3", "Incoming/Artist One - Retagged Moved.mp3"),
    1002: ("mp3", "Incoming/t2.mp3"),
    1003: ("m4a", "Incoming/Track Three.m4a"),
    1004: ("m4a_faststart", "Incoming/Track Four.m4a"),
    1005: ("flac", "Incoming/Café Olé.flac"),
    1006: ("ogg", "Incoming/Track Six.ogg"),
    1007: ("wav", "Incoming/Track Seven.wav"),
    1008: ("mp3", "Incoming/Deleted.mp3"),
    1009: ("flac", "Incoming/Truncated.flac"),
    1010: ("mp3", "Incoming/Retagged In Place.mp3"),
    1011: ("wav", "Incoming/Converted.wav"),
    1012: ("m4a", "Incoming/Sentinel.m4a"),
}
LOSSES = {1008, 1009, 1011}  # deleted, truncated, converted to AIFF (another file)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[int, Path]:
    """One distinct recording a track, encoded once for the module."""
    folder = tmp_path_factory.mktemp("recordings")
    return {trackid: Path(media.make(folder / f"{trackid}{media.extension(kind)}", kind, seconds=1.2, seed=trackid))
            for trackid, (kind, _path) in TRACKS.items()}


class Library:
    def __init__(self, workdir: Path, recordings: dict[int, Path], base_url: str):
        self.workdir, self.root = workdir, workdir / "library"
        self.manifest, self.config = workdir / "manifest.json", workdir / "config.toml"
        self.state_dir = workdir / "state"
        rows = []
        for trackid, (_kind, relative) in TRACKS.items():
            target = self.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(recordings[trackid], target)
            data = target.read_bytes()
            rows.append({"trackid": trackid, "path": relative, "size": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()})
        self.manifest.write_text(json.dumps({"tracks": rows}, indent=1))
        self.config.write_text(
            f'[library]\nroot = "library"\nmanifest = "manifest.json"\nupdate_manifest = true\n'
            f'[pool]\nbase_url = "{base_url}"\nuserid = {USERID}\napi_key = "{API_KEY}"\napi_secret = "{API_SECRET}"\n'
            f'[state]\ndir = "state"\n[watch]\nsettle_seconds = 1.0\n[guard]\nmax_missing_fraction = 0.5\n')
        self.config.chmod(0o600)

    def path(self, trackid: int) -> Path:
        return self.root / TRACKS[trackid][1]

    def move(self, trackid: int, relative: str, retag: bool = False) -> str:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if retag:
            RETAG[self.path(trackid).suffix](self.path(trackid))
        os.rename(self.path(trackid), target)
        return relative


def care_for_the_library(library: Library, recordings: dict[int, Path]) -> dict[int, str]:
    """Everything the DJ does; returns where the moved tracks are now."""
    nfd = unicodedata.normalize("NFD", TRACKS[1005][1])
    moves = {
        1001: library.move(1001, "Crates/Friday/Artist One - Retagged Moved.mp3", retag=True),
        1002: library.move(1002, "Incoming/8A - 124 - t2.mp3", retag=True),
        1003: library.move(1003, "Crates/Saturday/11B - 128 - Track Three.m4a", retag=True),
        1004: library.move(1004, "Crates/Track Four.m4a", retag=True),
        1005: library.move(1005, nfd, retag=True),
        1006: library.move(1006, "Crates/TRACK SIX.ogg", retag=True),
        1007: library.move(1007, "Crates/Friday/Track Seven.wav"),
    }
    assert nfd != TRACKS[1005][1] and not library.path(1005).exists()  # ext4 keeps names as given
    retag_mp3(library.path(1010))
    library.path(1008).unlink()
    media.truncate(str(library.path(1009)), 0.6)
    converted = library.root / "Incoming" / "Converted.aiff"
    media.make(converted, "aiff", seconds=1.2, seed=1011)  # the same music, another file
    library.path(1011).unlink()
    return moves


def audit(capsys, library: Library, *flags: str) -> int:
    code = main(["audit", "--request", *flags, "--config", str(library.config)])
    capsys.readouterr()
    return code


@pytest.mark.timeout(120)
def test_offline_care_between_two_audits_requests_only_the_losses(tmp_path, recordings, sandbox, capsys):
    library = Library(tmp_path, recordings, sandbox.base_url)
    assert audit(capsys, library) == 0 and not sandbox.received
    with State(library.state_dir) as state:
        assert set(state.track_identities(TRACKS)) == set(TRACKS)  # recorded when first seen intact

    moves = care_for_the_library(library, recordings)
    assert main(["audit", "--request", "--json", "--config", str(library.config)]) == 1
    document = json.loads(capsys.readouterr().out)
    assert {entry["trackid"]: entry["path"] for entry in document["moved"]} == moves
    assert dict(sandbox.requeued) == {trackid: 1 for trackid in LOSSES}

    with State(library.state_dir) as state:
        assert state.locations() == moves
        assert state.open_trackids() == LOSSES
    written = {track.trackid: track.path for track in read_manifest(library.manifest)}
    assert all(written[t] == moves[t] for t in moves if t != 1005)
    assert written[1005] == TRACKS[1005][1]  # only the Unicode form differs: the manifest names it already

    assert audit(capsys, library) == 1  # the moved tracks are ok where they are; nothing asked twice
    assert dict(sandbox.requeued) == {trackid: 1 for trackid in LOSSES}


@pytest.mark.timeout(120)
def test_a_running_daemon_follows_the_care_and_requests_only_the_losses(tmp_path, recordings, sandbox):
    from test_daemon import Daemon

    library = Library(tmp_path, recordings, sandbox.base_url)
    daemon = Daemon(library)
    try:
        daemon.wait_watching()
        moves = care_for_the_library(library, recordings)
        daemon.wait_for(lambda: all(sandbox.requeued[t] for t in LOSSES), "the losses to be requested")
        library.path(1012).unlink()  # judged after everything before it
        daemon.wait_for(lambda: sandbox.requeued[1012], "the sentinel to be requested")
        assert dict(sandbox.requeued) == {trackid: 1 for trackid in LOSSES | {1012}}
        with State(library.state_dir) as state:
            assert state.locations() == moves

        # Offline: moved and retagged while poold was stopped, found by the first full check.
        assert daemon.stop()[0] == 0
        daemon.kill()
        RETAG[".mp3"](library.root / moves[1002])
        os.rename(library.root / moves[1002], library.root / "Crates" / "Keyed 5A.mp3")
        daemon = Daemon(library)
        daemon.wait_watching()
        with State(library.state_dir) as state:
            assert state.locations()[1002] == "Crates/Keyed 5A.mp3"
        library.path(1010).unlink()  # a second sentinel
        daemon.wait_for(lambda: sandbox.requeued[1010], "the second sentinel to be requested")
        assert dict(sandbox.requeued) == {trackid: 1 for trackid in LOSSES | {1010, 1012}}
    finally:
        daemon.kill()


def flip_audio_bytes(path: Path) -> None:
    """Change samples in the middle of a WAV's data chunk: the structure stays sound."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        chunk = f.read(64)
        f.seek(-len(chunk), os.SEEK_CUR)
        f.write(bytes(b ^ 0x55 for b in chunk))


@pytest.mark.timeout(120)
def test_verify_tells_a_retag_from_an_audio_change(tmp_path, recordings, sandbox, capsys):
    library = Library(tmp_path, recordings, sandbox.base_url)
    assert audit(capsys, library, "--verify") == 0
    with State(library.state_dir) as state:
        assert set(state.verified_identities()) == set(TRACKS)

    retagged = [1001, 1003, 1004, 1005, 1006]  # ID3v2+APE+ID3v1, MP4 cover both ways, FLAC PICTURE, Ogg comment
    for trackid in retagged:
        RETAG[library.path(trackid).suffix](library.path(trackid))
    flip_audio_bytes(library.path(1007))
    code = main(["audit", "--request", "--verify", "--json", "--config", str(library.config)])
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(p["trackid"], p["reason"]) for p in document["problems"]] == [(1007, "checksum_mismatch")]
    assert dict(sandbox.requeued) == {1007: 1}

    # The retagged files stay ok under --verify, answered from the cache the next time too.
    code = main(["audit", "--verify", "--json", "--config", str(library.config)])
    document = json.loads(capsys.readouterr().out)
    assert [(p["trackid"], p["reason"]) for p in document["problems"]] == [(1007, "checksum_mismatch")]
    assert document["files_checked"] == 0


def test_conclude_under_verify_passes_a_retag_and_fails_an_audio_change():
    from poold.scan import RETAGGED, conclude
    from poold.manifest import Track

    track = Track(1, "a.mp3", sha256="a" * 64)
    retag = conclude(track, "ok", "ok", "structure complete", None, True, "b" * 64, None, "f1:9:ff", "f1:9:ff")
    assert (retag.status, retag.detail) == ("ok", RETAGGED)
    changed = conclude(track, "ok", "ok", "structure complete", None, True, "b" * 64, None, "f1:9:fe", "f1:9:ff")
    assert (changed.status, changed.reason) == ("corrupt", "checksum_mismatch")
    never_verified = conclude(track, "ok", "ok", "structure complete", None, True, "b" * 64, None, "f1:9:ff", None)
    assert (never_verified.status, never_verified.reason) == ("unchecked", "unverified")
    never_verified_broken = conclude(track, "corrupt", "truncated", "cut", None, True, "b" * 64, None, None, None)
    assert never_verified_broken.reason == "checksum_mismatch"
    damaged = conclude(track, "corrupt", "truncated", "cut", None, True, "b" * 64, None, "f1:9:ff", "f1:9:ff")
    assert damaged.reason == "truncated"
