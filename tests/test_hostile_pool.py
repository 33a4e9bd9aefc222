"""Hostile input on the POOL side (issue #11): base URLs that would send the secrets
somewhere else, failures that are permanent set-up problems rather than passing
trouble, and batches POOL refuses because of one bad track ID.

Everything runs against real servers on this machine: the sandbox on 127.0.0.1, a
recording server on the host's own non-loopback address, a local HTTPS server with a
self-signed certificate. No request is mocked; no packet leaves the machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import API_KEY, API_SECRET, USERID
from poold import app, filing
from poold.config import ConfigError, PoolConfig, RequestsConfig, Secret, load
from poold.errors import PoolError, TransientError
from poold.filing import DAY
from poold.pool import PoolClient
from poold.sandbox import NOT_JSON, RESET_BEFORE, SERVER_ERROR, Sandbox, partial
from poold.scan import AuditReport, Finding
from poold.state import State

TRACKS = [356111, 356115]
REASON = "poold integrity check: 2 files missing"
MINIMAL = '[library]\nroot = "lib"\nmanifest = "m.json"\n'


def load_base_url(tmp_path, url: str):
    """Load a config whose [pool] base_url is ``url`` (any character, TOML-escaped)."""
    path = tmp_path / "config.toml"
    path.write_text(f"{MINIMAL}[pool]\nbase_url = {json.dumps(url)}\nuserid = {USERID}\n")
    path.chmod(0o600)
    return load(path)


def credentials() -> dict:
    return {"api_key": Secret(API_KEY), "api_secret": Secret(API_SECRET)}


# --- a recording server on a non-loopback address of this machine -------------------


class Recorder(ThreadingHTTPServer):
    """Answers every request with a token-shaped JSON body and records its headers."""

    daemon_threads = True

    def __init__(self, host: str):
        self.received: list[dict[str, str]] = []
        super().__init__((host, 0), _RecordingHandler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join()


class _RecordingHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append(dict(self.headers.items()))
        body = json.dumps({"token": "0" * 32, "expires": 300, "server_time": 0, "result": "success",
                           "tracks_requeued": 2}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_CONNECT = do_POST

    def log_message(self, format, *args) -> None:
        pass


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the one its default route
    uses); found with a UDP socket, which sends nothing when it connects."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture
def outside():
    """A recording server on a non-loopback address: anything sent there left loopback."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to stand for a remote host")
    recorder = Recorder(address)
    yield recorder
    recorder.stop()


# --- item 14: secrets stay on TLS ------------------------------------------------------

HOSTILE_URLS = {
    "backslash before @": "http://vm:45441\\@127.0.0.1",
    "userinfo": "http://user:pw@127.0.0.1",
    "userinfo on https": "https://key:hunter2@api.promoonly.com",
    "loopback as userinfo": "http://127.0.0.1:80@evil/",
    "bracketed loopback as userinfo": "http://[::1]@evil",
    "loopback prefix of a name": "http://127.0.0.1.evil",
    "tab in host": "http://127.0.0.1\t.evil",
    "newline": "http://127.0.0.1\n",
    "space in path": "http://127.0.0.1/a b",
    "control character": "http://127.0.0.1\x01",
    "DEL": "http://127.0.0.1\x7f",
    "percent-encoded host": "http://127%2e0.0.1",
    "fullwidth digits": "http://\uff11\uff12\uff17.0.0.1",
    "ideographic full stop": "http://127\u30020.0.1",
    "cyrillic lookalike": "https://\u0430pi.promoonly.com",
    "trailing dot": "http://localhost.",
    "empty label": "https://api..promoonly.com",
    "query": "http://127.0.0.1?x=@evil",
    "fragment": "http://127.0.0.1#@evil",
    "short IPv4": "http://127.1",
    "octal IPv4": "http://0177.0.0.1",
    "hex IPv4": "http://0x7f.0.0.1",
    "decimal IPv4": "http://2130706433",
    "IPv6 zone": "http://[::1%25lo]:9",
    "port 0": "http://127.0.0.1:0",
    "port too large": "http://127.0.0.1:99999",
    "port not a number": "http://127.0.0.1:8o",
    "backslash in path": "http://localhost:5000/base\\@evil",
    "plain http elsewhere": "http://api.promoonly.com",
    "no scheme": "api.promoonly.com",
    "other scheme": "file:///etc/passwd",
    "no host": "https://",
}


