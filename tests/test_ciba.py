"""Push login without a QR (OpenID CIBA Core 1.0, SPEC.md "Push login"), against a real server on
SQLite and on PostgreSQL: the backchannel authentication request and every CIBA §13 error, the
phone's inbox and its long poll, the CIBA grant through the token core (pending, slow_down,
expiry, exactly once, ``amr: ["push"]``), the cap of outstanding requests per user, and ping
mode with a real relying party's notification endpoint on loopback (retries when it is down or
slow; nothing lost, nothing issued twice). The push gateway webhook is test_push_webhook.py's."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from receiver import Receiver

from helpers import Provider, free_port, sign_in_phone

CIBA = "urn:openid:params:grant-type:ciba"
QR_GRANT = "urn:qr-oidc:params:oauth:grant-type:qr-ticket"


# -- helpers -----------------------------------------------------------------------------------
def bc(provider, client, **params):
    data = {"scope": "openid profile", **params}
    return requests.post(provider.url + "/backchannel/authenticate", data=data,
                         auth=(client["client_id"], client["client_secret"]), timeout=30)


def started(provider, client, **params) -> dict:
    response = bc(provider, client, **params)
    assert response.status_code == 200, response.text
    return response.json()


def token(provider, client, auth_req_id, grant=CIBA, name="auth_req_id"):
    return requests.post(provider.url + "/token", data={"grant_type": grant, name: auth_req_id},
                         auth=(client["client_id"], client["client_secret"]), timeout=30)


def inbox(provider, phone_token, **body):
    return requests.post(provider.url + "/qr/inbox", data=body,
                         headers={"Authorization": f"Bearer {phone_token}"}, timeout=60)


def entry_for(provider, phone_token, binding_message) -> dict:
    answer = inbox(provider, phone_token)
    assert answer.status_code == 200, answer.text
    found = [e for e in answer.json()["requests"] if e["binding_message"] == binding_message]
    assert len(found) == 1, answer.json()
    return found[0]


_people = iter(range(10_000))


def person(provider, phone_client):
    """A user of their own (the outstanding-request cap is per user) and their phone's token."""
    name = f"push{next(_people)}x{int(time.time() * 1000) % 100000}"
    user = provider.create_user(name, name + "-password", name=name.title(),
                                email=f"{name}@Example.org")
    phone = sign_in_phone(provider, phone_client, name, name + "-password")["access_token"]
    return user, phone


@pytest.fixture(scope="module")
def ciba_client(provider, _shared):
    return _shared.once(provider, "ciba_client", lambda: provider.create_client(
        "--name", "Call centre", "--grant-type", CIBA, "--grant-type", "refresh_token",
        "--scope", "openid profile email offline_access"))


@pytest.fixture(scope="module")
def other_ciba_client(provider, _shared):
    return _shared.once(provider, "other_ciba_client", lambda: provider.create_client(
        "--name", "Other centre", "--grant-type", CIBA))


@pytest.fixture(scope="module")
def dual_client(provider, _shared):
    """A relying party that may use both the QR grant and push login."""
    return _shared.once(provider, "dual_client", lambda: provider.create_client(
        "--name", "Both ways", "--grant-type", CIBA, "--grant-type", QR_GRANT))


@pytest.fixture(scope="module")
def nm_ciba_client(provider, _shared):
    return _shared.once(provider, "nm_ciba_client", lambda: provider.create_client(
        "--name", "Bank by phone", "--grant-type", CIBA, "--number-matching"))


@pytest.fixture
def carol(provider, phone_client):
    return person(provider, phone_client)


# -- discovery and registration ------------------------------------------------------------------
def test_discovery_names_push_login(provider):
    meta = requests.get(provider.url + "/.well-known/openid-configuration", timeout=30).json()
    assert meta["backchannel_authentication_endpoint"] == provider.url + "/backchannel/authenticate"
    assert meta["qr_inbox_endpoint"] == provider.url + "/qr/inbox"
    assert meta["backchannel_token_delivery_modes_supported"] == ["poll", "ping"]
    assert meta["backchannel_user_code_parameter_supported"] is False
    assert CIBA in meta["grant_types_supported"]


