"""Odd files and failing disks at the file level (issue #11, items 1-3, 6 and 9): what
poold must never do with them is read one forever, call it damage or request it.

Permission errors are produced for real: the tests run as root here, and root reads
everything, so the audit runs in a child process that drops to the user ``nobody``
after importing poold (see :func:`run_unprivileged`). Run as an ordinary user, the
child keeps that user's rights, which a ``chmod 000`` already stops.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import media
from conftest import write_manifest
from poold import app
from poold.config import ConfigError, load
from poold.integrity import check_file

NOBODY = 65534

# The child: import everything the audit may load lazily while it still can (the
# interpreter lives in root's home), then drop to `nobody`, then run the command line.
CHILD = """
import os, sys
import concurrent.futures.process, encodings.utf_8_sig, json, multiprocessing, pickle, sqlite3, tempfile
import poold.app, poold.cli, poold.crash, poold.filing, poold.integrity, poold.library, poold.report, poold.scan
import poold.state
poold.integrity.formats(), poold.integrity.format_module("identity")  # imported on first use otherwise
uid = int(sys.argv[1])
if uid >= 0 and os.geteuid() == 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
sys.exit(poold.cli.main(sys.argv[2:]))
"""


def run_unprivileged(*argv: str) -> subprocess.CompletedProcess:
    """`poold ARGV` as a user without root's rights over files."""
    uid = NOBODY if os.geteuid() == 0 else -1
    return subprocess.run([sys.executable, "-c", CHILD, str(uid), *argv], capture_output=True, text=True,
                          timeout=60, cwd="/")


