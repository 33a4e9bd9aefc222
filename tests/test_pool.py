"""The POOL client over real HTTP against the sandbox: token lifecycle, what is never
retried, the Retry-After and URL rules, and where secrets may come from.

How each fault ends up in the outbox is in test_outbox.py.
"""

from __future__ import annotations

import logging

import pytest

from conftest import API_KEY, API_SECRET, USERID
from poold.config import PoolConfig, Secret, load
from poold.errors import InsecureURL, PoolError, RejectedError, check_base_url
from poold.pool import PoolClient, parse_retry_after
from poold.sandbox import TOKEN_EXPIRED, Sandbox

TRACKS = [356111, 356115]
REASON = "poold integrity check: 2 files missing"


def make_client(sandbox: Sandbox, *, clock=None, timeout: float = 5.0, max_attempts: int = 3,
                **credentials) -> PoolClient:
    """A client with tiny retry waits (Retry-After up to 2 s is still honoured)."""
    credentials = credentials or {"api_key": Secret(API_KEY), "api_secret": Secret(API_SECRET)}
    config = PoolConfig(base_url=sandbox.base_url, userid=USERID, timeout=timeout, **credentials)
    extra = {"clock": clock} if clock else {}
    return PoolClient(config, max_attempts=max_attempts, backoff=0.01, max_backoff=2.0, **extra)


def statuses(sandbox: Sandbox) -> list[int | None]:
    return [received.status for received in sandbox.received]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- tokens ----------------------------------------------------------------------------


def test_one_token_serves_many_requests(sandbox):
    client = make_client(sandbox)
    for _ in range(5):
        assert client.redownload(TRACKS, REASON).complete
    assert sandbox.tokens_minted == 1
    assert statuses(sandbox) == [200] * 5


@pytest.mark.parametrize("skew", [-86400.0, 0.0, 86400.0])
def test_token_renewed_shortly_before_it_expires_whatever_the_clock_skew(skew):
    """The lifetime is the server's expires - server_time (60 s here), timed locally:
    renewed 12 s (a fifth of it) before the end, however far the server clock is off."""
    clock = FakeClock()
    with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET, token_lifetime=60,
                 clock_skew=skew) as server:
        client = make_client(server, clock=clock)
        client.redownload(TRACKS, REASON)
        clock.now += 47
        client.redownload(TRACKS, REASON)
        assert server.tokens_minted == 1
        clock.now += 2
        client.redownload(TRACKS, REASON)
        assert server.tokens_minted == 2
        assert statuses(server) == [200, 200, 200]


def test_expired_token_is_reminted_once_and_the_request_sent_again(sandbox):
    client = make_client(sandbox)
    client.redownload(TRACKS, REASON)
    sandbox.expire_tokens()
    attempts = []
    assert client.redownload(TRACKS, REASON, on_attempt=lambda: attempts.append(1)).complete
    assert statuses(sandbox) == [200, 401, 200]
    assert sandbox.tokens_minted == 2
    assert len(attempts) == 2


def test_a_fresh_token_refused_is_an_error_not_a_loop(sandbox):
    sandbox.fault(TOKEN_EXPIRED, TOKEN_EXPIRED)
    with pytest.raises(PoolError, match="freshly minted token"):
        make_client(sandbox).redownload(TRACKS, REASON)
    assert statuses(sandbox) == [401, 401]
    assert sandbox.tokens_minted == 2
    assert sandbox.requeued == {}


def test_expired_static_token_tells_the_user_to_configure_key_and_secret(sandbox):
    token = make_client(sandbox).tokens.current()
    sandbox.expire_tokens()
    client = make_client(sandbox, token=Secret(token))
    with pytest.raises(PoolError) as caught:
        client.redownload(TRACKS, REASON)
    message = str(caught.value)
    assert "api_key" in message and "api_secret" in message and "expire" in message
    assert token not in message
    assert statuses(sandbox) == [401]


def test_missing_credentials_is_a_setup_error(sandbox):
    with pytest.raises(PoolError, match="api_key and api_secret"):
        make_client(sandbox, token=None).redownload(TRACKS, REASON)
    assert sandbox.received == []


