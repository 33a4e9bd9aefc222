"""A DJ's ordinary churn between two audits: only the true losses may be requested.

    python benchmarks/churn.py                 # 10,000 tracks
    python benchmarks/churn.py --tracks 2000   # quicker

It builds a library of distinct recordings (short real files encoded by FFmpeg through
PyAV: MP3, M4A, FLAC, Ogg Vorbis, WAV, each with its own audio, so that no two tracks
share an audio identity) and a manifest with every file's size and sha256, as POOL's
would have. Then, each in its own ``poold audit --request`` process against the POOL
stand-in (poold.sandbox) on 127.0.0.1:

1. a cold audit (poold records each track's audio identity); nothing may be requested;
2. a plain warm audit, nothing changed (best of three): the baseline;
3. the churn, between two audits: 10% of the tracks moved into crate folders, 5% renamed
   with key/BPM prefixes, 20% retagged (cue points and artwork, which grows the tags:
   see tests/retag.py), 2% renamed to their decomposed Unicode form (NFD), 0.5% deleted,
   0.5% truncated. The retagged tracks are drawn from all the others, so some are moved
   or renamed *and* retagged (only their audio identity finds those);
4. the audit after the churn (timed once): its requests are compared with the deleted and
   truncated tracks (precision and recall, both must be 100%, and no track twice), and
   the locations it recorded with where the files went;
5. a warm audit after that (best of three): the lost tracks are still missing, so each
   audit walks the library once to look for them.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import media  # noqa: E402  (tests/media.py: real encoded files)
import retag  # noqa: E402  (tests/retag.py: retagging as DJ software does it)
from poold.sandbox import Sandbox  # noqa: E402
from poold.state import State  # noqa: E402

MIX = (("mp3", 25), ("m4a", 15), ("flac", 25), ("ogg", 10), ("wav", 25))  # percent of the tracks
SHARES = {"moved": 0.10, "renamed": 0.05, "retagged": 0.20, "nfd": 0.02, "deleted": 0.005, "truncated": 0.005}
USERID, API_KEY, API_SECRET = 4242, "churn-api-key-0001", "churn-api-secret-0001"
TRIALS = 3


def kind_of(number: int) -> str:
    slot, total = number % 100, 0
    for kind, percent in MIX:
        total += percent
        if slot < total:
            return kind
    raise AssertionError(number)


def relative_path(number: int, kind: str) -> str:
    """Every name has accents, so an NFD rename changes its bytes."""
    return f"Genre {number % 20:02d}/Artist {number % 397:03d} - Café Olé {number:05d}{media.extension(kind)}"


def encode(job: tuple[int, str, str]) -> None:
    number, kind, path = job
    channels = 2 if kind == "ogg" else 1  # FFmpeg's own Vorbis encoder wants stereo
    media.make(path, kind, seconds=0.4, rate=22050, channels=channels, seed=number)


def build(work: Path, tracks: int) -> tuple[Path, dict[int, str]]:
    root = work / "library"
    paths = {number: relative_path(number, kind_of(number)) for number in range(1, tracks + 1)}
    for relative in paths.values():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
    jobs = [(number, kind_of(number), str(root / relative)) for number, relative in paths.items()]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(encode, jobs, chunksize=64))
    rows = []
    for number, relative in paths.items():
        data = (root / relative).read_bytes()
        rows.append({"trackid": number, "path": relative, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (work / "manifest.json").write_text(json.dumps({"tracks": rows}))
    os.sync()
    return root, paths


def write_config(work: Path, base_url: str, tracks: int) -> Path:
    config = work / "config.toml"
    config.write_text(
        f'[library]\nroot = "library"\nmanifest = "manifest.json"\n'
        f'[pool]\nbase_url = "{base_url}"\nuserid = {USERID}\napi_key = "{API_KEY}"\napi_secret = "{API_SECRET}"\n'
        f'[requests]\nmax_tracks_per_day = {tracks}\nbatch_size = 50\n[state]\ndir = "state"\n')
    config.chmod(0o600)
    return config


def audit(config: Path) -> tuple[float, int, int]:
    """(seconds, exit code, files opened) of one ``poold audit --request``."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "poold", "audit", "--request", "--json", "--config", str(config)],
                          capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"poold audit failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took, done.returncode, json.loads(done.stdout)["files_checked"]