@pytest.fixture
def open_folder():
    """A folder `nobody` may reach (pytest's own tmp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="poold-hostile-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:  # give every folder back its rights before deleting
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


class Library:
    """A small library with a manifest and config, owned by the user the audit runs as."""

    def __init__(self, folder: Path, encoded, kinds, extra: str = "", library_extra: str = ""):
        self.folder, self.root = folder, folder / "library"
        rows, self.paths = [], {}
        for number, kind in enumerate(kinds, 1001):
            relative = f"crate{number % 3}/track{number}{media.extension(kind)}"
            target = self.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(encoded(kind), target)
            rows.append({"trackid": number, "path": relative})
            self.paths[number] = target
        self.manifest = folder / "manifest.json"
        write_manifest(self.manifest, rows)
        self.config_path = folder / "config.toml"
        self.config_path.write_text(
            f'[library]\nroot = "library"\nmanifest = "manifest.json"\n{library_extra}\n[requests]\ndry_run = true\n\n'
            f'[state]\ndir = "state"\n\n[scan]\nworkers = 1\n{extra}\n')
        (folder / "state").mkdir()
        if os.geteuid() == 0:
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, NOBODY, NOBODY, follow_symlinks=False)

    def audit_unprivileged(self, *flags: str) -> tuple[int, dict | None, str]:
        done = run_unprivileged("audit", "--json", "--request", *flags, "--config", str(self.config_path))
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr

    def audit(self, **options) -> app.AuditOutcome:
        config = load(self.config_path)
        return app.run_audit(config, request=True, options=dataclasses.replace(app.scan_options(config), **options))


KINDS = ["mp3", "m4a", "flac", "ogg", "wav", "aiff"]


def requested(document: dict) -> set[int]:
    return {trackid for entry in document["requests"] for trackid in entry["trackids"]}


# --- 1. an unreadable library is a guard, not damage ----------------------------------

def test_tracks_in_a_folder_without_permission_are_unchecked_never_requested(open_folder, encoded):
    library = Library(open_folder, encoded, KINDS * 2, extra="[guard]\nmax_missing_fraction = 1.0")
    media.truncate(str(library.paths[1003]), 0.5)  # a real problem beside them, still requested
    (library.root / "crate2").chmod(0o000)  # 1001, 1004, 1007, 1010: stat fails with EACCES
    library.paths[1002].chmod(0o000)        # stat works, open fails with EACCES
    code, document, err = library.audit_unprivileged()
    assert code == 1 and document is not None, json.dumps(document)
    unchecked = {f["trackid"]: f for f in document["unchecked"]}
    assert set(unchecked) == {1001, 1002, 1004, 1007, 1010}
    assert all(f["reason"] == "unreadable" and "permission" in f["detail"] for f in unchecked.values())
    assert [f["trackid"] for f in document["problems"]] == [1003]
    assert requested(document) == {1003} and document["guard"] is None


@pytest.mark.parametrize("mode", [0o700, 0o000, 0o744], ids=["another-users-700", "chmod-000", "list-only-744"])
def test_a_library_root_that_cannot_be_listed_trips_the_guard(open_folder, encoded, mode):
    library = Library(open_folder, encoded, KINDS)
    if os.geteuid() == 0:
        os.chown(library.root, 0, 0)  # root's own folder: `nobody` may not list it
    elif mode != 0o000:
        pytest.skip("a folder of another user needs root to set up; the chmod-000 case runs")
    library.root.chmod(mode)
    code, document, err = library.audit_unprivileged()
    assert code == 2 and document is None
    assert f"the library folder {library.root} cannot be read (Permission denied)" in err
    assert "Traceback" not in err


def test_poold_check_says_which_folders_it_cannot_read(open_folder, encoded):
    music = open_folder / "music"
    (music / "locked").mkdir(parents=True)
    shutil.copyfile(encoded("mp3"), music / "locked" / "hidden.mp3")
    shutil.copyfile(encoded("flac"), music / "open.flac")
    (music / "locked").chmod(0o000)
    done = run_unprivileged("check", str(music))
    assert done.returncode == 0, done.stderr
    assert ": ok — " in done.stdout and done.stdout.count("\n") == 1
    assert f"cannot read the folder {music / 'locked'} (Permission denied): its files are not checked" in done.stderr


def test_a_listable_root_passes_the_guard(tmp_path):
    from poold.scan import library_problem

    assert library_problem(tmp_path, None) is None
    (tmp_path / "x.mp3").touch()
    assert library_problem(tmp_path, None) is None


# --- 2. mass damage is a guard --------------------------------------------------------

def zero_fill(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [zero_fill, empty])
def test_every_file_damaged_at_once_requests_nothing(tmp_path, encoded, damage):
    library = Library(tmp_path, encoded, KINDS * 5)  # 30 tracks
    for path in library.paths.values():
        damage(path)
    outcome = library.audit()
    report = outcome.report
    assert len(report.problems) == 30 and report.missing == 0
    assert "30 of 30 tracks are missing or damaged" in report.guard
    assert outcome.requests == []


def test_missing_and_damaged_count_together(tmp_path, encoded):
    library = Library(tmp_path, encoded, KINDS * 5)
    for trackid in (1001, 1002, 1003, 1004):
        library.paths[trackid].unlink()
    for trackid in (1011, 1012, 1013):
        media.truncate(str(library.paths[trackid]), 0.5)
    report = library.audit().report  # 7 of 30: 23 % > 20 %, though neither alone is
    assert "7 of 30 tracks are missing or damaged (4 missing, 3 corrupt)" in report.guard


def test_damage_below_the_fraction_is_requested(tmp_path, encoded):
    library = Library(tmp_path, encoded, KINDS * 5)
    for trackid in (1011, 1012, 1013):
        media.truncate(str(library.paths[trackid]), 0.5)
    outcome = library.audit()
    assert outcome.report.guard is None
    assert {t for entry in outcome.requests for t in entry["trackids"]} == {1011, 1012, 1013}


# --- 3. symlinks leaving the root -----------------------------------------------------

def link_out(library: Library, trackid: int, outside: Path) -> None:
    """Replace a track by a link to a truncated copy of it outside the library."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(library.paths[trackid], outside)
    media.truncate(str(outside), 0.5)
    library.paths[trackid].unlink()
    library.paths[trackid].symlink_to(outside)


def test_a_link_out_of_the_library_is_not_followed(tmp_path, encoded):
    library = Library(tmp_path, encoded, KINDS, extra="[guard]\nmax_missing_fraction = 1.0")
    link_out(library, 1001, tmp_path / "elsewhere" / "track.mp3")
    outcome = library.audit()
    [finding] = outcome.report.unchecked
    assert (finding.trackid, finding.reason) == (1001, "outside_library")
    assert str(tmp_path / "elsewhere" / "track.mp3") in finding.detail and "follow_symlinks" in finding.detail
    assert outcome.report.problems.__len__() == 0 and outcome.requests == []


def test_a_folder_link_out_of_the_library_is_not_followed(tmp_path, encoded):
    library = Library(tmp_path, encoded, KINDS, extra="[guard]\nmax_missing_fraction = 1.0")
    crate = library.root / "crate0"
    shutil.move(crate, tmp_path / "other-drive")
    crate.symlink_to(tmp_path / "other-drive")
    media.truncate(str(tmp_path / "other-drive" / "track1002.m4a"), 0.5)
    report = library.audit().report
    assert {(f.trackid, f.reason) for f in report.unchecked} == {(1002, "outside_library"), (1005, "outside_library")}
    assert len(report.problems) == 0


