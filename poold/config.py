"""The TOML config file -> frozen dataclasses, validated with messages that name file, line and key.

Secrets (``api_key``, ``api_secret``, ``token``) may come, in this order of precedence,
from the environment (``POOLD_API_KEY`` ...), from the config value itself, from
``<name>_file`` (a file holding just the secret), or from a systemd credential
(``$CREDENTIALS_DIRECTORY/<name>``, see ``LoadCredential=``). They are wrapped in
:class:`Secret` so that no repr, log line or traceback ever shows them. Secrets in
files are read only when first needed (to file a request), not when the config loads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InsecureURL, check_base_url

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.promoonly.com"
DEFAULT_EXTENSIONS = (".mp3", ".mp4", ".m4a", ".m4v", ".mov", ".flac", ".ogg", ".oga", ".opus", ".wav", ".aif", ".aiff", ".aifc")
SECRET_NAMES = ("api_key", "api_secret", "token")
DEFAULT_IGNORE = ("*.part", "*.crdownload", "*.download", "*.tmp", ".~*", "*.!qB", "*.partial", "~*", ".*.swp",
                  ".poold-heal-*", ".poold-quarantine/*")
HEAL_TEMP_PATTERN = ".poold-heal-*"  # healing's downloads in progress: always ignored
DEFAULT_QUARANTINE = ".poold-quarantine"  # relative to the library root


class ConfigError(Exception):
    """A config problem, with a message fit to show the user as it is."""


class Secret:
    """A string that never shows itself in repr, str or f-strings.

    A secret kept in a file (``api_key_file``, a systemd credential) is read on the
    first :meth:`reveal`, not when the config loads: secrets are needed only to file
    requests, and a plain audit must not fail on an unreadable key file. Reading it
    then raises ConfigError naming the config key and the file, as loading did.
    """

    __slots__ = ("_value", "_file", "_where")

    def __init__(self, value: str):
        self._value: str | None = value
        self._file: Path | None = None
        self._where = ""

    @classmethod
    def from_file(cls, path: Path, where: str) -> "Secret":
        """A secret read from ``path`` when first revealed; ``where`` names its config key."""
        secret = cls("")
        secret._value, secret._file, secret._where = None, path, where
        return secret

    def reveal(self) -> str:
        if self._value is None:
            self._value = _read_secret_file(self._file, self._where)
        return self._value

    def _identity(self) -> object:
        return self._value if self._file is None else ("file", self._file)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._identity() == self._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


SECRET_FILE_LIMIT = 64 * 1024  # a key or secret is a line; a file this large is not one


def _read_secret_file(path: Path, where: str) -> str:
    try:
        value = _read_regular(path, SECRET_FILE_LIMIT).decode("utf-8").strip()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read {path}: {why}") from None
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return value


@dataclass(frozen=True)
class LibraryConfig:
    root: Path
    manifest: Path
    extensions: frozenset[str] = frozenset(DEFAULT_EXTENSIONS)
    update_manifest: bool = False
    follow_symlinks: bool = False  # follow symbolic links that lead out of the root


@dataclass(frozen=True)
class PoolConfig:
    base_url: str = DEFAULT_BASE_URL
    userid: int | None = None
    api_key: Secret | None = None
    api_secret: Secret | None = None
    token: Secret | None = None
    timeout: float = 30.0

    @property
    def can_mint(self) -> bool:
        return self.api_key is not None and self.api_secret is not None


@dataclass(frozen=True)
class RequestsConfig:
    dry_run: bool = False
    batch_size: int = 50
    cooldown: float = 7 * 86400.0
    max_tracks_per_day: int = 500
    max_attempts: int = 5


@dataclass(frozen=True)
class StateConfig:
    dir: Path


@dataclass(frozen=True)
class ScanConfig:
    workers: int = 0  # 0: one per CPU core


@dataclass(frozen=True)
class WatchConfig:
    mode: str = "auto"
    settle_seconds: float = 10.0
    rescan_interval: float = 6 * 3600.0
    ignore: tuple[str, ...] = DEFAULT_IGNORE


@dataclass(frozen=True)
class GuardConfig:
    marker: str | None = None
    max_missing_fraction: float = 0.2


@dataclass(frozen=True)
class HealConfig:
    """Healing (poold/heal.py): fetch requeued tracks back, verify them, swap them in."""

    enabled: bool = False
    allow_plain_http: bool = False
    quarantine: Path | None = None  # None: <library root>/.poold-quarantine
    keep_days: float = 30.0
    max_parallel: int = 2
    max_bytes_per_second: int = 0  # 0: no cap
    max_tracks_per_day: int = 200


@dataclass(frozen=True)
class Config:
    path: Path | None
    library: LibraryConfig
    state: StateConfig
    pool: PoolConfig = field(default_factory=PoolConfig)
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    heal: HealConfig = field(default_factory=HealConfig)

    @property
    def quarantine(self) -> Path:
        return self.heal.quarantine or self.library.root / DEFAULT_QUARANTINE


# --- platform locations -------------------------------------------------------------

def default_config_path() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "poold" / "config.toml"
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "poold" / "config.toml"


def default_state_dir() -> Path:
    # systemd's StateDirectory= sets this for a service.
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "poold"
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "poold"


def resolve_config_path(explicit: str | None) -> Path:
    """--config, else $POOLD_CONFIG, else the platform's user config file."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("POOLD_CONFIG"):
        return Path(os.environ["POOLD_CONFIG"]).expanduser()
    return default_config_path()


