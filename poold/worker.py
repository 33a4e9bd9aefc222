"""A thread that works when kicked: the service's drain and heal workers.

Both must never stall the main loop (POOL may be slow, a download long), and both
must stop promptly at shutdown: the main loop kicks them, and asks them to stop.
"""

from __future__ import annotations

import threading


class Worker:
    """Runs :meth:`work` on a thread of its own each time it is kicked (and every
    :attr:`INTERVAL` seconds when that is set), until stopped."""

    NAME = "poold-worker"
    INTERVAL: float | None = None  # None: work only when kicked

    def __init__(self):
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.NAME, daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def kick(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to finish; True if it did within ``timeout`` (nothing left in flight)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.INTERVAL)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.work()
        self.finish()

    def work(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called on the thread once it stops."""
