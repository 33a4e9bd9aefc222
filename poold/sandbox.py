"""A local stand-in for the POOL API endpoints poold uses, for the demo, tests and benchmarks.

:class:`Sandbox` is a real HTTP server on 127.0.0.1 that answers
``POST /user/authenticate``, ``POST /user/token/validate`` and
``POST /download/redownload_request`` as strictly as the real service documents them:
Bearer tokens that expire, form-encoded bodies only, credentials never in the URL. It
records every redownload request it receives, so a test can check what went over the
wire, and counts what it requeued.

Faults make the next redownload requests misbehave, one fault per request, in the
order given to :meth:`Sandbox.fault`. A fault is consumed only by a request that
passes every check, so a malformed request always gets its honest error and a poold
bug cannot hide behind a queued fault. Whether the requeue happened decides whether
a retry is a duplicate, so each fault states it:

==========================  ============================================  =========
fault                       answer                                        requeued
==========================  ============================================  =========
``SERVER_ERROR``            HTTP 500                                      no
``unavailable(n)``          HTTP 503, ``Retry-After: n``                  no
``rate_limited(n)``         HTTP 429, ``Retry-After: n``                  no
``slow(s)``                 the normal answer, ``s`` seconds late         yes, on arrival
``RESET_BEFORE``            connection dropped, no answer                 no
``RESET_AFTER``             connection dropped, no answer                 yes
``NOT_JSON``                HTTP 200 with an HTML page (a proxy's)        no
``RESULT_ERROR``            HTTP 200 ``{"result": "error", ...}``         no
``TOKEN_EXPIRED``           HTTP 401; the token presented stays expired   no
``partial(n)``              success, ``tracks_requeued`` at most ``n``    first n
==========================  ============================================  =========

The download flow (what healing uses) is served too, for tracks whose media bytes a
test registered with :meth:`Sandbox.register_media`, and only once a redownload
request requeued them: ``GET /download/queue/ID`` (a fresh ``dl_token`` each call,
the ``file_type`` registered, ``servers`` as ``"127.0.0.1:PORT"``), ``GET
/download/server/ID`` (the same servers with ids), ``POST /download/success`` (form
``trackid``, ``serverid``, ``dl_token``; recorded in :attr:`Sandbox.successes`, and
the track leaves the queue), and the media servers themselves: one small HTTP server
per host, ``GET /pool/v5/download/DL_TOKEN`` with the Bearer header, honouring
``Range``. Every media request is recorded in :attr:`Sandbox.media_received`.
Media faults (:meth:`Sandbox.media_fault`) make the next valid media requests
misbehave, one per request: see :class:`MediaFault`.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import os
import re
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

AUTHENTICATE_PATH = "/user/authenticate"
VALIDATE_PATH = "/user/token/validate"
REDOWNLOAD_PATH = "/download/redownload_request"
QUEUE_PREFIX = "/download/queue/"
SERVER_PREFIX = "/download/server/"
SUCCESS_PATH = "/download/success"
MEDIA_PREFIX = "/pool/v5/download/"
RANGE = re.compile(r"bytes=([0-9]+)-([0-9]*)")
FORM_TYPE = "application/x-www-form-urlencoded"
TRACKID_LIST = re.compile(r"[0-9]+(?:,[0-9]+)*")
URL_CREDENTIALS = ("userid", "token")


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for one redownload request; use the constants and builders below."""

    kind: str
    seconds: int | float = 0
    count: int = 0


SERVER_ERROR = Fault("server_error")
RESET_BEFORE = Fault("reset_before")
RESET_AFTER = Fault("reset_after")
NOT_JSON = Fault("not_json")
RESULT_ERROR = Fault("result_error")
TOKEN_EXPIRED = Fault("token_expired")


def unavailable(retry_after: int = 1) -> Fault:
    """HTTP 503 with ``Retry-After`` in whole seconds, as HTTP requires."""
    return Fault("unavailable", seconds=int(retry_after))


