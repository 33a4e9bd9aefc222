"""poold.library: the manifest in memory, names compared in one form, the volume's case
rule learnt by probing, and the relocation rule on real encoded files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest

import media
from poold.config import DEFAULT_IGNORE
from poold.library import (CandidateChecker, Candidates, Checked, Library, Relocator, SortedIds, Volume,
                           is_case_insensitive, nfc)
from poold.manifest import Track

EXTENSIONS = frozenset({".mp3", ".flac", ".wav", ".aiff", ".m4a", ".ogg"})
SENSITIVE, INSENSITIVE = Volume(False), Volume(True)


def test_library_tracks_moves_and_diffs():
    library = Library([Track(1, "A/a.mp3"), Track(2, "A/b.mp3", size=3), Track(3, "B/c.mp3")])
    assert [t.trackid for t in library.under("A")] == [1, 2] and library.at("B/c.mp3").trackid == 3
    library.relocate(1, "C/a.mp3")
    assert library.at("C/a.mp3").trackid == 1 and library.at("A/a.mp3") is None
    newer = Library([Track(1, "C/a.mp3"), Track(2, "A/b.mp3", size=4), Track(4, "D/d.mp3")])
    changed, removed = library.diff(newer)
    assert sorted(t.trackid for t in changed) == [2, 4] and removed == {3}


def test_a_library_finds_a_track_by_another_spelling_the_volume_does_not_tell_apart():
    path = "Crates/Café Olé.mp3"
    nfd = unicodedata.normalize("NFD", path)
    assert Library([Track(1, path)]).at(nfd) is None  # no volume given: exact paths only
    library = Library([Track(1, path)], SENSITIVE)
    assert library.at(nfd).trackid == 1 and library.at("crates/café olé.mp3") is None
    library.volume = INSENSITIVE
    assert library.at("crates/CAFÉ OLÉ.mp3").trackid == 1
    library.relocate(1, "Sorted/Café Olé.mp3")
    assert library.at(nfd) is None and library.at("sorted/café olé.mp3").trackid == 1


def test_sorted_ids_answer_membership():
    ids = SortedIds([3, 8, 21, 1000])
    assert [n in ids for n in (1, 3, 8, 9, 21, 1000, 1001)] == [False, True, True, False, True, True, False]
    assert len(ids) == 4 and 5 not in SortedIds([])


# --- names ---------------------------------------------------------------------------

def test_names_are_compared_in_nfc_and_casefolded_only_on_case_insensitive_volumes():
    composed, decomposed = "Crates/Café Tacvba.mp3", unicodedata.normalize("NFD", "Crates/Café Tacvba.mp3")
    assert composed != decomposed and nfc(decomposed) == composed
    assert SENSITIVE.key(decomposed) == SENSITIVE.key(composed)
    assert SENSITIVE.key("A/Track.MP3") != SENSITIVE.key("a/track.mp3")
    assert INSENSITIVE.key("A/Track.MP3") == INSENSITIVE.key("a/track.mp3")


def test_probe_says_case_sensitive_on_this_filesystem(tmp_path):
    (tmp_path / "House").mkdir()
    (tmp_path / "House" / "Track.mp3").write_bytes(b"x")
    assert is_case_insensitive(tmp_path) is False
    (tmp_path / "house").mkdir()  # both spellings as entries of their own: not evidence either way
    assert is_case_insensitive(tmp_path) is False
    assert is_case_insensitive(tmp_path / "gone") is False


@pytest.fixture
def exfat(tmp_path):
    """A real exFAT volume (case-insensitive, as on USB sticks): a loop device and FUSE."""
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("mkfs.exfat", "mount.exfat-fuse", "losetup")):
        pytest.skip("needs root, losetup, mkfs.exfat (exfatprogs) and mount.exfat-fuse (exfat-fuse)")
    image, mount = tmp_path / "usb.img", tmp_path / "USB"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.exfat", str(image)], check=True, capture_output=True)
    attach = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if attach.returncode:
        pytest.skip(f"no loop device here: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        mounted = subprocess.run(["mount.exfat-fuse", device, str(mount)], capture_output=True, text=True)
        if mounted.returncode:
            pytest.skip(f"cannot mount exFAT through FUSE here: {mounted.stderr.strip()}")
        yield mount
        subprocess.run(["umount", str(mount)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device])


def test_probe_finds_a_case_insensitive_volume(exfat):
    (exfat / "Crates").mkdir()
    assert is_case_insensitive(exfat) is True


def test_a_track_whose_case_changed_on_a_case_insensitive_volume_is_found_by_name(exfat, encoded):
    (exfat / "crates").mkdir()
    shutil.copyfile(encoded("mp3"), exfat / "crates" / "song title.mp3")
    relocator = Relocator(exfat, EXTENSIONS, DEFAULT_IGNORE)
    assert relocator.volume.case_insensitive
    found = find(relocator, [Track(1, "Incoming/Song Title.MP3")])
    assert moved_to(found) == {1: ("crates/song title.mp3", "name")}
    # and the track's own file, whatever the spelling of its path, is no candidate
    assert not relocator.unknown(relocator.walk(), ["Crates/Song Title.mp3"])


# --- the relocation rule on real files ---------------------------------------------------

def put(root: Path, relative: str, source: Path) -> Path:
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find(relocator: Relocator, tracks: list[Track], present=(), identities=None, check=None, **kwargs):
    candidates = relocator.unknown(relocator.walk(), present)
    check = check or CandidateChecker(relocator.root, None, 1)
    return relocator.find(tracks, candidates, identities=identities or {}, check=check, **kwargs)


def moved_to(found) -> dict[int, tuple[str, str]]:
    return {trackid: (move.destination, move.evidence) for trackid, move in found.moves.items()}


@pytest.fixture
def relocator(tmp_path):
    return Relocator(tmp_path, EXTENSIONS, DEFAULT_IGNORE, SENSITIVE)


def test_same_name_elsewhere_is_the_track_without_size_or_hash(relocator, encoded):
    put(relocator.root, "Crates/Peak/Song.mp3", encoded("mp3"))
    put(relocator.root, "Other/Else.mp3", encoded("mp3_vbr"))
    found = find(relocator, [Track(1, "House/Song.mp3")])
    assert moved_to(found) == {1: ("Crates/Peak/Song.mp3", "name")}


def test_a_size_in_the_manifest_must_match_a_name_match(relocator, encoded):
    size = put(relocator.root, "Crates/Song.mp3", encoded("mp3")).stat().st_size
    assert not find(relocator, [Track(1, "House/Song.mp3", size=size + 1)]).moves
    assert find(relocator, [Track(1, "House/Song.mp3", size=size)]).moves


def test_size_and_sha256_find_a_renamed_file_whatever_its_name(relocator, encoded):
    renamed = put(relocator.root, "Crates/Friday/8A - 124 - Song.mp3", encoded("mp3"))
    put(relocator.root, "Crates/Song.mp3", encoded("mp3_vbr"))  # the old name, other audio
    track = Track(1, "House/Song.mp3", size=renamed.stat().st_size, sha256=digest(renamed))
    assert moved_to(find(relocator, [track])) == {1: ("Crates/Friday/8A - 124 - Song.mp3", "sha256")}


def test_a_damaged_candidate_is_never_the_new_home(relocator, encoded):
    damaged = put(relocator.root, "Crates/Song.mp3", encoded("mp3"))
    media.truncate(str(damaged), 0.5)
    assert not find(relocator, [Track(1, "House/Song.mp3")]).moves


def test_a_converted_file_is_another_file(relocator, encoded):
    put(relocator.root, "Crates/Song.aiff", encoded("aiff"))  # WAV converted to AIFF for its tags
    wav = encoded("wav")
    track = Track(1, "House/Song.wav", size=wav.stat().st_size, sha256=digest(wav))
    assert not find(relocator, [track]).moves
    assert not find(relocator, [Track(2, "House/Song.wav")]).moves


def test_a_decomposed_name_is_the_same_name(relocator, encoded):
    stored = unicodedata.normalize("NFD", "Crates/Café del Mar.flac")
    put(relocator.root, stored, encoded("flac"))
    found = find(relocator, [Track(1, "Crates/Café del Mar.flac")])
    move = found.moves[1]
    assert move.destination == stored and move.evidence == "name" and move.respelled


def test_with_duplicate_copies_the_closest_path_wins_and_no_request_is_needed(relocator, encoded):
    for copy in ("USB Export/Song.mp3", "House/Friday/Song.mp3", "House/Song.mp3"):
        put(relocator.root, copy, encoded("mp3"))
    os.utime(relocator.root / "USB Export/Song.mp3", (2e9, 2e9))  # the most recent: not what decides first
    track = Track(1, unicodedata.normalize("NFD", "House/Song.mp3"))
    assert moved_to(find(relocator, [track]))[1][0] == "House/Song.mp3"  # the same path, respelled
    track = Track(2, "House/Crates/Song.mp3")
    assert moved_to(find(relocator, [track], present=["House/Song.mp3"]))[2][0] == "House/Friday/Song.mp3"
    track = Track(3, "Elsewhere/Song.mp3")
    assert moved_to(find(relocator, [track], present=["House/Song.mp3"]))[3][0] == "USB Export/Song.mp3"


def test_one_file_is_the_new_home_of_one_track_only(relocator, encoded):
    put(relocator.root, "Crates/Song.mp3", encoded("mp3"))
    found = find(relocator, [Track(1, "A/Song.mp3"), Track(2, "B/Song.mp3")])
    assert moved_to(found) == {1: ("Crates/Song.mp3", "name")}


def test_present_ignored_and_other_extension_files_are_not_candidates(relocator, encoded):
    for relative in ("A/Song.mp3", "B/Song.mp3.part", "C/Song.mp3.txt"):
        put(relocator.root, relative, encoded("mp3"))
    assert not relocator.unknown(relocator.walk(), ["A/Song.mp3"])
    assert not find(relocator, [Track(1, "House/Song.mp3")], present=["A/Song.mp3"]).moves


def test_a_rename_seen_by_the_watcher_wins(relocator, encoded):
    renamed = put(relocator.root, "New Name.mp3", encoded("mp3"))
    put(relocator.root, "Elsewhere/Song.mp3", encoded("mp3"))
    size = renamed.stat().st_size
    found = find(relocator, [Track(1, "House/Song.mp3", size=size)], renames={"House/Song.mp3": "New Name.mp3"})
    assert moved_to(found) == {1: ("New Name.mp3", "renamed")}
    found = find(relocator, [Track(1, "House/Song.mp3", size=size + 1)], renames={"House/Song.mp3": "New Name.mp3"})
    assert not found.moves


def test_a_candidate_still_being_written_defers_the_decision(relocator, encoded):
    put(relocator.root, "Crates/Song.mp3", encoded("mp3"))
    found = find(relocator, [Track(1, "House/Song.mp3")], settling=lambda path: path == "Crates/Song.mp3")
    assert not found.moves and found.undecided == {1}


def test_identity_finds_a_renamed_and_retagged_file_and_outranks_a_name(relocator, encoded):
    """The identity step with identities given by the check (the real ones are tested in
    test_relocation.py): the recorded identity decides over a same-named other file."""
    put(relocator.root, "Crates/8A - 124 - Song.mp3", encoded("mp3"))
    put(relocator.root, "Crates/Song.mp3", encoded("mp3_vbr"))
    identities = {"Crates/8A - 124 - Song.mp3": "a1:1:aa", "Crates/Song.mp3": "a1:1:bb"}

    def check(paths):
        return {path: Checked(True, identities[path]) for path in paths}

    found = find(relocator, [Track(1, "House/Song.mp3")], identities={1: "a1:1:aa"}, check=check)
    assert moved_to(found) == {1: ("Crates/8A - 124 - Song.mp3", "identity")}
    found = find(relocator, [Track(1, "House/Song.mp3")], identities={1: "a1:1:cc"}, check=check)
    assert not found.moves  # the same name, but other audio than the track had


def test_candidates_index_names_in_the_volumes_form():
    from poold.library import Candidate

    files = [Candidate(unicodedata.normalize("NFD", "A/Café.mp3"), 10, 1.0), Candidate("B/SONG.mp3", 5, 2.0)]
    assert Candidates(files, SENSITIVE).named_like(Track(1, "X/Café.mp3")) == [files[0].path]
    assert Candidates(files, SENSITIVE).named_like(Track(1, "X/song.mp3")) == []
    assert Candidates(files, INSENSITIVE).named_like(Track(1, "X/song.mp3")) == ["B/SONG.mp3"]


# --- the audit's search: once, and only when something is missing ------------------------

@pytest.mark.parametrize("chunk", [50_000, 1])  # 1: more missing tracks than are held at once
def test_the_audit_walks_once_and_only_when_something_is_missing(make_library, monkeypatch, chunk):
    from poold import app, library as library_module

    monkeypatch.setattr(library_module, "CHUNK", chunk)
    walks = []
    real_walk = Relocator.walk
    monkeypatch.setattr(Relocator, "walk", lambda self: walks.append(1) or real_walk(self))
    library = make_library(["mp3", "flac", "m4a", "ogg", "wav"], extra="[guard]\nmax_missing_fraction = 1.0\n")
    config = library.config()
    assert app.run_audit(config).report.ok == 5 and walks == []
    assert app.run_audit(config).report.ok == 5 and walks == []  # warm, nothing missing
    moved = library.root / "Sorted" / library.paths[1002].name
    moved.parent.mkdir()
    library.paths[1002].rename(moved)
    library.paths[1003].unlink()
    library.paths[1004].unlink()
    report = app.run_audit(config).report
    assert walks == [1] and report.moved == {1002: "Sorted/track1002.flac"}
    assert [(f.trackid, f.status) for f in report.problems] == [(1003, "missing"), (1004, "missing")]


def test_track_identities_are_written_only_when_they_change(tmp_path):
    from poold.state import State

    with State(tmp_path) as state:
        state.record_identities([(1, "a1:10:aa"), (2, "a1:10:bb")], now=100.0)
        state.record_verified([(1, "a1:10:aa", "f1:10:ff")], now=150.0)
        state.record_identities([(1, "a1:10:aa")], now=200.0)  # unchanged: the row stays as it was
        assert tuple(state.db.execute("SELECT seen, verified FROM track_identity WHERE trackid=1").fetchone()) == (100.0, 150.0)
        assert state.verified_identities() == {1: "f1:10:ff"}
        state.record_identities([(1, "a1:10:cc")], now=300.0)  # other audio: no longer the verified one
        assert state.track_identities([1, 2, 3]) == {1: "a1:10:cc", 2: "a1:10:bb"}
        assert state.verified_identities() == {}


def test_an_audit_on_a_case_insensitive_volume(exfat, encoded):
    """On exFAT a path that differs in case is the same file, and a track moved and
    renamed in another case is found by its name; neither is missing."""
    from conftest import write_manifest
    from poold import app
    from poold.config import load

    for relative, kind in (("incoming/song one.mp3", "mp3"), ("Crates/SONG TWO.FLAC", "flac")):
        put(exfat / "Music", relative, encoded(kind))
    manifest = exfat.parent / "manifest.json"
    write_manifest(manifest, [{"trackid": 1, "path": "Incoming/Song One.mp3"},
                              {"trackid": 2, "path": "Incoming/Song Two.flac"}])
    config_path = exfat.parent / "config.toml"
    config_path.write_text(f'[library]\nroot = "{exfat / "Music"}"\nmanifest = "{manifest}"\n'
                           f'[state]\ndir = "{exfat.parent / "state"}"\n[guard]\nmax_missing_fraction = 1.0\n')
    report = app.run_audit(load(config_path)).report
    assert report.ok == 2 and not list(report.problems)
    assert report.moved == {2: "Crates/SONG TWO.FLAC"}
