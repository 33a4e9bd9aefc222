"""Command line: argparse subcommands and exit codes. The work happens in app.py, the
output in report.py, first-run help in init.py and doctor.py.

Exit codes: 0 nothing wrong, 1 problems found, 2 usage, config, manifest or library
error (one message on stderr, no traceback), 70 internal error (a bug: one line on
stderr, the traceback in a crash report; see crash.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__, app, crash, report
from .config import ConfigError, parse_duration, resolve_config_path
from .config import load as load_config
from .errors import SHOW_BYTES, PoolError, StateError
from .manifest import ManifestError
from .redact import RedactingFilter
from .scan import LibraryUnavailable

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: shown by systemd as "status=70/SOFTWARE"


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    except Exception as exc:  # a bug: never "problems found", never a traceback on the terminal
        print(f"poold: {crash.report(exc, args.config)}", file=sys.stderr)
        return EXIT_INTERNAL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse; ``--config`` and ``-v`` may come before or after the command.

    The command's parser has its own destinations for them (a subparser's defaults
    would otherwise overwrite what was given before the command). Merged here: a
    ``--config`` after the command wins over one before it (it is also the later
    one), and ``-v`` counts add up.
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "config_after", None) is not None:
        args.config = args.config_after
    args.verbose += getattr(args, "verbose_after", 0)
    return args


def add_global_options(parser: argparse.ArgumentParser, suffix: str = "") -> None:
    parser.add_argument("--config", metavar="FILE", dest="config" + suffix, default=None,
                        help="config file (default: $POOLD_CONFIG, then the user config dir); "
                             "goes before or after the command")
    parser.add_argument("-v", "--verbose", action="count", dest="verbose" + suffix, default=0,
                        help="more log output (-vv for debug); goes before or after the command")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poold", description="Keep a Promo Only POOL library whole.")
    parser.add_argument("--version", action="version", version=f"poold {__version__}")
    add_global_options(parser)
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common, suffix="_after")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    def command(name: str, summary: str, description: str, func) -> argparse.ArgumentParser:
        command_parser = sub.add_parser(name, parents=[common], help=summary, description=description)
        command_parser.set_defaults(func=func)
        return command_parser

    init = command("init", "write a starting config",
                   "Write a config for a library folder and its manifest; asks for the POOL User ID, API key "
                   "and secret when run in a terminal. The config is created readable by you only.", cmd_init)
    init.add_argument("root", metavar="LIBRARY", help="the library folder (where the POOL downloads are)")
    init.add_argument("manifest", metavar="MANIFEST", help="the download manifest (JSON, JSONL or CSV)")
    init.add_argument("--force", action="store_true", help="overwrite an existing config (and secret files)")

    doctor = command("doctor", "check a config end to end",
                     "Check the config, the library, the manifest, the state folder, the credentials and "
                     "the watch limit, one line each. Exit 0 when everything needed works, 2 when not.",
                     cmd_doctor)
    doctor.add_argument("--online", action="store_true", help="also mint a POOL token with the credentials")
    audit = command("audit", "check the library against the manifest",
                    "Judge every manifest track: present, complete, playable. Exit 0 when all is well, "
                    "1 when problems were found.", cmd_audit)
    audit.add_argument("--json", action="store_true", help="print one JSON document")
    audit.add_argument("--request", action="store_true", help="ask POOL to requeue missing and corrupt tracks")
    audit.add_argument("--verify", action="store_true", help="also compare the manifest's sha256/md5 (reads every byte)")
    audit.add_argument("--deep", action="store_true", help="decode every file fully (needs poold[deep])")
    audit.add_argument("--full", action="store_true", help="check every file again, ignoring cached verdicts")
    audit.add_argument("--time-limit", metavar="DURATION", type=duration_arg,
                       help='with --deep: deep-check for this long (e.g. "30m"), the next run resumes')

    check = command("check", "check files or folders, no manifest needed",
                    "Judge files, or every file under folders, one line each. Exit 1 when one is corrupt.",
                    cmd_check)
    check.add_argument("paths", nargs="+", metavar="PATH", help="a file, or a folder to check everything under")
    check.add_argument("--json", action="store_true", help="one JSON object per line")
    check.add_argument("--deep", action="store_true", help="decode every file fully (needs poold[deep])")

    requests_cmd = command("requests", "history of redownload requests",
                           "Every redownload request filed: when, tracks, cause, reason, state, attempts.",
                           cmd_requests)
    requests_cmd.add_argument("--json", action="store_true", help="print a JSON list")
    requests_cmd.add_argument("--limit", type=int, default=None, metavar="N", help="show only the newest N")

    status = command("status", "open problems, pending requests, quota",
                     "Open problems and why each waits, pending requests, the 24-hour quota, the last audit.",
                     cmd_status)
    status.add_argument("--json", action="store_true", help="print one JSON document")

    heal = command("heal", "fetch requeued tracks back, verify them, swap them in",
                   "Fetch the tracks POOL requeued at poold's request, verify each copy and swap it in "
                   "(needs [heal] enabled = true). Exit 1 when a track waits for a person.", cmd_heal)
    heal.add_argument("--json", action="store_true", help="print one JSON document")

    command("run", "run as a background service: watch the library, file requests",
            "Check the library, watch it for changes and file requests until stopped (SIGTERM).", cmd_run)

    demo = command("demo", "show the whole loop on sample data",
                   "Build a damaged sample library, audit it and file requests to a local stand-in for POOL.",
                   cmd_demo)
    demo.add_argument("--keep", action="store_true", help="keep the demo folder and print where it is")

    command("reset-state", "start over with an empty state database (the old one is kept aside)",
            "Move the state database aside and start a new, empty one: every problem found is then new, and may be "
            "requested again. Only for a state dir poold refuses because its database was lost or damaged.",
            cmd_reset_state)

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
    return load_config(resolve_config_path(args.config))


def duration_arg(text: str) -> float:
    seconds = parse_duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f'{text!r} is not a duration such as "90s", "30m" or "2h"')
    return seconds


# --- commands -------------------------------------------------------------------------

def cmd_audit(args) -> int:
    config = config_from(args)
    if args.time_limit is not None and not args.deep:
        raise UsageError("--time-limit goes with --deep")
    options = app.scan_options(config, deep=args.deep, verify=args.verify, full=args.full, time_limit=args.time_limit)
    progress = report.Progress(config.library.manifest) if sys.stderr.isatty() and not args.json else None
    try:
        outcome = app.run_audit(config, request=args.request, options=options,
                                on_finding=progress.update if progress else None)
    finally:
        if progress:
            progress.close()
    if args.json:
        report.print_audit_json(outcome)
    else:
        report.print_audit(outcome)
    if outcome.filing_error:
        print(f"poold: requests not filed: {outcome.filing_error}", file=sys.stderr)
    return EXIT_PROBLEMS if outcome.report.problems or outcome.report.guard else EXIT_OK


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
            print(report.check_line(str(path), verdict), flush=True)
    return worst


def cmd_requests(args) -> int:
    history = app.request_history(config_from(args), args.limit)
    if args.json:
        print(json.dumps(history, indent=2))
    else:
        report.print_request_history(history)
    return EXIT_OK


def cmd_status(args) -> int:
    summary = app.status(config_from(args))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        report.print_status(summary)
    return EXIT_OK


# --- heal ----------------------------------------------------------------------------

def cmd_heal(args) -> int:
    from .heal import heal_command

    outcome = heal_command(config_from(args))
    if args.json:
        print(json.dumps(outcome.as_json(), indent=2))
    else:
        report.print_heal(outcome)
    return EXIT_PROBLEMS if outcome.waiting or outcome.error else EXIT_OK


# --- reset-state ---------------------------------------------------------------------

def cmd_reset_state(args) -> int:
    from .state import State

    kept = State.reset(config_from(args).state.dir)
    print("poold: started a new, empty state database" + (f"; the old one is kept as {kept}" if kept else ""))
    return EXIT_OK


# --- run -----------------------------------------------------------------------------

def cmd_run(args) -> int:
    from .daemon import run_daemon

    return run_daemon(resolve_config_path(args.config))


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep)


def cmd_init(args) -> int:
    from .init import InitError, write_starting_config

    try:
        write_starting_config(resolve_config_path(args.config), args.root, args.manifest, force=args.force)
    except InitError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def cmd_doctor(args) -> int:
    from .doctor import run_checks

    return EXIT_OK if run_checks(resolve_config_path(args.config), online=args.online) else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
