"""Integrity benchmark: how often poold's checks catch damage, how often they cry wolf, how fast.

Encodes real files of every kind in tests/media.py (plus mono, 48 kHz, 30 s and tag
variants), damages copies in the ways downloads and disks damage files, and runs three
rules over every file in the same run:

- quick: ``poold.integrity.check_file`` (detected = status corrupt)
- deep: ``poold.integrity.deep.deep_check`` (detected = status corrupt)
- mutagen: ``mutagen.File`` raises, returns None, or reports a length <= 0

and, for speed only, one baseline over the same files: "FFmpeg decode", a plain PyAV
decode of every audio stream (no error detection options, no checksums, errors
swallowed), the yardstick of the deep mode's target "throughput no worse than FFmpeg
decoding the same files".

It prints markdown (machine, detection tables, false positives, speed) ready to paste
into benchmarks/RESULTS.md. ``--mutagen-samples`` also runs the quick check and the
``poold check`` CLI over the test files of mutagen's source distribution.

Run: python benchmarks/integrity.py [--mutagen-samples]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import mutagen  # noqa: E402
import numpy as np  # noqa: E402
from mutagen.apev2 import APEv2  # noqa: E402
from mutagen.flac import FLAC, Picture  # noqa: E402
from mutagen.id3 import APIC, ID3  # noqa: E402
from mutagen.mp4 import MP4, MP4Cover  # noqa: E402

import media  # noqa: E402
import poold  # noqa: E402
from poold.integrity import check_file  # noqa: E402
from poold.integrity.deep import deep_check  # noqa: E402
from poold.integrity.tags import leading_tags_end, trailing_tags_start  # noqa: E402
from poold.integrity.base import Source  # noqa: E402

SECONDS = 3.0
LONG_SECONDS = 30.0
MUTAGEN_VERSION = "1.48.1"

EXTENSION_FAMILY = {".mp3": "mp3", ".flac": "flac", ".m4a": "mp4", ".mp4": "mp4", ".mov": "mp4",
                    ".ogg": "ogg", ".opus": "ogg", ".oga": "ogg", ".wav": "wav", ".aiff": "aiff"}
FAMILY = {kind: EXTENSION_FAMILY[media.extension(kind)] for kind in media.ALL_KINDS}
# A valid file of another format, renamed to this family's extension.
IMPOSTOR = {"mp3": "flac", "flac": "mp3", "mp4": "mp3", "ogg": "flac", "wav": "aiff", "aiff": "wav"}
PCM_FAMILIES = ("wav", "aiff")


@dataclass(frozen=True)
class Intact:
    row: str       # the table row: the media kind, or kind plus tag variant
    kind: str
    variant: str
    path: Path


# --- intact files -------------------------------------------------------------------

def build_intact(folder: Path) -> tuple[list[Intact], list[str]]:
    files, skipped = [], []
    for kind in media.ALL_KINDS:
        variants = [("3 s", {}), ("30 s", {"seconds": LONG_SECONDS})]
        if kind in media.KINDS:
            variants.append(("mono", {"channels": 1}))
            if kind != "opus":  # Opus always encodes at 48 kHz
                variants.append(("48 kHz", {"rate": 48000}))
        for variant, args in variants:
            path = folder / f"{kind}-{variant.replace(' ', '')}{media.extension(kind)}"
            try:
                media.make(path, kind, **{"seconds": SECONDS, **args})
            except (av.error.FFmpegError, ValueError) as exc:
                skipped.append(f"{kind} {variant}: the encoder refused ({type(exc).__name__}: {exc})")
                continue
            files.append(Intact(kind, kind, variant, path))
    files += tagged_variants(folder)
    return files, skipped


def jpeg_cover(side: int = 400) -> bytes:
    """A real JPEG of noise, about 90 KB: bigger than the checkers' 64 KiB windows."""
    context = av.CodecContext.create("mjpeg", "w")
    context.width, context.height, context.pix_fmt = side, side, "yuvj420p"
    context.time_base = Fraction(1, 25)
    noise = np.random.default_rng(5).integers(0, 256, (side, side, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(noise, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in context.encode(frame) + context.encode(None))


def tagged_variants(folder: Path) -> list[Intact]:
    cover = jpeg_cover()
    made = []

    def variant(kind: str, name: str, tag) -> None:
        path = folder / f"{kind}-{name}{media.extension(kind)}"
        media.make(path, kind, seconds=SECONDS)
        tag(str(path))
        made.append(Intact(f"{kind} +{name}", kind, name, path))

    def id3_cover(path):
        tags = ID3(path)
        tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=cover))
        tags.save(path)

    def ape(path):
        tag = APEv2()
        tag["Artist"], tag["Title"] = "poold", "APEv2 trailer"
        tag.save(path)

    def flac_cover(path):
        tags = FLAC(path)
        picture = Picture()
        picture.type, picture.mime, picture.data = 3, "image/jpeg", cover
        tags.add_picture(picture)
        tags.save()

    def mp4_cover(path):
        tags = MP4(path)
        tags["covr"] = [MP4Cover(cover, imageformat=MP4Cover.FORMAT_JPEG)]
        tags.save()

    variant("mp3", "cover", id3_cover)
    variant("mp3", "APEv2", ape)
    variant("mp3_id3v1", "APEv2", ape)
    variant("flac", "cover", flac_cover)
    variant("m4a", "cover", mp4_cover)
    return made


