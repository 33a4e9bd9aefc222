"""Incidents and the outbox, over real HTTP (the sandbox) and real SQLite.

For every fault the sandbox can stage, the end state of the outbox and what the server
requeued; then the rules that keep requests from repeating (open requests, cooldown,
"keeps failing"), the daily quota, grouping by cause, dry runs, the commands' output,
and that no secret reaches a log line, an error or a JSON document.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from conftest import API_KEY, API_SECRET
from poold import app, filing
from poold.config import RequestsConfig, Secret
from poold.filing import DAY, MAX_REQUESTS_PER_TRACK
from poold.errors import PoolError
from poold.pool import REDOWNLOAD
from poold.sandbox import (
    NOT_JSON,
    RESET_AFTER,
    RESET_BEFORE,
    RESULT_ERROR,
    SERVER_ERROR,
    TOKEN_EXPIRED,
    partial,
    rate_limited,
    slow,
    unavailable,
)
from poold.scan import AuditReport, Finding
from poold.state import State
from test_pool import make_client

T0 = 1_700_000_000.0  # a fixed "now" for the rules that depend on time
SETTINGS = RequestsConfig()


def finding(trackid: int, reason: str = "missing") -> Finding:
    return Finding(trackid, f"crate/track{trackid}.mp3", "missing" if reason == "missing" else "corrupt",
                   reason, "test damage")


def report(*problems: Finding, ok: tuple[int, ...] = ()) -> AuditReport:
    """An audit that found these problems, and found the tracks ``ok`` sound again."""
    return AuditReport(library="library", manifest="manifest.json", checked=len(problems) + len(ok),
                       ok=len(ok), problems=list(problems), ok_trackids=set(ok))


@pytest.fixture
def state(tmp_path):
    with State(tmp_path / "state") as opened:
        yield opened


def file_requests(state: State, client, settings: RequestsConfig = SETTINGS, now: float | None = None):
    """What `poold audit --request` does after recording: plan, write pending, send."""
    batches, held = filing.plan(state, settings, now)
    filing.enqueue(state, batches, now)
    return filing.drain(state, client), held


def only_request(state: State):
    [request] = state.requests()
    return request


# --- each fault: the outbox's end state and what the server requeued --------------------------

FAULTS = {
    # fault: (state, attempts, requeued per track); tracks 1 and 2 in one request
    "500": (SERVER_ERROR, "accepted", 2, {1: 1, 2: 1}),
    "429, retry at once": (rate_limited(0), "accepted", 2, {1: 1, 2: 1}),
    "reset before processing": (RESET_BEFORE, "accepted", 2, {1: 1, 2: 1}),
    # the server requeued, but the answer was lost: at least once means a second time
    "reset after processing": (RESET_AFTER, "accepted", 2, {1: 2, 2: 2}),
    "200 with an HTML page": (NOT_JSON, "accepted", 2, {1: 1, 2: 1}),
    "401, token expired": (TOKEN_EXPIRED, "accepted", 2, {1: 1, 2: 1}),
    "partial": (partial(1), "partial", 1, {1: 1}),
}


@pytest.mark.parametrize("fault, outcome, attempts, requeued", FAULTS.values(), ids=FAULTS.keys())
def test_fault_end_state(state, sandbox, fault, outcome, attempts, requeued):
    filing.record(state, report(finding(1), finding(2)))
    sandbox.fault(fault)
    file_requests(state, make_client(sandbox))
    request = only_request(state)
    assert (request.state, request.attempts) == (outcome, attempts)
    assert sandbox.requeued == requeued
    assert len(sandbox.received) == attempts


def test_a_batch_refused_as_a_whole_is_split_and_each_half_sent_alone(state, sandbox):
    """POOL's "result": "error" names no track: the halves tell which it refuses (here
    none: the refusal passed), each with a reason true of its own track."""
    filing.record(state, report(finding(1), finding(2)))
    sandbox.fault(RESULT_ERROR)
    file_requests(state, make_client(sandbox))
    parent, first, second = state.requests(states=("split", "accepted"))
    assert (parent.state, parent.trackids, parent.attempts) == ("split", (1, 2), 1)
    assert parent.last_error == (f"POOL did not accept the request: request could not be processed; "
                                 f"split into requests {first.id}, {second.id}")
    assert [(r.state, r.trackids, r.attempts) for r in (first, second)] == [("accepted", (1,), 1), ("accepted", (2,), 1)]
    assert first.reason.endswith(": 1 file missing from the library (lost or deleted)")
    assert sandbox.requeued == {1: 1, 2: 1} and len(sandbox.received) == 3
    assert state.tracks_requested_since(0) == 2


def test_answer_slower_than_the_timeout_is_sent_again(state, sandbox):
    """The server requeued on arrival; the client could not know: requeued twice."""
    filing.record(state, report(finding(1), finding(2)))
    sandbox.fault(slow(10))
    file_requests(state, make_client(sandbox, timeout=1.0))
    request = only_request(state)
    assert (request.state, request.attempts) == ("accepted", 2)
    assert sandbox.requeued == {1: 2, 2: 2}


def test_503_waits_for_retry_after_and_logs_attempt_and_wait(state, sandbox, caplog):
    caplog.set_level(logging.WARNING, logger="poold.pool")
    filing.record(state, report(finding(1)))
    sandbox.fault(unavailable(1))
    file_requests(state, make_client(sandbox))
    assert (only_request(state).state, only_request(state).attempts) == ("accepted", 2)
    assert sandbox.requeued == {1: 1}
    [retry] = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retry.startswith("POOL request attempt 1 failed: POOL answered HTTP 503")
    assert retry.endswith("retrying in 1.00 s")
    first, second = sandbox.received
    assert second.time - first.time >= 1.0


def test_retry_after_longer_than_the_cap_leaves_it_pending_without_waiting(state, sandbox):
    filing.record(state, report(finding(1)))
    sandbox.fault(rate_limited(5))  # make_client waits at most 2 s
    file_requests(state, make_client(sandbox))
    request = only_request(state)
    assert (request.state, request.attempts) == ("pending", 1)
    assert "HTTP 429" in request.last_error and "Retry-After 5 s" in request.last_error
    assert sandbox.requeued == {}

    file_requests(state, make_client(sandbox))
    assert only_request(state).state == "accepted"
    assert sandbox.requeued == {1: 1}


def test_bounded_attempts_then_pending_for_the_next_drain(state, sandbox):
    filing.record(state, report(finding(1), finding(2, "empty")))
    sandbox.fault(*[SERVER_ERROR] * 3)
    file_requests(state, make_client(sandbox, max_attempts=3))
    first, second = state.requests(states=("pending",))
    assert (first.attempts, second.attempts) == (3, 0)  # the drain stopped: the service is down
    assert "HTTP 500" in first.last_error
    assert sandbox.requeued == {}

    file_requests(state, make_client(sandbox))
    assert [r.state for r in state.requests()] == ["accepted", "accepted"]
    assert sandbox.requeued == {1: 1, 2: 1}


def test_a_request_that_keeps_failing_does_not_starve_the_others(state, sandbox):
    filing.record(state, report(finding(1), finding(2, "empty")))
    sandbox.fault(*[SERVER_ERROR] * 3)
    file_requests(state, make_client(sandbox, max_attempts=3))
    [failed] = [r.trackids for r in state.requests() if r.attempts == 3]

    file_requests(state, make_client(sandbox))
    order = [tuple(int(t) for t in r.form["trackid_list"].split(",")) for r in sandbox.received[3:]]
    assert len(order) == 2 and order[-1] == failed  # least recently tried first


def test_only_one_process_drains_and_recovers(state, sandbox):
    """A request marked sent by a live sender is its business, not to be sent again."""
    filing.record(state, report(finding(1)))
    [request_id] = filing.enqueue(state, filing.plan(state, SETTINGS)[0])
    state.mark_sent(request_id)
    with filing.outbox_lock(state) as held:  # another open file: as good as another process
        assert held
        assert filing.drain(state, make_client(sandbox)) == []
        assert only_request(state).state == "sent" and sandbox.received == []

    [request] = filing.drain(state, make_client(sandbox))  # the holder died: recover, send
    assert (request.state, request.attempts) == ("accepted", 2)
    assert sandbox.requeued == {1: 1}


def test_a_refused_fresh_token_leaves_the_request_pending(state, sandbox):
    filing.record(state, report(finding(1)))
    sandbox.fault(TOKEN_EXPIRED, TOKEN_EXPIRED)
    with pytest.raises(PoolError, match="freshly minted"):
        file_requests(state, make_client(sandbox))
    assert only_request(state).state == "pending"


def test_expired_static_token_leaves_the_request_pending_with_a_clear_error(state, sandbox):
    token = make_client(sandbox).tokens.current()
    sandbox.expire_tokens()
    filing.record(state, report(finding(1)))
    with pytest.raises(PoolError, match="set \\[pool\\] api_key and api_secret"):
        file_requests(state, make_client(sandbox, token=Secret(token)))
    request = only_request(state)
    assert request.state == "pending" and "api_key" in request.last_error
    assert sandbox.requeued == {}


# --- no doubles: open requests, cooldown, keeps failing, resolution --------------------------


def held_why(held, trackid: int) -> str:
    [why] = [h.why for h in held if h.incident.trackid == trackid]
    return why


def test_an_open_request_is_not_requested_again(state, sandbox):
    filing.record(state, report(finding(1)))
    filing.enqueue(state, filing.plan(state, SETTINGS)[0])
    filing.record(state, report(finding(1)))
    batches, held = filing.plan(state, SETTINGS)
    assert batches == [] and "already waiting" in held_why(held, 1)

    file_requests(state, make_client(sandbox))
    file_requests(state, make_client(sandbox))
    assert sandbox.requeued == {1: 1}


def test_cooldown_then_keeps_failing(state, sandbox):
    settings = RequestsConfig(cooldown=3600)
    client = make_client(sandbox)
    filing.record(state, report(finding(1)), now=T0)
    file_requests(state, client, settings, now=T0)

    batches, held = filing.plan(state, settings, now=T0 + 600)
    assert batches == []
    assert held_why(held, 1) == "requested 10 min ago (accepted); the cooldown is 1.0 h"

    file_requests(state, client, settings, now=T0 + 3600)
    assert sandbox.requeued == {1: MAX_REQUESTS_PER_TRACK}

    batches, held = filing.plan(state, settings, now=T0 + 30 * DAY)
    assert batches == []
    assert held_why(held, 1) == "still broken after 2 redownload requests: check it by hand"


def test_a_track_repaired_and_broken_again_is_requested_at_once(state, sandbox):
    client = make_client(sandbox)
    filing.record(state, report(finding(1)), now=T0)
    file_requests(state, client, now=T0)
    filing.record(state, report(ok=(1,)), now=T0 + 60)
    assert state.open_incidents() == []

    filing.record(state, report(finding(1, "not_audio")), now=T0 + 120)
    [batch], held = filing.plan(state, SETTINGS, now=T0 + 120)
    assert batch.cause == "not_audio" and held == []


# --- the daily quota ---------------------------------------------------------------------------


def test_quota_caps_tracks_per_rolling_day(state, sandbox):
    settings = RequestsConfig(max_tracks_per_day=3)
    filing.record(state, report(*(finding(t) for t in range(1, 6))), now=T0)
    _, held = file_requests(state, make_client(sandbox), settings, now=T0)
    assert sorted(sandbox.requeued) == [1, 2, 3]
    assert [h.incident.trackid for h in held] == [4, 5]
    assert held_why(held, 4) == "daily limit of 3 requested tracks reached"

    assert filing.plan(state, settings, now=T0 + DAY - 1)[0] == []
    [batch], _ = filing.plan(state, settings, now=T0 + DAY + 1)
    assert batch.trackids == [4, 5]


# --- grouping and the reason text --------------------------------------------------------------


def test_requests_grouped_by_cause_with_a_reason_true_for_every_track(state, sandbox):
    causes = {1: "missing", 2: "missing", 3: "missing", 4: "empty", 5: "not_audio", 6: "not_audio"}
    filing.record(state, report(*(finding(t, cause) for t, cause in causes.items())))
    file_requests(state, make_client(sandbox), RequestsConfig(batch_size=2))

    sent = [received.form for received in sandbox.received]
    assert sorted(len(form["trackid_list"].split(",")) for form in sent) == [1, 1, 2, 2]
    for form in sent:
        ids = [int(t) for t in form["trackid_list"].split(",")]
        [cause] = {causes[t] for t in ids}
        files = "1 file" if len(ids) == 1 else f"{len(ids)} files"
        assert form["reason"].startswith("poold integrity check ")
        assert form["reason"].endswith(f"{files} {filing.CAUSE_PHRASES[cause]}")
    assert sandbox.requeued == {t: 1 for t in causes}


# --- through the app and the commands, on a real library ------------------------------------


def damage(library, missing=(), html=(), empty=()):
    for trackid in missing:
        library.paths[trackid].unlink()
    for trackid in html:
        library.paths[trackid].write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    for trackid in empty:
        library.paths[trackid].write_bytes(b"")


LIBRARY_EXTRA = "[guard]\nmax_missing_fraction = 1.0\n"


def poold(library, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLD_") and k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run([sys.executable, "-m", "poold", *args, "--config", str(library.config_path)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_dry_run_sends_nothing(make_library, sandbox):
    library = make_library(["mp3"] * 3, base_url=sandbox.base_url,
                           extra=LIBRARY_EXTRA + "[requests]\ndry_run = true\n")
    damage(library, missing=[1001], empty=[1002])
    outcome = app.run_audit(library.config(), request=True)
    assert {r["state"] for r in outcome.requests} == {"dry_run"}
    assert {1001, 1002} <= {t for r in outcome.requests for t in r["trackids"]}
    assert sandbox.received == [] and sandbox.tokens_minted == 0
    assert app.request_history(library.config()) == []


def test_status_and_requests_explain_what_waits(make_library, sandbox):
    library = make_library(["mp3"] * 3, base_url=sandbox.base_url,
                           extra=LIBRARY_EXTRA + "[requests]\nmax_tracks_per_day = 1\n")
    damage(library, missing=[1001], html=[1002])
    app.run_audit(library.config(), request=True, client=make_client(sandbox))
    assert sandbox.requeued == {1001: 1}

    status = json.loads(poold(library, "status", "--json").stdout)
    waiting = {i["trackid"]: i["waiting"] for i in status["open_incidents"]}
    assert waiting[1001].startswith("requested ") and "(accepted); the cooldown is 7.0 days" in waiting[1001]
    assert waiting[1002] == "daily limit of 1 requested tracks reached"
    assert status["quota"] == {"limit": 1, "used_last_24h": 1, "left": 0}
    assert status["pending_requests"] == [] and status["last_audit"]["problems"] >= 2
    text = poold(library, "status").stdout
    assert "1002 not_audio" in text and "waiting: daily limit of 1 requested tracks reached" in text

    [entry] = json.loads(poold(library, "requests", "--json").stdout)
    assert entry["trackids"] == [1001] and entry["cause"] == "missing" and entry["state"] == "accepted"
    assert entry["reason"].endswith("1 file missing from the library (lost or deleted)")
    assert entry["attempts"] == 1 and entry["error"] is None and entry["created"] <= time.time()
    assert "accepted (1 of 1 requeued): [1001]" in poold(library, "requests").stdout


def test_repeated_audits_request_each_track_once(make_library, sandbox):
    library = make_library(["mp3"] * 3, base_url=sandbox.base_url, extra=LIBRARY_EXTRA)
    damage(library, missing=[1001], empty=[1002])
    for _ in range(3):
        app.run_audit(library.config(), request=True, client=make_client(sandbox))
    assert sandbox.requeued == {1001: 1, 1002: 1}


# --- secrets -----------------------------------------------------------------------------------


@pytest.fixture
def all_log_output():
    """Every log record of the test, at DEBUG, urllib3 included, unfiltered."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(logging.Formatter("%(name)s %(message)s").format(record))

    handler, root, urllib3 = Collect(logging.DEBUG), logging.getLogger(), logging.getLogger("urllib3")
    saved = root.level, urllib3.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    urllib3.setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(saved[0])
    urllib3.setLevel(saved[1])


