"""The push gateway hook (``QR_OIDC_PUSH_WEBHOOK``, SPEC.md "Push login") and delivery under
trouble, on a provider of its own with a short delivery timeout: the gateway is told of every new
push request with an HMAC-SHA256 signature over the body, never a token or a code; a slow or
failing endpoint is retried with backoff and never delays the request that caused the notice;
a queue past its bound drops notices instead of growing; bad settings stop the start."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import requests
from receiver import Receiver

from helpers import Provider, run_cli, sign_in_phone

CIBA = "urn:openid:params:grant-type:ciba"
SECRET = "gateway-secret-0123456789"


@pytest.fixture(scope="module")
def gateway():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hooked(request, tmp_path_factory, gateway):
    server = Provider(tmp_path_factory.mktemp("hooked"), {
        "QR_OIDC_PUSH_WEBHOOK": gateway.url + "/push",
        "QR_OIDC_PUSH_WEBHOOK_SECRET": SECRET,
        "QR_OIDC_DELIVERY_TIMEOUT": "1",
        "QR_OIDC_DELIVERY_QUEUE_MAX": "3",
    }, backend=request.param)
    try:
        server.start()
        client = server.create_client("--name", "Hooked centre", "--grant-type", CIBA)
        phone_client = server.create_client(
            "--name", "Our app", "--public", "--first-party", "--redirect-uri",
            "http://127.0.0.1/callback", "--grant-type", "authorization_code",
            "--scope", "openid profile qr:approve")
        yield {"server": server, "client": client, "phone_client": phone_client}
    finally:
        server.stop()


def person(setup, name):
    server = setup["server"]
    user = server.create_user(name, name + "-password")
    phone = sign_in_phone(server, setup["phone_client"], name, name + "-password")
    return user, phone["access_token"]


def ask(setup, username, **params):
    client = setup["client"]
    return requests.post(setup["server"].url + "/backchannel/authenticate", timeout=30,
                         data={"scope": "openid", "login_hint": username, **params},
                         auth=(client["client_id"], client["client_secret"]))


def pushes_for(gateway, sub):
    return [r for r in gateway.received if json.loads(r["body"]).get("user") == sub]


def wait_pushes(gateway, sub, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pushes_for(gateway, sub)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{len(pushes_for(gateway, sub))} of {count} notices for {sub}")


def test_the_gateway_is_told_of_a_new_request_signed_and_without_secrets(hooked, gateway):
    backend = hooked["server"].backend
    user, _phone = person(hooked, f"dana-{backend}")
    answer = ask(hooked, user["username"], binding_message="Order 7")
    assert answer.status_code == 200, answer.text
    notice = wait_pushes(gateway, user["sub"], 1)[0]
    assert notice["path"] == "/push"
    body = notice["body"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(notice["headers"]["x-qr-oidc-signature"], expected)
    payload = json.loads(body)
    assert payload["event"] == "push_request" and payload["client"] == "Hooked centre"
    assert payload["expires_at"] - payload["created_at"] == 120
    assert len(payload["id"]) >= 16 and len(payload["request"]) >= 16
    secrets = [answer.json()["auth_req_id"]]
    assert not any(s in body.decode() for s in secrets)
    assert set(payload) == {"event", "id", "user", "request", "client", "created_at",
                            "expires_at"}  # nothing else: no token, no code, no message


def test_a_slow_gateway_is_retried_and_delays_nobody(hooked, gateway):
    backend = hooked["server"].backend
    user, _phone = person(hooked, f"eve-{backend}")
    gateway.slow_next(1, 6.0)  # far past the 1 s delivery timeout
    began = time.time()
    answer = ask(hooked, user["username"])
    assert answer.status_code == 200
    # the answer did not wait for the gateway: the slow attempt has not even finished
    assert not [n for n in pushes_for(gateway, user["sub"]) if n["at"] - began >= 5.9]
    notices = wait_pushes(gateway, user["sub"], 2, timeout=30)
    # the retry that got through, then the slow attempt (recorded when it finished, 6 s in,
    # long after the provider had given up on it): one notice, sent twice
    slow = [n for n in notices if n["at"] - began >= 5.9]
    delivered = [n for n in notices if n["at"] - began < 5.9]
    assert len(slow) == 1 and len(delivered) == 1, [(n["at"] - began, n["status"])
                                                    for n in notices]
    assert delivered[0]["status"] == 200 and delivered[0]["at"] - began >= 1.0
    assert json.loads(slow[0]["body"])["id"] == json.loads(delivered[0]["body"])["id"]


def test_a_failing_gateway_gets_backoff_between_attempts(hooked, gateway):
    backend = hooked["server"].backend
    user, _phone = person(hooked, f"fay-{backend}")
    gateway.fail_next(3)
    assert ask(hooked, user["username"]).status_code == 200
    notices = wait_pushes(gateway, user["sub"], 4, timeout=30)
    assert [n["status"] for n in notices] == [503, 503, 503, 200]
    gaps = [b["at"] - a["at"] for a, b in zip(notices, notices[1:], strict=False)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 3.9, gaps  # 1, 2, 4 s
    time.sleep(1.5)
    assert len(pushes_for(gateway, user["sub"])) == 4  # delivered once it got through


def test_the_queue_is_bounded(hooked, gateway):
    server = hooked["server"]
    backend = server.backend
    users = [person(hooked, f"gil{n}-{backend}")[0] for n in range(5)]
    gateway.fail_next(10_000)  # the gateway is down for good
    try:
        for user in users:
            assert ask(hooked, user["username"]).status_code == 200  # never refused for it
        waiting = server.db("SELECT count(*) FROM deliveries")[0][0]
        assert waiting <= 3  # DELIVERY_QUEUE_MAX
    finally:
        gateway.fail_next(0)
    for user in users[:1]:
        wait_pushes(gateway, user["sub"], 1, timeout=30)


def test_bad_webhook_settings_stop_the_start(tmp_path):
    for env, says in (
        ({"QR_OIDC_PUSH_WEBHOOK": "ftp://gateway.example/"}, "QR_OIDC_PUSH_WEBHOOK"),
        ({"QR_OIDC_PUSH_WEBHOOK": "https://gateway.example/push"},
         "QR_OIDC_PUSH_WEBHOOK_SECRET"),
        ({"QR_OIDC_PUSH_WEBHOOK": "https://gateway.example/push",
          "QR_OIDC_PUSH_WEBHOOK_SECRET": "short"}, "QR_OIDC_PUSH_WEBHOOK_SECRET"),
        ({"QR_OIDC_PUSH_TTL": "700"}, "QR_OIDC_PUSH_MAX_TTL"),
        ({"QR_OIDC_PUSH_MAX_OUTSTANDING": "0"}, "QR_OIDC_PUSH_MAX_OUTSTANDING"),
    ):
        result = run_cli(["serve", "--port", "1"], {
            **__import__("os").environ, "QR_OIDC_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
            **env}, fork=False, timeout=60)
        assert result.returncode != 0
        assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