def test_clients_create_registers_delivery_modes_and_refuses_what_cannot_work(provider):
    poll = provider.create_client("--name", "Poller", "--grant-type", CIBA)
    assert poll["backchannel_token_delivery_mode"] == "poll"
    assert poll["grant_types"] == [CIBA]
    ping = provider.create_client(
        "--name", "Pinger", "--grant-type", CIBA, "--backchannel-token-delivery-mode", "ping",
        "--backchannel-client-notification-endpoint", "https://rp.example/ciba")
    assert ping["backchannel_token_delivery_mode"] == "ping"
    assert ping["backchannel_client_notification_endpoint"] == "https://rp.example/ciba"
    plain = provider.create_client("--name", "Plain")
    assert CIBA not in plain["grant_types"]  # never by default
    assert "backchannel_token_delivery_mode" not in plain
    for args in (
        ["--public", "--grant-type", CIBA],
        ["--grant-type", CIBA, "--backchannel-token-delivery-mode", "ping"],
        ["--grant-type", CIBA, "--backchannel-client-notification-endpoint", "https://a.example/"],
        ["--backchannel-token-delivery-mode", "poll"],
        ["--grant-type", CIBA, "--backchannel-token-delivery-mode", "ping",
         "--backchannel-client-notification-endpoint", "http://rp.example/ciba"],
        ["--grant-type", CIBA, "--backchannel-token-delivery-mode", "ping",
         "--backchannel-client-notification-endpoint", "https://rp.example/ciba#x"],
    ):
        result = provider.cli("clients", "create", "--name", "Bad", *args, "--json", check=False)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr and result.stdout == ""


