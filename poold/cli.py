"""Command line: argparse subcommands, output and exit codes. The work happens in app.py.

Exit codes: 0 nothing wrong, 1 problems found, 2 usage, config, manifest or library
error (one message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from . import __version__, app
from .config import ConfigError, load, parse_duration, resolve_config_path
from .manifest import ManifestError, estimate_rows
from .errors import SHOW_BYTES, PoolError, StateError
from .redact import RedactingFilter
from .scan import LibraryUnavailable

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    for stream in (sys.stdout, sys.stderr):  # a byte of a file name that is not UTF-8 shows as \xff
        getattr(stream, "reconfigure", lambda **_: None)(errors=SHOW_BYTES)
    try:
        return args.func(args)
    except (ConfigError, ManifestError, LibraryUnavailable, app.SetupError, PoolError, UsageError, StateError) as exc:
        print(f"poold: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("poold: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poold", description="Keep a Promo Only POOL library whole.")
    parser.add_argument("--version", action="version", version=f"poold {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="config file (default: $POOLD_CONFIG, then the user config dir)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    audit = sub.add_parser("audit", parents=[common], help="check the library against the manifest")
    audit.add_argument("--json", action="store_true", help="print one JSON document")
    audit.add_argument("--request", action="store_true", help="ask POOL to requeue missing and corrupt tracks")
    audit.add_argument("--verify", action="store_true", help="also compare the manifest's sha256/md5 (reads every byte)")
    audit.add_argument("--deep", action="store_true", help="decode every file fully (needs poold[deep])")
    audit.add_argument("--full", action="store_true", help="check every file again, ignoring cached verdicts")
    audit.add_argument("--time-limit", metavar="DURATION", type=duration_arg,
                       help='with --deep: deep-check for this long (e.g. "30m"), the next run resumes')
    audit.set_defaults(func=cmd_audit)

    check = sub.add_parser("check", parents=[common], help="check files or folders, no manifest needed")
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.add_argument("--json", action="store_true", help="one JSON object per line")
    check.add_argument("--deep", action="store_true", help="decode every file fully (needs poold[deep])")
    check.set_defaults(func=cmd_check)

    requests_cmd = sub.add_parser("requests", parents=[common], help="history of redownload requests")
    requests_cmd.add_argument("--json", action="store_true")
    requests_cmd.add_argument("--limit", type=int, default=None, help="show only the newest N")
    requests_cmd.set_defaults(func=cmd_requests)

    status = sub.add_parser("status", parents=[common], help="open problems, pending requests, quota")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    run = sub.add_parser("run", parents=[common], help="run as a background service: watch the library, file requests")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", parents=[common], help="show the whole loop on sample data")
    demo.add_argument("--keep", action="store_true", help="keep the demo folder and print where it is")
    demo.set_defaults(func=cmd_demo)

    reset = sub.add_parser("reset-state", parents=[common],
                           help="start over with an empty state database (the old one is kept aside)")
    reset.set_defaults(func=cmd_reset_state)
    return parser


def setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("poold: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.WARNING if verbose < 3 else logging.DEBUG)


def config_from(args):
    return load(resolve_config_path(args.config))


# --- audit ---------------------------------------------------------------------------

def duration_arg(text: str) -> float:
    seconds = parse_duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f'{text!r} is not a duration such as "90s", "30m" or "2h"')
    return seconds


def cmd_audit(args) -> int:
    config = config_from(args)
    if args.time_limit is not None and not args.deep:
        raise UsageError("--time-limit goes with --deep")
    options = app.scan_options(config, deep=args.deep, verify=args.verify, full=args.full, time_limit=args.time_limit)
    progress = Progress(config.library.manifest) if sys.stderr.isatty() and not args.json else None
    try:
        outcome = app.run_audit(config, request=args.request, options=options,
                                on_finding=progress.update if progress else None)
    finally:
        if progress:
            progress.close()
    if args.json:
        print_audit_json(outcome)
    else:
        print_audit(outcome)
    if outcome.filing_error:
        print(f"poold: requests not filed: {outcome.filing_error}", file=sys.stderr)
    report = outcome.report
    return EXIT_PROBLEMS if report.problems or report.guard else EXIT_OK


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
        sys.stderr.write(f"\rchecked {self.done:,} of ~{self.total:,} tracks, {rate:,.0f}/s{eta}, "
                         f"{self.problems} problems so far \x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def print_audit_json(outcome: app.AuditOutcome, out=None) -> None:
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


def print_audit(outcome: app.AuditOutcome) -> None:
    report = outcome.report
    corrupt = len(report.problems) - report.missing
    print(f"Library:  {report.library}\nManifest: {report.manifest}")
    print(f"Checked {report.checked} tracks: {report.ok} ok, {report.missing} missing, "
          f"{corrupt} corrupt, {len(report.unchecked)} unchecked "
          f"({report.files_checked} files opened, the rest unchanged since their last check)")
    if report.deep_deferred:
        print(f"Deep check: time limit reached; {report.deep_deferred} files had the quick check only "
              "and are deep-checked on the next run")
    if report.guard:
        print(f"\nNOTHING REQUESTED: {report.guard}")
    if report.problems:
        print()
        print_table(["TRACK", "STATUS", "REASON", "PATH", "DETAIL"],
                    [[f.trackid, f.status, f.reason, f.path, f.detail] for f in report.problems])
    if outcome.requests:
        print("\nRequests:")
        for entry in outcome.requests:
            print("  " + describe_request(entry))
    if outcome.held:
        print("\nNot requested now:")
        for held in outcome.held:
            print(f"  {held.incident.trackid} {held.incident.path}: {held.why}")


def describe_request(entry: dict) -> str:
    ids = ",".join(str(t) for t in entry["trackids"])
    head = f"#{entry['id']} " if "id" in entry else ""
    state = entry["state"]
    if entry.get("tracks_requeued") is not None:
        state += f" ({entry['tracks_requeued']} of {len(entry['trackids'])} requeued)"
    error = f" - {entry['error']}" if entry.get("error") and entry["state"] != "accepted" else ""
    return f"{head}{state}: [{ids}] \"{entry['reason']}\"{error}"


def print_table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers) - 1)]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


# --- check ---------------------------------------------------------------------------

def cmd_check(args) -> int:
    from .scan import walk_files

    checker = app.checker_for(args.deep)
    worst = EXIT_OK
    for path in walk_files(args.paths):
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        verdict = checker(str(path))
        if verdict.status == "corrupt":
            worst = EXIT_PROBLEMS
        if args.json:
            print(json.dumps({"path": str(path), "status": verdict.status, "reason": verdict.reason,
                              "detail": verdict.detail}), flush=True)
        else:
            print(f"{verdict.status:9}  {verdict.reason:17}  {path}  ({verdict.detail})", flush=True)
    return worst


# --- requests, status -----------------------------------------------------------------

def cmd_requests(args) -> int:
    history = app.request_history(config_from(args), args.limit)
    if args.json:
        print(json.dumps(history, indent=2))
        return EXIT_OK
    if not history:
        print("No requests filed yet.")
    for entry in history:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["created"]))
        print(f"{when}  {entry['cause']}  {describe_request(entry)}  (attempts: {entry['attempts']})")
    return EXIT_OK


def cmd_status(args) -> int:
    summary = app.status(config_from(args))
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    audit = summary["last_audit"]
    if audit:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(audit["finished"]))
        print(f"Last audit: {when}, {audit['checked']} checked, {audit['problems']} problems"
              + (f" ({audit['note']})" if audit["note"] else ""))
    else:
        print("Last audit: never")
    daemon = summary["daemon"]
    if daemon:
        print(f"Daemon: {daemon.get('status', '?')}")
    quota = summary["quota"]
    print(f"Requests in the last 24 h: {quota['used_last_24h']} of {quota['limit']} tracks")
    print(f"Open problems: {len(summary['open_incidents'])}")
    for incident in summary["open_incidents"]:
        waiting = f" - waiting: {incident['waiting']}" if incident["waiting"] else ""
        print(f"  {incident['trackid']} {incident['reason']}: {incident['path']}{waiting}")
    print(f"Pending requests: {len(summary['pending_requests'])}")
    for entry in summary["pending_requests"]:
        print("  " + describe_request(entry))
    return EXIT_OK


def cmd_reset_state(args) -> int:
    from .state import State

    kept = State.reset(config_from(args).state.dir)
    print("poold: started a new, empty state database" + (f"; the old one is kept as {kept}" if kept else ""))
    return EXIT_OK


# --- run -----------------------------------------------------------------------------

def cmd_run(args) -> int:
    from .daemon import run_daemon

    return run_daemon(resolve_config_path(args.config))


# --- demo ---------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