@pytest.mark.parametrize("url", HOSTILE_URLS.values(), ids=HOSTILE_URLS.keys())
def test_hostile_base_urls_are_refused_at_config_load(tmp_path, url):
    with pytest.raises(ConfigError) as refused:
        load_base_url(tmp_path, url)
    message = str(refused.value)
    assert "[pool] base_url" in message
    assert "hunter2" not in message  # a password in the URL is never echoed
    assert "\n" not in message and "\t" not in message


@pytest.mark.parametrize("url", HOSTILE_URLS.values(), ids=HOSTILE_URLS.keys())
def test_hostile_base_urls_are_refused_by_the_client_too(url):
    """A PoolConfig made without the config file still cannot reach the network."""
    with pytest.raises(PoolError):
        PoolClient(PoolConfig(base_url=url, userid=USERID, **credentials()))


LEGIT_URLS = [
    "https://api.promoonly.com", "https://api.promoonly.com:8443/v1", "https://xn--80ak6aa92e.com",
    "http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:9", "http://localhost:5000/base",
    "HTTPS://API.PromoOnly.com",
]


@pytest.mark.parametrize("url", LEGIT_URLS)
def test_legit_base_urls_load_and_make_a_client(tmp_path, url):
    assert load_base_url(tmp_path, url).pool.base_url == url
    PoolClient(PoolConfig(base_url=url, userid=USERID, **credentials())).close()


def test_no_secret_ever_reaches_a_non_loopback_host_over_http(tmp_path, outside):
    """The issue's URL and its kin, aimed at a real server on a non-loopback address:
    refused at config load and by the client, and nothing arrives there."""
    there = f"{outside.server_address[0]}:{outside.port}"
    for url in (f"http://{there}\\@127.0.0.1", f"http://127.0.0.1:1@{there}", f"http://[::1]@{there}",
                f"http://{there}/\\@127.0.0.1", f"http://{there}"):
        with pytest.raises(ConfigError):
            load_base_url(tmp_path, url)
        try:
            PoolClient(PoolConfig(base_url=url, userid=USERID, **credentials())).redownload(TRACKS, REASON)
        except PoolError:
            pass
    assert outside.received == []


def test_a_proxy_from_the_environment_never_carries_loopback_http(sandbox, outside, monkeypatch):
    """With plain http (loopback only) poold ignores HTTP_PROXY and friends: a proxy
    would receive the Basic credentials in clear text."""
    proxy = f"http://{outside.server_address[0]}:{outside.port}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = PoolClient(PoolConfig(base_url=sandbox.base_url, userid=USERID, **credentials()), backoff=0.01)
    assert client.redownload(TRACKS, REASON).complete
    assert outside.received == []
    assert sandbox.tokens_minted == 1 and len(sandbox.received) == 1


@pytest.mark.parametrize("url, claimed_host", [
    ("http://vm:45441\\@127.0.0.1", "127.0.0.1"),
    ("http://127.0.0.1:80@evil/", "127.0.0.1"),
    ("http://[::1]@evil", "::1"),
])
def test_the_client_confirms_the_host_with_the_parser_that_connects(url, claimed_host):
    """Second line of defence: had the grammar let one of these through as loopback,
    urllib3's parser (the one that connects) would still disagree and refuse it."""
    from poold.errors import BaseURL
    from poold.pool import _confirm_connect_target

    with pytest.raises(PoolError, match="would connect elsewhere|cannot be parsed"):
        _confirm_connect_target(url, BaseURL("http", claimed_host, 80, ""))
    _confirm_connect_target("http://127.0.0.1", BaseURL("http", "127.0.0.1", 80, ""))


# --- item 13: permanent set-up problems vs passing failures ------------------------------

CLASS_NAMES = re.compile(
    r"gaierror|herror|Errno|[A-Z][a-z]+[A-Za-z]*(?:Error|Exception|Disconnected|Timeout|Warning)\b")


def assert_plain_words(message: str) -> None:
    assert not CLASS_NAMES.search(message), message


def retries_logged(caplog) -> int:
    return sum("retrying in" in record.getMessage() for record in caplog.records)


def name_resolution_errno(host: str) -> int | None:
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as error:
        return error.errno
    return None


