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
