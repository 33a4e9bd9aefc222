"""Healing's HTTP side: the download flow of the POOL API, and streaming a media file.

:class:`HealClient` reuses a :class:`poold.pool.PoolClient`'s session and tokens for
``GET /download/queue/ID``, ``GET /download/server/ID`` and ``POST /download/success``,
and fetches media from the hosts a queue answer lists:

- ``https://`` first; ``http://`` only when ``allow_plain_http`` (the Bearer header then
  travels in clear: a 5-minute access token, never the API key or secret);
- the Authorization header goes only to a host of that answer's server list, and
  redirects are never followed (a 3xx counts as that server failing);
- the body is streamed to a file in chunks, never held whole; a download resumes with
  ``Range`` from the bytes already on disk.

No message made here contains a token, a dl_token or a URL (a URL holds the dl_token).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import requests
import urllib3

from .errors import PoolError, RejectedError, TransientError
from .redact import register_secret

if TYPE_CHECKING:
    from .pool import PoolClient

log = logging.getLogger(__name__)

QUEUE = "/download/queue/"
SERVERS = "/download/server/"
SUCCESS = "/download/success"
MEDIA = "/pool/v5/download/"
CHUNK = 64 * 1024
HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")  # a host name and port, nothing a URL could hide behind
CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")
DL_TOKEN = re.compile(r"[0-9a-fA-F]{16,64}")
MAX_ANSWER = 1 << 20  # an API answer is a few hundred bytes; more is not POOL's
MAX_MEDIA = 8 << 30  # the largest media file fetched (music videos run to a few GB)


class ServerFailed(Exception):
    """One media server could not deliver (refused, timed out, HTTP error, cut off)."""


class TokenExpired(ServerFailed):
    """The media server refused the dl_token (HTTP 403 or 410): queue the track again."""


class Stopped(Exception):
    """The process is stopping: the download stays resumable."""


@dataclass(frozen=True)
class Queued:
    """What ``/download/queue`` and ``/download/server`` answered for one track."""

    dl_token: str
    file_type: str
    servers: list[dict]  # [{"host", "id"}] in the queue answer's order


class Throttle:
    """A bandwidth cap shared by every download of a process (bytes per second; 0: none)."""

    def __init__(self, rate: int):
        self.rate = rate
        self._next_free = time.monotonic()
        self._lock = threading.Lock()

    def spend(self, count: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._next_free = max(now, self._next_free) + count / self.rate
            wait = self._next_free - now  # until the bytes just received are paid for
        if wait > 0:
            time.sleep(wait)


class HealClient:
    """The download flow over a PoolClient's session and tokens."""

    MIN_RATE = 1024.0  # bytes/s: a slower media server is given up for the next
    WINDOW = 60.0  # seconds the rate is averaged over

    def __init__(self, pool: PoolClient, allow_plain_http: bool = False, read_timeout: float | None = None,
                 min_rate: float = MIN_RATE, window: float = WINDOW):
        self.pool = pool
        self.allow_plain_http = allow_plain_http
        self.read_timeout = read_timeout or pool.config.timeout
        self.min_rate, self.window = min_rate, window
        self.schemes: dict[str, str] = {}  # host -> the scheme that worked: https is probed once a host

    # -- the API --

    def queue(self, trackid: int) -> Queued:
        """Queue the track (a fresh dl_token each time) and learn its servers' ids."""
        answer = self._api_get(f"{QUEUE}{int(trackid)}")
        token, file_type, hosts = answer.get("dl_token"), answer.get("file_type"), answer.get("servers")
        if not (isinstance(token, str) and DL_TOKEN.fullmatch(token) and isinstance(file_type, str)
                and isinstance(hosts, list)):
            raise TransientError("POOL's queue answer lacks a dl_token, file_type or servers")
        register_secret(token)
        ids = self._api_get(f"{SERVERS}{int(trackid)}")
        by_host = {s.get("host"): s.get("id") for s in ids if isinstance(s, dict)} if isinstance(ids, list) else {}
        servers = [{"host": host, "id": by_host.get(host)} for host in hosts
                   if isinstance(host, str) and HOST.fullmatch(host)]
        if not servers:
            raise TransientError("POOL's queue answer names no usable media server")
        return Queued(token, file_type.strip().lower(), servers)

    def success(self, trackid: int, serverid: int | None, dl_token: str) -> None:
        """``POST /download/success``: the download is complete."""
        form = {"trackid": str(trackid), "serverid": "" if serverid is None else str(serverid), "dl_token": dl_token}
        response = self._api("POST", SUCCESS, data=form)
        if response.status != 200:
            raise RejectedError(f"POOL did not take the download confirmation (HTTP {response.status})")
        answer = response.json()
        if answer.get("result") != "success":
            raise RejectedError(f"POOL did not take the download confirmation: {str(answer.get('message'))[:200]}")

    def _api_get(self, path: str):
        response = self._api("GET", path)
        if response.status in (400, 403, 404):
            raise RejectedError(f"POOL refused {path.rsplit('/', 2)[-2]} for this track (HTTP {response.status})")
        if response.status != 200:
            raise TransientError(f"POOL answered HTTP {response.status} to {path.rsplit('/', 2)[-2]}")
        return response.json()

    def _api(self, method: str, path: str, data: dict | None = None) -> _Answer:
        """One API call with the Bearer header; after a 401, once more with a new token.
        The answer's body is read up to :data:`MAX_ANSWER` bytes."""
        for attempt in (1, 2):
            try:
                response = self.pool.session.request(
                    method, self.pool.config.base_url + path, data=data, headers=self._bearer(),
                    timeout=self.pool.config.timeout, allow_redirects=False, stream=True)
                with response:
                    body = response.raw.read(MAX_ANSWER + 1, decode_content=True)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise TransientError(f"POOL could not be reached ({_cause(exc)})") from None
            if len(body) > MAX_ANSWER:
                raise TransientError(f"POOL's answer is larger than {MAX_ANSWER} bytes")
            status = response.status_code
            if status == 401 and attempt == 1 and self.pool.tokens.refresh_after_401():
                continue
            if status == 401:
                raise PoolError("POOL refused the access token (HTTP 401)")
            if status in (408, 429) or status >= 500:
                raise TransientError(f"POOL answered HTTP {status}")
            return _Answer(status, body)
        raise AssertionError("unreachable")

    def _bearer(self) -> dict[str, str]:
        credentials = base64.b64encode(f"{self.pool.config.userid}:{self.pool.tokens.current()}".encode()).decode()
        register_secret(credentials)
        return {"Authorization": f"Bearer {credentials}"}

    # -- the media --

    def fetch(self, host: str, dl_token: str, target: str, on_progress: Callable[[int], None],
              throttle: Throttle, stop: threading.Event) -> int:
        """Download into ``target``, resuming from its size; return the file's full size.

        https first; http only when allowed. The scheme that worked is remembered per
        host, so later downloads and resumes do not probe again.
        """
        if not HOST.fullmatch(host):
            raise ServerFailed(f"{host[:60]!r} is not a host name")
        schemes = self.schemes
        tried = [schemes[host]] if host in schemes else ["https"] + (["http"] if self.allow_plain_http else [])
        failure = None
        for scheme in tried:
            try:
                size = self._fetch_over(scheme, host, dl_token, target, on_progress, throttle, stop)
            except _SchemeRefused as exc:
                failure = exc
                continue
            schemes[host] = scheme
            return size
        hint = "" if self.allow_plain_http else " (plain http is off: [heal] allow_plain_http)"
        raise ServerFailed(f"{host}: {failure}{hint}")

    def _fetch_over(self, scheme: str, host: str, dl_token: str, target: str, on_progress, throttle, stop) -> int:
        offset = os.path.getsize(target) if os.path.exists(target) else 0
        headers = {**self._bearer(), "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = self.pool.session.get(f"{scheme}://{host}{MEDIA}{dl_token}", headers=headers, stream=True,
                                             timeout=(self.pool.config.timeout, self.read_timeout),
                                             allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise _SchemeRefused(f"{scheme} failed ({_cause(exc)})") from None
        except requests.ConnectionError as exc:
            raise _SchemeRefused(f"connection failed over {scheme} ({_cause(exc)})") from None
        except requests.Timeout:
            raise ServerFailed(f"{host}: no answer within {self.pool.config.timeout:g} s") from None
        with response:
            return self._receive(response, host, target, offset, on_progress, throttle, stop)

    def _receive(self, response: requests.Response, host: str, target: str, offset: int,
                 on_progress, throttle: Throttle, stop: threading.Event) -> int:
        status = response.status_code
        if status in (403, 410):
            raise TokenExpired(f"{host}: the download token was refused (HTTP {status})")
        if status == 416 and offset and _total_of(response.headers.get("Content-Range")) == offset:
            return offset  # already complete
        if status == 200:
            offset = 0  # the whole file again: the server ignored Range
        elif status != 206 or _start_of(response.headers.get("Content-Range")) != offset:
            raise ServerFailed(f"{host}: HTTP {status}" + (" with a range other than asked" if status == 206 else ""))
        expected = _expected_total(response, offset)
        if expected is not None and expected > MAX_MEDIA:
            raise ServerFailed(f"{host}: announces {expected} bytes, more than poold fetches")
        written = offset
        pace = _Pace(min(self.min_rate, throttle.rate / 4) if throttle.rate else self.min_rate, self.window)
        try:
            with open(target, "r+b" if offset else "wb") as out:
                out.seek(offset)
                out.truncate()
                for chunk in _chunks(response):
                    if stop.is_set():
                        raise Stopped()
                    out.write(chunk)
                    written += len(chunk)
                    if written > (expected or MAX_MEDIA):
                        raise ServerFailed(f"{host}: sent more bytes than it announced")
                    on_progress(written)
                    throttle.spend(len(chunk))
                    if pace.too_slow(written):
                        raise ServerFailed(f"{host}: slower than {pace.min_rate:g} bytes/s over {pace.window:g} s")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ServerFailed(f"{host}: the download broke off at byte {written} ({_cause(exc)})") from None
        if expected is not None and written != expected:
            raise ServerFailed(f"{host}: the download ended at byte {written} of {expected}")
        return written


def _chunks(response: requests.Response):
    """The body as it arrives, up to :data:`CHUNK` bytes at a time: ``read1`` returns
    whatever has arrived, so a server that trickles bytes is still measured (a plain
    ``read`` would wait for a whole chunk, each byte within the read timeout)."""
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read  # read1: urllib3 2
    while chunk := read(CHUNK, decode_content=True):
        yield chunk


class _Pace:
    """The low-speed rule: at least ``min_rate`` bytes/s averaged over each ``window``."""

    def __init__(self, min_rate: float, window: float, clock=time.monotonic):
        self.min_rate, self.window, self.clock = min_rate, window, clock
        self._since, self._at = clock(), None

    def too_slow(self, written: int) -> bool:
        now = self.clock()
        if self._at is None:
            self._at = written
        if now - self._since < self.window:
            return False
        slow = (written - self._at) / (now - self._since) < self.min_rate
        self._since, self._at = now, written
        return slow


class _SchemeRefused(Exception):
    """A scheme that does not work with this host (TLS failed, connection refused)."""


def _expected_total(response: requests.Response, offset: int) -> int | None:
    if response.status_code == 206:
        return _total_of(response.headers.get("Content-Range"))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _start_of(content_range: str | None) -> int | None:
    match = CONTENT_RANGE.fullmatch(content_range.strip()) if content_range else None
    return int(match.group(1)) if match else None


def _total_of(content_range: str | None) -> int | None:
    if not content_range:
        return None
    total = content_range.strip().rpartition("/")[2]
    return int(total) if total.isdigit() else None


@dataclass(frozen=True)
class _Answer:
    """An API answer, its body read within bounds."""

    status: int
    body: bytes

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise TransientError(f"POOL answered HTTP {self.status} with a body that is not JSON") from None


def _cause(exc: BaseException) -> str:
    """The innermost exception's class name: informative, never carrying headers or URLs."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return type(exc).__name__