def test_a_host_that_does_not_exist_is_a_setup_error_reported_at_once(caplog):
    """RFC 6761: no .invalid name ever resolves."""
    host = "api.example.invalid"
    if name_resolution_errno(host) not in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
        pytest.skip("this machine's resolver does not say that a .invalid name does not exist "
                    "(offline resolvers answer 'temporary failure', which is rightly retried)")
    caplog.set_level(logging.WARNING, logger="poold.pool")
    client = PoolClient(PoolConfig(base_url=f"https://{host}", userid=USERID, **credentials()),
                        max_attempts=5, backoff=0.01)
    with pytest.raises(PoolError) as failed:
        client.redownload(TRACKS, REASON)
    assert not isinstance(failed.value, TransientError)
    assert str(failed.value).startswith(f"cannot find the host {host}: check [pool] base_url")
    assert_plain_words(str(failed.value))
    assert retries_logged(caplog) == 0


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: it makes the test's self-signed certificate")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return key, cert


class TLSServer(Recorder):
    """The recording server behind TLS with a certificate no CA signed; counts the TCP
    connections it accepts (each is a handshake attempt)."""

    def __init__(self, key: Path, cert: Path):
        self.accepted = 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.context = context
        super().__init__("127.0.0.1")

    def get_request(self):
        connection, address = super().get_request()
        self.accepted += 1
        return self.context.wrap_socket(connection, server_side=True), address


def test_an_invalid_tls_certificate_is_a_setup_error_reported_at_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="poold.pool")
    server = TLSServer(*self_signed_certificate(tmp_path))
    try:
        client = PoolClient(PoolConfig(base_url=f"https://127.0.0.1:{server.port}", userid=USERID,
                                       **credentials()), max_attempts=5, backoff=0.01)
        with pytest.raises(PoolError) as failed:
            client.redownload(TRACKS, REASON)
    finally:
        server.stop()
    message = str(failed.value)
    assert not isinstance(failed.value, TransientError)
    assert message.startswith("the TLS certificate of 127.0.0.1 is not valid (")
    assert "self-signed" in message and "CA certificates" in message and "clock" in message
    assert_plain_words(message)
    assert server.accepted == 1 and server.received == []  # one handshake, no request sent
    assert retries_logged(caplog) == 0


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused_stays_transient_in_plain_words(caplog):
    caplog.set_level(logging.WARNING, logger="poold.pool")
    client = PoolClient(PoolConfig(base_url=f"http://127.0.0.1:{unused_port()}", userid=USERID,
                                   **credentials()), max_attempts=3, backoff=0.01)
    with pytest.raises(TransientError) as failed:
        client.redownload(TRACKS, REASON)
    assert "refused" in str(failed.value)
    assert_plain_words(str(failed.value))
    assert retries_logged(caplog) == 2
    for record in caplog.records:
        assert_plain_words(record.getMessage())


@pytest.mark.parametrize("fault", [RESET_BEFORE, NOT_JSON, SERVER_ERROR])
def test_passing_failures_from_the_server_stay_transient_in_plain_words(sandbox, fault):
    sandbox.fault(fault)
    client = PoolClient(PoolConfig(base_url=sandbox.base_url, userid=USERID, **credentials()), max_attempts=1)
    with pytest.raises(TransientError) as failed:
        client.redownload(TRACKS, REASON)
    assert_plain_words(str(failed.value))


@pytest.mark.parametrize("errno, permanent", [
    (socket.EAI_NONAME, True),
    (getattr(socket, "EAI_NODATA", socket.EAI_NONAME), True),
    (socket.EAI_AGAIN, False),
    (socket.EAI_FAIL, False),
])
def test_name_resolution_failures_are_classified_by_their_code(errno, permanent):
    """Resolver answers that cannot be staged on demand: a temporary failure
    (EAI_AGAIN, e.g. offline or a DNS server timing out) is retried; "no such name"
    is not. The exception chain is the one urllib3 raises."""
    from poold.pool import _connection_failure

    try:
        try:
            raise socket.gaierror(errno, os.strerror(errno) if errno > 0 else "resolver says no")
        except socket.gaierror as cause:
            raise requests.ConnectionError("HTTPSConnectionPool(host='h.example'): NameResolutionError") from cause
    except requests.ConnectionError as error:
        failure = _connection_failure(error, "h.example")
    assert isinstance(failure, PoolError) and isinstance(failure, TransientError) is not permanent
    assert "h.example" in str(failure)
    assert_plain_words(str(failure))


