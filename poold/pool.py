"""The POOL API client: tokens, the redownload request, one retry policy.

Failures are raised as the error kinds of :mod:`poold.errors`; transient ones are
retried here with backoff (a bounded number of attempts), then left pending for the
next drain.

No message, log line or URL made here ever contains the token, the API key or secret,
or the Authorization header: the token travels only inside the Bearer value.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import tenacity
import urllib3.exceptions
import urllib3.util

from . import __version__
from .config import PoolConfig, Secret
from .errors import (DEFAULT_PORTS, BaseURL, InsecureURL, PoolError, RefusedError, RejectedError, TransientError,
                     check_base_url)
from .redact import register_secret

log = logging.getLogger(__name__)

AUTHENTICATE = "/user/authenticate"
REDOWNLOAD = "/download/redownload_request"
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class RequeueResult:
    sent: int
    requeued: int | None  # None: the service did not say

    @property
    def complete(self) -> bool:
        return self.requeued is not None and self.requeued >= self.sent


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped at
    :data:`MAX_RETRY_AFTER`; None when there is no usable header."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are always GMT
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class Tokens:
    """Mints access tokens from the API key and secret, and reuses them until shortly
    before they expire. The lifetime comes from the server's own ``expires -
    server_time``, measured on the local monotonic clock, so local clock skew is harmless.
    """

    MARGIN = 30.0  # renew this long before expiry (at most a fifth of the lifetime)

    def __init__(self, config: PoolConfig, session: requests.Session, clock=time.monotonic):
        self.config = config
        self.session = session
        self.clock = clock
        self._token: str | None = None
        self._valid_until = 0.0
        self._lock = threading.Lock()
        self.minted = 0

    def current(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._valid_until:
                self._mint()
            return self._token

    def refresh_after_401(self) -> bool:
        """Forget the token; True when a new one can be minted (only with key and secret)."""
        with self._lock:
            self._token = None
            self._valid_until = 0.0
        return self.config.can_mint

    def _mint(self) -> None:
        if not self.config.can_mint:
            if self.config.token is None:
                raise PoolError("no POOL credentials: set [pool] api_key and api_secret (or a token) in the config")
            self._token = self.config.token.reveal()
            self._valid_until = float("inf")
            register_secret(self._token)
            return
        started = self.clock()
        answer = self._authenticate()
        try:
            token = str(answer["token"])
            lifetime = float(answer["expires"]) - float(answer["server_time"])
        except (KeyError, TypeError, ValueError):
            raise TransientError("the token endpoint answered without token, expires and server_time") from None
        register_secret(token)
        self._token = token
        self._valid_until = started + lifetime - min(self.MARGIN, lifetime / 5)
        self.minted += 1
        log.debug("minted a POOL access token valid for %.0f s", lifetime)

    def _authenticate(self) -> dict:
        key, secret = self.config.api_key.reveal(), self.config.api_secret.reveal()
        basic = _b64(f"{key}:{secret}")
        for value in (key, secret, basic):
            register_secret(value)
        response = _post(
            self.session, self.config.base_url + AUTHENTICATE, {"userid": str(self.config.userid)},
            {"Authorization": f"Basic {basic}"}, self.config.timeout,
        )
        if response.status_code in (401, 403):
            raise PoolError(f"POOL refused the API key and secret for user {self.config.userid} (HTTP {response.status_code})")
        _raise_for_transient(response)
        if response.status_code != 200:
            raise PoolError(f"token request failed with HTTP {response.status_code}")
        return _json(response)


class PoolClient:
    """Files redownload requests. ``redownload`` retries transient failures itself.

    The retry policy, in one place: up to ``max_attempts`` sends per call; between
    them, the server's ``Retry-After`` when it sent one, else exponential backoff from
    ``backoff`` seconds (doubling, at most ``max_backoff``) plus up to ``backoff``
    seconds of random jitter. When the server asks for a longer wait than
    ``max_backoff``, the call gives up at once rather than block: the outbox keeps the
    request pending for the next drain. ``clock`` (monotonic seconds) times tokens.
    """

    def __init__(self, config: PoolConfig, *, max_attempts: int = 5, backoff: float = 1.0,
                 max_backoff: float = 60.0, session: requests.Session | None = None, clock=time.monotonic):
        if config.userid is None:
            raise PoolError("[pool] userid is not set: it is needed to file requests")
        checked = check_base_url(config.base_url)
        _confirm_connect_target(config.base_url, checked)
        for secret in (config.api_key, config.api_secret, config.token):
            if isinstance(secret, Secret):
                register_secret(secret.reveal())
        self.config = config
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"poold/{__version__}"
        if checked.scheme == "http":
            # Loopback only (check_base_url): a proxy from HTTP_PROXY or ALL_PROXY would
            # receive the credentials in clear text, and a loopback host needs none.
            self.session.trust_env = False
        self.tokens = Tokens(config, self.session, clock)
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self._backoff = tenacity.wait_exponential(multiplier=backoff, max=max_backoff) + tenacity.wait_random(0, backoff)

    def close(self) -> None:
        self.session.close()

    def redownload(self, trackids: list[int], reason: str, on_attempt=None) -> RequeueResult:
        """POST one redownload request, retrying transient failures (see the class).

        ``on_attempt`` is called just before every POST, so the outbox can mark the
        request as sent (and count the attempt) before the bytes leave.
        """
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=tenacity.stop_after_attempt(self.max_attempts) | self._asked_to_wait_too_long,
            wait=self._wait,
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(self._redownload_once, trackids, reason, on_attempt)

    def _asked_to_wait_too_long(self, retry_state: tenacity.RetryCallState) -> bool:
        retry_after = _retry_after(retry_state)
        return retry_after is not None and retry_after > self.max_backoff

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        """The server's Retry-After when it sent one; otherwise exponential backoff with jitter."""
        retry_after = _retry_after(retry_state)
        return retry_after if retry_after is not None else self._backoff(retry_state)

    def _redownload_once(self, trackids: list[int], reason: str, on_attempt) -> RequeueResult:
        """One send; after a 401, one more with a freshly minted token."""
        response = self._send(trackids, reason, on_attempt)
        if response.status_code == 401 and self.tokens.refresh_after_401():
            response = self._send(trackids, reason, on_attempt)
        if response.status_code == 401:
            raise PoolError(self._token_refused())
        _raise_for_transient(response)
        if 300 <= response.status_code < 400:
            raise PoolError(f"POOL answered with a redirect (HTTP {response.status_code}); check [pool] base_url")
        if response.status_code != 200:
            kind = RefusedError if response.status_code == 400 else RejectedError
            raise kind(f"POOL rejected the request (HTTP {response.status_code}{_server_message(response)})")
        return _requeue_result(_json(response), len(trackids))

    def _send(self, trackids: list[int], reason: str, on_attempt) -> requests.Response:
        bearer = _b64(f"{self.config.userid}:{self.tokens.current()}")
        register_secret(bearer)
        form = {"trackid_list": ",".join(str(t) for t in trackids), "reason": reason}
        if on_attempt:
            on_attempt()  # after minting, so that only real sends are counted
        return _post(self.session, self.config.base_url + REDOWNLOAD, form,
                     {"Authorization": f"Bearer {bearer}"}, self.config.timeout)

    def _token_refused(self) -> str:
        if self.config.can_mint:
            return "POOL refused a freshly minted token (HTTP 401)"
        return ("POOL refused the configured token (HTTP 401): access tokens expire after 5 minutes, "
                "so set [pool] api_key and api_secret instead and poold will mint its own")


