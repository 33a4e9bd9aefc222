"""The POOL client's error taxonomy and URL rule, kept apart from the HTTP code so that
everything that only needs to name them (config, filing, the CLI) loads without
``requests``.

* :class:`TransientError` - connection trouble (refused, reset, a temporary name-lookup
  failure, a failed TLS handshake), timeouts, HTTP 5xx, 408, 429, or an answer that is
  not the API's JSON: retried, then left pending.
* :class:`RejectedError` - the service said no: the request is settled as rejected.
  :class:`RefusedError` is the kind that may concern only some of its track IDs (HTTP
  400, or an answer other than success): a batch is split to find them.
* :class:`PoolError` (the base) - a set-up problem such as refused credentials, a host
  name that does not exist or a TLS certificate that does not verify: reported at once,
  nothing is settled, the user has to act. :class:`InsecureURL` is one: a ``base_url`` that
  :func:`check_base_url` refuses.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from .redact import redact




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


class RefusedError(RejectedError):
    """POOL refused what the request carried (HTTP 400, or ``"result"`` other than
    success): perhaps only some of its track IDs, so a smaller request may pass."""


class InsecureURL(PoolError, ValueError):
    """A base URL that could send credentials in clear text, or somewhere else than it
    seems to say. The message says what is wrong without repeating the URL (it might
    hold a password)."""

    def __init__(self, problem: str):
        super().__init__(f"[pool] base_url {problem}")
        self.problem = problem


class BaseURL(NamedTuple):
    """A checked base URL: what poold will connect to (host lower-cased, no brackets)."""

    scheme: str
    host: str
    port: int
    path: str


DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_AUTHORITY = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PATH = re.compile(r"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*)*")
_LOOPBACK_RULE = "plain http:// is allowed only for 127.0.0.1, ::1 or localhost"


def check_base_url(url: str) -> BaseURL:
    """Check ``[pool] base_url`` and return what it names; raise InsecureURL if it is not
    ``https://HOST[:PORT][/PATH]`` (or ``http://`` with a loopback host).

    The grammar is deliberately narrower than RFC 3986: printable ASCII only, no user
    name or password, no backslash, query or fragment, host names of plain LDH labels,
    IPv4 only as four decimal numbers. Every URL parser (Python's, urllib3's, a
    browser's) then finds the same host in it, so the host checked here is the one
    requests connects to; :class:`poold.pool.PoolClient` confirms that with urllib3's
    own parser.
    """
    _check_characters(url)
    scheme_match = _SCHEME.match(url)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme not in DEFAULT_PORTS:
        raise InsecureURL("must start with https:// (the POOL API is https://api.promoonly.com)")
    authority, slash, path = url[scheme_match.end():].partition("/")
    path = slash + path
    host, port = _host_and_port(authority)
    if not _PATH.fullmatch(path):
        raise InsecureURL("has a path with characters other than letters, digits and -._~!$&'()*+,;=:%/")
    if scheme == "http" and not _is_loopback(host):
        raise InsecureURL(f"must use https:// for {host} ({_LOOPBACK_RULE})")
    return BaseURL(scheme, host, port or DEFAULT_PORTS[scheme], path)


def _check_characters(url: str) -> None:
    if not url.isascii():
        raise InsecureURL("contains a non-ASCII character (write an international host name in its xn-- form)")
    if any(char <= " " or char == "\x7f" for char in url):
        raise InsecureURL("contains a space, tab, line break or control character")
    if "\\" in url:
        raise InsecureURL("contains a backslash")
    if "@" in url:
        raise InsecureURL("contains '@': a user name or password does not belong in the URL "
                          "(poold sends credentials only in the Authorization header)")
    if "?" in url or "#" in url:
        raise InsecureURL("contains a query or fragment ('?' or '#'): give only https://HOST[:PORT][/PATH]")


def _host_and_port(authority: str) -> tuple[str, int | None]:
    match = _AUTHORITY.fullmatch(authority)
    if not authority:
        raise InsecureURL("has no host")
    if not match:
        raise InsecureURL(f"has a host part {authority!r} that is not HOST or HOST:PORT")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise InsecureURL(f"has port {match['port']}, outside 1-65535")
    host = _ipv6_host(match["ipv6"]) if match["ipv6"] else _name_host(match["name"])
    return host, port


def _ipv6_host(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise InsecureURL(f"has [{text}], which is not an IPv6 address") from None


def _name_host(name: str) -> str:
    """A host name of LDH labels, or an IPv4 address as four decimal numbers. A name whose
    last label is numeric must be such an address: resolvers read 127.1, 0x7f.0.0.1 or
    2130706433 as 127.0.0.1, and a URL parser may not."""
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InsecureURL(f"has host {name!r}, which is not a valid host name (letters, digits and "
                          "hyphens between dots, no empty part, no trailing dot)")
    if labels[-1][0].isdigit():
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise InsecureURL(f"has host {name!r}: write an IPv4 address as four decimal numbers, "
                              "such as 127.0.0.1") from None
    return name.lower()


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