# -- poll mode, start to end ---------------------------------------------------------------------
def test_poll_mode_push_login_from_request_to_tokens_once(provider, ciba_client, carol):
    user, phone = carol
    started_at = time.time()
    request = started(provider, ciba_client, login_hint=user["username"],
                      binding_message="Call #4711", scope="openid profile email")
    assert set(request) == {"auth_req_id", "expires_in", "interval"}
    assert request["expires_in"] == 120 and request["interval"] == 2
    assert len(request["auth_req_id"]) >= 22
    first = token(provider, ciba_client, request["auth_req_id"])
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    assert first.headers["Cache-Control"] == "no-store"

    entry = entry_for(provider, phone, "Call #4711")
    assert entry["kind"] == "push" and entry["status"] == "scanned"
    assert entry["client"]["name"] == "Call centre"
    assert entry["scopes"] == ["openid", "profile", "email"]
    assert started_at - 1 <= entry["created_at"] <= entry["expires_at"] - 119
    assert entry["requester"]["ip"] == "127.0.0.1"
    shown = json.dumps(entry)
    assert "auth_req_id" not in shown and request["auth_req_id"] not in shown
    assert "binding_choices" not in entry  # no number matching for this client

    approved = provider.phone("approve", phone, scan_code=entry["scan_code"])
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert inbox(provider, phone).json()["requests"] == []  # decided: out of the inbox

    time.sleep(2.1)
    tokens = token(provider, ciba_client, request["auth_req_id"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "openid profile email"
    keys = jwt.PyJWKClient(provider.url + "/jwks.json")
    claims = jwt.decode(body["id_token"], keys.get_signing_key_from_jwt(body["id_token"]).key,
                        algorithms=["RS256"], audience=ciba_client["client_id"],
                        issuer=provider.url)
    assert claims["sub"] == user["sub"] and claims["amr"] == ["push"]
    assert claims["email"] == user["email"]
    assert abs(claims["auth_time"] - time.time()) < 60
    userinfo = requests.get(provider.url + "/userinfo", timeout=30,
                            headers={"Authorization": f"Bearer {body['access_token']}"})
    assert userinfo.status_code == 200 and userinfo.json()["sub"] == user["sub"]
    again = token(provider, ciba_client, request["auth_req_id"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert provider.db("SELECT amr FROM tokens WHERE grant_type = ? AND user_id = ("
                       "SELECT id FROM users WHERE sub = ?)", CIBA, user["sub"]) == [("push",)]


def test_concurrent_polls_of_an_approved_push_request_issue_tokens_once(provider, ciba_client,
                                                                      carol):
    user, phone = carol
    request = started(provider, ciba_client, login_hint=user["username"], binding_message="race")
    entry = entry_for(provider, phone, "race")
    assert provider.phone("approve", phone, scan_code=entry["scan_code"]).status_code == 200
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: token(provider, ciba_client, request["auth_req_id"]),
                                range(12)))
    assert [a.status_code for a in answers].count(200) == 1
    assert {a.json()["error"] for a in answers if a.status_code != 200} <= {
        "invalid_grant", "slow_down"}


def test_denied_push_request_answers_access_denied(provider, ciba_client, carol):
    user, phone = carol
    request = started(provider, ciba_client, login_hint=user["email"].upper(),
                      binding_message="deny me")
    entry = entry_for(provider, phone, "deny me")  # found by email, case aside
    assert provider.phone("deny", phone, scan_code=entry["scan_code"]).status_code == 200
    time.sleep(0.2)
    denied = token(provider, ciba_client, request["auth_req_id"])
    assert denied.status_code == 400 and denied.json()["error"] == "access_denied"


def test_expired_push_request_answers_expired_token_and_leaves_the_inbox(provider, ciba_client,
                                                                          carol):
    user, phone = carol
    request = started(provider, ciba_client, login_hint=user["username"], requested_expiry="1",
                      binding_message="short")
    assert request["expires_in"] == 1
    entry = entry_for(provider, phone, "short")
    time.sleep(1.3)
    expired = token(provider, ciba_client, request["auth_req_id"])
    assert expired.status_code == 400 and expired.json()["error"] == "expired_token"
    assert inbox(provider, phone).json()["requests"] == []
    late = provider.phone("approve", phone, scan_code=entry["scan_code"])
    assert late.status_code == 410 and late.json()["error"] == "expired"


def test_requested_expiry_is_capped_and_polling_too_fast_slows_down(provider, ciba_client, carol):
    user, _phone = carol
    request = started(provider, ciba_client, login_hint=user["username"],
                      requested_expiry="100000")
    assert request["expires_in"] == 600  # PUSH_MAX_TTL
    assert token(provider, ciba_client, request["auth_req_id"]).json()["error"] == \
        "authorization_pending"
    fast = token(provider, ciba_client, request["auth_req_id"])
    assert fast.json()["error"] == "slow_down"


def test_a_push_request_is_redeemed_only_by_the_ciba_grant_and_by_its_client(
        provider, dual_client, other_ciba_client, alice_phone, carol):
    user, phone = carol
    request = started(provider, dual_client, login_hint=user["username"], binding_message="own")
    entry = entry_for(provider, phone, "own")
    assert provider.phone("approve", phone, scan_code=entry["scan_code"]).status_code == 200
    for answer in (token(provider, dual_client, request["auth_req_id"], QR_GRANT, "ticket"),
                   token(provider, other_ciba_client, request["auth_req_id"])):
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    # and a QR ticket is not the CIBA grant's either
    ticket = provider.ticket(dual_client)
    assert provider.phone("scan", alice_phone,
                          scan_code=provider.scan_code(ticket)).status_code == 200
    assert provider.phone("approve", alice_phone,
                          scan_code=provider.scan_code(ticket)).status_code == 200
    crossed = token(provider, dual_client, ticket["ticket"])
    assert crossed.status_code == 400 and crossed.json()["error"] == "invalid_grant"
    time.sleep(2.1)
    assert token(provider, dual_client, request["auth_req_id"]).status_code == 200
    assert token(provider, dual_client, ticket["ticket"], QR_GRANT, "ticket").status_code == 200


def test_another_user_cannot_see_or_decide_a_push_request(provider, ciba_client, carol,
                                                           bob_phone):
    user, phone = carol
    started(provider, ciba_client, login_hint=user["username"], binding_message="mine")
    entry = entry_for(provider, phone, "mine")
    assert all(e["binding_message"] != "mine"
               for e in inbox(provider, bob_phone).json()["requests"])
    for action in ("scan", "approve", "deny"):
        answer = provider.phone(action, bob_phone, scan_code=entry["scan_code"])
        assert answer.status_code in (403, 409), (action, answer.text)
    assert entry_for(provider, phone, "mine")["status"] == "scanned"


def test_number_matching_push_request(provider, nm_ciba_client, carol):
    user, phone = carol
    request = started(provider, nm_ciba_client, login_hint=user["username"],
                      binding_message="match")
    code = request["binding_code"]
    entry = entry_for(provider, phone, "match")
    assert code in entry["binding_choices"] and len(entry["binding_choices"]) == 3
    wrong = next(c for c in entry["binding_choices"] if c != code)
    mismatch = provider.phone("approve", phone, scan_code=entry["scan_code"], binding_code=wrong)
    assert mismatch.status_code == 403 and mismatch.json()["error"] == "binding_mismatch"
    time.sleep(0.1)
    assert token(provider, nm_ciba_client, request["auth_req_id"]).json()["error"] == \
        "access_denied"


# -- hints -------------------------------------------------------------------------------------
def test_id_token_hint_names_the_user_of_an_id_token_issued_to_the_client(provider, ciba_client,
                                                                           other_ciba_client,
                                                                           carol):
    user, phone = carol
    request = started(provider, ciba_client, login_hint=user["username"], binding_message="one")
    entry = entry_for(provider, phone, "one")
    assert provider.phone("approve", phone, scan_code=entry["scan_code"]).status_code == 200
    id_token = token(provider, ciba_client, request["auth_req_id"]).json()["id_token"]
    again = started(provider, ciba_client, id_token_hint=id_token, binding_message="two")
    assert entry_for(provider, phone, "two")["client"]["name"] == "Call centre"
    assert again["auth_req_id"] != request["auth_req_id"]
    other = bc(provider, other_ciba_client, id_token_hint=id_token)
    assert other.status_code == 400 and other.json()["error"] == "invalid_request"
    forged = id_token.rsplit(".", 1)[0] + ".AAAA"
    assert bc(provider, ciba_client, id_token_hint=forged).json()["error"] == "invalid_request"


# -- CIBA §13 errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "status", "error"), [
    ({"login_hint": "nobody-at-all"}, 400, "unknown_user_id"),
    ({"login_hint": "x" * 400}, 400, "unknown_user_id"),
    ({}, 400, "invalid_request"),
    ({"login_hint": "{user}", "id_token_hint": "a.b.c"}, 400, "invalid_request"),
    ({"id_token_hint": "not a jwt"}, 400, "invalid_request"),
    ({"login_hint": "{user}", "login_hint_token": "x"}, 400, "invalid_request"),
    ({"login_hint": "{user}", "binding_message": "x" * 65}, 400, "invalid_binding_message"),
    ({"login_hint": "{user}", "binding_message": "line\nbreak"}, 400, "invalid_binding_message"),
    ({"login_hint": "{user}", "binding_message": "bidi \u202e txt"}, 400,
     "invalid_binding_message"),
    ({"login_hint": "{user}", "binding_message": "   "}, 400, "invalid_binding_message"),
    ({"login_hint": "{user}", "requested_expiry": "0"}, 400, "invalid_request"),
    ({"login_hint": "{user}", "requested_expiry": "-5"}, 400, "invalid_request"),
    ({"login_hint": "{user}", "requested_expiry": "1e3"}, 400, "invalid_request"),
    ({"login_hint": "{user}", "requested_expiry": "\u0661\u0662"}, 400, "invalid_request"),
    ({"login_hint": "{user}", "scope": "profile"}, 400, "invalid_request"),
    ({"login_hint": "{user}", "scope": "openid qr:approve"}, 400, "invalid_scope"),
    ({"login_hint": "{user}", "request": "eyJ.x.y"}, 400, "invalid_request"),
])
def test_backchannel_errors(provider, ciba_client, carol, params, status, error):
    user, phone = carol
    params = {k: (v.replace("{user}", user["username"]) if isinstance(v, str) else v)
              for k, v in params.items()}
    answer = bc(provider, ciba_client, **params)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert answer.headers["Cache-Control"] == "no-store"
    assert inbox(provider, phone).json()["requests"] == []  # nothing was made


