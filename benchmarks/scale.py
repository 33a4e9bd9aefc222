"""How poold's audit scales with the size of the library (issue: 100,000 tracks in seconds).

    python benchmarks/scale.py --tracks 10000 --tracks 100000 --manifest-rows 1000000

For each N it builds an N-track library (hard links to a few dozen real files encoded
by FFmpeg, in nested folders) and its JSON manifest, then measures, each in its own
process so that peak RSS is per run:

1. the floor: os.scandir walk + stat of the same tree, plus json.load of the manifest;
2. a cold `poold audit` (empty state), with one worker and with the default (one per core);
3. a warm audit with nothing changed;
4. a warm audit after 1% of the files changed (replaced by fresh copies);
and with --manifest-rows, a warm audit of the largest library against a manifest of
that many rows (the extra rows point at files that do not exist). Every time is the
best of TRIALS runs (the changed files are replaced anew for each run of step 4).

Targets: warm/no-change <= 2x the floor at 100k; warm after 1% <= no-change + the time
to check those files (measured as a cold audit of a manifest listing only them); cold default >= 1.6x the one-worker rate; peak RSS < 200 MB at
100k, sub-linear to 1M rows. Run it on a quiet machine; it prints markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import media  # noqa: E402  (tests/media.py: real encoded files)

SEED_KINDS = ["mp3", "mp3_vbr", "mp3_id3v1", "m4a", "m4a_faststart", "flac", "ogg", "opus", "wav", "mp4"]
SEEDS_PER_KIND = 3

FLOOR_SCRIPT = """
import json, os, sys
def walk(path):
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                walk(entry.path)
            else:
                entry.stat()
walk(sys.argv[1])
with open(sys.argv[2]) as f:
    json.load(f)
