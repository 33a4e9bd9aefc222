"""Fuzzing the quick check: real files of every kind, mutated (tests/mutate.py), must each
get a verdict, in bounded time and memory, and never an exception.

Why a plain seeded ``random.Random`` and not hypothesis: the mutations that matter are
aimed at format structure (size fields beside chunk IDs, nested boxes, lying tags),
which hypothesis' byte strategies would not find without the same hand-written
operators; its shrinking would then shrink those operators' random choices, not the
file. A fixed seed keeps each run the same, so a case that fails names itself (seed,
case number) and reruns in benchmarks/fuzz.py, which runs the mutator much longer.

Time: tests may not hold wall-clock thresholds, so each case is bounded against a
baseline measured here: the slowest check of an intact seed. A case may take at most
RATIO times that (a runaway parse, like the quadratic tag reading of issue #11 item
7, takes thousands of times longer); a case over the bound is timed twice more and
its best time counts, so a busy machine does not fail the test.

Memory: tracemalloc's peak for each check may be at most a few times the file's
size plus a little: reads are clamped to the file, so a lying size field must not
make a checker hold (or Python allocate) more than the file has.
"""

from __future__ import annotations

import random
import time
import tracemalloc

import pytest

import media
import mutate
from poold.integrity import check_file
from poold.integrity.base import CORRUPT, OK, UNCHECKED, Verdict

SEED = 20261202
CASES_PER_KIND = 20   # x 18 kinds: 360 cases, a few seconds
RATIO = 200           # of the slowest intact check (under a ms): a runaway parse is 10,000s of times slower
MEMORY_SLACK = 2 << 20
MEMORY_PER_BYTE = 4


def timed_check(path) -> tuple[float, Verdict]:
    started = time.perf_counter()
    verdict = check_file(path)
    return time.perf_counter() - started, verdict


@pytest.fixture(scope="module")
def seeds(encoded):
    return {kind: encoded(kind).read_bytes() for kind in media.ALL_KINDS}


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


def test_mutated_files_are_judged_in_bounded_time_and_memory(seeds, encoded, tmp_path, traced):
    # The baseline, under tracemalloc like the cases: best of three per intact seed.
    baseline = max(min(timed_check(encoded(kind))[0] for _ in range(3)) for kind in seeds)
    rng = random.Random(SEED)
    failures, tried = [], 0
    for kind, data in seeds.items():
        path = tmp_path / f"case{media.extension(kind)}"
        for number in range(CASES_PER_KIND):
            operator, mutated = mutate.mutate(data, rng)
            path.write_bytes(mutated)
            where = f"{kind} case {number} ({operator}, {len(mutated):,} bytes)"
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            try:
                took, verdict = timed_check(path)
            except Exception as exc:  # the very thing this test looks for
                failures.append(f"{where}: {type(exc).__name__} escaped: {exc}")
                continue
            peak = tracemalloc.get_traced_memory()[1] - before
            tried += 1
            if took > RATIO * baseline:
                took = min([took] + [timed_check(path)[0] for _ in range(2)])
            if not isinstance(verdict, Verdict) or verdict.status not in (OK, CORRUPT, UNCHECKED):
                failures.append(f"{where}: not a verdict: {verdict!r}")
            elif verdict.reason == "check_error":
                failures.append(f"{where}: the checker failed: {verdict.detail}")
            if took > RATIO * baseline:
                failures.append(f"{where}: {took * 1000:.1f} ms, over {RATIO}x the slowest intact check "
                                f"({baseline * 1000:.2f} ms)")
            if peak > MEMORY_SLACK + MEMORY_PER_BYTE * len(mutated):
                failures.append(f"{where}: peak memory {peak:,} bytes")
    assert not failures, f"{len(failures)} of {tried} cases:\n" + "\n".join(failures)
    assert tried == CASES_PER_KIND * len(seeds)


DEEP_CASES_PER_KIND = 8  # x 18 kinds: 144 full decodes of small files, a second or two


def test_mutated_files_never_crash_the_deep_check(seeds, tmp_path):
    """The deep check decodes with FFmpeg: whatever the file, a verdict. FFmpeg refusing
    a file is `check_error` with FFmpeg's words; poold's own failure would be a bug."""
    from poold.integrity.deep import deep_check

    rng = random.Random(SEED + 1)
    failures = []
    for kind, data in seeds.items():
        path = tmp_path / f"case{media.extension(kind)}"
        for number in range(DEEP_CASES_PER_KIND):
            operator, mutated = mutate.mutate(data, rng)
            path.write_bytes(mutated)
            where = f"{kind} deep case {number} ({operator})"
            try:
                verdict = deep_check(path)
            except Exception as exc:  # the very thing this test looks for
                failures.append(f"{where}: {type(exc).__name__} escaped: {exc}")
                continue
            if verdict.status not in (OK, CORRUPT, UNCHECKED) or "poold's deep check failed" in verdict.detail:
                failures.append(f"{where}: {verdict}")
            elif "/proc/self/fd" in verdict.detail:
                failures.append(f"{where}: the detail names FFmpeg's path, not the file: {verdict.detail}")
    assert not failures, "\n".join(failures)


def test_the_mutator_is_reproducible_and_covers_every_operator(seeds):
    first = [mutate.mutate(seeds["mp4"], random.Random(SEED + n)) for n in range(200)]
    again = [mutate.mutate(seeds["mp4"], random.Random(SEED + n)) for n in range(200)]
    assert first == again
    assert {name for name, _ in first} == {name for name, _ in mutate.OPERATORS}
    assert all(mutated != seeds["mp4"] for _, mutated in first[:50] if _ != "splice")
