"""``poold doctor``: check a config end to end and say what is wrong in plain words.

One line per check, ``ok``, ``warn`` or ``FAIL``. A FAIL is something poold needs and
does not have (an unreadable library, a manifest that does not load, a state folder it
cannot write, credentials that are set but unreadable or refused); a warn is something
that limits it (no credentials: it can audit but not file; a watch limit close to full).
``poold doctor`` exits 0 when nothing FAILs, 2 when something does. Only ``--online``
talks to POOL: it mints a token with the configured credentials, and files nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import app
from .config import Config, ConfigError, load
from .errors import PoolError
from .manifest import ManifestError, read_manifest
from .report import plural
from .scan import library_problem

OK, WARN, FAIL = "ok", "warn", "FAIL"
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_watches")
NEAR_LIMIT = 0.9  # the limit is per user: other programs (editors, sync clients) use it too


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # OK, WARN or FAIL
    text: str

    def line(self) -> str:
        return f"{self.level:4}  {self.name + ':':12} {self.text}"


def run_checks(config_path: Path, *, online: bool = False, out: TextIO | None = None) -> bool:
    """Print every check's line; True when nothing failed."""
    out = out or sys.stdout
    failed = False
    for check in diagnose(config_path, online=online):
        out.write(check.line() + "\n")
        out.flush()
        failed |= check.level == FAIL
    out.write("Something poold needs is missing: see FAIL above.\n" if failed else "poold has what it needs.\n")
    return not failed


def diagnose(config_path: Path, *, online: bool = False) -> Iterator[Check]:
    try:
        config = load(config_path)
    except ConfigError as exc:
        yield Check("config", FAIL, str(exc))
        return
    yield Check("config", OK, f"{config_path} loads")
    library = check_library(config)
    yield library
    yield check_manifest(config, library_ok=library.level == OK)
    yield check_state_dir(config.state.dir)
    yield check_credentials(config, online=online)
    if library.level == OK:
        yield check_watch_limit(config)


def check_library(config: Config) -> Check:
    root = config.library.root
    if problem := library_problem(root, config.guard.marker):
        return Check("library", FAIL, problem)
    try:
        with os.scandir(root) as entries:
            next(entries, None)
    except OSError as exc:
        return Check("library", FAIL, f"the library folder {root} cannot be listed ({exc.strerror})")
    marker = f", with its marker {config.guard.marker}" if config.guard.marker else ""
    return Check("library", OK, f"{root} is a readable folder{marker}")


def check_manifest(config: Config, *, library_ok: bool) -> Check:
    """The manifest loads; with the library there, how many of its tracks are on disk
    (a stat each: a wrong root shows up as almost none)."""
    root = config.library.root
    tracks = present = 0
    try:
        for track in read_manifest(config.library.manifest):
            tracks += 1
            present += library_ok and os.path.lexists(os.path.join(root, track.path))
    except ManifestError as exc:
        return Check("manifest", FAIL, str(exc))
    text = f"{config.library.manifest}: {plural(tracks, 'track')}"
    if not library_ok or not tracks:
        return Check("manifest", OK if tracks else WARN, text + ("" if tracks else ": nothing to check"))
    text += f", {present:,} of them at their path under the library folder"
    if (tracks - present) / tracks > config.guard.max_missing_fraction:
        return Check("manifest", WARN, text + ": the library guard will hold every request. Are [library] root "
                     "and the manifest's paths right?")
    return Check("manifest", OK, text)


def check_state_dir(folder: Path) -> Check:
    """Writable now, or creatable on the first run (the nearest existing folder above is)."""
    if folder.is_dir():
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            return Check("state", FAIL, f"cannot write in the state folder {folder} ({exc.strerror})")
        return Check("state", OK, f"{folder} is writable")
    if folder.exists():
        return Check("state", FAIL, f"the state folder {folder} is not a folder")
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
        return Check("state", FAIL, f"the state folder {folder} cannot be created: {parent} is not writable")
    return Check("state", OK, f"{folder} will be created on the first run")


def check_credentials(config: Config, *, online: bool) -> Check:
    pool = config.pool
    if pool.userid is None or not (pool.can_mint or pool.token):
        return Check("credentials", WARN, "[pool] userid and api_key + api_secret (or a token) are not all set: "
                     "poold can audit, not file requests")
    try:
        for secret in (pool.api_key, pool.api_secret, pool.token):
            if secret is not None:
                secret.reveal()
    except ConfigError as exc:
        return Check("credentials", FAIL, str(exc))
    kind = "API key and secret" if pool.can_mint else "a token"
    if not online:
        return Check("credentials", OK, f"user {pool.userid} with {kind} (not tried: --online mints a token)")
    if not pool.can_mint:
        return Check("credentials", OK, f"user {pool.userid} with a fixed token (poold cannot try one without "
                     "filing a request)")
    return mint_token(config)


def mint_token(config: Config) -> Check:
    try:
        client = app.make_client(config)
    except (app.SetupError, ConfigError, PoolError) as exc:
        return Check("credentials", FAIL, str(exc))
    try:
        client.tokens.current()
    except PoolError as exc:
        return Check("credentials", FAIL, f"{config.pool.base_url}: {exc}")
    finally:
        client.close()
    return Check("credentials", OK, f"{config.pool.base_url} issued a token for user {config.pool.userid}")


def check_watch_limit(config: Config, limit_file: Path = INOTIFY_LIMIT) -> Check:
    """Linux: inotify needs a watch per folder, from a per-user limit (``poold run``)."""
    from .watch import choose_mode

    if not sys.platform.startswith("linux"):
        return Check("watch", OK, "no inotify limit to check on this system")
    mode, why = choose_mode(config.watch.mode, config.library.root)
    if mode == "poll":
        return Check("watch", OK, f"poold run polls ({why}): no inotify watches needed")
    try:
        limit = int(limit_file.read_text())
    except (OSError, ValueError):
        return Check("watch", WARN, f"cannot read the inotify watch limit from {limit_file}")
    folders = count_folders(config.library.root)
    text = f"{plural(folders, 'folder')} to watch; the inotify limit is {limit:,} watches for all of your programs"
    if folders <= NEAR_LIMIT * limit:
        return Check("watch", OK, text)
    wanted = max(524288, 1 << (2 * folders - 1).bit_length())
    return Check("watch", WARN, f"{text}. Raise it: sudo sysctl fs.inotify.max_user_watches={wanted} (to keep it, "
                 f"put fs.inotify.max_user_watches={wanted} in /etc/sysctl.d/90-poold.conf)")


def count_folders(root: Path) -> int:
    """The root and every folder below it (symlinks not followed, as the watcher does)."""
    return 1 + sum(len(dirs) for _folder, dirs, _files in os.walk(root))