# --- where the audio data lies ------------------------------------------------------

def audio_span(path: Path, family: str) -> tuple[int, int]:
    """(first byte after the headers, end of the audio data) of an intact file.

    Cutting at the first offset leaves "the header alone": the tags and the Xing/Info
    frame (MP3), the metadata blocks (FLAC), the header pages (Ogg), everything up to
    the first sample of 'mdat' (MP4: ftyp+moov for faststart files), up to the
    first sample of the data/SSND chunk (WAV, AIFF).
    """
    data = path.read_bytes()
    with Source(path) as src:
        start = leading_tags_end(src)
        end = trailing_tags_start(src, start)
    if family == "mp3":
        return mp3_first_audio(data, start), end
    if family == "flac":
        return flac_first_frame(data, start), end
    if family == "ogg":
        return ogg_first_audio_page(data, start), end
    if family == "mp4":
        return chunk_payload(data, b"mdat", 0, mp4=True)
    if family == "wav":
        return chunk_payload(data, b"data", 12, byteorder="little")
    start, end = chunk_payload(data, b"SSND", 12, byteorder="big")
    return start + 8, end  # SSND's offset and blockSize fields come first


def mp3_first_audio(data: bytes, start: int) -> int:
    """After the first frame if it carries a Xing/Info/VBRI header, else after its header."""
    b1, b2 = data[start + 1], data[start + 2]
    mpeg1 = (b1 >> 3) & 3 == 3
    kbps = ((0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320) if mpeg1 else
            (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160))[b2 >> 4]
    rate = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}[(b1 >> 3) & 3][(b2 >> 2) & 3]
    size = (144 if mpeg1 else 72) * kbps * 1000 // rate + ((b2 >> 1) & 1)
    frame = data[start:start + size]
    is_header_frame = any(marker in frame[:64] for marker in (b"Xing", b"Info", b"VBRI"))
    return start + (size if is_header_frame else 4)


def flac_first_frame(data: bytes, start: int) -> int:
    offset = start + 4  # "fLaC"
    while True:
        last, length = data[offset] & 0x80, int.from_bytes(data[offset + 1:offset + 4], "big")
        offset += 4 + length
        if last:
            return offset


def ogg_first_audio_page(data: bytes, start: int) -> int:
    """After the pages whose granule position is 0: the codec header packets."""
    offset = start
    while data[offset:offset + 4] == b"OggS":
        granule = struct.unpack_from("<q", data, offset + 6)[0]
        if granule != 0:
            return offset
        segments = data[offset + 26]
        offset += 27 + segments + sum(data[offset + 27:offset + 27 + segments])
    return offset


def chunk_payload(data: bytes, name: bytes, offset: int, byteorder: str = "big",
                  mp4: bool = False) -> tuple[int, int]:
    """Payload span of the first top-level chunk called ``name``: MP4 boxes (size, type,
    64-bit size when 1), RIFF (little-endian) and IFF (big-endian) chunks (type, size,
    padded to even length)."""
    while offset + 8 <= len(data):
        if mp4:
            size, kind, header = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8], 8
            if size == 1:
                size, header = int.from_bytes(data[offset + 8:offset + 16], "big"), 16
        else:
            kind, size, header = data[offset:offset + 4], int.from_bytes(data[offset + 4:offset + 8], byteorder), 8
        if kind == name:
            return offset + header, offset + (size if mp4 else header + size)
        offset += size if mp4 else header + size + (size & 1)
    raise ValueError(f"no {name!r} chunk")