# --- what is never retried ---------------------------------------------------------------


def test_http_400_is_rejected_without_a_retry(sandbox):
    with pytest.raises(RejectedError, match="HTTP 400"):
        make_client(sandbox).redownload(TRACKS, "   ")
    assert statuses(sandbox) == [400]


# --- Retry-After and URLs (units) --------------------------------------------------------


def test_retry_after_in_seconds_and_as_http_date():
    now = 1445412450.0  # Wed, 21 Oct 2015 07:27:30 GMT
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0  # already past
    assert parse_retry_after("Thu, 22 Oct 2015 07:27:30 GMT", now=now) == 300.0  # capped
    assert parse_retry_after("86400", now=now) == 300.0
    for garbage in (None, "", "soon", "1.5", "-5", "٣"):
        assert parse_retry_after(garbage, now=now) is None


@pytest.mark.parametrize("url", [
    "https://api.promoonly.com", "http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:8080",
    "http://localhost:8080",
])
def test_https_and_loopback_http_are_accepted(url):
    check_base_url(url)


@pytest.mark.parametrize("url", [
    "http://api.promoonly.com", "http://10.0.0.5", "http://[2001:db8::1]", "ftp://api.promoonly.com",
    "https://", "api.promoonly.com",
])
def test_plain_http_refused_for_other_hosts(url):
    with pytest.raises(InsecureURL):
        check_base_url(url)
    with pytest.raises(InsecureURL):
        PoolClient(PoolConfig(base_url=url, userid=USERID, token=Secret("t" * 32)))


# --- where secrets come from ---------------------------------------------------------------


@pytest.fixture
def no_secret_env(monkeypatch):
    for name in ("POOLD_API_KEY", "POOLD_API_SECRET", "POOLD_TOKEN", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


def write_config(folder, pool_lines: str, mode: int):
    path = folder / "config.toml"
    path.write_text(f'[library]\nroot = "lib"\nmanifest = "m.json"\n\n[pool]\nuserid = {USERID}\n{pool_lines}\n')
    path.chmod(mode)
    return path


def readable_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "other users can read it" in r.getMessage()]


@pytest.mark.usefixtures("no_secret_env")
def test_warns_when_a_config_holding_a_secret_is_readable_by_others(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    secrets = f'api_key = "{API_KEY}"\napi_secret = "{API_SECRET}"'
    path = write_config(tmp_path, secrets, 0o644)
    load(path)
    [warning] = readable_warnings(caplog)
    assert f"chmod 600 {path}" in warning and API_SECRET not in warning

    caplog.clear()
    path.chmod(0o600)
    load(path)
    assert readable_warnings(caplog) == []


@pytest.mark.usefixtures("no_secret_env")
def test_warns_when_a_secret_file_is_readable_by_others(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    secret_file = tmp_path / "secret"
    secret_file.write_text(API_SECRET + "\n")
    secret_file.chmod(0o640)
    path = write_config(tmp_path, f'api_key_file = "{secret_file}"\napi_secret_file = "{secret_file}"', 0o600)
    load(path)
    assert readable_warnings(caplog) and all(str(secret_file) in w for w in readable_warnings(caplog))

    caplog.clear()
    secret_file.chmod(0o600)
    load(path)
    assert readable_warnings(caplog) == []


@pytest.mark.usefixtures("no_secret_env")
def test_secrets_from_systemd_credentials_mint_a_working_token(tmp_path, monkeypatch, sandbox, caplog):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api_key").write_text(API_KEY + "\n")
    (credentials / "api_secret").write_text(API_SECRET + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    path = write_config(tmp_path, f'base_url = "{sandbox.base_url}"', 0o644)  # holds no secret: no warning

    with caplog.at_level(logging.WARNING):
        pool = load(path).pool
    assert readable_warnings(caplog) == []
    assert pool.api_key.reveal() == API_KEY and pool.api_secret.reveal() == API_SECRET
    client = PoolClient(pool, backoff=0.01)
    assert client.redownload(TRACKS, REASON).complete
    assert sandbox.tokens_minted == 1