def test_links_out_are_followed_when_asked(tmp_path, encoded):
    library = Library(tmp_path, encoded, KINDS, extra="[guard]\nmax_missing_fraction = 1.0",
                      library_extra="follow_symlinks = true")
    link_out(library, 1001, tmp_path / "elsewhere" / "track.mp3")
    report = library.audit().report
    assert [(f.trackid, f.reason) for f in report.problems] == [(1001, "truncated")]


def test_links_inside_the_library_are_followed(tmp_path, encoded):
    library = Library(tmp_path, encoded, KINDS, extra="[guard]\nmax_missing_fraction = 1.0")
    library.root.rename(tmp_path / "real-library")
    library.root.symlink_to(tmp_path / "real-library")  # the root itself may be a link
    real = tmp_path / "real-library"
    shutil.move(real / "crate1" / "track1003.flac", real / "store.flac")
    (real / "crate1" / "track1003.flac").symlink_to("../store.flac")
    (real / "crate2").rename(real / "crate2-real")
    (real / "crate2").symlink_to("crate2-real")
    media.truncate(str(real / "store.flac"), 0.5)
    report = library.audit().report
    assert [(f.trackid, f.reason) for f in report.problems] == [(1003, "truncated")]
    assert len(report.unchecked) == 0 and report.ok == 5


def test_follow_symlinks_is_a_boolean_that_defaults_to_false(tmp_path):
    base = '[library]\nroot = "lib"\nmanifest = "m.json"\n{}\n[state]\ndir = "s"\n'
    path = tmp_path / "config.toml"
    path.write_text(base.format(""))
    assert load(path).library.follow_symlinks is False
    path.write_text(base.format("follow_symlinks = true"))
    assert load(path).library.follow_symlinks is True
    path.write_text(base.format('follow_symlinks = "yes"'))
    with pytest.raises(ConfigError, match="follow_symlinks"):
        load(path)


# --- 6. special files: never opened, never blocking, never damage ---------------------

def special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a socket and a character device (through a link) named like tracks."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.mp3")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "socket.flac"))
    listener.close()  # the socket file stays
    (folder / "device.wav").symlink_to("/dev/zero")
    return {"fifo": folder / "pipe.mp3", "socket": folder / "socket.flac", "device": folder / "device.wav"}


@pytest.mark.timeout(20)
def test_check_files_no_special_file_and_never_blocks(tmp_path):
    files = special_files(tmp_path)
    verdicts = {kind: check_file(path) for kind, path in files.items()}
    for verdict in verdicts.values():
        assert (verdict.status, verdict.reason) == ("unchecked", "not_a_file"), verdict
    assert "named pipe" in verdicts["fifo"].detail
    assert "socket" in verdicts["socket"].detail
    assert "device" in verdicts["device"].detail
    (tmp_path / "album.mp3").mkdir()
    folder = check_file(tmp_path / "album.mp3")  # a folder named like a track: not a file either
    assert (folder.status, folder.reason) == ("unchecked", "not_a_file")


@pytest.mark.timeout(60)
def test_poold_check_prints_a_line_for_a_fifo_and_moves_on(tmp_path, encoded):
    special_files(tmp_path / "music")
    shutil.copyfile(encoded("mp3"), tmp_path / "music" / "z-real.mp3")
    done = subprocess.run([sys.executable, "-m", "poold", "check", str(tmp_path / "music")],
                          capture_output=True, text=True, timeout=45)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert len(lines) == 4 and "z-real.mp3: ok — " in lines[-1]
    assert sum(": unchecked (not_a_file) — " in line for line in lines) == 3


@pytest.mark.timeout(60)
def test_special_files_in_the_library_are_unchecked(tmp_path, encoded):
    library = Library(tmp_path, encoded, ["mp3", "flac", "wav", "m4a"],
                      extra="[guard]\nmax_missing_fraction = 1.0", library_extra="follow_symlinks = true")
    specials = special_files(tmp_path / "specials")
    for trackid, kind in zip((1001, 1002), ("fifo", "socket")):
        os.replace(specials[kind], library.paths[trackid])
    library.paths[1003].unlink()
    library.paths[1003].symlink_to("/dev/zero")  # a device: reached through a link (follow_symlinks is on)
    outcome = library.audit(verify=True)
    report = outcome.report
    assert {(f.trackid, f.status, f.reason) for f in report.unchecked} == {
        (trackid, "unchecked", "not_a_file") for trackid in (1001, 1002, 1003)}
    assert len(report.problems) == 0 and report.ok == 1 and outcome.requests == []