def _confirm_connect_target(base_url: str, checked: BaseURL) -> None:
    """Make sure requests and urllib3, parsing the URL poold will POST to, find the very
    scheme, host and port that :func:`check_base_url` checked, and no credentials."""
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(base_url + REDOWNLOAD, None)
        target = urllib3.util.parse_url(prepared.url)
    except (requests.RequestException, urllib3.exceptions.LocationParseError):
        raise InsecureURL("cannot be parsed by the HTTP library") from None
    host = (target.host or "").strip("[]").lower()
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        pass
    port = target.port or DEFAULT_PORTS.get(target.scheme or "")
    if (target.scheme, host, port, target.auth) != (checked.scheme, checked.host, checked.port, None):
        raise InsecureURL(f"names {checked.host}:{checked.port}, but the HTTP library would connect elsewhere")


def _retry_after(retry_state: tenacity.RetryCallState) -> float | None:
    error = retry_state.outcome.exception() if retry_state.outcome else None
    return error.retry_after if isinstance(error, TransientError) else None


def _requeue_result(answer: dict, sent: int) -> RequeueResult:
    if answer.get("result") != "success":
        message = answer.get("message") or answer.get("error") or answer.get("result")
        raise RefusedError(f"POOL did not accept the request: {str(message)[:200]}")
    requeued = answer.get("tracks_requeued")
    try:
        return RequeueResult(sent, int(requeued) if requeued is not None else None)
    except (TypeError, ValueError):
        return RequeueResult(sent, None)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _post(session: requests.Session, url: str, form: dict, headers: dict, timeout: float) -> requests.Response:
    """POST a form. A failure to reach the server becomes a TransientError, or a
    PoolError when it is a set-up problem that waiting will not fix (see
    :func:`_connection_failure`); messages are plain words, free of secrets."""
    where = urlsplit(url).netloc
    try:
        return session.post(url, data=form, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.Timeout:
        raise TransientError(f"no answer from {where} within {timeout:g} s") from None
    except requests.ConnectionError as exc:
        raise _connection_failure(exc, where) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema):
        raise PoolError(f"the URL of {where} is not valid: check [pool] base_url") from None
    except requests.RequestException:
        raise TransientError(f"the request to {where} failed") from None