def test_client_authentication_and_registration_errors(provider, ciba_client, web_client, carol):
    user, _phone = carol
    wrong = requests.post(provider.url + "/backchannel/authenticate", timeout=30,
                          data={"scope": "openid", "login_hint": user["username"]},
                          auth=(ciba_client["client_id"], "wrong-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    anonymous = requests.post(provider.url + "/backchannel/authenticate", timeout=30,
                              data={"scope": "openid", "login_hint": user["username"]})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    not_registered = bc(provider, web_client, login_hint=user["username"])
    assert not_registered.status_code == 400
    assert not_registered.json()["error"] == "unauthorized_client"
    get = requests.get(provider.url + "/backchannel/authenticate", timeout=30)
    assert get.status_code == 405


# -- prompt bombing ------------------------------------------------------------------------------
def test_at_most_three_outstanding_push_requests_per_user(provider, ciba_client, carol):
    user, phone = carol
    for n in range(3):
        started(provider, ciba_client, login_hint=user["username"], binding_message=f"b{n}")
    fourth = bc(provider, ciba_client, login_hint=user["username"], binding_message="b3")
    assert fourth.status_code == 429 and fourth.json()["error"] == "too_many_requests"
    assert 1 <= int(fourth.headers["Retry-After"]) <= 121
    assert len(inbox(provider, phone).json()["requests"]) == 3
    entry = entry_for(provider, phone, "b0")
    assert provider.phone("deny", phone, scan_code=entry["scan_code"]).status_code == 200
    started(provider, ciba_client, login_hint=user["username"], binding_message="b4")


def test_outstanding_cap_holds_under_concurrent_requests(provider, ciba_client, carol):
    user, phone = carol
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda n: bc(provider, ciba_client, login_hint=user["username"],
                         binding_message=f"c{n}"), range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 3 + [429] * 5
    assert len(inbox(provider, phone).json()["requests"]) == 3


# -- the inbox ---------------------------------------------------------------------------------
def test_inbox_needs_the_phone_apps_token(provider, ciba_client, carol):
    anonymous = requests.post(provider.url + "/qr/inbox", timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_token"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    user, _phone = carol
    request = started(provider, ciba_client, login_hint=user["username"], binding_message="t")
    entry = entry_for(provider, _phone, "t")
    assert provider.phone("approve", _phone, scan_code=entry["scan_code"]).status_code == 200
    time.sleep(2.1)
    rp_token = token(provider, ciba_client, request["auth_req_id"]).json()["access_token"]
    narrow = inbox(provider, rp_token)  # a relying party's token: no qr:approve
    assert narrow.status_code == 403 and narrow.json()["error"] == "insufficient_scope"
    for bad in ({"wait": "soon"}, {"wait": "nan"}, {"wait": "-1"}, {"cursor": "x" * 65}):
        answer = inbox(provider, _phone, **bad)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_inbox_long_poll_answers_when_a_request_arrives(provider, ciba_client, carol):
    user, phone = carol
    empty = inbox(provider, phone).json()
    assert empty["requests"] == []
    result = {}

    def wait():
        result["answer"] = inbox(provider, phone, wait="20", cursor=empty["cursor"])

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # held: nothing new yet
    started(provider, ciba_client, login_hint=user["username"], binding_message="live")
    waiter.join(25)
    answer = result["answer"]
    assert answer.status_code == 200
    assert [e["binding_message"] for e in answer.json()["requests"]] == ["live"]
    assert answer.json()["cursor"] != empty["cursor"]
    # the same cursor again answers at once when something changed: the decision
    entry = answer.json()["requests"][0]
    held = {}
    waiter = threading.Thread(target=lambda: held.setdefault(
        "answer", inbox(provider, phone, wait="20", cursor=answer.json()["cursor"])))
    waiter.start()
    time.sleep(0.5)
    assert provider.phone("deny", phone, scan_code=entry["scan_code"]).status_code == 200
    waiter.join(25)
    assert held["answer"].json()["requests"] == []


def test_inbox_long_poll_sees_a_request_made_on_another_instance(tmp_path, provider, carol,
                                                                  ciba_client):
    """Two instances on one database: the phone long-polls B, the relying party asks A."""
    user, phone = carol
    second = Provider(tmp_path, backend=provider.backend, database_url=provider.database_url)
    second.env["QR_OIDC_ISSUER"] = provider.url  # one issuer, as behind a load balancer
    second.start("--workers", "2")
    try:
        empty = inbox(second, phone).json()
        result = {}
        waiter = threading.Thread(target=lambda: result.setdefault(
            "answer", inbox(second, phone, wait="20", cursor=empty["cursor"])))
        waiter.start()
        time.sleep(0.5)
        started(provider, ciba_client, login_hint=user["username"], binding_message="across")
        waiter.join(25)
        assert [e["binding_message"] for e in result["answer"].json()["requests"]] == ["across"]
    finally:
        second.stop(keep_database=True)


# -- ping mode ---------------------------------------------------------------------------------
@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def ping_client(provider, receiver):
    return provider.create_client(
        "--name", "Pinged", "--grant-type", CIBA, "--backchannel-token-delivery-mode", "ping",
        "--backchannel-client-notification-endpoint", receiver.url + "/ciba")


def test_ping_mode_notifies_the_client_once_decided(provider, receiver, carol):
    client = ping_client(provider, receiver)
    user, phone = carol
    missing = bc(provider, client, login_hint=user["username"])
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    bad = bc(provider, client, login_hint=user["username"], client_notification_token="a b")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
    request = started(provider, client, login_hint=user["username"], binding_message="ping",
                      client_notification_token="rp-token-123")
    time.sleep(0.5)
    assert receiver.received == []  # nothing before the decision
    entry = entry_for(provider, phone, "ping")
    assert provider.phone("approve", phone, scan_code=entry["scan_code"]).status_code == 200
    ping = receiver.wait_for(1, timeout=15)[0]
    assert ping["path"] == "/ciba"
    assert ping["headers"]["authorization"] == "Bearer rp-token-123"
    assert ping["headers"]["content-type"] == "application/json"
    assert json.loads(ping["body"]) == {"auth_req_id": request["auth_req_id"]}
    tokens = token(provider, client, request["auth_req_id"])
    assert tokens.status_code == 200 and "id_token" in tokens.json()
    time.sleep(1.5)
    assert len(receiver.received) == 1  # once
    # the token is kept sealed, not in clear
    assert b"rp-token-123" not in provider.dump()


def test_ping_is_retried_while_the_endpoint_is_down(provider, receiver, carol):
    client = ping_client(provider, receiver)
    user, phone = carol
    receiver.fail_next(2)  # 503 twice, then up
    request = started(provider, client, login_hint=user["username"], binding_message="retry",
                      client_notification_token="tok")
    entry = entry_for(provider, phone, "retry")
    assert provider.phone("deny", phone, scan_code=entry["scan_code"]).status_code == 200
    attempts = receiver.wait_for(3, timeout=20)
    assert [a["status"] for a in attempts] == [503, 503, 200]
    assert all(json.loads(a["body"]) == {"auth_req_id": request["auth_req_id"]} for a in attempts)
    assert token(provider, client, request["auth_req_id"]).json()["error"] == "access_denied"
    time.sleep(3)
    assert len(receiver.received) == 3  # delivered: not sent again
    assert provider.db("SELECT count(*) FROM deliveries") == [(0,)]


def test_a_ping_to_an_endpoint_that_is_down_arrives_once_it_is_up(provider, carol):
    port = free_port()  # nothing listens there yet: connections are refused
    client = provider.create_client(
        "--name", "Pinged later", "--grant-type", CIBA, "--backchannel-token-delivery-mode",
        "ping", "--backchannel-client-notification-endpoint", f"http://127.0.0.1:{port}/ciba")
    user, phone = carol
    request = started(provider, client, login_hint=user["username"], binding_message="later",
                      client_notification_token="late-token")
    entry = entry_for(provider, phone, "later")
    assert provider.phone("approve", phone, scan_code=entry["scan_code"]).status_code == 200
    time.sleep(2.5)  # a few refused attempts
    assert provider.db("SELECT attempts >= 2 FROM deliveries")[0][0]
    with Receiver(port) as late:
        ping = late.wait_for(1, timeout=30)[0]  # the next attempt, after at most 4 s backoff
        assert json.loads(ping["body"]) == {"auth_req_id": request["auth_req_id"]}
        assert ping["headers"]["authorization"] == "Bearer late-token"
    assert token(provider, client, request["auth_req_id"]).status_code == 200


# -- the per-client rate (the app in process) ------------------------------------------------------
def test_push_requests_are_limited_per_client(make_in_process):
    app = make_in_process({"RATE_PUSH_CLIENT": "2/60"})
    client = app.create_client("--name", "Busy centre", "--grant-type", CIBA)
    for n in range(3):
        app.create_user(f"u{n}", f"u{n}-password")
    browser = app.client()
    answers = [browser.post("/backchannel/authenticate", data={
        "scope": "openid", "login_hint": f"u{n}"},
        auth=(client["client_id"], client["client_secret"])) for n in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json["error"] == "too_many_requests"
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
