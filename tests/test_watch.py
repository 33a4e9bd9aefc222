"""The watcher's pure pieces (ignore rules, mount tables, settling) and the observer itself
on a real folder. The move rule is tested in test_library.py."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest

from poold.config import DEFAULT_IGNORE
from poold.watch import (Change, LibraryWatcher, Mount, Settler, choose_mode, is_ignored, mount_of, mount_point,
                         parse_bsd_mount, parse_mountinfo, poll_interval, signature)

# --- ignore patterns -------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "House/Track.mp3.part", "Track.crdownload", "a/b/Track.m4a.download", "Track.tmp", "House/.~lock.Track.mp3#",
    "Track.mp3.!qB", "~Track.mp3", "Track.flac.partial", "House/.Track.mp3.swp",
])
def test_downloads_in_progress_are_ignored(path):
    assert is_ignored(path, DEFAULT_IGNORE)


@pytest.mark.parametrize("path", ["House/Track.mp3", "Part Time Lover.flac", "Tmp/Track.mp3", "a.partyline.mp3",
                                  "House/Track~1.mp3"])
def test_finished_files_are_not_ignored(path):
    assert not is_ignored(path, DEFAULT_IGNORE)


def test_patterns_with_a_slash_match_the_relative_path():
    assert is_ignored("Incoming/Track.mp3", ["Incoming/*"])
    assert not is_ignored("House/Incoming.mp3", ["Incoming/*"])
    assert not is_ignored("Track.PART", ["*.part"]), "matching is case-sensitive"


# --- mounts ----------------------------------------------------------------------------

MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
35 22 0:32 / /home/dj/Music\040Library rw,relatime shared:20 - nfs4 nas:/music rw,vers=4.2
36 22 8:33 / /media/dj/USB rw,nosuid,nodev shared:21 - fuseblk /dev/sdc1 rw,user_id=0,allow_other
37 22 0:40 / /home/dj/remote rw,nosuid,nodev shared:22 - fuse.sshfs dj@studio:/crates rw,user_id=1000
38 22 0:41 / /mnt/smb rw,relatime shared:23 master:4 - cifs //nas/dj rw,vers=3.1.1
39 22 0:42 / /mnt/auto rw,relatime shared:24 - autofs systemd-1 rw,fd=45
40 39 0:43 / /mnt/auto rw,relatime shared:25 - nfs nas:/auto rw
"""


def test_mountinfo_is_parsed_with_escapes_and_optional_fields():
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts][:2] == ["/", "/home/dj/Music Library"]
    assert mounts[1] == Mount("/home/dj/Music Library", "nfs4", "nas:/music")
    assert mounts[4].fstype == "cifs" and mounts[4].source == "//nas/dj"


@pytest.mark.parametrize("path,fstype,network", [
    ("/home/dj/Music Library/House/a.mp3", "nfs4", True),
    ("/home/dj/Music", "ext4", False),
    ("/media/dj/USB/Crates", "fuseblk", False),
    ("/home/dj/remote/x", "fuse.sshfs", True),
    ("/mnt/smb", "cifs", True),
    ("/mnt/auto/a", "nfs", True),  # the later mount on the same point is the one in use
])
def test_the_mount_of_a_path_and_whether_it_is_remote(path, fstype, network):
    mount = mount_of(path, parse_mountinfo(MOUNTINFO))
    assert mount.fstype == fstype and mount.is_network is network


def test_bsd_mount_output_marks_local_filesystems():
    mounts = parse_bsd_mount(
        "/dev/disk3s1s1 on / (apfs, sealed, local, read-only, journaled)\n"
        "//dj@nas._smb._tcp.local/Music on /Volumes/Music (smbfs, nodev, nosuid, mounted by dj)\n"
        "dj@studio:/crates on /Volumes/crates (macfuse, nodev, nosuid, synchronous, mounted by dj)\n"
        "/dev/disk4s1 on /Volumes/DJ USB (exfat, local, nodev, nosuid, noowners)\n")
    by_point = {m.mount_point: m for m in mounts}
    assert not by_point["/"].is_network and not by_point["/Volumes/DJ USB"].is_network
    assert by_point["/Volumes/Music"].is_network and by_point["/Volumes/crates"].is_network


def test_mode_follows_the_config_then_the_filesystem():
    mounts = parse_mountinfo(MOUNTINFO)
    assert choose_mode("poll", "/home/dj/Music", mounts)[0] == "poll"
    assert choose_mode("native", "/mnt/smb", mounts)[0] == "native"
    mode, why = choose_mode("auto", "/mnt/smb/Crates", mounts)
    assert mode == "poll" and "cifs" in why
    assert choose_mode("auto", "/home/dj/Music", mounts)[0] == "native"
    assert choose_mode("auto", "/anywhere", [])[0] == "native", "an unreadable mount table means local"


def test_this_machines_mount_point_and_mount_table(tmp_path):
    assert mount_point("/") == "/"
    assert os.path.ismount(mount_point(tmp_path))
    assert choose_mode("auto", tmp_path)[0] in ("native", "poll")


def test_poll_interval_follows_the_settle_time_within_bounds():
    assert poll_interval(0.5) == 1.0 and poll_interval(10) == 5.0 and poll_interval(600) == 30.0


# --- settling --------------------------------------------------------------------------


def test_a_path_is_due_after_the_settle_time_if_it_did_not_change():
    settler = Settler(10)
    settler.touch("a", 100.0, (5, 1))
    assert settler.next_due() == 110.0
    assert settler.due(109.9, lambda p: (5, 1)) == []
    assert settler.due(110.0, lambda p: (5, 1)) == ["a"]
    assert len(settler) == 0


