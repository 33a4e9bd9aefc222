"""The sandbox's download flow (queue, servers, media with Range, success), over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
import requests

from poold.sandbox import CORRUPTED, DROPPED, MEDIA_ERROR, NOT_FOUND, TRUNCATED_FILE, Sandbox, stalled

USERID = 1234
TRACK = 356111
MEDIA = os.urandom(300_000)


@pytest.fixture
def sandbox():
    with Sandbox(userid=USERID) as running:
        running.register_media(TRACK, MEDIA, "mp3", duration=215)
        yield running


def bearer(sandbox: Sandbox) -> dict[str, str]:
    token = requests.post(f"{sandbox.base_url}/user/authenticate", auth=("demo-key", "demo-secret"),
                          data={"userid": USERID}, timeout=5).json()["token"]
    return {"Authorization": "Bearer " + base64.b64encode(f"{USERID}:{token}".encode()).decode()}


def requeue(sandbox: Sandbox, auth: dict, trackid: int = TRACK) -> None:
    answer = requests.post(f"{sandbox.base_url}/download/redownload_request", headers=auth,
                           data={"trackid_list": str(trackid), "reason": "corrupt"}, timeout=5)
    assert answer.json()["result"] == "success"


def queue(sandbox: Sandbox, auth: dict, trackid: int = TRACK) -> requests.Response:
    return requests.get(f"{sandbox.base_url}/download/queue/{trackid}", headers=auth, timeout=5)


def media(host: str, token: str, auth: dict, **headers) -> requests.Response:
    return requests.get(f"http://{host}/pool/v5/download/{token}", headers={**auth, **headers}, timeout=5)


def test_nothing_can_be_queued_before_a_redownload_request_requeued_it(sandbox):
    auth = bearer(sandbox)
    assert queue(sandbox, auth).status_code == 404
    assert requests.get(f"{sandbox.base_url}/download/server/{TRACK}", headers=auth, timeout=5).status_code == 404


def test_the_whole_flow_answers_as_documented(sandbox):
    auth = bearer(sandbox)
    requeue(sandbox, auth)
    answer = queue(sandbox, auth).json()
    assert answer["trackid"] == TRACK and answer["file_type"] == "mp3" and answer["duration"] == 215
    assert len(answer["dl_token"]) == 32 and int(answer["dl_token"], 16) >= 0
    assert answer["servers"] == sandbox.media_hosts and len(answer["servers"]) == 2
    servers = requests.get(f"{sandbox.base_url}/download/server/{TRACK}", headers=auth, timeout=5).json()
    assert [s["host"] for s in servers] == answer["servers"] and all(isinstance(s["id"], int) for s in servers)

    body = media(answer["servers"][0], answer["dl_token"], auth)
    assert body.status_code == 200 and body.content == MEDIA
    success = requests.post(f"{sandbox.base_url}/download/success", headers=auth, timeout=5,
                            data={"trackid": TRACK, "serverid": servers[0]["id"], "dl_token": answer["dl_token"]})
    assert success.json()["result"] == "success"
    assert [(s.trackid, s.serverid, s.dl_token) for s in sandbox.successes] == [
        (TRACK, servers[0]["id"], answer["dl_token"])]
    assert queue(sandbox, auth).status_code == 404  # downloaded: out of the queue until requeued again


def test_media_needs_the_bearer_header_and_a_live_dl_token(sandbox):
    auth = bearer(sandbox)
    requeue(sandbox, auth)
    answer = queue(sandbox, auth).json()
    host = answer["servers"][0]
    assert media(host, answer["dl_token"], {}).status_code == 401
    assert media(host, "0" * 32, auth).status_code == 404
    sandbox.expire_dl_tokens()
    assert media(host, answer["dl_token"], auth).status_code == 403
    assert media(host, queue(sandbox, auth).json()["dl_token"], auth).status_code == 200  # a fresh token works


def test_range_answers_206_with_content_range(sandbox):
    auth = bearer(sandbox)
    requeue(sandbox, auth)
    answer = queue(sandbox, auth).json()
    part = media(answer["servers"][1], answer["dl_token"], auth, Range="bytes=1000-")
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-{len(MEDIA) - 1}/{len(MEDIA)}"
    assert part.content == MEDIA[1000:]
    assert media(answer["servers"][1], answer["dl_token"], auth, Range=f"bytes={len(MEDIA)}-").status_code == 416
    assert sandbox.media_received[0].range_start == 1000


def test_media_faults_one_per_download_in_order(sandbox):
    auth = bearer(sandbox)
    requeue(sandbox, auth)
    answer = queue(sandbox, auth).json()
    host, token = answer["servers"][0], answer["dl_token"]
    sandbox.media_fault(TRUNCATED_FILE, CORRUPTED, NOT_FOUND, MEDIA_ERROR)

    short = media(host, token, auth)
    assert short.status_code == 200 and short.content == MEDIA[: len(MEDIA) * 6 // 10]
    corrupted = media(host, token, auth)
    assert len(corrupted.content) == len(MEDIA) and corrupted.content != MEDIA
    assert hashlib.sha256(corrupted.content).digest() != hashlib.sha256(MEDIA).digest()
    assert media(host, token, auth).status_code == 404
    assert media(host, token, auth).status_code == 500
    assert media(host, token, auth).content == MEDIA  # faults used up
    assert [r.fault for r in sandbox.media_received] == ["truncated_file", "corrupted", "not_found", "media_error", None]


def test_dropped_and_stalled_bodies_break_off_halfway(sandbox):
    auth = bearer(sandbox)
    requeue(sandbox, auth)
    answer = queue(sandbox, auth).json()
    host, token = answer["servers"][0], answer["dl_token"]
    sandbox.media_fault(DROPPED, stalled(3))
    for read_timeout in (5, 0.5):
        received = bytearray()
        with pytest.raises(requests.RequestException):
            with requests.get(f"http://{host}/pool/v5/download/{token}", headers=auth, stream=True,
                              timeout=(5, read_timeout)) as response:
                assert int(response.headers["Content-Length"]) == len(MEDIA)
                for chunk in response.iter_content(8192):
                    received += chunk
        assert 0 < len(received) < len(MEDIA) and bytes(received) == MEDIA[: len(received)]


def test_a_dead_first_server_refuses_connections(sandbox):
    sandbox.dead_first_server = True
    auth = bearer(sandbox)
    requeue(sandbox, auth)
    answer = queue(sandbox, auth).json()
    assert len(answer["servers"]) == 3
    with pytest.raises(requests.ConnectionError):
        media(answer["servers"][0], answer["dl_token"], auth)
    assert media(answer["servers"][1], answer["dl_token"], auth).content == MEDIA


def test_media_served_from_a_file_and_throttled(sandbox, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(MEDIA * 2)
    sandbox.register_media(TRACK + 1, source, "wav")
    sandbox.media_rate = 2_000_000
    auth = bearer(sandbox)
    requeue(sandbox, auth, TRACK + 1)
    answer = queue(sandbox, auth, TRACK + 1).json()
    assert answer["file_type"] == "wav"
    assert media(answer["servers"][0], answer["dl_token"], auth).content == MEDIA * 2


def test_success_needs_a_matching_token_and_server(sandbox):
    auth = bearer(sandbox)
    requeue(sandbox, auth)
    token = queue(sandbox, auth).json()["dl_token"]
    url = f"{sandbox.base_url}/download/success"
    assert requests.post(url, headers=auth, data={"trackid": TRACK + 5, "serverid": 7, "dl_token": token},
                         timeout=5).status_code == 400
    assert requests.post(url, headers=auth, data={"trackid": TRACK, "serverid": 99, "dl_token": token},
                         timeout=5).status_code == 400
    assert requests.get(url, headers=auth, timeout=5).status_code == 405
    assert sandbox.successes == []
