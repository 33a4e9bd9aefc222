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
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
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

    def start(self) -> Sandbox:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits up to one poll interval
            name="pool-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

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

    def _handle(self, request: _Request) -> _Reply:
        """Answer one request; called from the server's handler threads."""
        routes = {
            AUTHENTICATE_PATH: self._authenticate,
            VALIDATE_PATH: self._validate,
            REDOWNLOAD_PATH: self._redownload,
        }
        route = routes.get(urlsplit(request.path).path)
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
        return _Reply(200, {"result": "success", "tracks_requeued": len(known)})

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