PERMANENT_LOOKUP_FAILURES = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def _connection_failure(error: requests.ConnectionError, where: str) -> PoolError:
    """What went wrong in plain words, and whether it may pass.

    A host name that does not exist (EAI_NONAME, EAI_NODATA) and a certificate that
    does not verify are set-up problems: PoolError, reported at once. A temporary
    lookup failure (EAI_AGAIN: offline, a DNS server not answering), a refused or reset
    connection and a failed handshake may pass: TransientError, retried.
    """
    causes = list(_causes(error))
    host = urlsplit(f"//{where}").hostname or where
    if certificate := _first(causes, ssl.SSLCertVerificationError):
        problem = (certificate.verify_message or certificate.reason or "it does not verify").rstrip(".")
        return PoolError(f"the TLS certificate of {host} is not valid ({problem}): check the system's "
                         "CA certificates and clock, and [pool] base_url")
    if lookup := _first(causes, socket.gaierror):
        if lookup.errno in PERMANENT_LOOKUP_FAILURES:
            return PoolError(f"cannot find the host {host}: check [pool] base_url (the name does not exist)")
        return TransientError(f"cannot look up the host {host} just now ({_lowercase(lookup.strerror)})")
    if handshake := _first(causes, ssl.SSLError):
        reason = (handshake.reason or "").replace("_", " ").lower()
        return TransientError(f"the TLS handshake with {where} failed" + (f" ({reason})" if reason else ""))
    if system := next((c for c in causes if isinstance(c, OSError) and c.errno), None):
        return TransientError(f"the connection to {where} failed: {_lowercase(os.strerror(system.errno))}")
    return TransientError(f"the connection to {where} closed without an answer")


def _first(causes: list[BaseException], kind: type[BaseException]):
    return next((cause for cause in causes if isinstance(cause, kind)), None)


def _causes(error: BaseException):
    """The exception and everything it was raised from, outermost first (bounded)."""
    for _ in range(20):
        if error is None:
            return
        yield error
        error = error.__cause__ or error.__context__


def _lowercase(text: str | None) -> str:
    text = text or "unknown failure"
    return text[:1].lower() + text[1:]


def _raise_for_transient(response: requests.Response) -> None:
    status = response.status_code
    if status in (408, 429) or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        asked = f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
        raise TransientError(f"POOL answered HTTP {status}{_server_message(response)}{asked}", retry_after)


def _json(response: requests.Response) -> dict:
    try:
        answer = response.json()
    except ValueError:
        raise TransientError(f"POOL answered HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(answer, dict):
        raise TransientError("POOL answered with JSON that is not an object")
    return answer


def _server_message(response: requests.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return ""
    message = answer.get("message") or answer.get("error") if isinstance(answer, dict) else None
    return f": {str(message)[:200]}" if message else ""


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    error = retry_state.outcome.exception()
    log.warning("POOL request attempt %d failed: %s; retrying in %.2f s",
                retry_state.attempt_number, error, retry_state.next_action.sleep)
