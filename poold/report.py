"""What poold prints: the audit report (text and JSON), request lines, the status summary,
``poold check`` lines and the audit's progress line.

Rendering only: the numbers come from app.py; the command line (cli.py) and the demo
call these. Every count shown to the user goes through :func:`plural`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, TextIO

from .manifest import estimate_rows

if TYPE_CHECKING:
    from .app import AuditOutcome
    from .integrity.base import Verdict

def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 file``, ``2 files``, ``0 files``; counts from 1,000 up get separators."""
    if count == 1:
        return f"1 {noun}"
    return f"{count:,} {plural_form or noun + 's'}"


# --- audit ---------------------------------------------------------------------------

def print_audit(outcome: AuditOutcome, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    report = outcome.report
    corrupt = len(report.problems) - report.missing
    opened = plural(report.files_checked, "file") + " opened"
    out.write(f"Library:  {report.library}\nManifest: {report.manifest}\n")
    out.write(f"Checked {plural(report.checked, 'track')}: {report.ok:,} ok, {report.missing:,} missing, "
              f"{corrupt:,} corrupt, {len(report.unchecked):,} unchecked "
              f"({opened}, the rest unchanged since their last check)\n")
    if report.deep_deferred:
        out.write(f"Deep check: time limit reached; {plural(report.deep_deferred, 'file')} had the quick check "
                  "only and are deep-checked on the next run\n")
    if report.retagged:
        out.write(f"Retagged: {plural(report.retagged, 'file')} whose tags changed, audio as verified (ok)\n")
    if report.moved:
        print_moves(report.moved, out)
    if report.guard:
        out.write(f"\nNOTHING REQUESTED: {report.guard}\n")
    if report.problems:
        out.write("\n")
        print_table(["TRACK", "STATUS", "REASON", "PATH", "DETAIL"],
                    [[f.trackid, f.status, f.reason, f.path, f.detail] for f in report.problems], out)
    if outcome.requests:
        out.write("\nRequests:\n")
        for entry in outcome.requests:
            out.write("  " + describe_request(entry) + "\n")
    if outcome.held:
        out.write("\nNot requested now:\n")
        for held in outcome.held:
            out.write(f"  {held.incident.trackid} {held.incident.path}: {held.why}\n")


MOVES_LISTED = 20  # a reorganised library can move thousands: the text report names the first few


def print_moves(moved: dict[int, str], out: TextIO) -> None:
    out.write(f"\nFound elsewhere (moved or renamed; the new place is recorded, nothing requested): "
              f"{plural(len(moved), 'track')}\n")
    for trackid, path in sorted(moved.items())[:MOVES_LISTED]:
        out.write(f"  {trackid} -> {path}\n")
    if len(moved) > MOVES_LISTED:
        out.write(f"  ... and {len(moved) - MOVES_LISTED:,} more (poold audit --json lists them all)\n")


def print_audit_json(outcome: AuditOutcome, out: TextIO | None = None) -> None:
    """The audit as one JSON document, written a finding at a time: a library that has
    gone missing can mean a million findings, which should not be built as one string."""
    out = out or sys.stdout
    report = outcome.report
    fields = {
        "library": report.library,
        "manifest": report.manifest,
        "checked": report.checked,
        "ok": report.ok,
        "problems": report.problems,
        "unchecked": report.unchecked,
        "files_checked": report.files_checked,
        "deep_deferred": report.deep_deferred,
        "moved": [{"trackid": trackid, "path": path} for trackid, path in sorted(report.moved.items())],
        "retagged": report.retagged,
        "guard": report.guard,
        "requests": outcome.requests,
        "held": [{"trackid": h.incident.trackid, "why": h.why} for h in outcome.held],
        "filing_error": outcome.filing_error,
    }
    out.write("{")
    for number, (key, value) in enumerate(fields.items()):
        out.write(("," if number else "") + f"\n  {json.dumps(key)}: ")
        if key in ("problems", "unchecked"):
            out.write("[")
            for index, finding in enumerate(value):
                out.write(("," if index else "") + "\n    " + json.dumps(finding.as_json()))
            out.write("\n  ]" if value else "]")
        else:
            out.write(json.dumps(value))
    out.write("\n}\n")


def describe_request(entry: dict) -> str:
    """One request on one line: ``#3 accepted (2 of 2 requeued): [1001,1002] "reason"``."""
    ids = ",".join(str(t) for t in entry["trackids"])
    head = f"#{entry['id']} " if "id" in entry else ""
    state = entry["state"]
    if entry.get("tracks_requeued") is not None:
        state += f" ({entry['tracks_requeued']} of {len(entry['trackids'])} requeued)"
    error = f" - {entry['error']}" if entry.get("error") and entry["state"] != "accepted" else ""
    return f"{head}{state}: [{ids}] \"{entry['reason']}\"{error}"


def print_table(headers: list[str], rows: list[list], out: TextIO | None = None) -> None:
    """Columns padded to their widest cell; the last column is left ragged."""
    out = out or sys.stdout
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers) - 1)]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] + "\n")