# --- corruptions --------------------------------------------------------------------

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body>\n"
             b"<h1>Not Found</h1><p>The requested URL was not found on this server.</p>\n"
             b"<hr><address>nginx</address>\n</body></html>\n")


def corruptions(intact: Intact, span: tuple[int, int], impostor: Path):
    """(name, function(path)) for every corruption; each damages a fresh copy in place."""
    start, end = span

    def cut(fraction):
        return lambda path: media.truncate(str(path), fraction)

    def zero_tail(fraction):
        return lambda path: media.zero_tail(str(path), fraction)

    def header_only(path):
        os.truncate(path, start)

    def zero_middle(path):
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2 - 2048)
            f.write(bytes(4096))

    def flip(count):
        def damage(path):
            rng = random.Random(count)
            lo, hi = start + (end - start) // 5, end - (end - start) // 5
            with open(path, "r+b") as f:
                for offset in rng.sample(range(lo, hi), count):
                    f.seek(offset)
                    byte = f.read(1)[0]
                    f.seek(offset)
                    f.write(bytes([byte ^ (1 << rng.randrange(8))]))
        return damage

    def html(path):
        Path(path).write_bytes(HTML_PAGE)

    def empty(path):
        Path(path).write_bytes(b"")

    def junk(path):
        with open(path, "ab") as f:
            f.write(random.Random(9).randbytes(1024))

    def renamed(path):
        shutil.copyfile(impostor, path)

    return [
        ("cut 99%", cut(0.99)), ("cut 90%", cut(0.90)), ("cut 50%", cut(0.50)), ("cut 10%", cut(0.10)),
        ("cut 1%", cut(0.01)), ("header only", header_only), ("zero tail 10%", zero_tail(0.10)),
        ("zero tail 50%", zero_tail(0.50)), ("zero 4K mid", zero_middle), ("flip 1", flip(1)),
        ("flip 100", flip(100)), ("HTML page", html), ("empty", empty), ("junk +1K", junk),
        ("wrong ext", renamed),
    ]


CORRUPTION_NAMES = [name for name, _ in corruptions(Intact("", "", "", Path()), (0, 0), Path())]
# Cells where the quick check must detect 100% (the shared brief's targets).
QUICK_TARGETS = {"cut 99%", "cut 90%", "cut 50%", "cut 10%", "cut 1%", "header only",
                 "zero tail 10%", "zero tail 50%", "HTML page", "empty"}


# --- rules --------------------------------------------------------------------------

def mutagen_rule(path: Path):
    try:
        loaded = mutagen.File(path)
    except Exception as exc:  # any failure to parse is mutagen's "broken"
        return True, f"raises {type(exc).__name__}"
    if loaded is None:
        return True, "not recognised"
    length = getattr(loaded.info, "length", 0) or 0
    return length <= 0, f"length {length:.2f} s"


def verdict_rule(check):
    def rule(path: Path):
        verdict = check(path)
        return verdict.status == "corrupt", f"{verdict.status} {verdict.reason}: {verdict.detail}"
    return rule


RULES = {"quick": verdict_rule(check_file), "deep": verdict_rule(deep_check), "mutagen": mutagen_rule}


def ffmpeg_decode(path: Path) -> None:
    """Decode every audio stream with FFmpeg's defaults; the first error ends the file."""
    try:
        with av.open(str(path)) as container:
            audio = list(container.streams.audio)
            for packet in container.demux(*audio) if audio else ():
                packet.decode()
    except (av.error.FFmpegError, OSError, ValueError):
        return


# Timed over the same files as the rules, not scored.
BASELINES = {"FFmpeg decode": ffmpeg_decode}
INTACT_REPEATS = 4  # passes over each intact file (the best time counts); damaged copies get one


