"""The POOL client's error taxonomy and URL rule, kept apart from the HTTP code so that
everything that only needs to name them (config, filing, the CLI) loads without
``requests``.

* :class:`TransientError` - connection trouble, timeouts, HTTP 5xx, 408, 429, or an
  answer that is not the API's JSON: retried, then left pending.
* :class:`RejectedError` - the service said no: the request is settled as rejected.
* :class:`PoolError` (the base) - a set-up problem such as refused credentials: nothing
  is settled, the user has to act.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .redact import redact


class InsecureURL(ValueError):
    """A base URL that would send credentials in clear text."""


class PoolError(Exception):
    """A failure talking to the POOL API; the message is safe to show, log and store.

    Messages are redacted on construction as well: some include text from the server's
    answer, and a server (or a proxy) might echo credentials back.
    """

    def __init__(self, message: str):
        super().__init__(redact(message))


class TransientError(PoolError):
    """A failure that may pass: worth sending the same request again later."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RejectedError(PoolError):
    """The service refused the request itself; sending it again would not help."""


def check_base_url(url: str) -> None:
    """Refuse plain http:// except on a loopback address (tests and the local sandbox)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise InsecureURL(f"{url!r} is not an https:// URL (plain http:// is allowed only for 127.0.0.1 or ::1)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StateError(Exception):
    """The state database cannot be opened, read or written (a full or read-only disk, a
    damaged or lost database); the message is one line, fit to show."""


import codecs  # noqa: E402  (kept beside its one use)

SHOW_BYTES = "poold-show-bytes"


def _show_bytes(error: UnicodeError) -> tuple[str, int]:
    """An encoding error handler for output: a byte of a file name that is not UTF-8
    (held in a str as a surrogate escape, see os.fsdecode) is shown as ``\\xff``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    shown = "".join(f"\\x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"\\u{ord(char):04x}"
                    for char in error.object[error.start:error.end])
    return shown, error.end


codecs.register_error(SHOW_BYTES, _show_bytes)