class Progress:
    """A one-line progress display on stderr, shown once an audit has run for 2 s."""

    DELAY, EVERY = 2.0, 0.25

    def __init__(self, manifest_path, clock=time.monotonic):
        self.manifest_path = manifest_path
        self.clock = clock
        self.started = self.last = clock()
        self.done = self.problems = 0
        self.total: int | None = None
        self.shown = False

    def update(self, finding) -> None:
        self.done += 1
        self.problems += finding.status not in ("ok", "unchecked")
        now = self.clock()
        if now - self.started < self.DELAY or now - self.last < self.EVERY:
            return
        if self.total is None:
            self.total = estimate_rows(self.manifest_path)
        self.last, self.shown = now, True
        rate = self.done / (now - self.started)
        left = max(self.total - self.done, 0)
        eta = f", {left / rate:.0f} s left" if rate and left else ""
        sys.stderr.write(f"\rchecked {self.done:,} of ~{plural(self.total, 'track')}, {rate:,.0f}/s{eta}, "
                         f"{plural(self.problems, 'problem')} so far \x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


# --- check ---------------------------------------------------------------------------

def check_line(path: str, verdict: Verdict) -> str:
    """One sentence per file: ``a.mp3: ok — 3:25, ends with a complete frame`` or
    ``b.mp3: CORRUPT (truncated) — the file ends inside a frame``."""
    if verdict.status == "ok":
        head = "ok"
    elif verdict.status == "corrupt":
        head = f"CORRUPT ({verdict.reason})"
    else:
        head = f"{verdict.status} ({verdict.reason})"
    details = [duration_text(verdict.duration)] if verdict.duration and verdict.status == "ok" else []
    details += [verdict.detail] if verdict.detail else []
    return f"{path}: {head}" + (" — " + ", ".join(details) if details else "")


def duration_text(seconds: float) -> str:
    """``3:25``, ``1:02:07``; under a minute ``0:07``."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


# --- requests, status ----------------------------------------------------------------

def print_request_history(history: list[dict], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if not history:
        out.write("No requests filed yet.\n")
    for entry in history:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["created"]))
        out.write(f"{when}  {entry['cause']}  {describe_request(entry)}  "
                  f"({plural(entry['attempts'], 'attempt')})\n")


def print_status(summary: dict, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    audit = summary["last_audit"]
    if audit:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(audit["finished"]))
        out.write(f"Last audit: {when}, {audit['checked']:,} checked, {plural(audit['problems'], 'problem')}"
                  + (f" ({audit['note']})" if audit["note"] else "") + "\n")
    else:
        out.write("Last audit: never\n")
    daemon = summary["daemon"]
    if daemon:
        out.write(f"Daemon: {daemon.get('status', '?')}\n")
    quota = summary["quota"]
    out.write(f"Requests in the last 24 h: {quota['used_last_24h']:,} of {plural(quota['limit'], 'track')}\n")
    out.write(f"Open problems: {len(summary['open_incidents']):,}\n")
    for incident in summary["open_incidents"]:
        waiting = f" - waiting: {incident['waiting']}" if incident["waiting"] else ""
        out.write(f"  {incident['trackid']} {incident['reason']}: {incident['path']}{waiting}\n")
    out.write(f"Pending requests: {len(summary['pending_requests']):,}\n")
    for entry in summary["pending_requests"]:
        out.write("  " + describe_request(entry) + "\n")
    if summary.get("healing"):
        out.write("Healing:\n")
        for entry in summary["healing"]:
            out.write("  " + describe_stage(entry) + "\n")


def print_heal(outcome, out: TextIO | None = None) -> None:
    """What one ``poold heal`` run did (a :class:`poold.heal.HealReport`)."""
    out = out or sys.stdout
    if outcome.busy:
        out.write("Another poold process is healing; its jobs show in `poold status`.\n")
    elif outcome.error:
        out.write(f"Healing waits, nothing was written: {outcome.error}\n")
    elif not outcome.jobs:
        out.write("Healing: nothing to fetch.\n")
    else:
        out.write(f"Healing: {plural(len(outcome.jobs), 'track')} worked on:\n")
        for job in outcome.jobs:
            out.write("  " + describe_stage(job) + "\n")


def describe_stage(entry: dict) -> str:
    """One line for a track's healing stage."""
    stage = entry["stage"]
    if stage == "downloading":
        total = f" of {entry['total']:,}" if entry.get("total") else ""
        stage += f" ({entry.get('bytes') or 0:,}{total} bytes)"
    elif stage == "waiting":
        stage += f": {entry['reason']}"
    elif entry.get("last_error") and stage not in ("confirmed",):
        stage += f" (last try: {entry['last_error']})"
    return f"{entry['trackid']} {entry['path']}: {stage}"
