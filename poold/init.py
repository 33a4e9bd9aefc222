"""``poold init``: a starting config for a library folder and its manifest.

It asks only what it cannot guess - the POOL User ID, API key and API secret - and
only when run in a terminal; otherwise (a script, a pipe) it leaves those lines
commented out and says so. Secrets are read with getpass (never echoed) and stored in
files of their own beside the config, ``api_key`` and ``api_secret``, referenced by
``api_key_file`` / ``api_secret_file``: the config itself then holds nothing secret and
can be shown in a bug report. Every file is created readable by the user only (0600,
a new folder 0700). An existing config is never overwritten without ``--force``.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .config import load, resolve_config_path

KEY_FILE, SECRET_FILE = "api_key", "api_secret"


class InitError(Exception):
    """Why no config was written (message fit to show)."""


@dataclass
class Answers:
    userid: int | None = None
    api_key: str | None = None
    api_secret: str | None = None

    @property
    def has_secrets(self) -> bool:
        return bool(self.api_key and self.api_secret)


def write_starting_config(config_path: Path, root: str, manifest: str, *, force: bool = False,
                          out: TextIO | None = None) -> None:
    """Write the config (and the secret files, when answered); print what to do next."""
    out = out or sys.stdout
    config_path = Path(config_path).expanduser().absolute()
    root_path, manifest_path = Path(root).expanduser().absolute(), Path(manifest).expanduser().absolute()
    secret_paths = [config_path.parent / KEY_FILE, config_path.parent / SECRET_FILE]
    if config_path.exists() and not force:
        raise InitError(f"{config_path} exists already: edit it, or run init again with --force to replace it")
    interactive = sys.stdin.isatty()
    answers = ask(out) if interactive else Answers()
    if answers.has_secrets and not force and (taken := [p for p in secret_paths if p.exists()]):
        raise InitError(f"{taken[0]} exists already: remove it, or run init again with --force to replace it")
    text = config_text(root_path, manifest_path, answers)
    make_private_folder(config_path.parent)
    if answers.has_secrets:
        write_private(secret_paths[0], answers.api_key + "\n", force)
        write_private(secret_paths[1], answers.api_secret + "\n", force)
    write_private(config_path, text, force)
    load(config_path)  # what was written must load: a failure here is a bug, not the user's
    tell_next_steps(out, config_path, root_path, manifest_path, answers, interactive)


def ask(out: TextIO) -> Answers:
    """Ask for the POOL User ID, API key and secret; Enter skips (nothing is stored)."""
    out.write("poold needs your POOL User ID, API key and API secret only to file redownload requests.\n"
              "Press Enter to skip one; you can add it to the config later.\n")
    userid = None
    while True:
        text = prompt("POOL User ID: ").strip()
        if not text:
            break
        if text.isascii() and text.isdigit():
            userid = int(text)
            break
        out.write(f"{text!r} is not a User ID: it is a whole number, shown in your POOL account.\n")
    api_key = getpass.getpass("POOL API key (not shown): ").strip()
    api_secret = getpass.getpass("POOL API secret (not shown): ").strip() if api_key else ""
    if api_key and not api_secret:
        out.write("The API key goes with its secret: neither is stored.\n")
        api_key = ""
    return Answers(userid, api_key or None, api_secret or None)


def prompt(text: str) -> str:
    try:
        return input(text)
    except EOFError:
        return ""


def toml_string(value: Path | str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        raise InitError(f"{value!r}: the path is not valid UTF-8, which a config file cannot hold") from None
    return json.dumps(str(value), ensure_ascii=False)


def config_text(root: Path, manifest: Path, answers: Answers) -> str:
    userid = f"userid = {answers.userid}" if answers.userid is not None else "# userid = 123456"
    secrets = "" if answers.has_secrets else "# "
    return f"""\
# poold config, written by `poold init` on {datetime.date.today().isoformat()}.
# Every key, and what it does: config.example.toml in poold's source. Check it: poold doctor

[library]
root = {toml_string(root)}
manifest = {toml_string(manifest)}

[requests]
# Report what would be requested, send nothing:
# dry_run = true

[pool]
# Needed only to file requests (poold audit --request, poold run).
# base_url = "https://api.promoonly.com"
{userid}
# Files holding only the API key and the API secret, readable by you only (chmod 600):
{secrets}api_key_file = "{KEY_FILE}"
{secrets}api_secret_file = "{SECRET_FILE}"
"""


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` (0700) if it is missing; an existing one is left as it is."""
    if not folder.is_dir():
        try:
            folder.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise InitError(f"cannot create {folder}: {exc.strerror}") from None


def write_private(path: Path, text: str, replace: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600, even when replacing a file of another mode."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        raise InitError(f"{path} exists already: run init again with --force to replace it") from None
    except OSError as exc:
        raise InitError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def tell_next_steps(out: TextIO, config_path: Path, root: Path, manifest: Path, answers: Answers,
                    interactive: bool) -> None:
    out.write(f"Wrote {config_path} (readable by you only).\n")
    if answers.has_secrets:
        out.write(f"Wrote the API key and secret to {KEY_FILE} and {SECRET_FILE} beside it (readable by you only).\n")
    for path, what in ((root, "library folder"), (manifest, "manifest")):
        if not path.exists():
            out.write(f"Note: the {what} {path} does not exist (yet).\n")
    missing = [name for name, given in (("User ID", answers.userid is not None),
                                        ("API key and secret", answers.has_secrets)) if not given]
    if missing:
        how = "" if interactive else "No terminal to ask on, so nothing was asked. "
        out.write(f"{how}To file requests, add your POOL {' and '.join(missing)}: the lines are in "
                  f"{config_path}, commented out.\n")
    option = "" if config_path == resolve_config_path(None).absolute() else f" --config {shlex.quote(str(config_path))}"
    out.write(f"\nNext:\n  poold doctor{option}    # checks the config, the library and the manifest\n"
              f"  poold audit{option}     # reports what is missing or broken, requests nothing\n")