# --- item 4: one bad ID must not block a batch ------------------------------------------

T0 = 1_700_000_000.0
BAD = 37
BATCH = list(range(1, 51))


@pytest.fixture
def state(tmp_path):
    with State(tmp_path / "state") as opened:
        yield opened


def strict_sandbox(how: str, unknown=(BAD,)) -> Sandbox:
    """A sandbox that refuses a whole batch when any of its ids is unknown."""
    server = Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET,
                     known_tracks=set(BATCH) - set(unknown))
    server.refuse_unknown_ids(how)
    return server


def make_client(sandbox: Sandbox, max_attempts: int = 3) -> PoolClient:
    config = PoolConfig(base_url=sandbox.base_url, userid=USERID, **credentials())
    return PoolClient(config, max_attempts=max_attempts, backoff=0.01, max_backoff=2.0)


def record_missing(state: State, trackids, now: float = T0) -> None:
    findings = [Finding(t, f"crate/track{t}.mp3", "missing", "missing", "test damage") for t in trackids]
    filing.record(state, AuditReport(library="library", manifest="manifest.json", checked=len(findings),
                                     ok=0, problems=findings, ok_trackids=set()), now)


def file_requests(state: State, client: PoolClient, settings=RequestsConfig(), now: float = T0):
    batches, held = filing.plan(state, settings, now)
    filing.enqueue(state, batches, now)
    return filing.drain(state, client), held


def open_requests_by_track(state: State) -> dict[int, int]:
    counts: dict[int, int] = {}
    for request in state.requests(states=("pending", "sent")):
        for trackid in request.trackids:
            counts[trackid] = counts.get(trackid, 0) + 1
    return counts


@pytest.mark.parametrize("how", ["result_error", "http_400"])
def test_one_unknown_id_in_a_batch_of_50_is_found_by_halving(state, how):
    with strict_sandbox(how) as sandbox:
        record_missing(state, BATCH)
        file_requests(state, make_client(sandbox))

        assert sandbox.requeued == {t: 1 for t in BATCH if t != BAD}
        assert len(sandbox.received) <= 2 * math.ceil(math.log2(len(BATCH))) + 1  # O(log n)
        [refused] = state.requests(states=("rejected",))
        assert refused.trackids == (BAD,) and refused.attempts == 1
        assert f"tracks not downloaded by this account: {BAD}" in refused.last_error
        assert state.requests(states=("pending", "sent")) == []
        settled = {t for r in state.requests(states=("accepted",)) for t in r.trackids}
        assert settled == set(BATCH) - {BAD}
        for request in state.requests(states=("accepted", "rejected")):  # each reason true of its tracks
            files = "1 file" if len(request.trackids) == 1 else f"{len(request.trackids)} files"
            assert f": {files} missing" in request.reason
        assert state.tracks_requested_since(T0 - 1) == len(BATCH)  # each track counted once

        # never again by itself, however long it waits; status says why
        sent = len(sandbox.received)
        batches, held = file_requests(state, make_client(sandbox), now=T0 + 60 * DAY)
        assert len(sandbox.received) == sent
        why = {h.incident.trackid: h.why for h in held}[BAD]
        assert "POOL refused it" in why and f"not downloaded by this account: {BAD}" in why
        assert "person" in why


def test_several_unknown_ids_are_each_refused_alone(state):
    unknown = (2, 3, 40)
    with strict_sandbox("http_400", unknown) as sandbox:
        record_missing(state, BATCH)
        file_requests(state, make_client(sandbox))
        assert sandbox.requeued == {t: 1 for t in BATCH if t not in unknown}
        assert sorted(r.trackids for r in state.requests(states=("rejected",))) == [(2,), (3,), (40,)]


