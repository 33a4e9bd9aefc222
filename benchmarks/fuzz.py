"""Fuzz the quick check for a long time: the mutator of tests/test_fuzz.py, many more cases.

    python benchmarks/fuzz.py --cases 20000 --seconds 600 [--large] [--seed 1]

Seeds are real files of every kind tests/media.py makes (1.5 s each; with --large also
files of 10 to 21 MB). Each case mutates one seed (tests/mutate.py), writes it and
runs ``poold.integrity.check_file`` on it in this process, under an alarm that turns a
hang into a reported case. It prints markdown: cases/s, verdicts per operator, the
slowest cases, peak RSS, and every escape (an exception out of check_file) or hang,
with what reproduces it (seed, case number).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import media  # noqa: E402  (tests/media.py: real encoded files)
import mutate  # noqa: E402  (tests/mutate.py: the mutator)

from poold.integrity import check_file  # noqa: E402

HANG_SECONDS = 20
LARGE = {"wav": 120.0, "flac": 150.0, "mp3": 600.0, "m4a": 600.0}  # seconds of audio: 10-21 MB each


class Hang(Exception):
    pass


def make_seeds(folder: Path, large: bool) -> list[tuple[str, bytes]]:
    seeds = []
    for kind in media.ALL_KINDS:
        path = media.make(folder / f"{kind}{media.extension(kind)}", kind, seconds=1.5)
        seeds.append((kind, Path(path).read_bytes()))
    for kind, seconds in (LARGE.items() if large else ()):
        path = media.make(folder / f"large-{kind}{media.extension(kind)}", kind, seconds=seconds)
        seeds.append((f"large {kind}", Path(path).read_bytes()))
    return seeds


def on_alarm(signum, frame):
    raise Hang(f"no verdict within {HANG_SECONDS} s")


def intact_times(seeds, folder: Path) -> dict[str, float]:
    """Best of three checks of each intact seed (the first also imports its checker)."""
    times = {}
    for kind, data in seeds:
        path = folder / f"intact{media.extension(kind.split()[-1])}"
        path.write_bytes(data)
        times[kind] = min(_timed(path) for _ in range(3))
    return times


def _timed(path: Path) -> float:
    before = time.perf_counter()
    check_file(path)
    return time.perf_counter() - before


def run(seeds, cases: int, seconds: float, seed: int, folder: Path) -> dict:
    rng = random.Random(seed)
    signal.signal(signal.SIGALRM, on_alarm)
    outcomes = collections.Counter()
    escapes, contained, slowest = [], [], []
    started = time.perf_counter()
    done = 0
    for number in range(cases):
        if time.perf_counter() - started > seconds:
            break
        kind, data = seeds[number % len(seeds)]
        operator, mutated = mutate.mutate(data, rng)
        path = folder / f"case{media.extension(kind.split()[-1])}"
        path.write_bytes(mutated)
        signal.alarm(HANG_SECONDS)
        before = time.perf_counter()
        try:
            verdict = check_file(path)
            outcomes[(operator, verdict.status)] += 1
            if verdict.reason == "check_error":  # a checker raised, and the dispatcher contained it
                contained.append((number, kind, operator, verdict.detail))
        except BaseException as exc:  # noqa: BLE001  (an escape is what this looks for)
            if isinstance(exc, KeyboardInterrupt):
                raise
            escapes.append((number, kind, operator, "".join(traceback.format_exception_only(exc)).strip()))
        finally:
            signal.alarm(0)
        took = time.perf_counter() - before
        if len(slowest) < 5 or took > slowest[-1][0]:
            slowest = sorted(slowest + [(took, number, kind, operator, mutated)], key=lambda row: row[0],
                             reverse=True)[:5]
        done += 1
    elapsed = time.perf_counter() - started
    slowest = [(took, min([took] + _retimed(folder, kind, mutated)), number, kind, operator, len(mutated))
               for took, number, kind, operator, mutated in slowest]
    return {"done": done, "elapsed": elapsed, "outcomes": outcomes, "escapes": escapes, "contained": contained,
            "slowest": slowest}


def _retimed(folder: Path, kind: str, mutated: bytes) -> list[float]:
    """Two more timings of a slow case: a busy machine, not the file, may have been slow."""
    path = folder / f"again{media.extension(kind.split()[-1])}"
    path.write_bytes(mutated)
    return [_timed(path) for _ in range(2)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def report(args, seeds, intact: dict[str, float], result: dict, rss_before: float) -> None:
    print(f"### Fuzzing the quick check ({datetime.date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()})\n")
    print(f"`python benchmarks/fuzz.py --cases {args.cases} --seconds {args.seconds:g} --seed {args.seed}"
          f"{' --large' if args.large else ''}`: {len(seeds)} seed files "
          f"({', '.join(kind for kind, _ in seeds)}), sizes {min(len(d) for _, d in seeds):,} to "
          f"{max(len(d) for _, d in seeds):,} bytes.\n")
    rate = result["done"] / result["elapsed"] if result["elapsed"] else 0.0
    print(f"- cases run: {result['done']:,} in {result['elapsed']:.1f} s ({rate:,.0f} cases/s)")
    print(f"- escapes (an exception out of check_file) or hangs: {len(result['escapes'])}")
    print(f"- checker errors contained by the dispatcher (verdict check_error): {len(result['contained'])}")
    print(f"- peak RSS: {peak_rss_mb():.0f} MB (after making the seeds: {rss_before:.0f} MB)")
    print(f"- slowest intact seed: {max(intact.values()) * 1000:.1f} ms ({max(intact, key=intact.get)}, best of 3)")
    if result["slowest"]:
        first, best, number, kind, operator, size = result["slowest"][0]
        print(f"- worst time for one case: {first * 1000:.1f} ms (case {number}, {kind}, {operator}, {size:,} bytes; "
              f"best of 3: {best * 1000:.1f} ms)")
    print("\n| operator | ok | corrupt | unchecked |\n|---|---|---|---|")
    for operator in sorted({op for op, _ in result["outcomes"]}):
        counts = [result["outcomes"][(operator, status)] for status in ("ok", "corrupt", "unchecked")]
        print(f"| {operator} | " + " | ".join(f"{c:,}" for c in counts) + " |")
    print("\nSlowest cases (first time, best of 3): " + "; ".join(
        f"{first * 1000:.1f} / {best * 1000:.1f} ms ({kind}, {op}, case {n}, {size:,} bytes)"
        for first, best, n, kind, op, size in result["slowest"]))
    for number, kind, operator, error in result["escapes"]:
        print(f"\n- ESCAPE case {number} ({kind}, {operator}): {error}")
    for number, kind, operator, detail in result["contained"][:20]:
        print(f"\n- check_error case {number} ({kind}, {operator}): {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--large", action="store_true", help="also mutate seeds of 10-21 MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poold-fuzz-") as temporary:
        folder = Path(temporary)
        seeds = make_seeds(folder, args.large)
        rss_before = peak_rss_mb()
        intact = intact_times(seeds, folder)
        result = run(seeds, args.cases, args.seconds, args.seed, folder)
    report(args, seeds, intact, result, rss_before)


if __name__ == "__main__":
    main()
