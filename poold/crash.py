"""Crash reports: what an unexpected error (a bug) leaves behind.

The user sees one line; the traceback goes to ``crash-<time>.txt`` in the state
directory (the config's ``[state] dir`` when the config loads, else the default one),
where a careful user finds it after the terminal or the journal has scrolled on. It is
also logged at DEBUG, so ``-vv`` shows it at once. Secrets are redacted from both, and
only the newest :data:`KEEP` reports are kept.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path

from .config import default_state_dir, load, resolve_config_path
from .redact import redact

log = logging.getLogger(__name__)

KEEP = 10
PREFIX = "crash-"


def report(exc: BaseException, config: str | None) -> str:
    """Write the crash report; return the one line to show (without the ``poold:`` prefix)."""
    details = redact("".join(traceback.format_exception(exc)))
    log.debug("internal error:\n%s", details)
    summary = _one_line(redact(f"{type(exc).__name__}: {exc}"))
    where = write(details, state_dir_for(config))
    if where is None:
        return f"internal error: {summary}; run again with -vv to see the details, and please report it"
    return f"internal error: {summary}; the details are in {where} (please report it)"


def _one_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 1] + "…"


def state_dir_for(config: str | None) -> Path:
    """The configured state dir; the default one when the config cannot be read (that
    may be what failed)."""
    try:
        return load(resolve_config_path(config)).state.dir
    except Exception:  # noqa: BLE001 - any failure here falls back; the crash is what matters
        return default_state_dir()


def write(details: str, folder: Path) -> Path | None:
    """Write ``details`` to a new 0600 file in ``folder``; None when that is impossible."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"{PREFIX}{stamp}-{os.getpid()}.txt"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8", errors="replace") as out:
            out.write(details)
        prune(folder)
        return path
    except OSError:
        return None


def prune(folder: Path) -> None:
    """Keep only the newest :data:`KEEP` crash reports."""
    try:
        reports = sorted(folder.glob(f"{PREFIX}*.txt"), key=lambda p: p.stat().st_mtime)
        for old in reports[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError:  # another process pruning at the same time
        pass
