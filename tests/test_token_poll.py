"""The web client's token poll with a QR ticket (SPEC.md "Poll for tokens"): every error code with
its HTTP status, ``Cache-Control: no-store`` and a JSON body; and the interval the server enforces
and keeps with the ticket (RFC 8628 §3.5 ``slow_down``). Expiry (``expired_token``) is tested in
test_tickets.py against a server with short-lived tickets.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

import jwt
import pytest
import requests

from helpers import QR_GRANT, approved_ticket, pkce


def assert_poll_error(response: requests.Response, status: int, error: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Cache-Control"] == "no-store", response.headers
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str), body
    return body


def poll_interval(provider, ticket: dict) -> int:
    digest = hashlib.sha256(ticket["ticket"].encode()).hexdigest()
    rows = provider.db("SELECT poll_interval FROM tickets WHERE ticket_hash = ?", digest)
    assert len(rows) == 1, rows
    return rows[0][0]


def post_token(provider, data: dict, auth=None) -> requests.Response:
    return requests.post(provider.url + "/token", data=data, auth=auth, timeout=30)


@pytest.fixture(scope="module")
def other_client(provider):
    """A second confidential relying party, which must not redeem the first one's tickets."""
    return provider.create_client("--name", "Other shop")


@pytest.fixture(scope="module")
def code_only_client(provider):
    return provider.create_client("--name", "Code only client", "--grant-type",
                                  "authorization_code", "--redirect-uri",
                                  "https://code-only.example/cb")


@pytest.fixture
def world(provider, web_client, other_client, code_only_client, alice_phone):
    return {"provider": provider, "web": web_client, "other": other_client,
            "code_only": code_only_client, "phone": alice_phone}


# -- the cases: each makes one poll and names the error it must get -------------------------------
def pending_ticket(w):
    ticket = w["provider"].ticket(w["web"])
    return w["provider"].poll(w["web"], ticket["ticket"])


def scanned_ticket(w):
    p = w["provider"]
    ticket = p.ticket(w["web"])
    assert p.phone("scan", w["phone"], scan_code=p.scan_code(ticket)).status_code == 200
    return p.poll(w["web"], ticket["ticket"])


def denied_ticket(w):
    p = w["provider"]
    ticket = p.ticket(w["web"])
    code = p.scan_code(ticket)
    assert p.phone("scan", w["phone"], scan_code=code).status_code == 200
    assert p.phone("deny", w["phone"], scan_code=code).status_code == 200
    return p.poll(w["web"], ticket["ticket"])


def unknown_ticket(w):
    return w["provider"].poll(w["web"], secrets.token_urlsafe(32))


def redeemed_ticket(w):
    p = w["provider"]
    ticket = approved_ticket(p, w["web"], w["phone"])
    assert p.poll(w["web"], ticket["ticket"]).status_code == 200
    return p.poll(w["web"], ticket["ticket"])


def other_clients_ticket(w):
    p = w["provider"]
    ticket = approved_ticket(p, w["web"], w["phone"])
    return p.poll(w["other"], ticket["ticket"])


def scan_code_as_ticket(w):
    """Knowing the QR content must never be enough to obtain tokens."""
    p = w["provider"]
    ticket = approved_ticket(p, w["web"], w["phone"])
    return p.poll(w["web"], p.scan_code(ticket))


def user_code_as_ticket(w):
    p = w["provider"]
    ticket = approved_ticket(p, w["web"], w["phone"])
    return p.poll(w["web"], ticket["user_code"])


def wrong_client_secret(w):
    p = w["provider"]
    ticket = approved_ticket(p, w["web"], w["phone"])
    return post_token(p, {"grant_type": QR_GRANT, "ticket": ticket["ticket"]},
                      auth=(w["web"]["client_id"], "not-the-secret"))


def wrong_client_secret_in_body(w):
    p = w["provider"]
    ticket = approved_ticket(p, w["web"], w["phone"])
    return post_token(p, {"grant_type": QR_GRANT, "ticket": ticket["ticket"],
                          "client_id": w["web"]["client_id"], "client_secret": "not-the-secret"})


