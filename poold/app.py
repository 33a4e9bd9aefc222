"""The jobs behind the commands: audit (and file), drain, and the status summary.

The CLI and the daemon both call these; neither holds logic of its own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import filing, heal
from .config import Config
from .integrity import check_file
from .errors import PoolError
from .library import AuditRelocation, CandidateChecker, IdentityLog, Relocator, record_moves, relocated
from .manifest import read_manifest
from .scan import DEEP, QUICK, AuditReport, ScanOptions, Scanner, audit
from .state import OutboxRequest, State

if TYPE_CHECKING:
    from .pool import PoolClient



class SetupError(Exception):
    """Something the user must fix before the job can run (message fit to show)."""


@dataclass
class AuditOutcome:
    report: AuditReport
    requests: list[dict] = field(default_factory=list)
    held: list[filing.Held] = field(default_factory=list)
    filing_error: str | None = None


def make_client(config: Config) -> "PoolClient":
    from .pool import PoolClient  # requests loads only when something is to be sent

    pool = config.pool
    if pool.userid is None or not (pool.can_mint or pool.token):
        raise SetupError(f"{config.path}: to file requests, set [pool] userid and api_key + api_secret (or a token)")
    return PoolClient(pool, max_attempts=config.requests.max_attempts)


def checker_for(deep: bool):
    if not deep:
        return check_file
    from .integrity.deep import deep_check  # needs the optional PyAV extra

    return deep_check


def require_deep() -> None:
    """Fail early, with the install hint, when deep checks cannot run."""
    try:
        import av  # noqa: F401
    except ImportError:
        raise SetupError("deep checks need PyAV: pip install 'poold[deep]'") from None


def scan_options(config: Config, *, deep: bool = False, verify: bool = False, full: bool = False,
                 time_limit: float | None = None) -> ScanOptions:
    if deep:
        require_deep()
    workers = config.scan.workers or os.cpu_count() or 1
    return ScanOptions(level=DEEP if deep else QUICK, verify=verify, workers=workers, full=full, time_limit=time_limit,
                       follow_symlinks=config.library.follow_symlinks)


def run_audit(config: Config, *, request: bool = False, options: ScanOptions | None = None,
              client: PoolClient | None = None, on_finding=None) -> AuditOutcome:
    """Audit the library against the manifest; with ``request``, file what is broken.

    The manifest is read completely before anything is written or sent: a bad row
    raises ManifestError and nothing is requested.
    """
    options = options or scan_options(config)
    if request and client is None and not config.requests.dry_run:
        client = make_client(config)
    with State(config.state.dir) as state:
        audit_id = state.start_audit()
        cache, locations = state.file_cache(), state.locations()
        verified = state.verified_identities() if options.verify else {}
        relocation = audit_relocation(config, state, cache, options, locations, verified)
        identities = IdentityLog(state)
        report = audit(
            config.library.root, relocated(read_manifest(config.library.manifest), locations),
            cache=cache, options=options, open_ids=frozenset(state.open_trackids()),
            max_missing_fraction=config.guard.max_missing_fraction, marker=config.guard.marker,
            manifest=str(config.library.manifest), on_finding=on_finding, relocate=relocation, verified=verified,
            on_checked=identities,
        )
        identities.flush()
        state.record_verified(report.verified)
        record_moves(state, relocation.moves, config.library.manifest if config.library.update_manifest else None)
        report.moved = {move.trackid: move.destination for move in relocation.moves}
        report.files_checked += relocation.check.opened
        state.finish_audit(audit_id, report.checked, report.ok, len(report.problems), report.guard)
        outcome = AuditOutcome(report)
        if report.guard:  # the caller reports it: the CLI in its output, the daemon in its log
            return outcome
        filing.record(state, report)
        if request:
            file_requests(config, state, client, outcome)
    return outcome


def audit_relocation(config: Config, state: State, cache, options: ScanOptions,
                     locations: dict[int, str], verified: dict[int, str]) -> AuditRelocation:
    """The audit's search for its missing tracks elsewhere under the root (poold.library)."""
    root = config.library.root
    return AuditRelocation(
        Relocator(root, config.library.extensions, config.watch.ignore),
        tracks_again=lambda: relocated(read_manifest(config.library.manifest), locations),
        identities=state.track_identities,
        check=CandidateChecker(root, cache, options.workers),
        judge=lambda tracks: Scanner(root, cache, options, verified=verified).findings(tracks),
    )


def file_requests(config: Config, state: State, client: PoolClient | None, outcome: AuditOutcome) -> None:
    batches, outcome.held = filing.plan(state, config.requests)
    if config.requests.dry_run:
        outcome.requests = [dry_run_entry(batch) for batch in batches]
        return
    filing.enqueue(state, batches)
    try:
        settled = filing.drain(state, client)
    except PoolError as exc:
        outcome.filing_error = str(exc)
        settled = []
    outcome.requests = [request_entry(request) for request in settled]
    # The drain also sends requests queued by earlier runs, whose tracks the plan held as
    # "already waiting to be sent": they are reported with their request now.
    drained = {trackid for request in settled for trackid in request.trackids}
    outcome.held = [held for held in outcome.held if held.incident.trackid not in drained]


def dry_run_entry(batch: filing.Batch) -> dict:
    return {"cause": batch.cause, "reason": batch.reason, "trackids": batch.trackids, "state": "dry_run"}


def request_entry(request: OutboxRequest) -> dict:
    return {
        "id": request.id, "cause": request.cause, "reason": request.reason,
        "trackids": list(request.trackids), "state": request.state, "attempts": request.attempts,
        "tracks_requeued": request.tracks_requeued, "created": request.created,
        "updated": request.updated, "error": request.last_error,
    }


def request_history(config: Config, limit: int | None = None) -> list[dict]:
    with State(config.state.dir) as state:
        return [request_entry(request) for request in state.requests(limit=limit)]


def status(config: Config, now: float | None = None) -> dict:
    """Open incidents (with why each waits), pending requests, today's quota, last audit."""
    now = time.time() if now is None else now
    with State(config.state.dir) as state:
        _batches, held = filing.plan(state, config.requests, now)
        held_why = {h.incident.trackid: h.why for h in held}
        used = state.tracks_requested_since(now - filing.DAY)
        return {
            "open_incidents": [
                {"trackid": i.trackid, "path": i.path, "status": i.status, "reason": i.reason, "detail": i.detail,
                 "first_seen": i.first_seen, "last_seen": i.last_seen, "waiting": held_why.get(i.trackid)}
                for i in state.open_incidents()
            ],
            "pending_requests": [request_entry(r) for r in state.requests(states=("pending", "sent"))],
            "quota": {"limit": config.requests.max_tracks_per_day, "used_last_24h": used,
                      "left": max(0, config.requests.max_tracks_per_day - used)},
            "last_audit": state.last_audit(),
            "daemon": state.note("daemon"),
            "healing": heal.track_stages(state, config.heal.enabled),
        }
