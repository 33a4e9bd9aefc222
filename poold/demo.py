"""``poold demo``: the whole loop on a throw-away library, against the local sandbox.

The library is built from small real recordings that ship with poold (encoded by
FFmpeg: MP3, AAC in M4A, FLAC, Ogg Vorbis, an H.264 music video) plus a WAV written
here; one track is deleted and three are damaged the ways downloads really fail.
poold finds them, requests them, then heals them: fetches each requeued track back
from the sandbox's media servers, verifies it and swaps it in.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import tempfile
import wave
from importlib import resources
from pathlib import Path

from . import app
from .report import describe_stage, print_audit
from .config import load
from .heal import heal_once
from .integrity import check_file
from .sandbox import Sandbox

USERID = 4242
API_KEY, API_SECRET = "demo-api-key", "demo-api-secret"

# (trackid, library path, seed file)
TRACKS = [
    (356111, "House/Artist One - Warehouse Nights (Extended Mix).mp3", "seed.mp3"),
    (356115, "House/Artist One - Warehouse Nights (Radio Edit).mp3", "seed.mp3"),
    (356120, "Pop/Singer Two - Summer Signal (Clean).m4a", "seed.m4a"),
    (356124, "Pop/Singer Two - Summer Signal (Dirty).m4a", "seed.m4a"),
    (356130, "Lossless/Trio Three - Glass Floor.flac", "seed.flac"),
    (356133, "Open/Quartet Four - Open Air.ogg", "seed.ogg"),
    (356140, "Video/Singer Two - Summer Signal (Video).mp4", "seed.mp4"),
    (356142, "Acapella/Artist One - Warehouse Nights (Acapella).wav", None),
]
DELETED = 356115
TRUNCATED = 356111
ZERO_FILLED = 356120
HTML_PAGE = 356140
FILE_TYPES = {".mp3": "mp3", ".m4a": "m4a", ".mp4": "720 mp4", ".flac": "flac", ".ogg": "ogg", ".wav": "wav"}
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>\n"


def run_demo(keep: bool = False) -> int:
    """Build, damage, audit, request, heal; print it all. 0 when poold found and filed
    exactly the damage and every damaged track is back, verified, in its place."""
    workdir = Path(tempfile.mkdtemp(prefix="poold-demo-"))
    try:
        with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET,
                     known_tracks=[t[0] for t in TRACKS]) as sandbox:
            originals = register_originals(sandbox)
            config_path = build(workdir, sandbox.base_url)
            print(f"Demo library: {workdir / 'library'} ({len(TRACKS)} tracks)")
            print(f"Damage done: deleted {DELETED}, truncated {TRUNCATED}, zero-filled the tail of "
                  f"{ZERO_FILLED}, replaced {HTML_PAGE} with an HTML error page\n")
            config = load(config_path)
            outcome = app.run_audit(config, request=True)
            print_audit(outcome)
            print(f"\nThe POOL sandbox at {sandbox.base_url} received:")
            for received in sandbox.received:
                print(f"  {received.method} {received.path} -> HTTP {received.status}: {json.dumps(received.form)}")
            requeued = set(sandbox.requeued)
            print("\nHealing: fetching the requeued tracks back from the sandbox's media servers...")
            healed = heal(config, originals)
            print(f"The sandbox received {len(sandbox.media_received)} media downloads and "
                  f"{len(sandbox.successes)} download confirmations.")
        expected = {DELETED, TRUNCATED, ZERO_FILLED, HTML_PAGE}
        found = {p.trackid for p in outcome.report.problems}
        worked = found == requeued == healed == expected
        print("\nResult: " + ("every damaged track was found and requeued, no others; each was fetched back, "
                              "verified and swapped in (healed)."
                              if worked else
                              f"UNEXPECTED: found {sorted(found)}, requeued {sorted(requeued)}, healed {sorted(healed)}"))
        return 0 if worked else 1
    finally:
        if keep:
            print(f"(kept {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def register_originals(sandbox: Sandbox) -> dict[int, bytes]:
    """Give the sandbox each track's original bytes, as POOL would send them; return them."""
    originals = {}
    for trackid, relative, seed in TRACKS:
        originals[trackid] = seed_bytes(seed) if seed else sine_wav()
        sandbox.register_media(trackid, originals[trackid], FILE_TYPES[Path(relative).suffix])
    return originals


def heal(config, originals: dict[int, bytes]) -> set[int]:
    """Run one heal; print each track's outcome; the tracks now back, whole, in place."""
    report = heal_once(config)
    healed = set()
    for job in report.jobs:
        path = config.library.root / job["path"]
        whole = path.exists() and path.read_bytes() == originals[job["trackid"]] and check_file(path).status == "ok"
        print(f"  {describe_stage(job)}" + (" - verified and in place" if whole else ""))
        if whole and job["stage"] == "confirmed":
            healed.add(job["trackid"])
    print(f"Damaged copies kept in {config.quarantine} (see README, Healing, to undo)")
    return healed


def build(workdir: Path, base_url: str) -> Path:
    """Write the library, its manifest and a config into ``workdir``; return the config path."""
    library = workdir / "library"
    manifest = []
    for trackid, relative, seed in TRACKS:
        path = library / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(seed_bytes(seed) if seed else sine_wav())
        manifest.append({"trackid": trackid, "path": relative})
    (workdir / "manifest.json").write_text(json.dumps({"tracks": manifest}, indent=1))
    damage(library)
    config = workdir / "config.toml"
    config.write_text(
        "[library]\nroot = \"library\"\nmanifest = \"manifest.json\"\n\n"
        f"[pool]\nbase_url = \"{base_url}\"\nuserid = {USERID}\n"
        f"api_key = \"{API_KEY}\"\napi_secret = \"{API_SECRET}\"\n\n"
        "[state]\ndir = \"state\"\n\n"
        "[heal]\nenabled = true\nallow_plain_http = true  # the sandbox's media servers are plain http on 127.0.0.1\n"
        "[guard]\n# half of this tiny library is damaged on purpose: past the default 20 %\nmax_missing_fraction = 0.6\n"
    )
    config.chmod(0o600)
    return config


def damage(library: Path) -> None:
    paths = {trackid: library / relative for trackid, relative, _ in TRACKS}
    paths[DELETED].unlink()
    truncated = paths[TRUNCATED]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size * 6 // 10])
    zeroed = paths[ZERO_FILLED]
    data = zeroed.read_bytes()
    cut = len(data) * 7 // 10
    zeroed.write_bytes(data[:cut] + bytes(len(data) - cut))
    paths[HTML_PAGE].write_bytes(HTML)


def seed_bytes(name: str) -> bytes:
    return resources.files("poold").joinpath("demo_data", name).read_bytes()


def sine_wav(seconds: float = 1.0, rate: int = 22050) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate))))
    return buffer.getvalue()