class Tally:
    """Detections per (row, corruption, rule), false positives, and time per rule: over all
    files (key: the rule's name), over the intact ones (key: (name, "intact")) and over the
    intact ones of each format family (key: (name, "intact", family))."""

    def __init__(self):
        self.cells = defaultdict(lambda: [0, 0])  # (rule, row, corruption) -> [detected, total]
        self.false_positives = defaultdict(list)
        self.misses = []
        self.seconds = defaultdict(float)
        self.files = defaultdict(int)
        self.bytes = defaultdict(int)

    def run(self, path: Path, intact: Intact, corruption: str | None) -> None:
        size, family = path.stat().st_size, FAMILY[intact.kind]
        outcomes, seconds = self.time_rules(path, INTACT_REPEATS if corruption is None else 1)
        for name, spent in seconds.items():
            self.timed(name, spent, size, corruption is None, family)
        for name in RULES:
            detected, why = outcomes[name]
            if corruption is None:
                if detected:
                    self.false_positives[name].append(f"{intact.row} ({intact.variant}): {why}")
                continue
            cell = self.cells[(name, intact.row, corruption)]
            cell[0] += detected
            cell[1] += 1
            if name == "quick" and not detected and corruption in QUICK_TARGETS:
                if not (corruption.startswith("zero tail") and family in PCM_FAMILIES):
                    self.misses.append(f"{intact.row} ({intact.variant}), {corruption}: {why}")

    @staticmethod
    def time_rules(path: Path, repeats: int) -> tuple[dict, dict]:
        """Each rule's (and baseline's) outcome and best time over ``repeats`` passes, the
        order reversed every other pass: a single pass favours whoever reads the file
        second (by about 5 %), which matters on the few, small intact files."""
        timed = list(RULES.items()) + list(BASELINES.items())
        outcomes, seconds = {}, {}
        for repeat in range(repeats):
            for name, rule in timed if repeat % 2 == 0 else reversed(timed):
                began = time.perf_counter()
                outcome = rule(path)
                seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - began)
                outcomes.setdefault(name, outcome)
        return outcomes, seconds

    def timed(self, name: str, seconds: float, size: int, intact: bool, family: str) -> None:
        for key in [name, (name, "intact"), (name, "intact", family)] if intact else [name]:
            self.seconds[key] += seconds
            self.files[key] += 1
            self.bytes[key] += size

    def throughput(self, key) -> float:
        """MB/s."""
        return self.bytes[key] / 1e6 / self.seconds[key]


def benchmark(folder: Path) -> tuple[Tally, list[Intact], list[str], float]:
    began = time.perf_counter()
    (folder / "intact").mkdir()
    intact_files, skipped = build_intact(folder / "intact")
    encode_seconds = time.perf_counter() - began
    by_family = {}
    for item in intact_files:
        if item.variant == "3 s":
            by_family.setdefault(FAMILY[item.kind], item.path)
    work = folder / "work"
    work.mkdir()
    tally = Tally()
    for item in intact_files:
        tally.run(item.path, item, None)
        impostor = by_family[IMPOSTOR[FAMILY[item.kind]]]
        for name, damage in corruptions(item, audio_span(item.path, FAMILY[item.kind]), impostor):
            copy = work / item.path.name
            shutil.copyfile(item.path, copy)
            damage(copy)
            tally.run(copy, item, name)
            copy.unlink()
    return tally, intact_files, skipped, encode_seconds


# --- report -------------------------------------------------------------------------

def machine_lines() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    libavcodec = ".".join(map(str, av.library_versions["libavcodec"]))
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs ({model})",
        f"- Python {platform.python_version()}, poold {getattr(poold, '__version__', '?')}, "
        f"mutagen {mutagen.version_string}, PyAV {av.__version__} (libavcodec {libavcodec})",
    ]


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rate(cell) -> str:
    detected, total = cell
    return f"{100 * detected // total}" if total else "–"


def deep_vs_ffmpeg(tally: Tally, scope: tuple) -> float:
    """Deep mode's MB/s over the FFmpeg decode baseline's, over the files ``scope`` keys."""
    deep, ffmpeg = ((name, *scope) if scope else name for name in ("deep", "FFmpeg decode"))
    return tally.throughput(deep) / tally.throughput(ffmpeg)