def unknown_client_id(w):
    p = w["provider"]
    ticket = approved_ticket(p, w["web"], w["phone"])
    return post_token(p, {"grant_type": QR_GRANT, "ticket": ticket["ticket"]},
                      auth=("no-such-client", "whatever"))


def no_client_authentication(w):
    p = w["provider"]
    ticket = approved_ticket(p, w["web"], w["phone"])
    return post_token(p, {"grant_type": QR_GRANT, "ticket": ticket["ticket"]})


def unsupported_grant_type(w):
    p = w["provider"]
    ticket = p.ticket(w["web"])
    return post_token(p, {"grant_type": "urn:example:no-such-grant", "ticket": ticket["ticket"]},
                      auth=(w["web"]["client_id"], w["web"]["client_secret"]))


def missing_ticket(w):
    return post_token(w["provider"], {"grant_type": QR_GRANT},
                      auth=(w["web"]["client_id"], w["web"]["client_secret"]))


def client_without_the_qr_grant(w):
    p = w["provider"]
    ticket = p.ticket(w["web"])
    return p.poll(w["code_only"], ticket["ticket"])


POLL_ERRORS = [
    # (case, HTTP status, error)
    (pending_ticket, 400, "authorization_pending"),
    (scanned_ticket, 400, "authorization_pending"),
    (denied_ticket, 400, "access_denied"),
    (unknown_ticket, 400, "invalid_grant"),
    (redeemed_ticket, 400, "invalid_grant"),
    (other_clients_ticket, 400, "invalid_grant"),
    (scan_code_as_ticket, 400, "invalid_grant"),
    (user_code_as_ticket, 400, "invalid_grant"),
    (wrong_client_secret, 401, "invalid_client"),
    (wrong_client_secret_in_body, 401, "invalid_client"),
    (unknown_client_id, 401, "invalid_client"),
    (no_client_authentication, 401, "invalid_client"),
    (unsupported_grant_type, 400, "unsupported_grant_type"),
    (missing_ticket, 400, "invalid_request"),
    (client_without_the_qr_grant, 400, "unauthorized_client"),
]


@pytest.mark.parametrize("case,status,error", POLL_ERRORS,
                         ids=[f"{case.__name__} -> {error}" for case, _s, error in POLL_ERRORS])
def test_a_token_poll_answers_with_the_error_spec_names(world, case, status, error):
    body = assert_poll_error(case(world), status, error)
    assert "access_token" not in body and "id_token" not in body