def rate_limited(retry_after: int = 1) -> Fault:
    """HTTP 429 with ``Retry-After`` in whole seconds."""
    return Fault("rate_limited", seconds=int(retry_after))


def slow(seconds: float) -> Fault:
    """Process the request on arrival, answer it ``seconds`` later (if anyone still listens)."""
    return Fault("slow", seconds=seconds)


def partial(tracks_requeued: int) -> Fault:
    """Requeue only the first ``tracks_requeued`` tracks sent and say so."""
    return Fault("partial", count=tracks_requeued)


@dataclass(frozen=True)
class MediaFault:
    """One misbehaviour of a media server for one download; use the constants and builders below.

    ==========================  ======================================================
    fault                       answer
    ==========================  ======================================================
    ``TRUNCATED_FILE``          200, the first 60 % of the file, Content-Length honest
                                for that: a short file, complete as HTTP goes
    ``DROPPED``                 Content-Length of the whole, half the body, then the
                                connection closes (resume with Range)
    ``CORRUPTED``               the whole length, a stretch in the middle overwritten
    ``NOT_FOUND``               HTTP 404
    ``MEDIA_ERROR``             HTTP 500
    ``stalled(s)``              headers and half the body, then ``s`` seconds of
                                silence before the connection closes
    ``redirect(url)``           HTTP 302 to ``url`` (a client must not follow it with
                                its Authorization header)
    ==========================  ======================================================
    """

    kind: str
    seconds: float = 0
    location: str = ""


TRUNCATED_FILE = MediaFault("truncated_file")
DROPPED = MediaFault("dropped")
CORRUPTED = MediaFault("corrupted")
NOT_FOUND = MediaFault("not_found")
MEDIA_ERROR = MediaFault("media_error")


def redirect(location: str) -> MediaFault:
    """Answer 302 with ``Location: location``."""
    return MediaFault("redirect", location=location)


def stalled(seconds: float) -> MediaFault:
    """Half the body, then nothing for ``seconds`` (a server that hangs mid-download)."""
    return MediaFault("stalled", seconds=seconds)


@dataclass(frozen=True)
class MediaReceived:
    """One request to a media server: which host, what was asked, what was answered."""

    host: str
    path: str
    headers: dict[str, str]
    status: int | None
    range_start: int | None
    fault: str | None
    time: float


@dataclass(frozen=True)
class Success:
    """One ``POST /download/success`` that the sandbox accepted."""

    trackid: int
    serverid: int
    dl_token: str
    time: float


@dataclass
class _Media:
    """A track's media as registered: bytes in memory or a file, its type and metadata."""

    source: bytes | str
    file_type: str
    metadata: dict

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else os.path.getsize(self.source)

    def read(self, start: int, length: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[start:start + length]
        with open(self.source, "rb") as f:
            f.seek(start)
            return f.read(length)


@dataclass(frozen=True)
class Received:
    """One redownload request as it arrived, and what the sandbox did with it.

    ``path`` includes the query string; ``headers`` are as sent, Authorization
    included; ``form`` is empty unless the body was form-encoded. ``status`` and
    ``body`` are the answer (``body`` is a str for a non-JSON answer); both are None
    when the connection was dropped without one. ``time`` is the local clock on arrival.
    """

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    status: int | None
    body: dict | str | None
    time: float


@dataclass
class _Request:
    method: str
    path: str
    headers: Message
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        """The form fields (last value wins, as in PHP), or {} if the body is not a form."""
        if self.headers.get_content_type() != FORM_TYPE:
            return {}
        fields = parse_qs(self.body.decode("ascii", "replace"), keep_blank_values=True)
        return {name: values[-1] for name, values in fields.items()}


@dataclass
class _Reply:
    status: int | None  # None: drop the connection without answering
    body: dict | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, {"code": status, "message": message}, headers or {})