def report(tally: Tally, intact_files: list[Intact], skipped: list[str], encode_seconds: float) -> None:
    rows = list(dict.fromkeys(item.row for item in intact_files))
    counts = defaultdict(list)
    for item in intact_files:
        counts[item.row].append(item.variant)
    print("# poold integrity benchmark\n")
    print("\n".join(machine_lines()) + "\n")
    print(f"{len(intact_files)} intact files encoded in {encode_seconds:.1f} s, each damaged "
          f"{len(CORRUPTION_NAMES)} ways ({len(intact_files) * len(CORRUPTION_NAMES)} damaged files). "
          f"Cells: % of that row's files detected as corrupt.\n")
    print(table(["file kind", "variants"], [[row, ", ".join(counts[row])] for row in rows]))
    for line in skipped:
        print(f"\n- skipped: {line}")
    print("\n## False positives on intact files\n")
    print(table(["rule", "false positives"], [[name, f"{len(tally.false_positives[name])} of {len(intact_files)}"]
                                               for name in RULES]))
    for name in RULES:
        for line in tally.false_positives[name]:
            print(f"- {name}: {line}")
    for name in RULES:
        print(f"\n## Detection rate (%), {name}\n")
        print(table(["file kind"] + CORRUPTION_NAMES,
                    [[row] + [rate(tally.cells[(name, row, c)]) for c in CORRUPTION_NAMES] for row in rows]))
    print("\n## Detection rate (%) per corruption, all kinds\n")
    summary = []
    for corruption in CORRUPTION_NAMES:
        cells = {name: [sum(tally.cells[(name, row, corruption)][i] for row in rows) for i in (0, 1)]
                 for name in RULES}
        summary.append([corruption, str(cells["quick"][1])] + [rate(cells[name]) for name in RULES])
    print(table(["corruption", "files"] + list(RULES), summary))
    print("\nNotes: in WAV and AIFF, zero tails, a zeroed block and flipped bytes are valid PCM "
          "samples that no rule can tell from sound. The covers are real JPEGs of about 86 KB: "
          "the zeroed block at 50% of 'mp3 +cover' lands in the ID3v2 cover, and in 'm4a +cover' "
          "(moov after mdat) the zero tails and the middle block land in the cover art and the padding "
          "after it, not the audio: the quick check catches the zero tails (zeros run to the end of "
          "'moov' where metadata box headers should be; without padding, the JPEG lacks its EOI "
          "marker), not the middle block.")
    print(f"\n## Speed (one process, sequential; intact files: best of {INTACT_REPEATS} passes in alternating order)\n")
    speed = []
    for name in list(RULES) + list(BASELINES):
        label = f"{name} (baseline)" if name in BASELINES else name
        for scope, key in (("all files", name), ("intact files", (name, "intact"))):
            seconds, files, megabytes = tally.seconds[key], tally.files[key], tally.bytes[key] / 1e6
            speed.append([label, scope, str(files), f"{megabytes:.1f}", f"{seconds:.2f}",
                          f"{files / seconds:.0f}", f"{megabytes / seconds:.1f}"])
    print(table(["rule", "over", "files", "MB", "seconds", "files/s", "MB/s"], speed))
    overall = deep_vs_ffmpeg(tally, ())
    intact = deep_vs_ffmpeg(tally, ("intact",))
    print(f"\nDeep mode's throughput against the FFmpeg decode baseline (target: no worse, >= 1.00x): "
          f"{overall:.2f}x over all files, {intact:.2f}x over the intact files. Deep mode is the quick "
          "check, then, for the files it passes, an FFmpeg decode with err_detect and the formats' "
          "checksums; the baseline decodes every file and stops at its first error.")
    families = sorted({FAMILY[item.kind] for item in intact_files})
    print("\nOver the intact files of each format family: " + ", ".join(
        f"{family} {deep_vs_ffmpeg(tally, ('intact', family)):.2f}x" for family in families) + ".")
    print("\n## Quick-check misses among its 100% targets\n")
    print("(truncation, header only, zero tail for compressed formats, HTML page, empty file)\n")
    print("\n".join(f"- {line}" for line in tally.misses) if tally.misses else "none")


# --- mutagen's own test files -------------------------------------------------------

BROKEN_NAME = re.compile(r"invalid|bad|broken|short|truncated|empty|ooming|overwritten", re.I)