def test_invalid_client_with_basic_auth_carries_a_basic_challenge(provider, web_client):
    """RFC 6749 §5.2: a client that used the Authorization header gets 401 and WWW-Authenticate."""
    response = post_token(provider, {"grant_type": QR_GRANT, "ticket": "x"},
                          auth=(web_client["client_id"], "not-the-secret"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic"), response.headers


REFUSED_POLLS = {
    "another client": lambda w, t: w["provider"].poll(w["other"], t["ticket"]),
    "a wrong secret": lambda w, t: post_token(
        w["provider"], {"grant_type": QR_GRANT, "ticket": t["ticket"]},
        auth=(w["web"]["client_id"], "not-the-secret")),
    "an unknown client_id": lambda w, t: post_token(
        w["provider"], {"grant_type": QR_GRANT, "ticket": t["ticket"]},
        auth=("no-such-client", "whatever")),
    "no client authentication": lambda w, t: post_token(
        w["provider"], {"grant_type": QR_GRANT, "ticket": t["ticket"]}),
    "a client without the QR grant": lambda w, t: w["provider"].poll(w["code_only"], t["ticket"]),
}


@pytest.mark.parametrize("who", REFUSED_POLLS)
def test_a_refused_poll_does_not_use_the_ticket_up(world, who):
    """Whoever is refused, the web client that owns the approved ticket still gets its tokens."""
    p = world["provider"]
    ticket = approved_ticket(p, world["web"], world["phone"])
    assert REFUSED_POLLS[who](world, ticket).status_code in (400, 401)
    tokens = p.poll(world["web"], ticket["ticket"])
    assert tokens.status_code == 200, tokens.text
    assert "access_token" in tokens.json()


def test_a_wrong_code_verifier_is_invalid_grant_and_does_not_use_the_ticket_up(
        provider, public_client, alice_phone):
    verifier, challenge = pkce()
    cid = {"client_id": public_client["client_id"]}
    ticket = approved_ticket(provider, public_client, alice_phone, code_challenge=challenge,
                             code_challenge_method="S256", **cid)
    assert_poll_error(provider.poll(public_client, ticket["ticket"], code_verifier=pkce()[0],
                                    **cid), 400, "invalid_grant")
    right = provider.poll(public_client, ticket["ticket"], code_verifier=verifier, **cid)
    assert right.status_code == 200, right.text


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "JSON"])
def test_a_non_ascii_code_verifier_is_invalid_grant_not_a_server_error(
        provider, public_client, alice_phone, as_json):
    """Found by schemathesis: a verifier outside ASCII reached the S256 hash (which encodes ASCII)
    and answered 500 on an approved ticket. It is a wrong verifier: invalid_grant, and the ticket
    is still there for the right one."""
    verifier, challenge = pkce()
    cid = {"client_id": public_client["client_id"]}
    ticket = approved_ticket(provider, public_client, alice_phone, code_challenge=challenge,
                             code_challenge_method="S256", **cid)
    for wrong in ("\u0094\U000f3f47\u00e6", "é" * 43, verifier[:-1] + "é"):
        assert_poll_error(provider.poll(public_client, ticket["ticket"], as_json=as_json,
                                        code_verifier=wrong, **cid), 400, "invalid_grant")
    right = provider.poll(public_client, ticket["ticket"], as_json=as_json,
                          code_verifier=verifier, **cid)
    assert right.status_code == 200, right.text


# -- the interval ---------------------------------------------------------------------------------
def test_the_first_poll_is_never_slow_down(provider, web_client):
    for _ in range(3):  # three fresh tickets polled back to back: each one's first poll
        ticket = provider.ticket(web_client)
        assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400,
                          "authorization_pending")
        assert poll_interval(provider, ticket) == 2


def test_an_immediate_second_poll_is_slow_down_and_the_interval_grows_by_5(provider,
                                                                           web_client):
    ticket = provider.ticket(web_client)
    assert ticket["interval"] == 2
    assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400, "authorization_pending")
    assert poll_interval(provider, ticket) == 2
    assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400, "slow_down")
    assert poll_interval(provider, ticket) == 7


def test_a_scanned_ticket_is_throttled_like_a_pending_one(provider, web_client, alice_phone):
    ticket = provider.ticket(web_client)
    assert provider.phone("scan", alice_phone,
                          scan_code=provider.scan_code(ticket)).status_code == 200
    assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400, "authorization_pending")
    assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400, "slow_down")
    assert poll_interval(provider, ticket) == 7


def test_a_poll_a_little_early_within_20_percent_is_not_slow_down(provider, web_client):
    ticket = provider.ticket(web_client)
    assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400, "authorization_pending")
    time.sleep(1.7)  # the interval is 2 s; 1.7 s is 15% early
    assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400, "authorization_pending")
    assert poll_interval(provider, ticket) == 2


def test_many_rapid_polls_never_grow_the_interval_past_60(provider, web_client):
    ticket = provider.ticket(web_client)
    assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400, "authorization_pending")
    seen = []
    for _ in range(14):  # 2 + 5 * 12 = 62: the cap is reached on the 12th slow_down
        assert_poll_error(provider.poll(web_client, ticket["ticket"]), 400, "slow_down")
        seen.append(poll_interval(provider, ticket))
    assert seen == [min(2 + 5 * n, 60) for n in range(1, 15)]


# -- the event path (provider/web/events.py) answers the ticket grants' polls, form or JSON --------
def _last_poll_at(provider, ticket: dict):
    digest = hashlib.sha256(ticket["ticket"].encode()).hexdigest()
    return provider.db("SELECT last_poll_at FROM tickets WHERE ticket_hash = ?", digest)[0][0]


