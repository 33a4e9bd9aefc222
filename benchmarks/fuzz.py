"""Fuzz the quick check for a long time: the mutator of tests/test_fuzz.py, many more cases.

    python benchmarks/fuzz.py --cases 20000 --seconds 600 [--large] [--deep] [--seed 1]

Seeds are real files of every kind tests/media.py makes (1.5 s each; with --large also
files of 10 to 24 MB). Each case mutates one seed (tests/mutate.py), writes it and has
``poold.integrity.check_file`` (with --deep, ``deep_check``) judge it in a worker process, which is killed and counted
as a hang when it gives no verdict within HANG_SECONDS. It prints markdown: cases/s,
verdicts per operator, the slowest cases (timed again, best of 3), the worker's peak
RSS, and every escape (an exception out of the check) or hang, with what reproduces
it (seed, case number).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import random
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import media  # noqa: E402  (tests/media.py: real encoded files)
import mutate  # noqa: E402  (tests/mutate.py: the mutator)

HANG_SECONDS = 20
LARGE = {"wav": 120.0, "flac": 150.0, "mp3": 600.0, "m4a": 600.0}  # seconds of audio: 10-21 MB each

# The checks run in a worker process of their own, so that its peak RSS is the checker's
# (not this harness's copies of the files) and a hang, even inside C code, is caught by
# a timeout here. The protocol: a path per line in, a JSON line per verdict out.
WORKER = """
import json, sys, time, traceback
from poold.integrity import check_file
if sys.argv[1:] == ["deep"]:
    from poold.integrity.deep import deep_check as check_file
for line in sys.stdin:
    path = line.rstrip("\\n")
    if not path:
        break
    before = time.perf_counter()
    try:
        verdict = check_file(path)
        answer = {"status": verdict.status, "reason": verdict.reason, "detail": verdict.detail}
    except BaseException as exc:
        answer = {"escape": "".join(traceback.format_exception_only(exc)).strip()}
    answer["took"] = time.perf_counter() - before
    print(json.dumps(answer), flush=True)
with open("/proc/self/status") as status:
    peak = next((line.split()[1] for line in status if line.startswith("VmHWM:")), "0")
print(json.dumps({"peak_kib": int(peak)}), flush=True)
"""


class Worker:
    def __init__(self, level: str):
        self.level = level
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, level], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def check(self, path: Path) -> dict | None:
        """The worker's answer, or None when it gave none within HANG_SECONDS (it is then killed)."""
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], HANG_SECONDS)
        if not ready:
            self.process.kill()
            self.process.wait()
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else {"escape": "the worker died"}

    def finish(self) -> int:
        """Stop the worker; its peak RSS in KiB."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        peak = json.loads(self.process.stdout.readline())["peak_kib"]
        self.process.wait()
        return peak


def make_seeds(folder: Path, large: bool) -> list[tuple[str, bytes]]:
    seeds = []
    for kind in media.ALL_KINDS:
        path = media.make(folder / f"{kind}{media.extension(kind)}", kind, seconds=1.5)
        seeds.append((kind, Path(path).read_bytes()))
    for kind, seconds in (LARGE.items() if large else ()):
        path = media.make(folder / f"large-{kind}{media.extension(kind)}", kind, seconds=seconds)
        seeds.append((f"large {kind}", Path(path).read_bytes()))
    return seeds


def case_path(folder: Path, name: str, kind: str) -> Path:
    return folder / f"{name}{media.extension(kind.split()[-1])}"


def intact_times(worker: Worker, seeds, folder: Path) -> dict[str, float]:
    """Best of three checks of each intact seed (the first also imports its checker)."""
    times = {}
    for kind, data in seeds:
        path = case_path(folder, "intact", kind)
        path.write_bytes(data)
        times[kind] = min(worker.check(path)["took"] for _ in range(3))
    return times


def run(seeds, cases: int, seconds: float, seed: int, folder: Path, level: str) -> dict:
    rng = random.Random(seed)
    worker = Worker(level)
    intact = intact_times(worker, seeds, folder)
    outcomes = collections.Counter()
    escapes, contained, refused, slowest, peaks = [], [], [], [], []
    started = time.perf_counter()
    done = 0
    for number in range(cases):
        if time.perf_counter() - started > seconds:
            break
        kind, data = seeds[number % len(seeds)]
        operator, mutated = mutate.mutate(data, rng)
        path = case_path(folder, "case", kind)
        path.write_bytes(mutated)
        answer = worker.check(path)
        done += 1
        if answer is None or "escape" in answer:
            escapes.append((number, kind, operator, answer["escape"] if answer else f"no verdict in {HANG_SECONDS} s"))
            if answer is None:
                peaks.append(0)
                worker = Worker(level)
            continue
        outcomes[(operator, answer["status"])] += 1
        if answer["reason"] == "check_error":  # poold's checker failed, or (deep) FFmpeg refused the file
            (contained if answer["detail"].startswith("poold's") else refused).append(
                (number, kind, operator, answer["detail"]))
        if len(slowest) < 5 or answer["took"] > slowest[-1][0]:
            slowest = sorted(slowest + [(answer["took"], number, kind, operator, mutated)], key=lambda row: row[0],
                             reverse=True)[:5]
    elapsed = time.perf_counter() - started
    retimed = []
    for took, number, kind, operator, mutated in slowest:  # a busy machine, not the file, may have been slow
        path = case_path(folder, "again", kind)
        path.write_bytes(mutated)
        best = min([took] + [worker.check(path)["took"] for _ in range(2)])
        retimed.append((took, best, number, kind, operator, len(mutated)))
    peaks.append(worker.finish())
    return {"done": done, "elapsed": elapsed, "outcomes": outcomes, "escapes": escapes, "contained": contained,
            "refused": refused, "slowest": retimed, "intact": intact, "peak_mb": max(peaks) / 1024}


def report(args, seeds, result: dict) -> None:
    intact = result["intact"]
    print(f"### Fuzzing the {'deep' if args.deep else 'quick'} check ({datetime.date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()})\n")
    print(f"`python benchmarks/fuzz.py --cases {args.cases} --seconds {args.seconds:g} --seed {args.seed}"
          f"{' --large' if args.large else ''}{' --deep' if args.deep else ''}`: {len(seeds)} seed files "
          f"({', '.join(kind for kind, _ in seeds)}), sizes {min(len(d) for _, d in seeds):,} to "
          f"{max(len(d) for _, d in seeds):,} bytes.\n")
    rate = result["done"] / result["elapsed"] if result["elapsed"] else 0.0
    print(f"- cases run: {result['done']:,} in {result['elapsed']:.1f} s ({rate:,.0f} cases/s)")
    print(f"- escapes (an exception out of the check) or hangs: {len(result['escapes'])}")
    print(f"- poold's checker failed, contained as a check_error verdict: {len(result['contained'])}")
    if args.deep:
        print(f"- FFmpeg refused a file the quick check passed (check_error, unchecked): {len(result['refused'])}")
    print(f"- peak RSS of the checking process: {result['peak_mb']:.0f} MB")
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
    parser.add_argument("--large", action="store_true", help="also mutate seeds of 10-24 MB")
    parser.add_argument("--deep", action="store_true", help="run the deep check (poold.integrity.deep) instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poold-fuzz-") as temporary:
        folder = Path(temporary)
        seeds = make_seeds(folder, args.large)
        result = run(seeds, args.cases, args.seconds, args.seed, folder, "deep" if args.deep else "quick")
    report(args, seeds, result)


if __name__ == "__main__":
    main()
