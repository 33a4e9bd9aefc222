"""The library-loss guard of ``poold run``: is the library there, on its drive, marked,
and not breaking all at once?

:func:`poold.scan.library_problem` answers for the folder and the marker file; the
guard adds the drive, remembered from when the library was first seen healthy, and
:class:`DamageWindow` counts the tracks found broken lately (a dying drive or a bad
restore damages many files within minutes; downloads fail one at a time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from .scan import library_problem
from .watch import mount_point

log = logging.getLogger(__name__)


class LibraryGuard:
    """Why the library looks unavailable (or None), including "unmounted since start".

    The device check: the root's device is remembered when first seen healthy. When it
    changes, the mount point above the root decides: if it is the same or deeper (the
    drive was remounted, or a drive got mounted over the path), the new device is
    accepted; if it is shallower, the drive the library was on is gone and what is
    left is the folder it was mounted on.
    """

    def __init__(self, root: Path, marker: str | None, stat_device: Callable[[Path], int] = lambda p: p.stat().st_dev,
                 find_mount_point: Callable[[Path], str] = mount_point):
        self.root, self.marker = root, marker
        self.stat_device, self.find_mount_point = stat_device, find_mount_point
        self.baseline: tuple[int, str] | None = None

    def problem(self) -> str | None:
        if problem := library_problem(self.root, self.marker):
            return problem
        try:
            device = self.stat_device(self.root)
        except OSError as exc:
            return f"the library folder {self.root} cannot be read ({exc.strerror})"
        if self.baseline is None:
            self.baseline = (device, self.find_mount_point(self.root))
        if device == self.baseline[0]:
            return None
        point = self.find_mount_point(self.root)
        if len(point) >= len(self.baseline[1]):
            log.info("the library is on another device now, mounted at %s: accepted", point)
            self.baseline = (device, point)
            return None
        return (f"the library folder {self.root} is no longer on the drive mounted at {self.baseline[1]} "
                f"(it is on {point} now): drive unmounted?")


DAMAGE_WINDOW = 600.0  # seconds: tracks found broken within this long count together


class DamageWindow:
    """The tracks found missing or damaged within the last ``seconds`` (a sliding window)."""

    def __init__(self, seconds: float = DAMAGE_WINDOW):
        self.seconds = seconds
        self._found: dict[int, float] = {}  # trackid -> when it was last found broken

    def add(self, trackids: Iterable[int], now: float) -> None:
        for trackid in trackids:
            self._found.pop(trackid, None)  # re-inserted: the dict stays in order of time
            self._found[trackid] = now

    def count(self, now: float) -> int:
        expired = [trackid for trackid, when in self._found.items() if when < now - self.seconds]
        for trackid in expired:
            del self._found[trackid]
        return len(self._found)

    def clear(self) -> None:
        self._found.clear()
