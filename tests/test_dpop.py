"""DPoP (RFC 9449, SPEC.md "DPoP") against a real server on SQLite and on PostgreSQL: proofs at
the token endpoint for every grant, bound tokens (``cnf.jkt``, ``token_type: DPoP``) that
userinfo and the phone's endpoints take only with a fresh proof by their key, tickets bound to
the browser's key, public clients' refresh tokens bound, ``--require-dpop`` clients (the phone
app's: a stolen access token alone approves nothing), introspection's ``cnf``, every malformed
proof refused with ``invalid_dpop_proof`` and nothing changed, server nonces, and the replay
cache across instances."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from dpop_client import DPoPKey, unsigned

from conftest import phone_app
from helpers import DEVICE_GRANT, QR_GRANT, Provider, authorize, sign_in_phone

CIBA = "urn:openid:params:grant-type:ciba"


# -- helpers -----------------------------------------------------------------------------------
def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def post(provider, path, key=None, client=None, proof=None, headers=None, **data):
    headers = dict(headers or {})
    if key is not None:
        headers["DPoP"] = proof or key.proof("POST", provider.url + path)
    auth = (client["client_id"], client["client_secret"]) if client and \
        client.get("client_secret") else None
    return requests.post(provider.url + path, data=data, headers=headers, auth=auth, timeout=30)


def poll(provider, client, ticket, key=None, proof=None, **extra):
    return post(provider, "/token", key, client, proof, grant_type=QR_GRANT, ticket=ticket,
                **extra)


def userinfo(provider, token, key=None, scheme="DPoP", proof=None):
    headers = {"Authorization": f"{scheme} {token}"}
    if key is not None or proof is not None:
        headers["DPoP"] = proof or key.proof("GET", provider.url + "/userinfo",
                                             access_token=token)
    return requests.get(provider.url + "/userinfo", headers=headers, timeout=30)


def approve(provider, phone_token, ticket, key=None):
    code = provider.scan_code(ticket)
    for action in ("scan", "approve"):
        headers = {"Authorization": f"{'DPoP' if key else 'Bearer'} {phone_token}"}
        if key is not None:
            headers["DPoP"] = key.proof("POST", f"{provider.url}/qr/{action}",
                                        access_token=phone_token)
        answer = requests.post(f"{provider.url}/qr/{action}", data={"scan_code": code},
                               headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text


def status_of(provider, ticket) -> str:
    return provider.status(ticket["ticket"]).json()["status"]


@pytest.fixture(scope="module")
def shop(provider, _shared):
    """A confidential relying party with every grant a DPoP client may use here."""
    return _shared.once(provider, "dpop_shop", lambda: provider.create_client(
        "--name", "DPoP shop", "--grant-type", QR_GRANT, "--grant-type", DEVICE_GRANT,
        "--grant-type", CIBA, "--grant-type", "refresh_token",
        "--scope", "openid profile offline_access"))


@pytest.fixture(scope="module")
def spa(provider, _shared):
    """A public client of the code flow that refreshes (its refresh tokens get bound)."""
    return _shared.once(provider, "dpop_spa", lambda: provider.create_client(
        "--name", "DPoP SPA", "--public", "--redirect-uri", "http://127.0.0.1:9/cb",
        "--grant-type", "authorization_code", "--grant-type", "refresh_token",
        "--scope", "openid profile offline_access"))


@pytest.fixture(scope="module")
def strict(provider, _shared):
    return _shared.once(provider, "dpop_strict", lambda: provider.create_client(
        "--name", "DPoP only", "--grant-type", QR_GRANT, "--require-dpop"))


# -- discovery -----------------------------------------------------------------------------------
def test_discovery_lists_the_proof_algorithms(provider):
    meta = requests.get(provider.url + "/.well-known/openid-configuration", timeout=30).json()
    assert meta["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "PS256", "EdDSA",
                                                         "Ed25519"]


# -- the QR grant: a ticket bound to the browser's key, bound tokens ------------------------------
@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "EdDSA", "Ed25519"])
def test_a_bound_ticket_answers_only_polls_by_its_key_and_gives_bound_tokens(
        provider, shop, alice, alice_phone, alg):
    key, other = DPoPKey(alg), DPoPKey()
    made = post(provider, "/qr/ticket", key, shop, scope="openid profile")
    assert made.status_code == 201, made.text
    ticket = made.json()
    for attempt in (poll(provider, shop, ticket["ticket"]),  # no proof
                    poll(provider, shop, ticket["ticket"], other)):  # another key
        assert attempt.status_code == 400, attempt.text
        assert attempt.json()["error"] == "invalid_dpop_proof"
    pending = poll(provider, shop, ticket["ticket"], key)
    assert pending.json()["error"] == "authorization_pending"
    approve(provider, alice_phone, ticket)
    time.sleep(2.1)
    refused = poll(provider, shop, ticket["ticket"], other)
    assert refused.json()["error"] == "invalid_dpop_proof"
    assert status_of(provider, ticket) == "approved"  # the refusals used nothing up
    tokens = poll(provider, shop, ticket["ticket"], key)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    assert claims_of(body["id_token"])["sub"] == alice["sub"]
    # the resource: only with a fresh proof of that key, for this request and this token
    access = body["access_token"]
    ok = userinfo(provider, access, key)
    assert ok.status_code == 200 and ok.json()["sub"] == alice["sub"]
    as_bearer = userinfo(provider, access, scheme="Bearer")
    assert as_bearer.status_code == 401 and as_bearer.json()["error"] == "invalid_token"
    assert as_bearer.headers["WWW-Authenticate"].startswith("DPoP ")
    stolen = userinfo(provider, access, other)  # a proof signed by another key
    assert stolen.status_code == 401 and stolen.json()["error"] == "invalid_dpop_proof"
    assert stolen.headers["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')
    no_proof = userinfo(provider, access)
    assert no_proof.status_code == 401 and no_proof.json()["error"] == "invalid_dpop_proof"
    # "EdDSA" is accepted on purpose: joserfc's warning about its name stays out of the log
    assert "deprecated via RFC 9864" not in provider.log()


def test_dpop_jkt_binds_a_ticket_without_a_proof_at_creation(provider, shop, alice_phone):
    key = DPoPKey()
    ticket = post(provider, "/qr/ticket", None, shop, scope="openid", dpop_jkt=key.jkt).json()
    assert poll(provider, shop, ticket["ticket"]).json()["error"] == "invalid_dpop_proof"
    assert poll(provider, shop, ticket["ticket"], key).json()["error"] == \
        "authorization_pending"
    other = DPoPKey()
    mismatch = post(provider, "/qr/ticket", other, shop, scope="openid", dpop_jkt=key.jkt)
    assert mismatch.status_code == 400 and mismatch.json()["error"] == "invalid_dpop_proof"
    bad = post(provider, "/qr/ticket", None, shop, scope="openid", dpop_jkt="not-a-thumbprint")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"


def test_an_unbound_ticket_polled_with_a_proof_gives_bound_tokens(provider, shop, alice_phone):
    key = DPoPKey()
    ticket = provider.ticket(shop)
    approve(provider, alice_phone, ticket)
    body = poll(provider, shop, ticket["ticket"], key).json()
    assert body["token_type"] == "DPoP" and claims_of(body["access_token"])["cnf"]["jkt"] == key.jkt
    introspected = requests.post(provider.url + "/introspect", timeout=30,
                                 data={"token": body["access_token"]},
                                 auth=(shop["client_id"], shop["client_secret"])).json()
    assert introspected["active"] and introspected["token_type"] == "DPoP"
    assert introspected["cnf"] == {"jkt": key.jkt}


def test_device_and_ciba_grants_bind_their_tokens(provider, shop, alice, alice_phone):
    key = DPoPKey()
    device = post(provider, "/device_authorization", key, shop, scope="openid").json()
    code = device["verification_uri_complete"].rsplit("/", 1)[1]
    for action in ("scan", "approve"):
        assert provider.phone(action, alice_phone, scan_code=code).status_code == 200
    tokens = post(provider, "/token", key, shop, grant_type=DEVICE_GRANT,
                  device_code=device["device_code"])
    assert tokens.status_code == 200 and tokens.json()["token_type"] == "DPoP"
    # push login (CIBA)
    name = f"dpop-push-{provider.backend}"
    provider.create_user(name, name + "-password")
    phone = sign_in_phone(provider, phone_app(provider), name, name + "-password")
    asked = requests.post(provider.url + "/backchannel/authenticate", timeout=30,
                          data={"scope": "openid", "login_hint": name},
                          auth=(shop["client_id"], shop["client_secret"])).json()
    entry = requests.post(provider.url + "/qr/inbox", timeout=30, headers={
        "Authorization": f"Bearer {phone['access_token']}"}).json()["requests"][0]
    assert provider.phone("approve", phone["access_token"],
                          scan_code=entry["scan_code"]).status_code == 200
    pushed = post(provider, "/token", key, shop, grant_type=CIBA,
                  auth_req_id=asked["auth_req_id"])
    assert pushed.status_code == 200 and claims_of(pushed.json()["access_token"])["cnf"] == \
        {"jkt": key.jkt}


# -- the code flow and refresh -------------------------------------------------------------------
def test_code_flow_and_a_public_clients_refresh_token_bound_to_the_key(provider, spa, alice):
    key = DPoPKey()
    _session, query, verifier = authorize(provider, spa, "alice", "alice-password",
                                          scope="openid profile offline_access")
    tokens = post(provider, "/token", key, grant_type="authorization_code", code=query["code"],
                  redirect_uri=spa["redirect_uris"][0], client_id=spa["client_id"],
                  code_verifier=verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    assert userinfo(provider, body["access_token"], key).status_code == 200
    refresh = body["refresh_token"]
    for attempt_key in (None, DPoPKey()):  # without a proof, or with another key
        refused = post(provider, "/token", attempt_key, grant_type="refresh_token",
                       refresh_token=refresh, client_id=spa["client_id"])
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    again = post(provider, "/token", key, grant_type="refresh_token", refresh_token=refresh,
                 client_id=spa["client_id"])
    assert again.status_code == 200, again.text  # (the refusals did not use it up)
    assert claims_of(again.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_a_code_flow_without_a_proof_still_gives_bearer_tokens(provider, spa, alice):
    _session, query, verifier = authorize(provider, spa, "alice", "alice-password")
    tokens = post(provider, "/token", None, grant_type="authorization_code", code=query["code"],
                  redirect_uri=spa["redirect_uris"][0], client_id=spa["client_id"],
                  code_verifier=verifier).json()
    assert tokens["token_type"] == "Bearer" and "cnf" not in claims_of(tokens["access_token"])
    assert userinfo(provider, tokens["access_token"], scheme="Bearer").status_code == 200
    as_dpop = userinfo(provider, tokens["access_token"], DPoPKey())
    assert as_dpop.status_code == 401 and as_dpop.json()["error"] == "invalid_token"


# -- clients that require DPoP -------------------------------------------------------------------
def test_a_client_that_requires_dpop_gets_no_token_without_a_proof(provider, strict, alice_phone):
    assert provider.create_client("--name", "x", "--require-dpop")["dpop_bound_access_tokens"]
    ticket = provider.ticket(strict)
    refused = poll(provider, strict, ticket["ticket"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_dpop_proof"
    key = DPoPKey()
    assert poll(provider, strict, ticket["ticket"], key).json()["error"] == "authorization_pending"


def test_a_phone_app_that_requires_dpop_cannot_be_driven_by_a_stolen_token(provider, shop):
    app = provider.create_client(
        "--name", "Bound app", "--public", "--first-party", "--redirect-uri",
        "http://127.0.0.1/callback", "--grant-type", "authorization_code",
        "--scope", "openid profile qr:approve", "--require-dpop")
    name = f"dpop-phone-{provider.backend}-{time.time_ns() % 10**6}"
    provider.create_user(name, name + "-password")
    key = DPoPKey()
    _session, query, verifier = authorize(provider, app, name, name + "-password",
                                          scope="openid profile qr:approve")
    without = post(provider, "/token", None, grant_type="authorization_code", code=query["code"],
                   redirect_uri=app["redirect_uris"][0], client_id=app["client_id"],
                   code_verifier=verifier)
    assert without.status_code == 400 and without.json()["error"] == "invalid_dpop_proof"
    _session, query, verifier = authorize(provider, app, name, name + "-password",
                                          scope="openid profile qr:approve")
    phone = post(provider, "/token", key, grant_type="authorization_code", code=query["code"],
                 redirect_uri=app["redirect_uris"][0], client_id=app["client_id"],
                 code_verifier=verifier).json()["access_token"]
    ticket = provider.ticket(shop)
    code = provider.scan_code(ticket)
    thief = DPoPKey()
    for headers in ({"Authorization": f"Bearer {phone}"},
                    {"Authorization": f"DPoP {phone}"},
                    {"Authorization": f"DPoP {phone}",
                     "DPoP": thief.proof("POST", provider.url + "/qr/scan", access_token=phone)}):
        stolen = requests.post(provider.url + "/qr/scan", data={"scan_code": code},
                               headers=headers, timeout=30)
        assert stolen.status_code == 401, stolen.text
        assert stolen.headers["WWW-Authenticate"].startswith("DPoP ")
    assert status_of(provider, ticket) == "pending"  # nothing was approved, nothing scanned
    approve(provider, phone, ticket, key)
    assert status_of(provider, ticket) == "approved"
    inbox = requests.post(provider.url + "/qr/inbox", timeout=30, headers={
        "Authorization": f"DPoP {phone}",
        "DPoP": key.proof("POST", provider.url + "/qr/inbox", access_token=phone)})
    assert inbox.status_code == 200, inbox.text


# -- proofs that are wrong ---------------------------------------------------------------------
def _bad_proofs(provider, key: DPoPKey) -> dict:
    url = provider.url + "/token"
    private = {**key.public(), "d": key.key.as_dict(private=True)["d"]}
    return {
        "not a JWT": "not-a-jwt",
        "two parts": "a.b",
        "non-ASCII": key.proof("POST", url) + "é",
        "huge": "a" * 9000 + "." + "b" * 10 + "." + "c",
        "wrong typ": key.proof("POST", url, header={"typ": "JWT"}),
        "no typ": key.proof("POST", url, header={"typ": None}),
        "private key in the header": key.proof("POST", url, header={"jwk": private}),
        "no jwk": key.proof("POST", url, header={"jwk": None}),
        "none algorithm": unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": key.public()},
                                   {"jti": "abcdefghij", "htm": "POST", "htu": url,
                                    "iat": int(time.time())}),
        "HS256": unsigned({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public()},
                          {"jti": "abcdefghij", "htm": "POST", "htu": url,
                           "iat": int(time.time())}, "c2lnbmF0dXJl"),
        "another key's jwk": key.proof("POST", url, header={"jwk": DPoPKey().public()}),
        "bad signature": key.proof("POST", url)[:-6] + "AAAAAA",
        "other method": key.proof("GET", url),
        "other URL": key.proof("POST", provider.url + "/userinfo"),
        "htu with a query": key.proof("POST", url + "?x=1"),
        "htu with a fragment": key.proof("POST", url + "#x"),
        "too old": key.proof("POST", url, iat=int(time.time()) - 3600),
        "from the future": key.proof("POST", url, iat=int(time.time()) + 3600),
        "iat not a number": key.proof("POST", url, iat="now"),
        "no jti": key.proof("POST", url, jti=None),
        "short jti": key.proof("POST", url, jti="x"),
        "two proofs": key.proof("POST", url) + ", " + key.proof("POST", url),
    }


def test_malformed_proofs_are_refused_and_change_nothing(provider, shop, alice_phone):
    key = DPoPKey()
    ticket = post(provider, "/qr/ticket", key, shop, scope="openid").json()
    approve(provider, alice_phone, ticket)
    for name, proof in _bad_proofs(provider, key).items():
        answer = poll(provider, shop, ticket["ticket"], key, proof=proof)
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["error"] == "invalid_dpop_proof", (name, answer.text)
        assert answer.headers["Cache-Control"] == "no-store"
    assert status_of(provider, ticket) == "approved"  # nothing used up
    time.sleep(2.1)
    assert poll(provider, shop, ticket["ticket"], key).status_code == 200


def test_a_replayed_proof_is_refused_at_the_token_endpoint_and_at_resources(provider, shop,
                                                                          alice_phone):
    key = DPoPKey()
    ticket = provider.ticket(shop)
    approve(provider, alice_phone, ticket)
    proof = key.proof("POST", provider.url + "/token")
    assert poll(provider, shop, ticket["ticket"], key, proof=proof).status_code == 200
    second = provider.ticket(shop)
    approve(provider, alice_phone, second)
    replayed = poll(provider, shop, second["ticket"], key, proof=proof)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_dpop_proof"
    access = poll(provider, shop, second["ticket"], key).json()["access_token"]
    at_resource = key.proof("GET", provider.url + "/userinfo", access_token=access)
    assert userinfo(provider, access, proof=at_resource).status_code == 200
    again = userinfo(provider, access, proof=at_resource)
    assert again.status_code == 401 and again.json()["error"] == "invalid_dpop_proof"
    assert 'algs="ES256 RS256 PS256 EdDSA Ed25519"' in again.headers["WWW-Authenticate"]
    for wrong in (key.proof("POST", provider.url + "/userinfo", access_token=access),
                  key.proof("GET", provider.url + "/userinfo"),  # no ath
                  key.proof("GET", provider.url + "/userinfo", access_token="other")):
        refused = userinfo(provider, access, proof=wrong)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_dpop_proof"


# -- server nonces, and replays across instances --------------------------------------------------
@pytest.fixture(scope="module")
def nonced(tmp_path_factory, provider):
    """Two instances on one database (one issuer), server nonces on."""
    env = {"QR_OIDC_DPOP_NONCES": "true"}
    a = Provider(tmp_path_factory.mktemp("nonce-a"), env, backend=provider.backend)
    b = Provider(tmp_path_factory.mktemp("nonce-b"), env, database_url=a.database_url)
    b.env["QR_OIDC_ISSUER"] = a.url
    try:
        a.start()
        b.start()
        client = a.create_client("--name", "Nonce shop", "--grant-type", QR_GRANT)
        yield a, b, client
    finally:
        b.stop(keep_database=True)
        a.stop()


def test_server_nonces_and_the_replay_cache_hold_across_instances(nonced):
    a, b, client = nonced
    key = DPoPKey()
    first = post(a, "/qr/ticket", key, client, scope="openid")
    assert first.status_code == 400 and first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    made = post(a, "/qr/ticket", key, client,
                proof=key.proof("POST", a.url + "/qr/ticket", nonce=nonce), scope="openid")
    assert made.status_code == 201, made.text
    ticket = made.json()["ticket"]
    # instance B (same issuer) accepts A's nonce, and refuses a proof A has seen
    proof = key.proof("POST", a.url + "/token", nonce=nonce)
    polled = requests.post(b.url + "/token", timeout=30, headers={"DPoP": proof},
                           data={"grant_type": QR_GRANT, "ticket": ticket},
                           auth=(client["client_id"], client["client_secret"]))
    assert polled.json()["error"] == "authorization_pending", polled.text
    replay = requests.post(a.url + "/token", timeout=30, headers={"DPoP": proof},
                           data={"grant_type": QR_GRANT, "ticket": ticket},
                           auth=(client["client_id"], client["client_secret"]))
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_dpop_proof"
    stale = key.proof("POST", a.url + "/token", nonce="made-up-nonce")
    refused = requests.post(b.url + "/token", timeout=30, headers={"DPoP": stale},
                            data={"grant_type": QR_GRANT, "ticket": ticket},
                            auth=(client["client_id"], client["client_secret"]))
    assert refused.json()["error"] == "use_dpop_nonce" and refused.headers["DPoP-Nonce"]