def churn(root: Path, paths: dict[int, str], seed: int) -> tuple[dict[str, set[int]], dict[int, str]]:
    """Do to the library what SHARES says; the chosen tracks by change, and where moved ones went."""
    rng = random.Random(seed)
    order = list(paths)
    rng.shuffle(order)
    counts = {name: round(share * len(paths)) for name, share in SHARES.items()}
    chosen, at = {}, 0
    for name in ("deleted", "truncated", "moved", "renamed", "nfd"):  # disjoint
        chosen[name] = set(order[at:at + counts[name]])
        at += counts[name]
    intact = [n for n in order if n not in chosen["deleted"] | chosen["truncated"]]
    chosen["retagged"] = set(rng.sample(intact, counts["retagged"]))

    for number in sorted(chosen["retagged"]):
        retag.RETAG[Path(paths[number]).suffix](root / paths[number])
    moved_to = {}
    for number in sorted(chosen["moved"] | chosen["renamed"] | chosen["nfd"]):
        folder, name = paths[number].rsplit("/", 1)
        if number in chosen["moved"]:
            target = f"Crates/Crate {number % 12:02d}/{name}"
        elif number in chosen["renamed"]:
            target = f"{folder}/{rng.randint(1, 12)}{rng.choice('AB')} - {rng.randint(100, 130)} - {name}"
        else:
            target = unicodedata.normalize("NFD", paths[number])
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        os.rename(root / paths[number], root / target)
        moved_to[number] = target
    for number in chosen["deleted"]:
        (root / paths[number]).unlink()
    for number in chosen["truncated"]:
        media.truncate(str(root / paths[number]), 0.5)
    os.sync()
    return chosen, moved_to


def best_of(config: Path, trials: int = TRIALS) -> float:
    return min(audit(config)[0] for _ in range(trials))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--work", type=Path, help="folder to build in (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poold-churn-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        root, paths = build(work, args.tracks)
        built = time.perf_counter() - started
        with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET) as pool:
            config = write_config(work, pool.base_url, args.tracks)
            cold, code, _opened = audit(config)
            assert code == 0 and not pool.received, "the intact library filed requests"
            warm = best_of(config)
            chosen, moved_to = churn(root, paths, args.seed)
            after, code, opened = audit(config)
            requested = dict(pool.requeued)
            warm_after = best_of(config)
            again = dict(pool.requeued)
        with State(work / "state") as state:
            locations = state.locations()
        report(args.tracks, built, cold, warm, (after, opened), warm_after, chosen, moved_to, requested, again,
               locations)


def report(tracks, built, cold, warm, after_opened, warm_after, chosen, moved_to, requested, again, locations) -> None:
    after, opened = after_opened
    lost = chosen["deleted"] | chosen["truncated"]
    hits = lost & set(requested)
    precision = len(hits) / len(requested) if requested else 1.0
    recall = len(hits) / len(lost) if lost else 1.0
    doubles = sum(1 for count in again.values() if count > 1) + len(set(again) - set(requested))
    right = sum(1 for number, path in moved_to.items() if locations.get(number) == path)
    both = (chosen["moved"] | chosen["renamed"] | chosen["nfd"]) & chosen["retagged"]
    print(f"#### churn.py, {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores ({platform.machine()}), "
          f"Python {platform.python_version()}\n")
    mix = ", ".join(f"{kind} {percent}%" for kind, percent in MIX)
    print(f"{tracks:,} tracks ({mix}; 0.4 s each, distinct audio), built in {built:.0f} s; "
          f"cold audit {cold:.2f} s.\n")
    print("| change | tracks |\n|---|---|")
    for name in SHARES:
        print(f"| {name} | {len(chosen[name]):,} |")
    print(f"| moved, renamed or NFD-renamed *and* retagged | {len(both):,} |\n")
    print("| audit | s | x plain warm |\n|---|---|---|")
    print(f"| plain warm (nothing changed), best of {TRIALS} | {warm:.2f} | 1.00 |")
    print(f"| after the churn ({opened:,} files opened: changed, or candidates for a missing track) | "
          f"{after:.2f} | {after / warm:.2f} |")
    print(f"| warm after the churn (the losses still missing), best of {TRIALS} | {warm_after:.2f} | "
          f"{warm_after / warm:.2f} |\n")
    print(f"Requests after the churn: {len(requested):,} tracks for {len(lost):,} lost; "
          f"precision {precision:.1%}, recall {recall:.1%}; "
          f"{doubles} requested twice or later. Relocated to the right file: {right:,} of {len(moved_to):,}.")


if __name__ == "__main__":
    main()
