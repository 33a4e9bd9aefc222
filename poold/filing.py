"""From problems to redownload requests: incidents, eligibility, grouping, the drain.

The steps are kept apart so that each can be trusted on its own:

1. :func:`record` turns an audit's findings into incidents (and closes the incidents
   of tracks that check ok again).
2. :func:`plan` picks the incidents that may be requested now and groups them by
   cause into batches whose generated reason is true of every track in them.
3. :func:`enqueue` writes the batches to the outbox as ``pending`` - before any send.
4. :func:`drain` sends pending requests and settles each one.

A track is not requested while a request for it is open, nor again within the
cooldown after one for the same incident, nor at all after
:data:`MAX_REQUESTS_PER_TRACK` requests for one incident (it keeps failing after being
redownloaded: a person has to look). Once the file checks ok, the incident is closed;
if it breaks again later, that is a new incident. At most ``max_tracks_per_day``
distinct track IDs are requested in any rolling 24 hours.

When POOL refuses a request as a whole (HTTP 400 or ``"result": "error"``), perhaps
for one track ID it does not know, the request is split in halves, and the halves
again, until the refused IDs stand alone. A track refused alone is settled
``rejected`` with POOL's message and never requested again for that incident: a
person has to look.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import RequestsConfig
from .errors import PoolError, RefusedError, RejectedError, TransientError
from .integrity import NOT_REQUESTABLE
from .scan import AuditReport
from .state import FINAL_REQUEST_STATES, Incident, OutboxRequest, State

if TYPE_CHECKING:
    from .pool import PoolClient

log = logging.getLogger(__name__)

MAX_REQUESTS_PER_TRACK = 2
DAY = 86400.0
LOCK_NAME = "outbox.lock"

# cause -> how the reason text describes the files ("3 files truncated (...)")
CAUSE_PHRASES = {
    "missing": "missing from the library (lost or deleted)",
    "empty": "empty (0 bytes)",
    "unreadable": "unreadable (disk read errors)",
    "not_audio": "not media (a web page or other data saved in their place)",
    "truncated": "truncated (incomplete download)",
    "zero_filled": "zero-filled at the end (incomplete download)",
    "bad_structure": "with a damaged container structure",
    "trailing_data": "with unexpected data after the end of the audio",
    "crc_mismatch": "failing their built-in checksums (damaged data)",
    "decode_error": "failing to decode (damaged data)",
    "size_mismatch": "smaller than the download (incomplete download)",
    "checksum_mismatch": "not matching their download checksum (damaged data)",
    "duration_mismatch": "of the wrong length (wrong or incomplete file)",
    "identity_mismatch": "of other audio than the track poold last saw intact",  # healing only, never requested
}


@dataclass(frozen=True)
class Batch:
    cause: str
    reason: str
    incidents: tuple[Incident, ...]

    @property
    def trackids(self) -> list[int]:
        return [incident.trackid for incident in self.incidents]


@dataclass(frozen=True)
class Held:
    """An incident that is not requested now, and why."""

    incident: Incident
    why: str


def reason_text(cause: str, count: int, day: datetime.date) -> str:
    phrase = CAUSE_PHRASES.get(cause, f"with problem '{cause}'")
    files = "file" if count == 1 else "files"
    return f"poold integrity check {day.isoformat()}: {count} {files} {phrase}"


def record(state: State, report: AuditReport, now: float | None = None) -> None:
    """Write the audit's problems down as incidents; close those that check ok again."""
    now = time.time() if now is None else now
    state.record_problems(((f.trackid, f.path, f.status, f.reason, f.detail) for f in report.problems), now)
    reopened = state.open_trackids() & report.ok_trackids
    if reopened:
        state.resolve(reopened, now)


def plan(state: State, settings: RequestsConfig, now: float | None = None) -> tuple[list[Batch], list[Held]]:
    """Group the open incidents that may be requested now into batches."""
    now = time.time() if now is None else now
    quota = settings.max_tracks_per_day - state.tracks_requested_since(now - DAY)
    by_cause: dict[str, list[Incident]] = defaultdict(list)
    held: list[Held] = []
    for incident in state.open_incidents():
        why = _hold_reason(state, incident, settings, now)
        if why is None and quota <= 0:
            why = f"daily limit of {settings.max_tracks_per_day} requested tracks reached"
        if why:
            held.append(Held(incident, why))
            continue
        quota -= 1
        by_cause[incident.reason].append(incident)
    day = datetime.date.fromtimestamp(now)
    batches = []
    for cause in sorted(by_cause):
        incidents = by_cause[cause]
        for start in range(0, len(incidents), settings.batch_size):
            chunk = tuple(incidents[start:start + settings.batch_size])
            batches.append(Batch(cause, reason_text(cause, len(chunk), day), chunk))
    return batches, held