def secrets_seen_by(sandbox) -> set[str]:
    """The key and secret, and every credential that went over the wire, encoded or not."""
    basic = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
    found = {API_KEY, API_SECRET, basic}
    for received in sandbox.received:
        bearer = received.headers["Authorization"].removeprefix("Bearer ")
        found |= {bearer, base64.b64decode(bearer).decode().partition(":")[2]}
    return found


def test_no_secret_in_logs_errors_urls_or_json(make_library, sandbox, all_log_output):
    library = make_library(["mp3"] * 6, base_url=sandbox.base_url,
                           extra=LIBRARY_EXTRA + "[requests]\nbatch_size = 1\n")
    damage(library, missing=[1001, 1002], html=[1003], empty=[1004])
    sandbox.fault(SERVER_ERROR, RESET_AFTER, NOT_JSON, TOKEN_EXPIRED, RESULT_ERROR, rate_limited(0), RESET_BEFORE)
    outcome = app.run_audit(library.config(), request=True, client=make_client(sandbox, max_attempts=5))
    states = {tuple(r["trackids"]): r["state"] for r in outcome.requests}
    assert states == {(1004,): "rejected", (1001,): "accepted", (1002,): "accepted", (1003,): "accepted"}

    static = make_client(sandbox).tokens.current()
    sandbox.expire_tokens()
    with pytest.raises(PoolError) as static_error:
        make_client(sandbox, token=Secret(static)).redownload([1005], "test")

    damage(library, missing=[1005])
    sandbox.fault(TOKEN_EXPIRED)
    commands = [poold(library, "audit", "-vvv", "--request", "--json"),
                poold(library, "requests", "--json"), poold(library, "status", "--json")]
    assert commands[0].returncode == 1 and "Starting new HTTP connection" in commands[0].stderr
    assert sandbox.requeued[1005] == 1

    secrets = secrets_seen_by(sandbox) | {static}
    assert len(secrets) >= 8  # key, secret, Basic, and at least 3 tokens with their Bearer values
    haystack = "\n".join([*all_log_output, str(static_error.value), json.dumps(outcome.requests),
                          *(c.stdout + c.stderr for c in commands)])
    assert "retrying in" in haystack and "urllib3.connectionpool Starting new HTTP connection" in haystack
    for secret in secrets:
        assert secret not in haystack
    assert {received.path for received in sandbox.received} == {REDOWNLOAD}