class _Rejected(Exception):
    """A request the real service would refuse; carries its JSON error answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.reply = _error(status, message, headers)


class Sandbox:
    """The POOL endpoints poold uses, served on 127.0.0.1 at :attr:`base_url`.

    ``known_tracks`` are the ids the account downloaded before, the only ones the real
    service requeues; None accepts any id. ``clock_skew`` seconds are added to the
    server's clock, to test a server whose time differs from the local one.
    """

    def __init__(
        self,
        userid: int = 1234,
        api_key: str = "demo-key",
        api_secret: str = "demo-secret",
        known_tracks=None,
        token_lifetime: int = 300,
        clock_skew: float = 0,
        media_servers: int = 2,
        dl_token_lifetime: float = 3600,
    ):
        self.userid = userid
        self.api_key = api_key
        self.api_secret = api_secret
        self.known_tracks = None if known_tracks is None else frozenset(known_tracks)
        self.token_lifetime = token_lifetime
        self.clock_skew = clock_skew
        self.received: list[Received] = []
        self.requeued: collections.Counter[int] = collections.Counter()
        self.tokens_minted = 0
        self._tokens: dict[str, float] = {}  # token -> expiry on the server clock
        self._faults: collections.deque[Fault] = collections.deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # the download flow
        self.media_server_count = media_servers
        self.dl_token_lifetime = dl_token_lifetime
        self.media_rate: float | None = None  # bytes per second every media server sends at; None: as fast as it can
        self.dead_first_server = False  # list first a host where nothing listens (connections refused)
        self.success_delay = 0.0  # seconds /download/success answers late (it is recorded on arrival)
        self.queued: set[int] = set()  # requeued by a redownload request, not yet downloaded
        self.successes: list[Success] = []
        self.media_received: list[MediaReceived] = []
        self._media: dict[int, _Media] = {}
        self._dl_tokens: dict[str, tuple[int, float]] = {}  # dl_token -> (trackid, expiry on the local clock)
        self._media_faults: collections.deque[MediaFault] = collections.deque()
        self._media_servers: list[tuple[_MediaServer, threading.Thread]] = []
        self._dead_port: int | None = None

    def start(self) -> Sandbox:
        self._server = _Server(self)
        self._thread = _serve(self._server, "pool-sandbox")
        for _ in range(self.media_server_count):
            server = _MediaServer(self)
            self._media_servers.append((server, _serve(server, "pool-sandbox-media")))
        self._dead_port = _unused_port()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        for server, thread in [(self._server, self._thread), *self._media_servers]:
            server.shutdown()
            server.server_close()
            thread.join()
        self._server = self._thread = None
        self._media_servers = []

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fault(self, *faults: Fault) -> None:
        """Queue faults for the next valid redownload requests, one per request, in order."""
        with self._lock:
            self._faults.extend(faults)

    def expire_tokens(self) -> None:
        """Make every token minted so far expired, as if its five minutes had passed."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, float("-inf"))

    def server_time(self) -> float:
        return time.time() + self.clock_skew

    # -- the download flow: set-up --

    def register_media(self, trackid: int, source: bytes | str | os.PathLike, file_type: str = "mp3",
                       **metadata) -> None:
        """The media POOL sends for ``trackid`` once it is requeued: bytes, or a file's path
        (served from disk, for large files), of the account's default ``file_type``."""
        source = source if isinstance(source, bytes) else os.fspath(source)
        with self._lock:
            self._media[trackid] = _Media(source, file_type, metadata)

    def media_fault(self, *faults: MediaFault) -> None:
        """Queue faults for the next valid media downloads, one per download, in order."""
        with self._lock:
            self._media_faults.extend(faults)

    def expire_dl_tokens(self) -> None:
        """Make every dl_token issued so far expired (the media servers refuse it with 403)."""
        with self._lock:
            self._dl_tokens = {token: (trackid, float("-inf")) for token, (trackid, _) in self._dl_tokens.items()}

    @property
    def media_hosts(self) -> list[str]:
        """The media hosts as the queue answer lists them, the dead one first when set."""
        hosts = [f"127.0.0.1:{server.server_address[1]}" for server, _thread in self._media_servers]
        return ([f"127.0.0.1:{self._dead_port}"] if self.dead_first_server else []) + hosts

    def server_ids(self) -> list[dict]:
        """``[{"host", "id"}]`` as ``GET /download/server/ID`` answers."""
        hosts = self.media_hosts
        first_live = 7
        ids = ([1] if self.dead_first_server else []) + list(range(first_live, first_live + len(self._media_servers)))
        return [{"host": host, "id": number} for host, number in zip(hosts, ids)]

    def _handle(self, request: _Request) -> _Reply:
        """Answer one request; called from the server's handler threads."""
        routes = {
            AUTHENTICATE_PATH: self._authenticate,
            VALIDATE_PATH: self._validate,
            REDOWNLOAD_PATH: self._redownload,
            SUCCESS_PATH: self._success,
        }
        path = urlsplit(request.path).path
        route = routes.get(path)
        if path.startswith(QUEUE_PREFIX):
            route = self._queue
        elif path.startswith(SERVER_PREFIX):
            route = self._servers
        if route is None:
            return _error(404, "no such endpoint")
        try:
            return route(request)
        except _Rejected as rejected:
            return rejected.reply

    def _authenticate(self, request: _Request) -> _Reply:
        form = _post_form(request)
        basic = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {basic}" or form.get("userid") != str(self.userid):
            raise _Rejected(401, "wrong API key, API secret or userid")
        now = self.server_time()
        token = secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = now + self.token_lifetime
            self.tokens_minted += 1
        server_time = int(now)
        return _Reply(200, {
            "code": 200,
            "expires": server_time + self.token_lifetime,
            "server_time": server_time,
            "token": token,
            "userid": self.userid,
        })

    def _validate(self, request: _Request) -> _Reply:
        form = _post_form(request)
        valid = form.get("userid") == str(self.userid) and self._token_alive(form.get("token", ""))
        return _Reply(200, {"token": "valid" if valid else "invalid"})

    # How a batch holding ids the account never downloaded is answered: "requeue_known"
    # (requeue the others; "result": "error" only when none is known), or refused as a
    # whole, naming the unknown ids, as strict services do: "result_error" (HTTP 200)
    # or "http_400".
    unknown_ids = "requeue_known"
    UNKNOWN_ID_ANSWERS = ("requeue_known", "result_error", "http_400")

    def refuse_unknown_ids(self, how: str) -> None:
        """Answer batches holding unknown ids as ``how`` (see :attr:`unknown_ids`)."""
        if how not in self.UNKNOWN_ID_ANSWERS:
            raise ValueError(f"unknown_ids must be one of {self.UNKNOWN_ID_ANSWERS}")
        self.unknown_ids = how

    def _redownload(self, request: _Request) -> _Reply:
        """Answer a redownload request and record it, whatever the answer."""
        try:
            reply = self._answer_redownload(request)
        except _Rejected as rejected:
            reply = rejected.reply
        record = Received(
            request.method, request.path, dict(request.headers.items()), request.form,
            reply.status, reply.body, time.time(),
        )
        with self._lock:
            self.received.append(record)
        return reply

    def _answer_redownload(self, request: _Request) -> _Reply:
        _require_post(request)
        self._refuse_credentials_in_url(request.path)
        token = self._authorize(request)
        form = _form(request)
        ids = _track_ids(form.get("trackid_list", ""))
        if not form.get("reason", "").strip():
            raise _Rejected(400, "reason is required")
        fault = self._next_fault()
        if fault is None:
            return self._requeue(ids)
        return self._faulty_reply(fault, ids, token)

    def _faulty_reply(self, fault: Fault, ids: list[int], token: str) -> _Reply:
        match fault.kind:
            case "server_error":
                return _error(500, "internal server error")
            case "unavailable":
                return _error(503, "service unavailable", {"Retry-After": str(fault.seconds)})
            case "rate_limited":
                return _error(429, "too many requests", {"Retry-After": str(fault.seconds)})
            case "slow":
                reply = self._requeue(ids)
                reply.delay = fault.seconds
                return reply
            case "reset_before":
                return _Reply(None)
            case "reset_after":
                self._requeue(ids)
                return _Reply(None)
            case "not_json":
                return _Reply(200, "<html><body><h1>502 Bad Gateway</h1></body></html>")
            case "result_error":
                return _Reply(200, {"result": "error", "message": "request could not be processed"})
            case "token_expired":
                with self._lock:
                    self._tokens[token] = float("-inf")
                return _error(401, "token expired")
            case "partial":
                return self._requeue(ids[: fault.count])
        raise ValueError(f"unknown fault {fault!r}")

    def _requeue(self, ids: list[int]) -> _Reply:
        """Requeue the ids the account downloaded before; the rest are ignored, or refuse
        the whole batch (see :attr:`unknown_ids`)."""
        known = [i for i in ids if self.known_tracks is None or i in self.known_tracks]
        if len(known) < len(ids) and self.unknown_ids != "requeue_known":
            unknown = ",".join(str(i) for i in ids if i not in known)
            message = f"tracks not downloaded by this account: {unknown}"
            if self.unknown_ids == "http_400":
                return _error(400, message)
            return _Reply(200, {"result": "error", "message": message})
        if not known:
            message = "none of these tracks was downloaded by this account"
            return _Reply(200, {"result": "error", "message": message})
        with self._lock:
            self.requeued.update(known)
            self.queued.update(known)
        return _Reply(200, {"result": "success", "tracks_requeued": len(known)})

    # -- the download flow: the API side --

    def _queued_track(self, request: _Request, prefix: str) -> tuple[int, _Media]:
        """The track of a queue/server GET, if requeued and registered; else the error answer."""
        if request.method != "GET":
            raise _Rejected(405, "method not allowed", {"Allow": "GET"})
        self._refuse_credentials_in_url(request.path)
        self._authorize(request)
        text = urlsplit(request.path).path[len(prefix):]
        if not text.isdigit():
            raise _Rejected(400, "the track ID must be a whole number")
        trackid = int(text)
        with self._lock:
            media = self._media.get(trackid)
            queued = trackid in self.queued
        if media is None or not queued:
            raise _Rejected(404, "track is not in this account's download queue")
        return trackid, media

    def _queue(self, request: _Request) -> _Reply:
        trackid, media = self._queued_track(request, QUEUE_PREFIX)
        token = secrets.token_hex(16)
        with self._lock:
            self._dl_tokens[token] = (trackid, time.monotonic() + self.dl_token_lifetime)
        return _Reply(200, {
            "Result": "Track successfully queued for download.", "trackid": trackid,
            "artist": media.metadata.get("artist", "Sandbox Artist"), "title": media.metadata.get("title", f"Track {trackid}"),
            "mix": media.metadata.get("mix", ""), "bpm": media.metadata.get("bpm", 120),
            "duration": media.metadata.get("duration", 0), "file_type": media.file_type,
            "media_type": 1 if "mp4" in media.file_type else 2, "dl_token": token, "servers": self.media_hosts,
            "queueid": 9000 + trackid, "releaseid": 5000 + trackid, "titleid": 7000 + trackid,
        })

    def _servers(self, request: _Request) -> _Reply:
        self._queued_track(request, SERVER_PREFIX)
        return _Reply(200, self.server_ids())

    def _success(self, request: _Request) -> _Reply:
        form = _post_form(request)
        self._refuse_credentials_in_url(request.path)
        self._authorize(request)
        token, trackid, serverid = form.get("dl_token", ""), form.get("trackid", ""), form.get("serverid", "")
        with self._lock:
            issued = self._dl_tokens.get(token)
            media = self._media.get(int(trackid)) if trackid.isdigit() else None
        if issued is None or str(issued[0]) != trackid or media is None:
            raise _Rejected(400, "trackid and dl_token do not belong together")
        if not serverid.isdigit() or int(serverid) not in {s["id"] for s in self.server_ids()}:
            raise _Rejected(400, "unknown serverid")
        with self._lock:
            self.successes.append(Success(int(trackid), int(serverid), token, time.time()))
            self.queued.discard(int(trackid))
        return _Reply(200, {"result": "success", "releaseid": 5000 + int(trackid), "titleid": 7000 + int(trackid),
                            "type": media.file_type}, delay=self.success_delay)

    # -- the download flow: the media servers --

    def _media_answer(self, host: str, path: str, headers: Message) -> tuple[_Reply, _Media | None, MediaFault | None]:
        """What a media server answers: an error, or the media and the fault to play."""
        try:
            if not path.startswith(MEDIA_PREFIX):
                raise _Rejected(404, "no such file")
            self._authorize(_Request("GET", path, headers, b""))
            with self._lock:
                issued = self._dl_tokens.get(path[len(MEDIA_PREFIX):])
                media = self._media.get(issued[0]) if issued else None
            if issued is None or media is None:
                raise _Rejected(404, "unknown download token")
            if time.monotonic() >= issued[1]:
                raise _Rejected(403, "download token expired")
        except _Rejected as rejected:
            return rejected.reply, None, None
        with self._lock:
            fault = self._media_faults.popleft() if self._media_faults else None
        if fault is not None and fault.kind == "redirect":
            return _Reply(302, {"message": "moved"}, {"Location": fault.location}), None, fault
        if fault is not None and fault.kind in ("not_found", "media_error"):
            status = 404 if fault.kind == "not_found" else 500
            return _error(status, "no such file" if status == 404 else "internal server error"), None, fault
        return _Reply(200), media, fault

    def _record_media(self, host: str, path: str, headers: Message, status: int | None,
                      range_start: int | None, fault: MediaFault | None) -> None:
        with self._lock:
            self.media_received.append(MediaReceived(host, path, dict(headers.items()), status, range_start,
                                                     fault.kind if fault else None, time.time()))

    def _refuse_credentials_in_url(self, path: str) -> None:
        with self._lock:
            tokens = list(self._tokens)
        query = parse_qs(urlsplit(path).query, keep_blank_values=True)
        if any(name in query for name in URL_CREDENTIALS) or any(token in path for token in tokens):
            raise _Rejected(400, "userid and token travel only in the Authorization header, never in the URL")

    def _authorize(self, request: _Request) -> str:
        """The token of a valid ``Bearer base64(userid:token)`` header, else 401."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            raise _Rejected(401, "Bearer authorization required")
        try:
            userid, _, token = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _Rejected(401, "malformed Bearer credentials") from None
        if userid != str(self.userid) or not self._token_alive(token):
            raise _Rejected(401, "unknown or expired token")
        return token

    def _token_alive(self, token: str) -> bool:
        with self._lock:
            expires = self._tokens.get(token)
        return expires is not None and self.server_time() < expires

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None


def _post_form(request: _Request) -> dict[str, str]:
    """The form of a POST with a form-encoded body; 405 or 415 otherwise."""
    _require_post(request)
    return _form(request)


def _require_post(request: _Request) -> None:
    if request.method != "POST":
        raise _Rejected(405, "method not allowed", {"Allow": "POST"})


def _form(request: _Request) -> dict[str, str]:
    if request.headers.get_content_type() != FORM_TYPE:
        raise _Rejected(415, f"Content-Type must be {FORM_TYPE}")
    return request.form


def _track_ids(trackid_list: str) -> list[int]:
    """The distinct ids of a ``trackid_list`` field, in order; 400 if it is malformed."""
    if not TRACKID_LIST.fullmatch(trackid_list):
        raise _Rejected(400, "trackid_list must be integers, comma-delimited, without spaces")
    return list(dict.fromkeys(int(i) for i in trackid_list.split(",")))


def _serve(server: ThreadingHTTPServer, name: str) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},  # stop() waits up to one poll interval
        name=name,
        daemon=True,
    )
    thread.start()
    return thread


def _unused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connects under a benchmark's burst

    def __init__(self, sandbox: Sandbox):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sandbox = sandbox


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return
        body = self.rfile.read(length)
        reply = self.server.sandbox._handle(_Request(self.command, self.path, self.headers, body))
        if reply.status is None:
            self._reset()
            return
        time.sleep(reply.delay)
        try:
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting; the request was processed all the same

    def _send(self, reply: _Reply) -> None:
        if isinstance(reply.body, str):
            data, content_type = reply.body.encode(), "text/html; charset=utf-8"
        else:
            data, content_type = json.dumps(reply.body).encode(), "application/json"
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        """Abort the connection (TCP reset) without sending a byte."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def log_message(self, format, *args) -> None:
        """Stay quiet: request lines may carry what a log must not, and tests want clean output."""