def _hold_reason(state: State, incident: Incident, settings: RequestsConfig, now: float) -> str | None:
    if incident.reason in NOT_REQUESTABLE:
        return "a redownload would not fix this: check the file by hand"
    if state.has_open_request(incident.trackid):
        return "a request for it is already waiting to be sent"
    if refusal := state.refusal(incident.id):
        return f"POOL refused it ({refusal}); it is not requested again by itself: a person has to look"
    earlier = state.incident_requests(incident.id)
    if len(earlier) >= MAX_REQUESTS_PER_TRACK:
        return f"still broken after {len(earlier)} redownload requests: check it by hand"
    if earlier and now - earlier[-1][0] < settings.cooldown:
        created, outcome = earlier[-1]
        return f"requested {_ago(now - created)} ago ({outcome}); the cooldown is {_ago(settings.cooldown)}"
    return None


def _ago(seconds: float) -> str:
    if seconds >= DAY:
        return f"{seconds / DAY:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def enqueue(state: State, batches: list[Batch], now: float | None = None) -> list[int | None]:
    """Write each batch to the outbox as a pending request; an id per batch, None for a
    batch skipped because another process queued one of its tracks first."""
    return [state.enqueue(os.urandom(16).hex(), batch.cause, batch.reason, list(batch.incidents), now) for batch in batches]


def drain(state: State, client: PoolClient) -> list[OutboxRequest]:
    """Send pending requests once each (with the client's bounded retries) and settle them.

    Only one process drains a state directory at a time (a lock file). So, holding
    the lock, any request still marked ``sent`` was interrupted by a crash: it goes
    back to ``pending`` and is sent again (the one case of a possible repeat).

    A transient failure leaves the request pending for the next drain and stops this
    one (the service or the network is down; the rest would fail the same way). The
    least recently tried requests go first, so one that keeps failing cannot starve
    the others. The halves of a split request are sent next, depth first, so one
    refused ID among n costs about 2·log2(n) requests. Returns the requests this drain
    touched, as they now stand.
    """
    with outbox_lock(state) as locked:
        if not locked:
            log.info("another poold process is sending requests; pending ones wait for it")
            return []
        if recovered := state.recover_unconfirmed():
            log.warning("%d request(s) were interrupted while being sent; sending them again", recovered)
        touched = []
        queue = collections.deque(sorted(state.pending_requests(), key=lambda r: r.updated))
        while queue:
            request = queue.popleft()
            touched.append(request.id)
            follow_up = _send(state, client, request)
            if follow_up is None:
                break
            queue.extendleft(reversed(follow_up))
    return [r for r in state.requests(states=("pending",) + FINAL_REQUEST_STATES) if r.id in touched]


def _send(state: State, client: PoolClient, request: OutboxRequest) -> list[OutboxRequest] | None:
    """Send one request and settle it. Returns the requests to send next (the halves,
    when POOL refused it as a whole and it was split), or None when the drain should
    stop (the service is down)."""
    try:
        result = client.redownload(list(request.trackids), request.reason,
                                   on_attempt=lambda: state.mark_sent(request.id))
    except RefusedError as exc:
        if len(request.trackids) > 1:
            return _split(state, request, str(exc))
        state.settle(request.id, "rejected", error=str(exc))
        log.warning("request %d rejected: POOL refuses track %d: %s", request.id, request.trackids[0], exc)
    except RejectedError as exc:
        state.settle(request.id, "rejected", error=str(exc))
        log.warning("request %d rejected: %s", request.id, exc)
    except TransientError as exc:
        state.settle(request.id, "pending", error=str(exc))
        log.warning("request %d stays pending: %s", request.id, exc)
        return None
    except PoolError as exc:
        state.settle(request.id, "pending", error=str(exc))
        raise
    else:
        outcome = "accepted" if result.complete else "partial"
        state.settle(request.id, outcome, tracks_requeued=result.requeued)
        log.info("request %d %s: %s of %d tracks requeued", request.id, outcome,
                 "?" if result.requeued is None else result.requeued, result.sent)
    return []


def _split(state: State, request: OutboxRequest, error: str) -> list[OutboxRequest]:
    """Settle a refused request as split and write its halves, each with a reason true
    of its own tracks; the halves are returned to be sent next."""
    middle = (len(request.trackids) + 1) // 2
    halves = [list(request.trackids[:middle]), list(request.trackids[middle:])]
    day = datetime.date.today()
    parts = [(f"{request.batch}/{number}", reason_text(request.cause, len(half), day), half)
             for number, half in enumerate(halves, 1)]
    ids = state.split(request.id, parts, error=error)
    log.warning("request %d refused as a whole (%s); sending its %d tracks in two halves to find the refused ones",
                request.id, error, len(request.trackids))
    return [r for r in state.pending_requests() if r.id in ids]


def outbox_lock(state: State):
    """Hold the state directory's outbox lock (see :meth:`State.try_lock`)."""
    return state.try_lock(LOCK_NAME)