def test_a_file_still_growing_without_events_is_held_another_settle_time():
    settler = Settler(10)
    settler.touch("a", 100.0, (5, 1))
    assert settler.due(111.0, lambda p: (9, 2)) == []  # grew since the event: not settled
    assert settler.next_due() == 121.0
    assert settler.due(121.0, lambda p: (9, 2)) == ["a"]


def test_every_event_restarts_the_settle_time():
    settler = Settler(10)
    for t in range(100, 130, 3):  # a slow download, one write every 3 s
        settler.touch("a", float(t), (t, t))
        assert settler.due(t + 2.9, lambda p: (t, t)) == []
    assert settler.due(137.0, lambda p: (127, 127)) == ["a"]


def test_an_absent_path_waits_for_the_library_to_stop_changing_shape():
    settler = Settler(1)
    settler.touch("gone", 100.0, None)
    settler.touch("there", 100.0, (1, 1))
    current = {"gone": None, "there": (1, 1)}.get
    assert settler.next_due(absent_not_before=105.0) == 101.0
    assert settler.due(101.0, current, absent_not_before=105.0) == ["there"]
    assert settler.next_due(absent_not_before=105.0) == 105.0
    assert settler.due(105.0, current, absent_not_before=105.0) == ["gone"]


def test_a_path_that_came_back_is_judged_as_present():
    settler = Settler(1)
    settler.touch("a", 100.0, None)
    assert settler.due(101.0, lambda p: (3, 3)) == []  # reappeared: its own settle time starts
    assert settler.due(102.0, lambda p: (3, 3)) == ["a"]


def test_signature_is_size_and_mtime_or_none(tmp_path):
    path = tmp_path / "a.mp3"
    assert signature(str(path)) is None
    path.write_bytes(b"abc")
    info = path.stat()
    assert signature(str(path)) == (3, info.st_mtime_ns)
    assert signature(str(path / "below-a-file")) is None


# --- the observer on a real folder ------------------------------------------------------


def collect(changes: queue.Queue, until, timeout: float = 5.0) -> list[Change]:
    seen: list[Change] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(seen):
        try:
            seen.append(changes.get(timeout=0.1))
        except queue.Empty:
            pass
    return seen


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mode", ["native", "poll"])
def test_the_watcher_reports_changes_and_the_manifest(tmp_path, mode):
    root, manifest = tmp_path / "library", tmp_path / "meta" / "manifest.json"
    (root / "A").mkdir(parents=True)
    manifest.parent.mkdir()
    (root / "A" / "old.mp3").write_bytes(b"1")
    changes: queue.Queue = queue.Queue()
    watcher = LibraryWatcher(root, manifest, mode, 1.0, changes.put, lambda message: None)
    watcher.start()
    try:
        assert watcher.alive() and watcher.mode == mode
        (root / "A" / "new.mp3").write_bytes(b"2")
        (root / "A" / "old.mp3").rename(root / "A" / "moved.mp3")
        manifest.write_text("{}")
        seen = collect(changes, lambda s: {c.kind for c in s} >= {"created", "moved"}
                       and any(c.path == str(manifest) for c in s))
        kinds = {(c.kind, Path(c.path).name, c.dest and Path(c.dest).name) for c in seen}
        assert ("moved", "old.mp3", "moved.mp3") in kinds
        assert any(c.path == str(manifest) for c in seen)
        assert not any(c.kind in ("dir_gone", "dir_moved") for c in seen)
    finally:
        watcher.stop()
    assert not watcher.alive()


@pytest.mark.timeout(20)
def test_a_deleted_root_makes_the_watcher_not_alive(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    watcher = LibraryWatcher(root, tmp_path / "manifest.json", "native", 1.0, lambda c: None, lambda m: None)
    watcher.start()
    try:
        root.rmdir()
        (tmp_path / "other").mkdir()  # takes the freed inode number, should the filesystem reuse it
        root.mkdir()  # the same path, another folder: the watches were on the old one
        deadline = time.monotonic() + 10  # the emitter notices the deletion on its own thread
        while watcher.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not watcher.alive()
    finally:
        watcher.stop()


def test_watchdog_warnings_are_reported_as_trouble(tmp_path):
    import logging

    troubles: list[str] = []
    watcher = LibraryWatcher(tmp_path, tmp_path / "manifest.json", "native", 1.0, lambda c: None, troubles.append)
    watcher.start()
    try:
        logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
    finally:
        watcher.stop()
    logging.getLogger("watchdog.observers.inotify_c").warning("after stop: not reported")
    assert troubles == ["Inotify queue overflowed; filesystem events were lost"]


def test_a_watcher_that_cannot_start_leaves_no_thread_behind(tmp_path):
    import threading

    before = threading.active_count()
    watcher = LibraryWatcher(tmp_path / "unplugged", tmp_path / "manifest.json", "native", 1.0,
                             lambda c: None, lambda m: None)
    with pytest.raises(FileNotFoundError):
        watcher.start()
    assert threading.active_count() == before and not watcher.alive()


def test_settler_holds_every_path_until_not_before():
    settler = Settler(1)
    settler.touch("changed", 100.0, (10, 1))
    current = {"changed": (10, 1)}.get
    assert settler.next_due(not_before=104.0) == 104.0  # the library is still busy elsewhere
    assert settler.due(103.0, current, not_before=104.0) == []
    assert settler.due(104.0, current, not_before=104.0) == ["changed"]