"""


def make_seeds(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    seeds = []
    for kind in SEED_KINDS:
        for variant in range(SEEDS_PER_KIND):
            path = folder / f"{kind}-{variant}{media.extension(kind)}"
            if not path.exists():
                media.make(path, kind, seconds=4 + 3 * variant, seed=variant)
            seeds.append(path)
    return seeds


def relative_path(number: int, seed: Path) -> str:
    return f"genre{number % 20:02d}/artist{number % 997:03d}/track {number:07d}{seed.suffix}"


CHANGE_EVERY = 100  # 1% of the files change between the warm runs
TRIALS = 3  # each timing is the best of this many runs: the machines are noisy


def build_library(work: Path, tracks: int, seeds: list[Path]) -> Path:
    """Hard links, except the files that will change: copies, since replacing a hard
    link changes the ctime of every other name of that inode (and poold notices)."""
    root = work / "library"
    if root.exists():
        shutil.rmtree(root)
    for number in range(1, tracks + 1):
        seed = seeds[number % len(seeds)]
        target = root / relative_path(number, seed)
        target.parent.mkdir(parents=True, exist_ok=True)
        if number % CHANGE_EVERY == 0:
            shutil.copyfile(seed, target)
        else:
            os.link(seed, target)
    os.sync()  # the audits should not pay for writing back the benchmark's own files
    return root


def write_manifest(path: Path, rows: int, tracks: int, seeds: list[Path]) -> None:
    with open(path, "w") as f:
        f.write('{"tracks": [\n')
        for number in range(1, rows + 1):
            seed = seeds[number % len(seeds)]
            separator = ",\n" if number < rows else "\n"
            row_path = relative_path(number, seed) if number <= tracks else f"gone/track {number:07d}.mp3"
            f.write(json.dumps({"trackid": number, "path": row_path}) + separator)
        f.write("]}\n")


def write_config(work: Path, manifest: Path, workers: int) -> Path:
    """The library guard stays at its default: the big manifest's missing rows trip it,
    as they would for a real library, so that run measures the scan, not filing."""
    config = work / f"config-{manifest.stem}-{workers}.toml"
    config.write_text(f'[library]\nroot = "library"\nmanifest = "{manifest.name}"\n\n'
                      f'[state]\ndir = "state"\n\n[scan]\nworkers = {workers}\n')
    return config


# Each child reports its own peak RSS (VmHWM, the high-water mark of its address space)
# as it exits. wait4's ru_maxrss would also count the memory a child has between fork
# and exec, which is this benchmark's own: hundreds of MB once it has parsed the JSON of
# a million findings.
PEAK_WRAPPER = """
import atexit, runpy, sys
def record_peak(path=sys.argv[1]):
    with open("/proc/self/status") as status, open(path, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(record_peak)
if sys.argv[2] == "-m":
    sys.argv = sys.argv[3:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    code, sys.argv = sys.argv[3], ["-c", *sys.argv[4:]]
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
"""


def measure(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, and stdout of one child process (``python -m ...``
    or ``python -c ...``)."""
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        started = time.perf_counter()
        child = subprocess.run([argv[0], "-c", PEAK_WRAPPER, peak.name, *argv[1:]],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seconds = time.perf_counter() - started
        return seconds, int(peak.read()) / 1024, child.stdout


def audit(config: Path) -> tuple[float, float, dict]:
    seconds, rss, out = measure([sys.executable, "-m", "poold", "audit", "--json", "--config", str(config)])
    return seconds, rss, json.loads(out)


def reset_state(work: Path) -> None:
    shutil.rmtree(work / "state", ignore_errors=True)


def change_files(root: Path, tracks: int, seeds: list[Path]) -> int:
    """Replace 1% of the files with fresh copies (new inode, mtime, ctime)."""
    changed = 0
    for number in range(CHANGE_EVERY, tracks + 1, CHANGE_EVERY):
        seed = seeds[number % len(seeds)]
        target = root / relative_path(number, seed)
        fresh = target.with_name(target.name + ".new")
        shutil.copyfile(seed, fresh)
        os.replace(fresh, target)
        changed += 1
    os.sync()  # as the changed files of a real library were written well before the audit
    return changed


def run_size(work: Path, tracks: int, seeds: list[Path], single_worker: bool) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    root = build_library(work, tracks, seeds)
    manifest = work / "manifest.json"
    write_manifest(manifest, tracks, tracks, seeds)
    config = write_config(work, manifest, 0)
    row = {"tracks": tracks}
    row["floor"], row["floor_rss"], _ = min(
        (measure([sys.executable, "-c", FLOOR_SCRIPT, str(root), str(manifest)]) for _ in range(TRIALS)),
        key=lambda result: result[0])
    if single_worker:
        reset_state(work)
        row["cold_1"], row["cold_1_rss"], _ = audit(write_config(work, manifest, 1))
    reset_state(work)
    row["cold"], row["cold_rss"], cold = audit(config)
    assert cold["files_checked"] == tracks and not cold["problems"], "the intact library must check clean"
    row["warm"], row["warm_rss"], warm = min((audit(config) for _ in range(TRIALS)), key=lambda result: result[0])
    assert warm["files_checked"] == 0
    row["warm_1pct"], row["warm_1pct_rss"], row["changed"] = min(
        (audit_after_change(config, root, tracks, seeds) for _ in range(TRIALS)), key=lambda result: result[0])
    row["check_changed"] = min(time_to_check_changed(work, tracks, seeds) for _ in range(TRIALS))
    return row


def audit_after_change(config: Path, root: Path, tracks: int, seeds: list[Path]) -> tuple[float, float, int]:
    """A warm audit after 1% of the files changed (again: each trial replaces them anew)."""
    changed = change_files(root, tracks, seeds)
    seconds, rss, after = audit(config)
    assert after["files_checked"] == changed
    return seconds, rss, changed


def time_to_check_changed(work: Path, tracks: int, seeds: list[Path]) -> float:
    """The time poold needs to check just the changed files: a cold audit (workers
    and all) of a manifest that lists only them, with a state of its own."""
    manifest = work / "manifest-changed.json"
    numbers = range(CHANGE_EVERY, tracks + 1, CHANGE_EVERY)
    manifest.write_text(json.dumps({"tracks": [
        {"trackid": n, "path": relative_path(n, seeds[n % len(seeds)])} for n in numbers]}))
    config = work / "config-changed.toml"
    config.write_text(f'[library]\nroot = "library"\nmanifest = "{manifest.name}"\n\n[state]\ndir = "state-changed"\n')
    shutil.rmtree(work / "state-changed", ignore_errors=True)
    seconds, _, result = audit(config)
    assert result["files_checked"] == len(numbers)
    return seconds


def run_big_manifest(work: Path, tracks: int, rows: int, seeds: list[Path]) -> dict:
    manifest = work / f"manifest-{rows}.json"
    write_manifest(manifest, rows, tracks, seeds)
    config = write_config(work, manifest, 0)
    audit(config)  # fills nothing new: the files are cached from the run above
    seconds, rss, result = min((audit(config) for _ in range(2)), key=lambda r: r[0])
    return {"rows": rows, "tracks": tracks, "warm": seconds, "rss": rss, "checked": result["checked"]}


def report(rows: list[dict], big: dict | None) -> None:
    cpu = platform.processor() or platform.machine()
    print(f"## scale.py, {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}\n")
    print("| tracks | floor s | cold 1 worker s | cold s (files/s) | warm s (x floor) | warm after 1% s "
          "(changed) | budget: warm + checking the changed files alone, s | peak RSS MB floor / cold / warm / 1% |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        budget = row["warm"] + row["check_changed"]
        cold_1 = f"{row['cold_1']:.2f} (x{row['cold_1'] / row['cold']:.2f} slower)" if "cold_1" in row else "-"
        print(f"| {row['tracks']:,} | {row['floor']:.2f} | {cold_1} | {row['cold']:.2f} ({row['tracks'] / row['cold']:,.0f}) | "
              f"{row['warm']:.2f} (x{row['warm'] / row['floor']:.2f}) | {row['warm_1pct']:.2f} ({row['changed']}) | "
              f"{budget:.2f} | {row['floor_rss']:.0f} / {row['cold_rss']:.0f} / {row['warm_rss']:.0f} / "
              f"{row['warm_1pct_rss']:.0f} |")
    if big:
        print(f"\nManifest of {big['rows']:,} rows against the {big['tracks']:,}-track library "
              f"({big['rows'] - big['tracks']:,} rows missing): warm audit {big['warm']:.2f} s, "
              f"peak RSS {big['rss']:.0f} MB, {big['checked']:,} tracks judged.")


def byte_compile_poold() -> None:
    """Measure poold as pip installs it, byte-compiled: a source checkout run with
    PYTHONDONTWRITEBYTECODE set would compile every module at each start instead."""
    import compileall

    import poold

    compileall.compile_dir(Path(poold.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, action="append", help="library size (repeatable; default 10000)")
    parser.add_argument("--manifest-rows", type=int, help="also audit the largest library with a manifest this long")
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "scale")
    args = parser.parse_args()
    sizes = sorted(args.tracks or [10_000])
    byte_compile_poold()
    seeds = make_seeds(args.work / "seeds")
    rows = []
    for n in sizes:
        rows.append(run_size(args.work / f"n{n}", n, seeds, single_worker=(n == sizes[0])))
        print(f"(done: {rows[-1]})", file=sys.stderr, flush=True)
    big = run_big_manifest(args.work / f"n{sizes[-1]}", sizes[-1], args.manifest_rows, seeds) if args.manifest_rows else None
    report(rows, big)


if __name__ == "__main__":
    main()