# --- loading ------------------------------------------------------------------------

def load(path: str | os.PathLike) -> Config:
    """Read and validate a config file; raise ConfigError naming the file, line and key."""
    path = Path(path)
    try:
        text = _read_regular(path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (write one with: poold init LIBRARY MANIFEST, or pass --config)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    return _Parser(path, text).config(data)


MAX_CONFIG_BYTES = 1 << 20


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes: a FIFO would block the
    open and a device never end, so anything else is refused before it is read."""
    refused = f"{path}: not a regular file (poold reads no FIFO or device: it could hang or never end)"
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ConfigError(refused)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(refused)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit:,} bytes, the most poold reads of it")
    return data


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> float | None:
    """Seconds from a number (seconds) or a string like "10s", "30m", "6h", "7d"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return None


class _Parser:
    """Turns the parsed TOML tables into dataclasses, keeping track of where each key is."""

    SECTIONS = {
        "library": {"root", "manifest", "extensions", "update_manifest", "follow_symlinks"},
        "pool": {"base_url", "userid", "timeout", *SECRET_NAMES, *(f"{n}_file" for n in SECRET_NAMES)},
        "requests": {"dry_run", "batch_size", "cooldown", "max_tracks_per_day", "max_attempts"},
        "state": {"dir"},
        "scan": {"workers"},
        "watch": {"mode", "settle_seconds", "rescan_interval", "ignore"},
        "guard": {"marker", "max_missing_fraction"},
        "heal": {"enabled", "allow_plain_http", "quarantine", "keep_days", "max_parallel", "max_bytes_per_second",
                 "max_tracks_per_day"},
    }

    def __init__(self, path: Path, text: str):
        self.path = path
        self.base = path.parent.resolve()
        self.lines = text.splitlines()

    def where(self, section: str, key: str | None = None) -> str:
        line = self._line_of(section, key)
        location = f"{self.path}:{line}" if line else str(self.path)
        return f"{location}: [{section}]" + (f" {key}" if key else "")

    def _line_of(self, section: str, key: str | None) -> int | None:
        current = None
        header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
        for number, line in enumerate(self.lines, 1):
            if match := header.match(line):
                current = match.group(1)
                if key is None and current == section:
                    return number
            elif key and current == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
                return number
        return None

    def fail(self, section: str, key: str | None, message: str):
        raise ConfigError(f"{self.where(section, key)}: {message}")

    def config(self, data: dict) -> Config:
        for section, value in data.items():
            if section not in self.SECTIONS:
                raise ConfigError(f"{self.path}: unknown section [{section}] (known: {', '.join(sorted(self.SECTIONS))})")
            if not isinstance(value, dict):
                raise ConfigError(f"{self.path}: {section} must be a [{section}] table")
            for key in value:
                if key not in self.SECTIONS[section]:
                    self.fail(section, key, f"unknown key (known: {', '.join(sorted(self.SECTIONS[section]))})")
        if "library" not in data:
            raise ConfigError(f"{self.path}: missing required section [library]")
        pool = self.pool(data.get("pool", {}))
        if self._holds_inline_secret(data.get("pool", {})):
            warn_if_readable_by_others(self.path)
        library = self.library(data["library"])
        heal = self.heal(data.get("heal", {}))
        return Config(
            path=self.path,
            library=library,
            state=StateConfig(dir=self.path_value("state", "dir", data.get("state", {}).get("dir")) or default_state_dir()),
            pool=pool,
            requests=self.requests(data.get("requests", {})),
            scan=ScanConfig(workers=self.integer("scan", "workers", data.get("scan", {}), 0, minimum=0)),
            watch=with_heal_ignored(self.watch(data.get("watch", {})), library.root, heal.quarantine),
            guard=self.guard(data.get("guard", {})),
            heal=heal,
        )

    # -- typed getters --

    def typed(self, section: str, key: str, table: dict, default, kind: type | tuple, label: str):
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) and kind is not bool:
            self.fail(section, key, f"must be {label}, not a boolean")
        if not isinstance(value, kind):
            self.fail(section, key, f"must be {label}, not {type(value).__name__} {value!r}")
        return value

    def integer(self, section: str, key: str, table: dict, default: int, minimum: int = 1) -> int:
        value = self.typed(section, key, table, default, int, "a whole number")
        if value < minimum:
            self.fail(section, key, f"must be at least {minimum}")
        return value

    def number(self, section: str, key: str, table: dict, default: float) -> float:
        return float(self.typed(section, key, table, default, (int, float), "a number"))

    def boolean(self, section: str, key: str, table: dict, default: bool) -> bool:
        return self.typed(section, key, table, default, bool, "true or false")

    def string(self, section: str, key: str, table: dict, default: str | None) -> str | None:
        return self.typed(section, key, table, default, str, "a string")

    def duration(self, section: str, key: str, table: dict, default: float) -> float:
        if key not in table:
            return default
        seconds = parse_duration(table[key])
        if seconds is None:
            self.fail(section, key, f'must be a duration such as 30, "10s", "6h" or "7d", not {table[key]!r}')
        return seconds

    def path_value(self, section: str, key: str, value) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(section, key, "must be a non-empty path string")
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path

    # -- sections --

    def library(self, table: dict) -> LibraryConfig:
        for key in ("root", "manifest"):
            if key not in table:
                self.fail("library", None, f"missing required key '{key}'")
        extensions = self.typed("library", "extensions", table, list(DEFAULT_EXTENSIONS), list, "a list of extensions")
        if not all(isinstance(e, str) and e for e in extensions):
            self.fail("library", "extensions", 'must be a list of strings such as ".mp3"')
        return LibraryConfig(
            root=self.path_value("library", "root", table["root"]),
            manifest=self.path_value("library", "manifest", table["manifest"]),
            extensions=frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions),
            update_manifest=self.boolean("library", "update_manifest", table, False),
            follow_symlinks=self.boolean("library", "follow_symlinks", table, False),
        )

    def pool(self, table: dict) -> PoolConfig:
        base_url = self.string("pool", "base_url", table, DEFAULT_BASE_URL).rstrip("/")
        try:
            check_base_url(base_url)
        except InsecureURL as exc:
            self.fail("pool", "base_url", exc.problem)
        userid = self.typed("pool", "userid", table, None, int, "the POOL User ID (a whole number)")
        secrets = {name: self.secret(name, table) for name in SECRET_NAMES}
        if (secrets["api_key"] is None) != (secrets["api_secret"] is None):
            self.fail("pool", None, "api_key and api_secret go together: set both, or neither and a token")
        timeout = self.number("pool", "timeout", table, 30.0)
        if timeout <= 0:
            self.fail("pool", "timeout", "must be more than 0 seconds")
        return PoolConfig(base_url=base_url, userid=userid, timeout=timeout, **secrets)

    def secret(self, name: str, table: dict) -> Secret | None:
        env_value = os.environ.get(f"POOLD_{name.upper()}")
        if env_value:
            return Secret(env_value.strip())
        if (inline := self.string("pool", name, table, None)) is not None:
            return Secret(inline.strip()) if inline.strip() else None
        if (file_path := self.path_value("pool", f"{name}_file", table.get(f"{name}_file"))) is not None:
            warn_if_readable_by_others(file_path)  # a stat, not a read: said at every load
            return Secret.from_file(file_path, self.where("pool", f"{name}_file"))
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / name).is_file():
            return Secret.from_file(Path(credentials) / name, f"systemd credential {name}")
        return None

    @staticmethod
    def _holds_inline_secret(table: dict) -> bool:
        return any(isinstance(table.get(name), str) and table[name].strip() for name in SECRET_NAMES)

    def requests(self, table: dict) -> RequestsConfig:
        return RequestsConfig(
            dry_run=self.boolean("requests", "dry_run", table, False),
            batch_size=self.integer("requests", "batch_size", table, 50),
            cooldown=self.duration("requests", "cooldown", table, 7 * 86400.0),
            max_tracks_per_day=self.integer("requests", "max_tracks_per_day", table, 500, minimum=0),
            max_attempts=self.integer("requests", "max_attempts", table, 5),
        )

    def watch(self, table: dict) -> WatchConfig:
        mode = self.string("watch", "mode", table, "auto")
        if mode not in ("auto", "native", "poll"):
            self.fail("watch", "mode", f'must be "auto", "native" or "poll", not {mode!r}')
        ignore = self.typed("watch", "ignore", table, list(DEFAULT_IGNORE), list, "a list of glob patterns")
        if not all(isinstance(p, str) for p in ignore):
            self.fail("watch", "ignore", "must be a list of strings")
        return WatchConfig(
            mode=mode,
            settle_seconds=self.duration("watch", "settle_seconds", table, 10.0),
            rescan_interval=self.duration("watch", "rescan_interval", table, 6 * 3600.0),
            ignore=tuple(ignore),
        )

    def guard(self, table: dict) -> GuardConfig:
        fraction = self.number("guard", "max_missing_fraction", table, 0.2)
        if not 0 < fraction <= 1:
            self.fail("guard", "max_missing_fraction", "must be more than 0 and at most 1")
        return GuardConfig(marker=self.string("guard", "marker", table, None), max_missing_fraction=fraction)


    def heal(self, table: dict) -> HealConfig:
        keep_days = self.number("heal", "keep_days", table, 30.0)
        if keep_days < 0:
            self.fail("heal", "keep_days", "must be 0 or more days")
        return HealConfig(
            enabled=self.boolean("heal", "enabled", table, False),
            allow_plain_http=self.boolean("heal", "allow_plain_http", table, False),
            quarantine=self.path_value("heal", "quarantine", table.get("quarantine")),
            keep_days=keep_days,
            max_parallel=self.integer("heal", "max_parallel", table, 2),
            max_bytes_per_second=self.integer("heal", "max_bytes_per_second", table, 0, minimum=0),
            max_tracks_per_day=self.integer("heal", "max_tracks_per_day", table, 200, minimum=0),
        )


def with_heal_ignored(watch: WatchConfig, root: Path, quarantine: Path | None) -> WatchConfig:
    """The watch settings with healing's own files ignored whatever ``[watch] ignore`` says:
    its downloads in progress, and the quarantine folder when it is inside the library."""
    folder = quarantine or root / DEFAULT_QUARANTINE
    patterns = [HEAL_TEMP_PATTERN]
    if folder.is_relative_to(root) and folder != root:
        patterns.append(folder.relative_to(root).as_posix() + "/*")
    missing = tuple(p for p in patterns if p not in watch.ignore)
    return dataclasses.replace(watch, ignore=watch.ignore + missing) if missing else watch


def warn_if_readable_by_others(path: Path) -> None:
    """Warn when a file that holds a secret can be read by other users (POSIX only)."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s holds a secret but other users can read it; run: chmod 600 %s", path, path)