def test_a_split_interrupted_by_an_outage_resumes_without_doubles(state):
    """The halves are written down with the split: a drain stopped by an outage leaves
    them pending, and the next drain finishes the search. Nothing is requeued twice,
    no track is ever in two open requests."""
    with strict_sandbox("result_error") as sandbox:
        record_missing(state, BATCH)
        sandbox.fault(partial(len(BATCH)), SERVER_ERROR, SERVER_ERROR)  # the batch answered as usual, then down
        file_requests(state, make_client(sandbox, max_attempts=2))
        [split] = state.requests(states=("split",))
        assert split.trackids == tuple(BATCH) and "split into" in split.last_error
        pending = state.pending_requests()
        assert sorted(t for r in pending for t in r.trackids) == BATCH
        assert set(open_requests_by_track(state).values()) == {1}
        assert sandbox.requeued == {}

        file_requests(state, make_client(sandbox))
        assert sandbox.requeued == {t: 1 for t in BATCH if t != BAD}
        assert [r.trackids for r in state.requests(states=("rejected",))] == [(BAD,)]
        assert state.pending_requests() == []


def test_a_refused_request_is_split_in_one_transaction(state):
    """The parent is settled and its halves written together, with their incidents."""
    record_missing(state, [1, 2, 3])
    [request_id] = filing.enqueue(state, filing.plan(state, RequestsConfig(), T0)[0], T0)
    state.mark_sent(request_id)
    halves = state.split(request_id, [("b-1", "reason one", [1, 2]), ("b-2", "reason two", [3])],
                         error="POOL did not accept the request: no")
    assert len(halves) == 2
    parent, first, second = state.requests()[::-1]
    assert parent.state == "split" and parent.last_error.startswith("POOL did not accept the request: no")
    assert (first.trackids, first.state, first.reason) == ((1, 2), "pending", "reason one")
    assert (second.trackids, second.state) == ((3,), "pending")
    assert state.split(request_id, [("b-3", "again", [1])], error="x") == []  # already settled: no-op
    assert set(open_requests_by_track(state).values()) == {1}
    incident_ids = {state.open_incident(t).id for t in (1, 2, 3)}
    assert {i for i in incident_ids if len(state.incident_requests(i)) == 1} == incident_ids  # split rows don't count
    before = state.requests()
    with pytest.raises(ValueError):
        state.split(first.id, [("b-4", "r", [1]), ("b-5", "r", [9])], error="x")  # 9 is not in it
    assert state.requests() == before  # rolled back whole


def test_the_daily_quota_counts_each_track_once_however_often_it_was_split(state):
    """The halves repeat their parent's tracks: the quota counts tracks, not rows."""
    settings = RequestsConfig(max_tracks_per_day=60)
    with strict_sandbox("result_error") as sandbox:
        record_missing(state, BATCH)
        file_requests(state, make_client(sandbox), settings)
        assert len(state.requests()) > 2  # it was split

        sandbox.known_tracks = frozenset(range(1, 100)) - {BAD}
        record_missing(state, range(51, 71), now=T0 + 60)
        _, held = file_requests(state, make_client(sandbox), settings, now=T0 + 60)
        assert sorted(t for t in sandbox.requeued if t > 50) == list(range(51, 61))
        assert sorted(h.incident.trackid for h in held if "daily limit" in h.why) == list(range(61, 71))
        assert state.tracks_requested_since(T0 - 1) == 60


def test_status_says_why_a_refused_track_waits_for_a_person(make_library):
    with strict_sandbox("http_400", unknown=()) as sandbox:
        sandbox.known_tracks = frozenset({1001, 1002})
        library = make_library(["mp3"] * 3, base_url=sandbox.base_url,
                               extra="[guard]\nmax_missing_fraction = 1.0\n")
        for path in library.paths.values():
            path.unlink()
        outcome = app.run_audit(library.config(), request=True, client=make_client(sandbox))
        assert sorted((r["state"], tuple(r["trackids"])) for r in outcome.requests) == [
            ("accepted", (1001, 1002)), ("rejected", (1003,)), ("split", (1001, 1002, 1003))]
        assert sandbox.requeued == {1001: 1, 1002: 1}

        env = {k: v for k, v in os.environ.items() if not k.startswith("POOLD_") and k != "CREDENTIALS_DIRECTORY"}
        status = subprocess.run([sys.executable, "-m", "poold", "status", "--config", str(library.config_path)],
                                capture_output=True, text=True, env=env, timeout=60).stdout
        [line] = [line for line in status.splitlines() if "POOL refused it" in line]
        assert "HTTP 400: tracks not downloaded by this account: 1003" in line and "a person has to look" in line
        assert status.count("POOL refused it") == 1
