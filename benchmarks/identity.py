"""What the audio identity costs the quick check, measured in one process.

Encodes the intact files of benchmarks/integrity.py (every kind in tests/media.py, with
its 3 s, 30 s, mono, 48 kHz and tagged variants) and times ``check_file`` on each, with
the sampled identity (as poold runs) and without it (the identity step replaced by a
no-op), alternating the two in every round. Each file's time is the best over the
rounds of the CPU time of a batch of calls (``time.thread_time``), so other processes
on a shared machine inflate neither side. Also times the full identity against the
sha256 pass of ``--verify``.

Prints markdown. Run: python benchmarks/identity.py [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import integrity as integrity_benchmark  # noqa: E402  (benchmarks/integrity.py)
import poold.integrity as dispatch  # noqa: E402
from poold.integrity import check_file  # noqa: E402
from poold.integrity.identity import full_identity  # noqa: E402

BATCH = 10


def best_times(paths: list[Path], rounds: int) -> dict[str, dict[Path, float]]:
    """path -> best seconds a check, with and without the identity."""
    with_identity = dispatch._with_identity
    variants = {"with": with_identity, "without": lambda verdict, src: verdict}
    best = {name: defaultdict(lambda: float("inf")) for name in variants}
    try:
        for round_number in range(rounds):
            order = sorted(variants, reverse=bool(round_number % 2))
            for name in order:
                dispatch._with_identity = variants[name]
                for path in paths:
                    began = time.thread_time()
                    for _ in range(BATCH):
                        check_file(path)
                    best[name][path] = min(best[name][path], (time.thread_time() - began) / BATCH)
    finally:
        dispatch._with_identity = with_identity
    return best


def full_pass_times(paths: list[Path], rounds: int) -> tuple[float, float]:
    """Seconds for all files: sha256 of the whole file, and the full identity alone."""
    def sha256(path):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)

    results = []
    for action in (sha256, full_identity):
        best = float("inf")
        for _ in range(rounds):
            began = time.thread_time()
            for path in paths:
                action(path)
            best = min(best, time.thread_time() - began)
        results.append(best)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poold-identity-bench-") as folder:
        files, _skipped = integrity_benchmark.build_intact(Path(folder))
        paths = [item.path for item in files]
        family = {item.path: integrity_benchmark.FAMILY[item.kind] for item in files}
        best = best_times(paths, args.rounds)
        sha_seconds, full_seconds = full_pass_times(paths, 5)
        megabytes = sum(path.stat().st_size for path in paths) / 1e6
    print("# Audio identity: cost in the quick check\n")
    print("\n".join(integrity_benchmark.machine_lines()) + "\n")
    print(f"{len(paths)} intact files; best CPU time a check over {args.rounds} alternating rounds "
          f"of {BATCH} calls each.\n")
    rows = []
    for name in sorted(set(family.values())) + ["all"]:
        chosen = [path for path in paths if name in ("all", family[path])]
        without = sum(best["without"][path] for path in chosen)
        with_identity = sum(best["with"][path] for path in chosen)
        rows.append([name, str(len(chosen)), f"{1e6 * without / len(chosen):.1f}",
                     f"{1e6 * with_identity / len(chosen):.1f}",
                     f"+{1e6 * (with_identity - without) / len(chosen):.1f}", f"{without / with_identity:.3f}"])
    print(integrity_benchmark.table(
        ["format family", "files", "µs a check without", "µs with", "identity µs", "files/s ratio"], rows))
    print(f"\nFull identity (the payload read again and hashed) over all {megabytes:.1f} MB: "
          f"{full_seconds:.3f} s CPU, against {sha_seconds:.3f} s for the whole files' sha256 "
          f"(in --verify it is taken in the sha256's pass).")


if __name__ == "__main__":
    main()