@pytest.mark.timeout(20)
def test_hashing_a_fifo_fails_at_once(tmp_path):
    """Relocation hashes candidate files of a moved track: a FIFO must not hold it."""
    from poold.library import Relocator

    os.mkfifo(tmp_path / "moved.mp3")
    assert Relocator(tmp_path, frozenset({".mp3"}), ())._sha256_of("moved.mp3") is None


@pytest.mark.timeout(20)
def test_verify_digests_skip_a_fifo(tmp_path):
    from poold.scan import _digests

    os.mkfifo(tmp_path / "x.mp3")
    assert _digests(str(tmp_path / "x.mp3")) == ({}, None)


# --- 9. --deep and tags that are not UTF-8 --------------------------------------------

def latin1_title(path: Path) -> None:
    """Turn the title tag media.make wrote ("Test ...") into Latin-1 bytes (same length)."""
    data = path.read_bytes()
    assert data.count(b"Test ") == 1
    path.write_bytes(data.replace(b"Test ", b"T\xe9st "))


def serato_atom(path: Path) -> None:
    """A binary freeform atom, as Serato DJ writes its markers into MP4 files."""
    from mutagen.mp4 import MP4, AtomDataType, MP4FreeForm

    tags = MP4(path)
    tags["----:com.serato.dj:markersv2"] = [MP4FreeForm(b"\x01\x01\xff\xfe\x80\x00AQ\xc3", AtomDataType.UTF8)]
    tags.save()


TAG_CASES = [("mp3", latin1_title), ("flac", latin1_title), ("wav", latin1_title), ("aiff", latin1_title),
             ("m4a", latin1_title), ("m4a", serato_atom)]


@pytest.mark.parametrize("kind, retag", TAG_CASES, ids=[f"{k}-{f.__name__}" for k, f in TAG_CASES])
def test_deep_check_reads_files_with_tags_that_are_not_utf8(tmp_path, encoded, kind, retag):
    from poold.integrity.deep import deep_check

    path = tmp_path / f"tagged{media.extension(kind)}"
    shutil.copyfile(encoded(kind), path)
    retag(path)
    assert check_file(path).status == "ok"
    verdict = deep_check(path)
    assert (verdict.status, verdict.reason) == ("ok", "ok"), verdict


def test_deep_audit_survives_tags_that_are_not_utf8(tmp_path, encoded):
    library = Library(tmp_path, encoded, ["mp3", "flac", "m4a", "m4a"])
    for trackid in (1001, 1002, 1003):
        latin1_title(library.paths[trackid])
    serato_atom(library.paths[1004])
    report = library.audit(level="deep").report
    assert report.ok == 4, [*report.problems, *report.unchecked]


# --- checks that need no special rights -----------------------------------------------

def test_a_fifo_opened_by_the_reader_thread_does_not_hold_the_checker(tmp_path):
    """Even with a writer on the other end, the checker opens nothing that is not a file."""
    fifo = tmp_path / "busy.mp3"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
    writer.start()
    assert check_file(fifo).reason == "not_a_file"
    with open(fifo, "rb"):  # release the writer
        pass
    writer.join(5)


def test_deep_check_of_a_codec_ffmpeg_cannot_decode_is_unchecked(tmp_path, encoded):
    """A WAV whose format tag names a codec FFmpeg has no decoder for: complete, so the
    quick check passes it; the deep check cannot judge it, which is no crash."""
    from poold.integrity.deep import deep_check

    data = bytearray(encoded("wav").read_bytes())
    fmt = data.find(b"fmt ")
    data[fmt + 8:fmt + 10] = (0x7777).to_bytes(2, "little")  # wFormatTag: no such codec
    path = tmp_path / "odd.wav"
    path.write_bytes(data)
    assert check_file(path).status == "ok"
    verdict = deep_check(path)
    assert (verdict.status, verdict.reason) == ("unchecked", "check_error")
    assert "no decoder" in verdict.detail and "/proc/" not in verdict.detail


def test_deep_check_names_the_file_not_ffmpegs_path_when_ffmpeg_refuses_it(tmp_path, encoded):
    """An AIFF whose sample rate (an 80-bit float in COMM) has a mantissa FFmpeg rejects."""
    from poold.integrity.deep import deep_check

    data = bytearray(encoded("aiff").read_bytes())
    rate = data.find(b"COMM") + 16
    data[rate + 2:rate + 6] = b"\0\0\0\x10"
    path = tmp_path / "odd-rate.aiff"
    path.write_bytes(data)
    verdict = deep_check(path)
    assert (verdict.status, verdict.reason) == ("unchecked", "check_error"), verdict
    assert verdict.detail == "FFmpeg could not open it: Invalid data found when processing input"

