"""The POOL sandbox, exercised over real HTTP the way poold will talk to it."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from poold.sandbox import (
    NOT_JSON,
    RESET_AFTER,
    RESET_BEFORE,
    RESULT_ERROR,
    SERVER_ERROR,
    TOKEN_EXPIRED,
    Sandbox,
    partial,
    rate_limited,
    slow,
    unavailable,
)

USERID = 1234
REASON = "file corrupt on disk"


@pytest.fixture
def sandbox():
    with Sandbox(userid=USERID) as running:
        yield running


def mint(sandbox: Sandbox, key="demo-key", secret="demo-secret", userid=USERID) -> requests.Response:
    return requests.post(
        f"{sandbox.base_url}/user/authenticate", auth=(key, secret), data={"userid": userid}, timeout=5
    )


def bearer(token: str, userid=USERID) -> dict[str, str]:
    return {"Authorization": "Bearer " + base64.b64encode(f"{userid}:{token}".encode()).decode()}


def redownload(sandbox: Sandbox, token: str, trackid_list="356111,356115", reason=REASON, **kwargs):
    """POST a redownload request the way poold must; kwargs override the requests call."""
    call = {
        "headers": bearer(token),
        "data": {"trackid_list": trackid_list, "reason": reason},
        "timeout": 5,
    }
    call.update(kwargs)
    return requests.post(f"{sandbox.base_url}/download/redownload_request", **call)


def fresh_token(sandbox: Sandbox, userid=USERID) -> str:
    return mint(sandbox, userid=userid).json()["token"]


# --- authentication -------------------------------------------------------------------


def test_authenticate_mints_a_token_for_the_documented_lifetime(sandbox):
    answer = mint(sandbox)
    body = answer.json()
    assert answer.status_code == 200
    assert body["code"] == 200 and body["userid"] == USERID
    assert len(body["token"]) == 32 and int(body["token"], 16) >= 0
    assert body["expires"] - body["server_time"] == 300
    assert abs(body["server_time"] - time.time()) < 2
    assert sandbox.tokens_minted == 1


def test_server_clock_skew_shows_in_server_time_not_in_token_life():
    with Sandbox(clock_skew=3600, token_lifetime=60) as skewed:
        body = mint(skewed).json()
        assert abs(body["server_time"] - (time.time() + 3600)) < 2
        assert body["expires"] - body["server_time"] == 60
        assert redownload(skewed, body["token"]).status_code == 200


@pytest.mark.parametrize(
    "key, secret, userid",
    [("wrong", "demo-secret", USERID), ("demo-key", "wrong", USERID), ("demo-key", "demo-secret", 9999)],
)
def test_authenticate_refuses_wrong_credentials(sandbox, key, secret, userid):
    answer = mint(sandbox, key, secret, userid)
    assert answer.status_code == 401
    assert "message" in answer.json()
    assert sandbox.tokens_minted == 0


def test_authenticate_is_post_only(sandbox):
    url = f"{sandbox.base_url}/user/authenticate"
    answer = requests.get(url, auth=("demo-key", "demo-secret"), timeout=5)
    assert answer.status_code == 405


def test_token_validate(sandbox):
    token = fresh_token(sandbox)

    def validate(userid, candidate):
        url = f"{sandbox.base_url}/user/token/validate"
        return requests.post(url, data={"userid": userid, "token": candidate}, timeout=5).json()["token"]

    assert validate(USERID, token) == "valid"
    assert validate(USERID, "0" * 32) == "invalid"
    assert validate(9999, token) == "invalid"
    sandbox.expire_tokens()
    assert validate(USERID, token) == "invalid"


def test_token_expires_after_its_lifetime():
    with Sandbox(token_lifetime=1) as short_lived:
        token = fresh_token(short_lived)
        assert redownload(short_lived, token).status_code == 200
        time.sleep(1.05)
        assert redownload(short_lived, token).status_code == 401


def test_expire_tokens_forces_a_refresh(sandbox):
    token = fresh_token(sandbox)
    sandbox.expire_tokens()
    assert redownload(sandbox, token).status_code == 401
    assert redownload(sandbox, fresh_token(sandbox)).status_code == 200


# --- the redownload request -----------------------------------------------------------


def test_happy_path_requeues_and_records_the_wire_format(sandbox):
    token = fresh_token(sandbox)
    answer = redownload(sandbox, token)

    assert answer.status_code == 200
    assert answer.json() == {"result": "success", "tracks_requeued": 2}
    assert sandbox.requeued == {356111: 1, 356115: 1}
    [record] = sandbox.received
    assert record.method == "POST"
    assert record.path == "/download/redownload_request"
    assert record.headers["Authorization"] == bearer(token)["Authorization"]
    assert record.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert record.form == {"trackid_list": "356111,356115", "reason": REASON}
    assert (record.status, record.body) == (200, {"result": "success", "tracks_requeued": 2})
    assert abs(record.time - time.time()) < 2


def test_a_track_sent_twice_in_one_request_is_requeued_once(sandbox):
    answer = redownload(sandbox, fresh_token(sandbox), trackid_list="7,7,8")
    assert answer.json()["tracks_requeued"] == 2
    assert sandbox.requeued == {7: 1, 8: 1}


def test_only_previously_downloaded_tracks_are_requeued():
    with Sandbox(known_tracks=[1, 2]) as sandbox:
        token = fresh_token(sandbox)
        answer = redownload(sandbox, token, trackid_list="1,2,3")
        assert answer.json() == {"result": "success", "tracks_requeued": 2}
        none_known = redownload(sandbox, token, trackid_list="3,4")
        assert none_known.status_code == 200
        assert none_known.json()["result"] == "error"
        assert sandbox.requeued == {1: 1, 2: 1}


@pytest.mark.parametrize("how, status", [("result_error", 200), ("http_400", 400)])
def test_a_batch_with_an_unknown_id_can_be_refused_as_a_whole(how, status):
    """As strict services do: one unknown id and nothing in the batch is requeued."""
    with Sandbox(known_tracks=[1, 2]) as sandbox:
        sandbox.refuse_unknown_ids(how)
        token = fresh_token(sandbox)
        refused = redownload(sandbox, token, trackid_list="1,3,2,4")
        assert refused.status_code == status
        assert refused.json()["message"] == "tracks not downloaded by this account: 3,4"
        if status == 200:
            assert refused.json()["result"] == "error"
        assert sandbox.requeued == {}
        assert redownload(sandbox, token, trackid_list="1,2").json() == {"result": "success", "tracks_requeued": 2}
        assert sandbox.requeued == {1: 1, 2: 1}


GOOD_FORM = {"trackid_list": "1,2", "reason": REASON}


def bearer_of(text: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + base64.b64encode(text.encode()).decode()}


@pytest.mark.parametrize(
    "status, request_overrides",
    [
        pytest.param(415, {"data": None, "json": GOOD_FORM}, id="json-body"),
        pytest.param(401, {"headers": {}}, id="no-authorization"),
        pytest.param(401, {"headers": {"Authorization": "Bearer not*base64"}}, id="malformed-bearer"),
        pytest.param(401, {"headers": bearer_of("no-colon")}, id="bearer-without-userid"),
        pytest.param(401, {"headers": bearer("0" * 32)}, id="unknown-token"),
        pytest.param(401, {"auth": ("demo-key", "demo-secret"), "headers": {}}, id="basic-auth"),
        pytest.param(400, {"params": {"token": "x"}}, id="token-in-url"),
        pytest.param(400, {"params": {"userid": USERID}}, id="userid-in-url"),
        pytest.param(400, {"data": {"reason": REASON}}, id="no-trackid_list"),
        pytest.param(400, {"data": {"trackid_list": "", "reason": REASON}}, id="empty-trackid_list"),
        pytest.param(400, {"data": {"trackid_list": "1, 2", "reason": REASON}}, id="spaces"),
        pytest.param(400, {"data": {"trackid_list": "1,,2", "reason": REASON}}, id="empty-item"),
        pytest.param(400, {"data": {"trackid_list": "1,2,", "reason": REASON}}, id="trailing-comma"),
        pytest.param(400, {"data": {"trackid_list": "35611a", "reason": REASON}}, id="not-integer"),
        pytest.param(400, {"data": {"trackid_list": "1,2"}}, id="no-reason"),
        pytest.param(400, {"data": {"trackid_list": "1,2", "reason": "  "}}, id="blank-reason"),
    ],
)
def test_strictness(sandbox, status, request_overrides):
    answer = redownload(sandbox, fresh_token(sandbox), **request_overrides)
    assert answer.status_code == status
    assert "message" in answer.json()
    assert not sandbox.requeued
    assert [record.status for record in sandbox.received] == [status]


def test_token_of_another_userid_is_refused():
    with Sandbox(userid=1) as one, Sandbox(userid=2) as two:
        token_of_one = fresh_token(one, userid=1)
        answer = redownload(two, token_of_one, headers=bearer(token_of_one, userid=2))
        assert answer.status_code == 401
        assert redownload(one, token_of_one, headers=bearer(token_of_one, userid=2)).status_code == 401


def test_the_token_itself_is_refused_anywhere_in_the_url(sandbox):
    token = fresh_token(sandbox)
    answer = redownload(sandbox, token, params={"t": token})
    assert answer.status_code == 400


def test_get_is_refused_with_405_and_recorded(sandbox):
    answer = requests.get(
        f"{sandbox.base_url}/download/redownload_request",
        headers=bearer(fresh_token(sandbox)),
        params={"trackid_list": "356111", "reason": REASON},
        timeout=5,
    )
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert sandbox.received[0].method == "GET"
    assert not sandbox.requeued


def test_unknown_paths_are_404(sandbox):
    assert requests.post(f"{sandbox.base_url}/download/history/1", timeout=5).status_code == 404
    assert requests.get(f"{sandbox.base_url}/", timeout=5).status_code == 404


def test_concurrent_requests_are_all_counted(sandbox):
    token = fresh_token(sandbox)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: redownload(sandbox, token, trackid_list=str(i % 4)), range(40)))
    assert all(answer.status_code == 200 for answer in answers)
    assert sandbox.requeued == {0: 10, 1: 10, 2: 10, 3: 10}
    assert len(sandbox.received) == 40


# --- faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, status, retry_after",
    [
        (SERVER_ERROR, 500, None),
        (unavailable(7), 503, "7"),
        (rate_limited(2), 429, "2"),
        (TOKEN_EXPIRED, 401, None),
    ],
)
def test_error_faults_answer_once_and_requeue_nothing(sandbox, fault, status, retry_after):
    token = fresh_token(sandbox)
    sandbox.fault(fault)
    answer = redownload(sandbox, token)
    assert answer.status_code == status
    assert answer.headers.get("Retry-After") == retry_after
    assert not sandbox.requeued
    assert redownload(sandbox, fresh_token(sandbox)).status_code == 200


def test_token_expired_fault_really_expires_the_token(sandbox):
    token = fresh_token(sandbox)
    sandbox.fault(TOKEN_EXPIRED)
    assert redownload(sandbox, token).status_code == 401
    assert redownload(sandbox, token).status_code == 401


def test_not_json_fault(sandbox):
    sandbox.fault(NOT_JSON)
    answer = redownload(sandbox, fresh_token(sandbox))
    assert answer.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        answer.json()
    assert not sandbox.requeued
    assert isinstance(sandbox.received[0].body, str)


def test_result_error_fault(sandbox):
    sandbox.fault(RESULT_ERROR)
    answer = redownload(sandbox, fresh_token(sandbox))
    assert answer.status_code == 200
    assert answer.json()["result"] == "error"
    assert not sandbox.requeued


def test_partial_fault_requeues_fewer_than_sent(sandbox):
    sandbox.fault(partial(1))
    answer = redownload(sandbox, fresh_token(sandbox), trackid_list="10,11,12")
    assert answer.json() == {"result": "success", "tracks_requeued": 1}
    assert sandbox.requeued == {10: 1}


def test_slow_fault_answers_late_but_normally(sandbox):
    sandbox.fault(slow(0.3))
    started = time.monotonic()
    answer = redownload(sandbox, fresh_token(sandbox))
    assert time.monotonic() - started >= 0.3
    assert answer.json() == {"result": "success", "tracks_requeued": 2}


def test_slow_fault_processes_even_when_the_client_gives_up(sandbox):
    token = fresh_token(sandbox)
    sandbox.fault(slow(1))
    with pytest.raises(requests.ReadTimeout):
        redownload(sandbox, token, timeout=0.2)
    assert sandbox.requeued == {356111: 1, 356115: 1}
    assert sandbox.received[0].status == 200


@pytest.mark.parametrize("fault, processed", [(RESET_BEFORE, False), (RESET_AFTER, True)])
def test_reset_faults_drop_the_connection(sandbox, fault, processed):
    token = fresh_token(sandbox)
    sandbox.fault(fault)
    with pytest.raises(requests.ConnectionError):
        redownload(sandbox, token)
    assert bool(sandbox.requeued) is processed
    [record] = sandbox.received
    assert (record.status, record.body) == (None, None)


def test_faults_apply_one_per_request_in_order(sandbox):
    token = fresh_token(sandbox)
    sandbox.fault(SERVER_ERROR, unavailable(1), partial(0))
    statuses = [redownload(sandbox, token).status_code for _ in range(4)]
    assert statuses == [500, 503, 200, 200]
    assert sandbox.received[2].body["result"] == "error"
    assert sandbox.requeued == {356111: 1, 356115: 1}


def test_an_invalid_request_gets_its_honest_error_and_leaves_the_fault_queued(sandbox):
    token = fresh_token(sandbox)
    sandbox.fault(SERVER_ERROR)
    assert redownload(sandbox, token, trackid_list="1, 2").status_code == 400
    assert redownload(sandbox, token).status_code == 500