def mutagen_samples(folder: Path) -> None:
    data = fetch_mutagen_tests(folder)
    tests = {path.name: path.read_text(errors="replace").splitlines() for path in data.parent.glob("*.py")}
    files = sorted(path for path in data.iterdir() if path.is_file())
    crashes, verdicts = [], {}
    for path in files:
        try:
            verdicts[path.name] = check_file(path)
        except Exception as exc:  # the point of this step: nothing may raise
            crashes.append(f"{path.name}: {type(exc).__name__}: {exc}")
    print(f"\n## mutagen {MUTAGEN_VERSION} test files ({len(files)} files)\n")
    statuses = defaultdict(int)
    for verdict in verdicts.values():
        statuses[f"{verdict.status} ({verdict.reason})" if verdict.status != "ok" else "ok"] += 1
    print(table(["quick verdict", "files"], [[k, str(v)] for k, v in sorted(statuses.items())]))
    print(f"\n- quick check crashes: {len(crashes)}" + "".join(f"\n  - {c}" for c in crashes))
    print(f"- {cli_check(data, verdicts)}")
    passed = [name for name, v in verdicts.items() if v.status == "ok"]
    deep = {name: deep_check(data / name) for name in passed}
    flagged = [f"{name}: {v.reason}: {v.detail}" for name, v in deep.items() if v.status != "ok"]
    print(f"- deep check over the {len(passed)} files the quick check passes: "
          f"{sum(v.status == 'ok' for v in deep.values())} ok" + "".join(f"\n  - {line}" for line in flagged))
    corrupt = [(name, v) for name, v in verdicts.items() if v.status == "corrupt"]
    print(f"\n### Files the quick check reports corrupt ({len(corrupt)})\n")
    rows = []
    for name, verdict in corrupt:
        evidence = sample_evidence(data / name, tests)
        rows.append([name, f"{verdict.reason}: {verdict.detail}", "; ".join(evidence),
                     classify(name, verdict, evidence)])
    print(table(["file", "poold quick", "evidence", "classification"], rows))
    print("\n(broken on purpose: the name says so; cut sample: mutagen keeps the head of a real "
          "file to stay small; REVIEW: a human must look)")


def fetch_mutagen_tests(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"mutagen=={MUTAGEN_VERSION}", "-d", str(folder)], check=True)
    archive = next(folder.glob(f"mutagen-{MUTAGEN_VERSION}.tar.gz"))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name and m.isfile()]
        tar.extractall(folder, members=members, filter="data")
    return folder / f"mutagen-{MUTAGEN_VERSION}" / "tests" / "data"


def cli_check(data: Path, verdicts: dict) -> str:
    """Run ``python -m poold check --json`` over the folder; it must agree and not crash."""
    result = subprocess.run([sys.executable, "-m", "poold", "check", "--json", str(data)],
                            capture_output=True, text=True, cwd=REPO)
    if "Traceback" in result.stderr:
        return f"`poold check --json` crashed:\n\n```\n{result.stderr[-2000:]}\n```"
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    disagree = [line["path"] for line in lines
                if (line["status"], line["reason"]) != (verdicts[Path(line["path"]).name].status,
                                                         verdicts[Path(line["path"]).name].reason)]
    return (f"`poold check --json` (exit {result.returncode}): {len(lines)} files, no crash, "
            f"{len(disagree)} disagreeing with check_file" + (f": {disagree}" if disagree else ""))


def sample_evidence(path: Path, tests: dict[str, list[str]]) -> list[str]:
    """Facts a human needs to judge a sample: its size, what mutagen makes of it, who uses it."""
    size = path.stat().st_size
    facts = [f"{size:,} B" + (" (a round size)" if is_round(size) else "")]
    try:
        loaded = mutagen.File(path)
        length = loaded.info.length if loaded is not None else None
        facts.append("mutagen does not recognise it" if loaded is None else
                     f"mutagen: {length:.1f} s, so {size * 8 / length / 1000:.1f} kbit/s" if length else
                     "mutagen: length 0")
    except Exception as exc:  # mutagen's verdict is evidence too
        facts.append(f"mutagen raises {type(exc).__name__}")
    uses = [f"{test}:{number + 1}" for test, lines in tests.items()
            for number, line in enumerate(lines) if path.name in line]
    facts.append("used at " + ", ".join(uses[:2]) if uses else "unused by the tests")
    return facts


def is_round(size: int) -> bool:
    """A size like 4,096 or 13,000, also with an ID3v1 tag's 128 bytes added: cut with head -c."""
    return any(n > 0 and (n % 1000 == 0 or n % 1024 == 0) for n in (size, size - 128))


def classify(name: str, verdict, evidence: list[str]) -> str:
    if BROKEN_NAME.search(name):
        return "broken on purpose"
    rate = re.search(r"([0-9.]+) kbit/s", " ".join(evidence))
    starved = rate is not None and float(rate.group(1)) < 8  # too few bytes for the length declared
    if verdict.reason in ("truncated", "bad_structure") and ("round size" in evidence[0] or starved):
        return "cut sample"
    return "REVIEW"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutagen-samples", action="store_true",
                        help=f"also check mutagen {MUTAGEN_VERSION}'s test files (downloads its sdist)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poold-bench-") as tmp:
        report(*benchmark(Path(tmp)))
        if args.mutagen_samples:
            mutagen_samples(Path(tmp) / "mutagen")


if __name__ == "__main__":
    main()