class _MediaServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, sandbox: Sandbox):
        super().__init__(("127.0.0.1", 0), _MediaHandler)
        self.sandbox = sandbox
        self.host = f"127.0.0.1:{self.server_address[1]}"


class _MediaHandler(_Handler):
    """``GET /pool/v5/download/DL_TOKEN``: the media bytes, with Range, and the faults."""

    server: _MediaServer
    CHUNK = 64 * 1024

    def _dispatch(self) -> None:
        sandbox = self.server.sandbox
        if self.command != "GET":
            self._send(_error(405, "method not allowed", {"Allow": "GET"}))
            return
        reply, media, fault = sandbox._media_answer(self.server.host, self.path, self.headers)
        if media is None:
            sandbox._record_media(self.server.host, self.path, self.headers, reply.status, None, fault)
            self._send(reply)
            return
        data_size = media.size
        start, end = _byte_range(self.headers.get("Range"), data_size)
        if start is not None and start >= data_size:
            sandbox._record_media(self.server.host, self.path, self.headers, 416, start, fault)
            self._send(_error(416, "range not satisfiable", {"Content-Range": f"bytes */{data_size}"}))
            return
        status = 200 if start is None else 206
        sandbox._record_media(self.server.host, self.path, self.headers, status, start, fault)
        try:
            self._stream(media, start or 0, end if start is not None else data_size - 1, status, fault)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away

    def _stream(self, media: _Media, first: int, last: int, status: int, fault: MediaFault | None) -> None:
        kind = fault.kind if fault else None
        size = media.size
        if kind == "truncated_file":
            last = min(last, size * 6 // 10 - 1)
        length = last - first + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        stop_at = first + length // 2 if kind in ("dropped", "stalled") else last + 1
        position = first
        while position < stop_at:
            chunk = media.read(position, min(self.CHUNK, stop_at - position))
            if kind == "corrupted":
                chunk = _corrupt(chunk, position, size)
            self.wfile.write(chunk)
            position += len(chunk)
            if self.server.sandbox.media_rate:
                time.sleep(len(chunk) / self.server.sandbox.media_rate)
        if kind == "stalled":
            self.wfile.flush()
            time.sleep(fault.seconds)
        if kind in ("dropped", "stalled"):
            self.close_connection = True


def _byte_range(header: str | None, size: int) -> tuple[int | None, int]:
    """(first, last) byte of a ``Range: bytes=N-[M]`` header; (None, size - 1) without one."""
    match = RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None, size - 1
    first = int(match.group(1))
    last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    return first, last


def _corrupt(chunk: bytes, position: int, size: int) -> bytes:
    """Overwrite the part of ``chunk`` that falls in the middle tenth of the file with 0x5A."""
    low, high = size * 45 // 100, size * 55 // 100
    start, end = max(low - position, 0), min(high - position, len(chunk))
    if start >= end:
        return chunk
    return chunk[:start] + b"\x5a" * (end - start) + chunk[end:]