def _authenticate(client: dict, shape: str, data: dict):
    """Add the client's credentials to ``data`` in ``shape``; returns the Basic auth, if any."""
    if shape == "client_secret_basic":
        return (client["client_id"], client["client_secret"])
    if shape == "client_secret_post":
        data.update(client_id=client["client_id"], client_secret=client["client_secret"])
    else:
        data["client_id"] = client["client_id"]
    return None


@pytest.mark.parametrize("shape", ["client_secret_basic", "client_secret_post", "none"])
def test_a_pending_poll_gets_the_same_answer_as_a_form_and_as_json(
        provider, web_client, post_client, public_client, shape):
    """The event path answers both bodies: same bytes, same status, same headers, and both
    record the poll on the ticket. (That Flask's grant answers alike: test_token_core.py.)"""
    client = {"none": public_client, "client_secret_post": post_client}.get(shape, web_client)
    answers = []
    for as_json in (False, True):
        ticket = provider.ticket(client, **({"client_id": client["client_id"],
                                             "code_challenge": pkce()[1],
                                             "code_challenge_method": "S256"}
                                            if shape == "none" else {}))
        data = {"grant_type": QR_GRANT, "ticket": ticket["ticket"]}
        auth = _authenticate(client, shape, data)
        assert _last_poll_at(provider, ticket) is None
        before = time.time()
        if as_json:
            response = requests.post(provider.url + "/token", json=data, auth=auth, timeout=30)
        else:
            response = requests.post(provider.url + "/token", data=data, auth=auth, timeout=30)
        assert_poll_error(response, 400, "authorization_pending")
        assert _last_poll_at(provider, ticket) >= before - 1
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower() != "date"}
        answers.append((response.status_code, response.content, headers))
    assert answers[0] == answers[1]


def test_the_interval_rule(provider, public_client):
    """An on-time poll is recorded; one too early is slow_down, and counts as a poll."""
    ticket = provider.ticket(public_client, client_id=public_client["client_id"],
                             code_challenge=pkce()[1], code_challenge_method="S256")
    data = {"grant_type": QR_GRANT, "ticket": ticket["ticket"],
            "client_id": public_client["client_id"]}
    assert_poll_error(post_token(provider, data), 400, "authorization_pending")
    first = _last_poll_at(provider, ticket)
    assert_poll_error(post_token(provider, data), 400, "slow_down")
    assert poll_interval(provider, ticket) == 7
    assert _last_poll_at(provider, ticket) > first


def test_a_confidential_client_without_its_secret_gets_no_pending_answer(provider, web_client):
    """client_id alone is the public-client shape; a confidential client must authenticate."""
    ticket = provider.ticket(web_client)
    response = post_token(provider, {"grant_type": QR_GRANT, "ticket": ticket["ticket"],
                                     "client_id": web_client["client_id"]})
    assert_poll_error(response, 401, "invalid_client")
    assert _last_poll_at(provider, ticket) is None


