"""The daemon's sending side: which confirmed problems to file, and the drain thread.

:class:`Drainer` sends the outbox from a thread of its own (with its own State
connection), so a slow or failing POOL never stalls the watch; :class:`Backoff` spaces
the attempts after failures.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable

from . import app, filing
from .config import Config
from .errors import PoolError
from .state import State
from .worker import Worker

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 60.0, 1800.0


def confirmed_batches(state: State, config: Config, confirmed: set[int], now: float | None = None) -> list[filing.Batch]:
    """filing.plan's batches, keeping only tracks this daemon judged broken after settling."""
    now = time.time() if now is None else now
    batches, _held = filing.plan(state, config.requests, now)
    day = datetime.date.fromtimestamp(now)
    kept = []
    for batch in batches:
        incidents = tuple(i for i in batch.incidents if i.trackid in confirmed)
        if incidents:
            kept.append(filing.Batch(batch.cause, filing.reason_text(batch.cause, len(incidents), day), incidents))
    return kept


class Backoff:
    """Delays between drain attempts after failures: 1 min, doubling, at most 30 min."""

    def __init__(self, first: float = BACKOFF_FIRST, maximum: float = BACKOFF_MAX):
        self.first, self.maximum = first, maximum
        self.delay: float | None = None

    def failed(self) -> float:
        self.delay = self.first if self.delay is None else min(self.delay * 2, self.maximum)
        return self.delay

    def reset(self) -> None:
        self.delay = None


@dataclasses.dataclass(frozen=True)
class DrainResult:
    outcome: str  # idle | ok | retry | error | stopped
    message: str = ""


class Stopping(Exception):
    """Raised in the drain or full-check thread to give up at shutdown (not a PoolError: never retried)."""


class StopAware:
    """A PoolClient stand-in that refuses to start another attempt once shutdown began."""

    def __init__(self, client, stopping: threading.Event):
        self.client, self.stopping = client, stopping

    def redownload(self, trackids, reason, on_attempt=None):
        def attempt():
            if self.stopping.is_set():
                raise Stopping()
            if on_attempt:
                on_attempt()
        return self.client.redownload(trackids, reason, on_attempt=attempt)


class Drainer(Worker):
    """Sends the outbox from a thread of its own, so a slow or failing POOL never stalls the watch."""

    NAME = "poold-drain"

    def __init__(self, config: Config, post: Callable[[tuple], None]):
        super().__init__()
        self.config = config
        self.post = post
        self._client, self._client_config = None, None

    def work(self) -> None:
        self.post(("drain", self._drain_once()))

    def finish(self) -> None:
        if self._client is not None:
            self._client.close()

    def _drain_once(self) -> DrainResult:
        config = self.config
        if config.requests.dry_run:
            return DrainResult("idle")
        started = time.time()
        try:
            with State(config.state.dir) as state:
                if not state.pending_requests():
                    return DrainResult("idle")
                settled = filing.drain(state, StopAware(self._client_for(config), self._stop))
                failed = [r for r in state.pending_requests() if r.updated >= started and r.last_error]
        except Stopping:
            return DrainResult("stopped")
        except (PoolError, app.SetupError) as exc:
            return DrainResult("error", str(exc))
        except Exception as exc:  # a bug here must not end the drain thread
            log.exception("sending requests failed")
            return DrainResult("error", f"{type(exc).__name__}: {exc}")
        for request in settled:
            if request.state == "rejected":
                log.error("request %d for tracks %s was rejected: %s", request.id, list(request.trackids),
                          request.last_error)
        return DrainResult("retry", failed[0].last_error) if failed else DrainResult("ok")

    def _client_for(self, config: Config):
        if self._client is None or self._client_config is not config:
            if self._client is not None:
                self._client.close()
            self._client, self._client_config = app.make_client(config), config
        return self._client
