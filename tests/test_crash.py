"""kill -9 while requests are being filed, then start again: nothing is lost, and a track
is requeued a second time only when its own request was in flight at the kill.

Each run files six broken tracks (four requests) from a child process against the
sandbox in this process; slow answers hold every request in flight for a while. The
child is killed at a random moment, or right after the server has processed a
randomly chosen request (its answer still on the way), then run again to completion
by a new process.
"""

from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
import time

from conftest import API_KEY, API_SECRET, USERID
from poold import filing
from poold.sandbox import Sandbox, slow
from poold.scan import AuditReport, Finding
from poold.state import State

SEED = 20240611
RUNS = 20
CAUSES = {1: "missing", 2: "missing", 3: "missing", 4: "empty", 5: "empty", 6: "empty"}
REQUESTS = 4  # batch_size 2: [1, 2] [3] [4, 5] [6]
ANSWER_DELAY = 0.08
DEADLINE = 20.0

CHILD = """
import os, sys
from poold import filing
from poold.config import PoolConfig, RequestsConfig, Secret
from poold.pool import PoolClient
from poold.state import State

state_dir, base_url = sys.stdin.readline().rstrip("\\n"), sys.stdin.readline().rstrip("\\n")
config = PoolConfig(base_url=base_url, userid=int(sys.argv[1]), api_key=Secret(os.environ["TEST_KEY"]),
                    api_secret=Secret(os.environ["TEST_SECRET"]), timeout=10)
client = PoolClient(config, backoff=0.01, max_backoff=0.1)
with State(state_dir) as state:
    print("ready", flush=True)
    batches, _held = filing.plan(state, RequestsConfig(batch_size=2))
    filing.enqueue(state, batches)
    filing.drain(state, client)
print("done", flush=True)
"""


class Children:
    """Filing processes started ahead of need, each waiting for its state directory and
    server on stdin, so that their start-up (imports) overlaps the runs before them."""

    AHEAD = 2

    def __init__(self):
        self.spares = collections.deque(self._start() for _ in range(self.AHEAD))

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, TEST_KEY=API_KEY, TEST_SECRET=API_SECRET)
        return subprocess.Popen([sys.executable, "-c", CHILD, str(USERID)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)

    def start_filing(self, state_dir, sandbox: Sandbox) -> subprocess.Popen:
        child = self.spares.popleft()
        self.spares.append(self._start())
        child.stdin.write(f"{state_dir}\n{sandbox.base_url}\n")
        child.stdin.close()
        return child

    def close(self) -> None:
        for spare in self.spares:
            spare.kill()
            spare.communicate()


def record_incidents(state_dir) -> None:
    problems = [Finding(t, f"crate/track{t}.mp3", "missing" if cause == "missing" else "corrupt", cause, "test")
                for t, cause in CAUSES.items()]
    with State(state_dir) as state:
        filing.record(state, AuditReport("library", "manifest.json", checked=len(problems), problems=problems))


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def kill_at_random(child: subprocess.Popen, sandbox: Sandbox, rng: random.Random) -> None:
    """Kill after a random delay, or once the server has processed the k-th request."""
    assert child.stdout.readline() == "ready\n"
    if rng.random() < 0.5:  # the moment is the experiment: every outcome must pass the checks
        time.sleep(rng.uniform(0, REQUESTS * ANSWER_DELAY * 1.2))
    else:
        k = rng.randint(1, REQUESTS)
        wait_for(lambda: len(sandbox.received) >= k or child.poll() is not None, f"request {k}")
    child.kill()
    child.wait()


def in_flight(state_dir) -> set[int]:
    """Tracks of requests marked sent and not settled: what the kill interrupted."""
    with State(state_dir) as state:
        return {t for request in state.requests(states=("sent",)) for t in request.trackids}


def run_to_completion(child: subprocess.Popen) -> None:
    output = child.stdout.read()
    assert child.wait(timeout=DEADLINE) == 0 and output.endswith("done\n")


def check_outcome(state_dir, sandbox: Sandbox, interrupted: set[int]) -> None:
    with State(state_dir) as state:
        requests = state.requests()
    assert {r.state for r in requests} == {"accepted"}
    in_requests = collections.Counter(t for r in requests for t in r.trackids)
    assert in_requests == {t: 1 for t in CAUSES}, "a track was planned into two requests"
    for trackid in CAUSES:
        assert 1 <= sandbox.requeued[trackid] <= 2, (trackid, sandbox.requeued)
        if sandbox.requeued[trackid] == 2:
            assert trackid in interrupted, f"track {trackid} repeated without a crash during its send"


def test_kill_minus_9_loses_nothing_and_repeats_only_what_was_in_flight(tmp_path):
    rng = random.Random(SEED)
    children = Children()
    interrupted_runs = repeated_runs = 0
    try:
        for run in range(RUNS):
            state_dir = tmp_path / f"run{run}"
            record_incidents(state_dir)
            with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET) as sandbox:
                sandbox.fault(*[slow(ANSWER_DELAY)] * REQUESTS)
                kill_at_random(children.start_filing(state_dir, sandbox), sandbox, rng)
                interrupted = in_flight(state_dir)
                run_to_completion(children.start_filing(state_dir, sandbox))
                check_outcome(state_dir, sandbox, interrupted)
            interrupted_runs += bool(interrupted)
            repeated_runs += any(count == 2 for count in sandbox.requeued.values())
    finally:
        children.close()
    assert interrupted_runs > 0 and repeated_runs > 0, "no kill landed while a request was in flight"
