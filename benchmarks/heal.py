"""Healing: how fast damage turns into a verified file in place, and what a download costs.

* Latency (``poold run``, the sandbox, loopback): a watched track is truncated; the
  clock stops when the file at its path is the original again (fetched, verified,
  swapped). p50/p95 over the trials minus the settle time (which poold waits on purpose).
* Throughput: N tracks of M MB (WAV, truncated in the library) healed by ``poold heal``
  with ``max_parallel`` 1 and 2, against plain ``requests`` streaming the same bytes
  from the same media servers to files (one and two threads). Healing's time includes
  verification (the deep check when PyAV is installed), the swap and the confirmation.
* Peak RSS of a ``poold heal`` process healing one track of each size: flat with size
  means nothing holds a file in memory.

Linux only (wait4's ru_maxrss). Prints markdown.

    python benchmarks/heal.py [--trials 20] [--tracks 100] [--mb 10] [--rss-sizes 10,100,400]
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
import threading
import time
import wave
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import media  # noqa: E402  (tests/media.py: real encodes through PyAV)

from poold import __version__, app  # noqa: E402
from poold.config import load  # noqa: E402
from poold.heal import heal_once  # noqa: E402
from poold.sandbox import Sandbox  # noqa: E402
from poold.state import State  # noqa: E402

USERID, API_KEY, API_SECRET = 777, "bench-api-key-0001", "bench-api-secret-0001"
AUTH = f'userid = {USERID}\napi_key = "{API_KEY}"\napi_secret = "{API_SECRET}"\n'


def main() -> int:
    args = parse_args()
    print_machine()
    workdir = Path(tempfile.mkdtemp(prefix="poold-heal-bench-"))
    try:
        latency(workdir / "latency", args)
        throughput(workdir / "throughput", args)
        peak_rss(workdir / "rss", args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="latency trials (default 20)")
    parser.add_argument("--settle", type=float, default=1.0, help="[watch] settle_seconds (default 1)")
    parser.add_argument("--tracks", type=int, default=100, help="tracks for the throughput runs (default 100)")
    parser.add_argument("--mb", type=float, default=10.0, help="size of each of those tracks in MB (default 10)")
    parser.add_argument("--rss-sizes", default="10,100,400", help="track sizes in MB for the RSS runs")
    return parser.parse_args()


def print_machine() -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    try:
        import av  # noqa: F401
        deep = "yes (PyAV installed: every copy is decoded in full before the swap)"
    except ImportError:
        deep = "no (quick check only)"
    print("# Healing: latency, throughput, memory\n")
    print(f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"- machine: {platform.node()}, {platform.platform()}, {cpu}, {os.cpu_count()} cores, "
          f"{int(memory) / 1024 / 1024:.1f} GiB RAM (shared with other jobs while this ran)")
    print(f"- python {platform.python_version()}, poold {__version__}; deep check: {deep}")


def write_config(folder: Path, base_url: str, heal: str = "", watch: str = "") -> Path:
    config = folder / "config.toml"
    config.write_text(
        f'[library]\nroot = "library"\nmanifest = "manifest.json"\n[pool]\nbase_url = "{base_url}"\n{AUTH}'
        f'[state]\ndir = "state"\n[heal]\nenabled = true\nallow_plain_http = true\n{heal}{watch}')
    config.chmod(0o600)
    return config


def wav_of(path: Path, megabytes: float, seed: int = 0) -> Path:
    """A WAV of noise (16-bit stereo 44.1 kHz) of about ``megabytes``, written a block at a time."""
    frames = int(megabytes * 1e6 / 4)
    rng = np.random.default_rng(seed)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44100)
        for start in range(0, frames, 1 << 18):
            count = min(1 << 18, frames - start)
            out.writeframes((rng.integers(-8000, 8000, size=(count, 2), dtype=np.int16)).tobytes())
    return path


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


# --- latency: damage -> a verified file in place, in the daemon ------------------------------

def latency(folder: Path, args) -> None:
    root = folder / "library"
    root.mkdir(parents=True)
    kinds = ("mp3", "flac", "m4a", "wav")
    rows, originals = [], {}
    with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET) as sandbox:
        for n in range(args.trials * 5):  # the trials' tracks are a fifth of the library: no guard trips
            kind = kinds[n % len(kinds)]
            relative = f"Crate {n % 5}/Track {n:03d}{media.extension(kind)}"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            media.make(root / relative, kind, seconds=3.0, seed=n)
            originals[500_000 + n] = (root / relative).read_bytes()
            sandbox.register_media(500_000 + n, originals[500_000 + n], kind)
            rows.append({"trackid": 500_000 + n, "path": relative})
        (folder / "manifest.json").write_text(json.dumps({"tracks": rows}))
        config = write_config(folder, sandbox.base_url, watch=f"[watch]\nsettle_seconds = {args.settle}\n")
        log = open(folder / "daemon.log", "w")
        daemon = subprocess.Popen([sys.executable, "-m", "poold", "run", "--config", str(config)], stderr=log)
        try:
            wait_for(lambda: daemon_state(folder) == "watching", 600, "the first full check")
            results = []
            for n in range(args.trials):
                trackid, path = 500_000 + n, root / rows[n]["path"]
                started = time.monotonic()
                os.truncate(path, path.stat().st_size // 2)
                wait_for(lambda: path.read_bytes() == originals[trackid], 120, f"track {trackid} healed")
                results.append(time.monotonic() - started - args.settle)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            log.close()
    results.sort()
    p95 = results[min(len(results) - 1, int(round(0.95 * (len(results) - 1))))]
    print(f"\n## Damage to a verified file in place (`poold run`, {args.trials} trials, settle {args.settle:g} s)\n")
    print("Truncate a watched 3 s track (MP3, FLAC, M4A, WAV in turn); stop when the file at its path is the "
          "original again: judged, requested, fetched, verified, swapped. Minus the settle time.\n")
    print("| p50 | p95 | min | max |\n|---|---|---|---|")
    print(f"| {statistics.median(results):.2f} s | {p95:.2f} s | {results[0]:.2f} s | {results[-1]:.2f} s |")


def daemon_state(folder: Path) -> str | None:
    if not (folder / "state" / "poold.sqlite3").exists():
        return None
    with State(folder / "state") as state:
        return (state.note("daemon") or {}).get("state")


# --- throughput --------------------------------------------------------------------------

def throughput(folder: Path, args) -> None:
    folder.mkdir(parents=True)
    source = wav_of(folder / "source.wav", args.mb)
    size = source.stat().st_size
    total_mb = size * args.tracks / 1e6
    print(f"\n## Throughput: {args.tracks} tracks of {size / 1e6:.1f} MB (WAV), loopback\n")
    print("| how | tracks/s | MB/s | time |\n|---|---|---|---|")
    with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET) as sandbox:
        trackids = [600_000 + n for n in range(args.tracks)]
        for trackid in trackids:
            sandbox.register_media(trackid, source, "wav")
        for threads in (1, 2):
            seconds = plain_requests(sandbox, trackids, folder / f"plain{threads}", threads)
            print(f"| plain `requests`, {threads} thread(s), stream to files | {args.tracks / seconds:.2f} | "
                  f"{total_mb / seconds:.0f} | {seconds:.1f} s |")
        for parallel in (1, 2):
            seconds = heal_run(sandbox, folder / f"heal{parallel}", source, trackids, parallel)
            print(f"| healing (`heal_once`), max_parallel = {parallel}: download, verify, swap, confirm | "
                  f"{args.tracks / seconds:.2f} | {total_mb / seconds:.0f} | {seconds:.1f} s |")


def plain_requests(sandbox: Sandbox, trackids: list[int], folder: Path, threads: int) -> float:
    """Queue each track, then stream its media to a file with requests: the floor."""
    folder.mkdir()
    token = requests.post(f"{sandbox.base_url}/user/authenticate", auth=(API_KEY, API_SECRET),
                          data={"userid": USERID}, timeout=10).json()["token"]
    import base64

    auth = {"Authorization": "Bearer " + base64.b64encode(f"{USERID}:{token}".encode()).decode()}
    sandbox.queued.update(trackids)
    work = list(trackids)
    lock = threading.Lock()

    def worker() -> None:
        session = requests.Session()
        while True:
            with lock:
                if not work:
                    return
                trackid = work.pop()
            answer = session.get(f"{sandbox.base_url}/download/queue/{trackid}", headers=auth, timeout=10).json()
            url = f"http://{answer['servers'][0]}/pool/v5/download/{answer['dl_token']}"
            with session.get(url, headers=auth, stream=True, timeout=30) as response, \
                    open(folder / f"{trackid}.wav", "wb") as out:
                for chunk in response.iter_content(64 * 1024):
                    out.write(chunk)

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.monotonic() - started
    sandbox.queued.difference_update(trackids)
    shutil.rmtree(folder)
    return seconds


def heal_run(sandbox: Sandbox, folder: Path, source: Path, trackids: list[int], parallel: int) -> float:
    """A library of truncated copies, requested through an audit; then time ``poold heal``."""
    root = folder / "library"
    rows = []
    head = source.read_bytes()[:64 * 1024]
    for n, trackid in enumerate(trackids):
        relative = f"Crate {n % 10}/Track {n:03d}.wav"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(head)  # truncated: a request, then a heal
        rows.append({"trackid": trackid, "path": relative})
    (folder / "manifest.json").write_text(json.dumps({"tracks": rows}))
    config_path = write_config(folder, sandbox.base_url, heal=f"max_parallel = {parallel}\nmax_tracks_per_day = 100000\n")
    config = load(config_path)
    outcome = app.run_audit(config, request=True)
    assert len(outcome.report.problems) == len(trackids), outcome.report.guard
    started = time.monotonic()
    heal_once(config)  # in this process, like the baseline: no interpreter start in the time
    seconds = time.monotonic() - started
    with State(folder / "state") as state:
        confirmed = sum(job["stage"] == "confirmed" for job in state.heal_jobs())
    if confirmed != len(trackids):
        raise SystemExit(f"only {confirmed} of {len(trackids)} tracks healed")
    shutil.rmtree(folder)
    return seconds


# --- peak RSS ----------------------------------------------------------------------------

def peak_rss(folder: Path, args) -> None:
    sizes = [float(s) for s in args.rss_sizes.split(",")]
    print("\n## Peak RSS of `poold heal` healing one track\n")
    print("| track size | peak RSS | time |\n|---|---|---|")
    with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET) as sandbox:
        for number, megabytes in enumerate(sizes):
            case = folder / f"size{number}"
            root = case / "library"
            root.mkdir(parents=True)
            source = wav_of(case / "source.wav", megabytes, seed=number)
            trackid = 700_000 + number
            sandbox.register_media(trackid, source, "wav")
            (root / "Track.wav").write_bytes(_head(source, 64 * 1024))  # truncated
            (case / "manifest.json").write_text(json.dumps({"tracks": [{"trackid": trackid, "path": "Track.wav"}]}))
            config = write_config(case, sandbox.base_url)
            app.run_audit(load(config), request=True)
            started = time.monotonic()
            process = subprocess.Popen([sys.executable, "-m", "poold", "heal", "--config", str(config)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _pid, status, usage = os.wait4(process.pid, 0)
            seconds = time.monotonic() - started
            healed = (root / "Track.wav").stat().st_size == source.stat().st_size
            print(f"| {source.stat().st_size / 1e6:.0f} MB | {usage.ru_maxrss / 1024:.0f} MB | {seconds:.1f} s"
                  + ("" if healed and os.waitstatus_to_exitcode(status) == 0 else " (NOT healed)") + " |")
            shutil.rmtree(case)


def _head(path: Path, count: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(count)


if __name__ == "__main__":
    sys.exit(main())
