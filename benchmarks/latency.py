"""How fast ``poold run`` turns damage into a request, and what it costs while idle.

* Latency: a file is deleted or truncated; the clock stops when the stand-in POOL
  server accepts the request for that track. Reported as p50/p95 minus the settle
  time (which poold waits on purpose). Target: p95 under 2 s on top of the settle time.
* Idle: CPU time and RSS of the daemon over a minute of watching a 10,000-track
  library. Targets: under 1 % CPU, under 150 MB RSS.

The library is a few real recordings (encoded with tests/media.py) hard-linked many
times, plus a separate copy per trial, so that truncating one never damages others.
Linux only (reads /proc). Prints markdown.

    python benchmarks/latency.py [--tracks 10000] [--trials 20] [--settle 2] [--idle 60]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import media  # noqa: E402  (tests/media.py: real encodes through PyAV)

from poold import __version__  # noqa: E402
from poold.sandbox import Sandbox  # noqa: E402
from poold.state import State  # noqa: E402

USERID, API_KEY, API_SECRET = 777, "bench-api-key-0001", "bench-api-secret-0001"
SEED_KINDS = ("flac", "mp3", "m4a", "ogg")
PER_FOLDER = 100
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def main() -> int:
    args = parse_args()
    if not Path("/proc/self/stat").exists():
        print("This benchmark reads /proc: run it on Linux.", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="poold-latency-"))
    try:
        print_machine()
        with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET) as sandbox:
            trials = build(workdir, sandbox.base_url, args)
            run(workdir, sandbox, trials, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=10_000, help="library size (default 10,000)")
    parser.add_argument("--trials", type=int, default=20, help="deletions and truncations, alternating (default 20)")
    parser.add_argument("--settle", type=float, default=2.0, help="[watch] settle_seconds (default 2)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement (default 60)")
    return parser.parse_args()


def print_machine() -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    print("# poold run: latency and idle cost\n")
    print(f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"- machine: {platform.node()}, {platform.platform()}, {cpu}, {os.cpu_count()} cores, "
          f"{int(memory) / 1024 / 1024:.1f} GiB RAM")
    print(f"- python {platform.python_version()}, poold {__version__}")


# --- the library --------------------------------------------------------------------

def build(workdir: Path, base_url: str, args) -> list[tuple[int, Path]]:
    """Write library, manifest and config; return (trackid, path) of the trial files."""
    root = workdir / "library"
    seeds = [Path(media.make(workdir / f"seed{i}{media.extension(kind)}", kind, seconds=2.0, seed=i))
             for i, kind in enumerate(SEED_KINDS)]
    rows, trials = [], []
    for n in range(args.tracks):
        seed = seeds[n % len(seeds)]
        relative = f"Crate {n // PER_FOLDER:03d}/Track {n:05d}{seed.suffix}"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if n < args.trials:
            shutil.copyfile(seed, path)  # its own inode: truncating it damages nothing else
            trials.append((100_000 + n, path))
        else:
            os.link(seed, path)
        rows.append({"trackid": 100_000 + n, "path": relative, "size": seed.stat().st_size})
    (workdir / "manifest.json").write_text(json.dumps({"tracks": rows}))
    config = workdir / "config.toml"
    config.write_text(
        f'[library]\nroot = "library"\nmanifest = "manifest.json"\n'
        f'[pool]\nbase_url = "{base_url}"\nuserid = {USERID}\napi_key = "{API_KEY}"\napi_secret = "{API_SECRET}"\n'
        f'[state]\ndir = "state"\n[watch]\nsettle_seconds = {args.settle}\n')
    config.chmod(0o600)
    print(f"- library: {args.tracks:,} tracks in {args.tracks // PER_FOLDER} folders ({len(seeds)} real recordings "
          f"hard-linked, {args.trials} separate copies for the trials), settle_seconds = {args.settle:g}")
    return trials


# --- measuring the daemon ---------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


def descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def note(workdir: Path) -> dict:
    if not (workdir / "state" / "poold.sqlite3").exists():
        return {}
    with State(workdir / "state") as state:
        return state.note("daemon") or {}


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


# --- the run ------------------------------------------------------------------------

def run(workdir: Path, sandbox: Sandbox, trials: list[tuple[int, Path]], args) -> None:
    log = open(workdir / "daemon.log", "w")
    started = time.monotonic()
    daemon = subprocess.Popen([sys.executable, "-m", "poold", "run", "--config", str(workdir / "config.toml")],
                              stderr=log)
    try:
        wait_for(lambda: note(workdir).get("state") == "watching", 600, "the first full check")
        first_check = time.monotonic() - started
        rss_after_check = rss_mb(daemon.pid)
        idle_cpu, idle_rss, tree_rss = measure_idle(daemon.pid, args.idle)
        latencies = measure_latency(sandbox, trials, args.settle)
        stop_time = stop(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        log.close()
    report(args, first_check, rss_after_check, idle_cpu, idle_rss, tree_rss, latencies, stop_time)


def measure_idle(pid: int, seconds: float) -> tuple[float, float, float]:
    """CPU share of the daemon over ``seconds`` of idling, its RSS, and the RSS of its process tree."""
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # the measurement itself: nothing happens in the library meanwhile
    share = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
    helpers = descendants(pid)
    return share, rss_mb(pid), rss_mb(pid) + sum(rss_mb(child) for child in helpers)


def measure_latency(sandbox: Sandbox, trials: list[tuple[int, Path]], settle: float) -> list[tuple[str, float]]:
    results = []
    for index, (trackid, path) in enumerate(trials):
        kind = "delete" if index % 2 == 0 else "truncate"
        started = time.time()
        if kind == "delete":
            path.unlink()
        else:
            os.truncate(path, path.stat().st_size // 2)
        arrival = wait_for(lambda: accepted_at(sandbox, trackid), 60 + settle, f"the request for {trackid}")
        results.append((kind, arrival - started - settle))
    return results


def accepted_at(sandbox: Sandbox, trackid: int) -> float | None:
    for received in list(sandbox.received):
        if str(trackid) in received.form.get("trackid_list", "").split(",") and received.status == 200:
            return received.time
    return None


def stop(daemon: subprocess.Popen) -> float:
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(10)
    if code != 0:
        raise SystemExit(f"poold exited with {code} on SIGTERM")
    return time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(args, first_check, rss_after_check, idle_cpu, idle_rss, tree_rss, latencies, stop_time) -> None:
    extra = [latency for _kind, latency in latencies]
    p95 = percentile(extra, 0.95)
    print(f"- start to first full check done: {first_check:.1f} s\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| latency on top of the settle time, p50 ({len(extra)} trials) | {statistics.median(extra):.2f} s | |")
    print(f"| latency on top of the settle time, p95 | {p95:.2f} s | < 2 s {'✓' if p95 < 2 else '✗'} |")
    print(f"| latency on top of the settle time, max | {max(extra):.2f} s | |")
    print(f"| idle CPU over {args.idle:g} s | {idle_cpu:.3%} | < 1 % {'✓' if idle_cpu < 0.01 else '✗'} |")
    print(f"| RSS, idle | {idle_rss:.0f} MB | < 150 MB {'✓' if idle_rss < 150 else '✗'} |")
    print(f"| RSS right after the first full check | {rss_after_check:.0f} MB | |")
    print(f"| RSS with helper processes (check workers' forkserver) | {tree_rss:.0f} MB | |")
    print(f"| SIGTERM to exit | {stop_time:.2f} s | < 5 s {'✓' if stop_time < 5 else '✗'} |")
    print("\n| trial | change | latency − settle |\n|---|---|---|")
    for number, (kind, latency) in enumerate(latencies, 1):
        print(f"| {number} | {kind} | {latency:.2f} s |")


if __name__ == "__main__":
    sys.exit(main())