@pytest.mark.parametrize("grant_type", ["refresh_token", "authorization_code"])
def test_a_ticket_under_a_nameless_parameter_of_another_grant_is_no_poll(
        provider, public_client, grant_type):
    """Only the QR and device grants poll; a ticket smuggled in as ``=<ticket>`` under another
    grant is that grant's missing parameter, and the ticket is not touched."""
    ticket = provider.ticket(public_client, client_id=public_client["client_id"],
                             code_challenge=pkce()[1], code_challenge_method="S256")
    response = requests.post(
        provider.url + "/token", timeout=30,
        data=f"grant_type={grant_type}&={ticket['ticket']}&client_id={public_client['client_id']}",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_poll_error(response, 400, "invalid_request")
    assert _last_poll_at(provider, ticket) is None


# -- the event path redeems an approved ticket, form or JSON ---------------------------------------
@pytest.fixture(scope="module")
def rich_client(provider):
    """Every grant (refresh tokens too), every scope, and ID tokens in ES256."""
    return provider.create_client("--name", "Rich shop", "--id-token-alg", "ES256")


@pytest.fixture(scope="module")
def rich_post_client(provider):
    """The same, authenticating with client_secret_post."""
    return provider.create_client("--name", "Rich form shop", "--id-token-alg", "ES256",
                                  "--token-endpoint-auth-method", "client_secret_post")


def _access_lines(provider, marker: str, status: str = "200") -> int:
    return sum(1 for line in provider.log().splitlines()
               if f"qr_oidc.access POST /token {status}" in line and line.endswith(marker))


def _wait_for_lines(provider, marker: str, count: int, status: str = "200") -> None:
    deadline = time.monotonic() + 10
    while _access_lines(provider, marker, status) < count:
        assert time.monotonic() < deadline, f"no access line ending {marker!r}"
        time.sleep(0.05)


def _redeem(provider, client, phone, shape: str, as_json: bool):
    verifier, challenge = pkce()
    nonce = secrets.token_hex(8)
    params = {"scope": "openid profile email offline_access", "nonce": nonce,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    if shape == "none":
        params["client_id"] = client["client_id"]
    ticket = approved_ticket(provider, client, phone, **params)
    data = {"grant_type": QR_GRANT, "ticket": ticket["ticket"], "code_verifier": verifier}
    auth = _authenticate(client, shape, data)
    served = _access_lines(provider, "event")
    body = {"json": data} if as_json else {"data": data}
    response = requests.post(provider.url + "/token", auth=auth, timeout=30, **body)
    assert response.status_code == 200, response.text
    # the event path answered (its access line ends "event"), not Flask (which ends "ms")
    _wait_for_lines(provider, "event", served + 1)
    return ticket, nonce, response


@pytest.mark.parametrize("shape", ["client_secret_basic", "client_secret_post", "none"])
def test_an_approved_ticket_gets_the_same_tokens_as_a_form_and_as_json(
        provider, rich_client, rich_post_client, public_client, alice_phone, shape):
    """Same members in the same order, same headers, the same claims in both JWTs (but for
    times, ids and hashes), the same token row, an audit line each, and tokens that work."""
    from test_e2e import verify_with_jwks

    client = {"none": public_client, "client_secret_post": rich_post_client}.get(shape,
                                                                               rich_client)
    since = time.time()
    answers = []
    for as_json in (False, True):
        ticket, nonce, response = _redeem(provider, client, alice_phone, shape, as_json)
        tokens = response.json()
        headers = {k.lower(): v for k, v in response.headers.items()
                   if k.lower() not in ("date", "content-length")}
        access = verify_with_jwks(provider, tokens["access_token"], provider.url, "at+jwt")
        id_claims = verify_with_jwks(provider, tokens["id_token"], client["client_id"])
        id_header = jwt.get_unverified_header(tokens["id_token"])
        assert id_claims["nonce"] == nonce
        assert abs(id_claims["auth_time"] - time.time()) < 30
        digest = hashlib.new("sha256" if id_header["alg"] != "EdDSA" else "sha512",
                             tokens["access_token"].encode()).digest()
        half = base64.urlsafe_b64encode(digest[:len(digest) // 2]).rstrip(b"=").decode()
        assert id_claims["at_hash"] == half
        assert access["exp"] - access["iat"] == tokens["expires_in"]
        row = provider.db(
            "SELECT client_id, user_id, grant_type, scope, revoked, refresh_token_hash, amr,"
            " expires_at - issued_at, refresh_expires_at - issued_at, auth_time, family_id,"
            " refresh_status FROM tokens WHERE jti = ?", access["jti"])
        assert len(row) == 1, row
        (client_id, user_id, grant_type, scope, revoked, refresh_hash, amr, ttl, refresh_ttl,
         auth_time, family, refresh_status) = row[0]
        assert refresh_status == "active"
        assert refresh_hash == hashlib.sha256(tokens["refresh_token"].encode()).hexdigest()
        assert int(auth_time) == id_claims["auth_time"] and family
        assert provider.db("SELECT id FROM tickets WHERE ticket_hash = ?", hashlib.sha256(
            ticket["ticket"].encode()).hexdigest()) == [(id_claims["sid"],)]
        assert abs(ttl - tokens["expires_in"]) < 1.5  # (iat is whole seconds, issued_at not)
        ticket_hash = hashlib.sha256(ticket["ticket"].encode()).hexdigest()
        assert provider.db("SELECT status FROM tickets WHERE ticket_hash = ?",
                           ticket_hash) == [("redeemed",)]
        # the tokens work: the access token at userinfo, the refresh token at /token
        info = requests.get(provider.url + "/userinfo", timeout=30,
                            headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert info.status_code == 200 and info.json()["sub"] == access["sub"], info.text
        refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        auth = _authenticate(client, shape, refresh)
        again = requests.post(provider.url + "/token", data=refresh, timeout=30, auth=auth)
        assert again.status_code == 200, again.text
        answers.append({
            "status": response.status_code, "headers": headers, "members": list(tokens),
            "shape": {k: v for k, v in tokens.items()
                      if k in ("token_type", "expires_in", "scope")},
            "access": (jwt.get_unverified_header(tokens["access_token"]),
                       {k: v for k, v in access.items() if k not in ("iat", "exp", "jti")}),
            "id": (id_header, sorted(id_claims),
                   {k: v for k, v in id_claims.items()
                    # (sid: each ticket's approval is a sign-in of its own)
                    if k not in ("iat", "exp", "at_hash", "nonce", "auth_time", "sid")}),
            "row": (client_id, user_id, grant_type, scope, bool(revoked), amr),
            "refresh_ttl": refresh_ttl,
        })
    assert abs(answers[0].pop("refresh_ttl") - answers[1].pop("refresh_ttl")) < 1.5
    assert answers[0] == answers[1]
    assert answers[0]["members"] == ["access_token", "token_type", "expires_in", "scope",
                                     "refresh_token", "id_token"]
    assert answers[0]["id"][0]["alg"] == ("RS256" if shape == "none" else "ES256")
    assert answers[0]["row"][:3] == (client["client_id"], answers[0]["row"][1], QR_GRANT)

    deadline = time.monotonic() + 10
    while True:
        redeemed = [e for e in _audit(provider, since) if e["event"] == "ticket.redeemed"
                    and e["client_id"] == client["client_id"]]
        if len(redeemed) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(redeemed) == 2, redeemed
    for event in redeemed:
        assert event["ip"] == "127.0.0.1", event
        assert event["user_agent"].startswith("python-requests"), event
        assert isinstance(event["user_id"], int), event
    assert redeemed[0]["ticket"] != redeemed[1]["ticket"]
    assert {k for k in redeemed[0]} == {k for k in redeemed[1]}


def _audit(provider, since: float) -> list[dict]:
    return [record for record in (json.loads(line) for line in provider.log().splitlines()
                                  if line.startswith("{"))
            if record["ts"] >= since]


def test_a_wrong_verifier_costs_the_ticket_nothing_and_a_resource_becomes_the_audience(
        provider, public_client, alice_phone):
    """A wrong verifier is invalid_grant and costs the ticket nothing; a resource indicator
    (RFC 8707) becomes the access token's audience; the event path answers all three."""
    from test_e2e import verify_with_jwks

    verifier, challenge = pkce()
    ticket = approved_ticket(provider, public_client, alice_phone,
                             client_id=public_client["client_id"], code_challenge=challenge,
                             code_challenge_method="S256")
    data = {"grant_type": QR_GRANT, "ticket": ticket["ticket"],
            "client_id": public_client["client_id"]}
    served = _access_lines(provider, "event", status="")
    assert_poll_error(post_token(provider, {**data, "code_verifier": pkce()[0]}), 400,
                      "invalid_grant")
    assert_poll_error(post_token(provider, data), 400, "invalid_request")
    response = post_token(provider, {**data, "code_verifier": verifier,
                                     "resource": "https://api.example/orders"})
    assert response.status_code == 200, response.text
    access = verify_with_jwks(provider, response.json()["access_token"],
                              "https://api.example/orders", "at+jwt")
    assert access["client_id"] == public_client["client_id"]
    _wait_for_lines(provider, "event", served + 3, status="")
