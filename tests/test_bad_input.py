"""Malformed requests at every JSON endpoint: broken and hostile JSON, wrong content types,
non-UTF-8 bytes, oversized and chunked bodies, repeated parameters, wrong methods, unknown paths,
forged bearer tokens, malformed DPoP proofs (RFC 9449) at the token endpoint, at ticket creation
and at the phone's endpoints. The server never answers 5xx, always answers a JSON error, changes
nothing in its database, and never writes a secret to its log.

This module runs its own ``qr-oidc serve`` process: the flood of bad requests then cannot trip a
rate limit or fill a table that the other modules' tests rely on, and the log read at the end holds
only what happened here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import secrets
import time
from urllib.parse import quote, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from dpop_client import DPoPKey, unsigned

from helpers import DEVICE_GRANT, QR_GRANT, Provider, approved_ticket, authorize, sign_in_phone

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
LIMIT = 64 * 1024

# endpoint -> (discovery name, what authenticates the caller)
ENDPOINTS = {
    "token": ("token_endpoint", "client"),
    "qr_ticket": ("qr_ticket_endpoint", "client"),
    "qr_status": ("qr_status_endpoint", None),
    "qr_scan": ("qr_scan_endpoint", "bearer"),
    "qr_approve": ("qr_approve_endpoint", "bearer"),
    "qr_deny": ("qr_deny_endpoint", "bearer"),
    "device_authorization": ("device_authorization_endpoint", "client"),
    "userinfo": ("userinfo_endpoint", "bearer"),
    "backchannel_authentication": ("backchannel_authentication_endpoint", "client"),
    "qr_inbox": ("qr_inbox_endpoint", "bearer"),
}
BEARER = [name for name, (_meta, auth) in ENDPOINTS.items() if auth == "bearer"]
CLIENT = [name for name, (_meta, auth) in ENDPOINTS.items() if auth == "client"]
POST_ONLY = [name for name in ENDPOINTS if name != "userinfo"]
# userinfo takes its token from the header and has no body parameters: a body it ignores is fine;
# the inbox's two parameters (wait, cursor) are optional, so a body of parameters it does not know
# leaves nothing wrong (RFC 6749 §3.1: unknown ones are ignored); bodies with a bad wait (non-UTF-8,
# repeated) must still be refused, and are
IGNORES_BODY = {"userinfo", "qr_inbox"}


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _chunks(data: bytes, size: int = 4096):
    def generate():
        for start in range(0, len(data), size):
            yield data[start:start + size]
    return generate


# Each body is wrong in itself: no endpoint may act on it. Values are junk, or a scope the client
# may not ask for, so that a server that ignored the body would still be caught acting on defaults.
BAD_BODIES = {
    "invalid_json": (JSON, b'{"ticket": "abc", "scope": '),
    "json_array": (JSON, _json(["grant_type", QR_GRANT, "ticket", "abc", "scope", "openid"])),
    "json_number": (JSON, b"42"),
    "json_string": (JSON, _json("grant_type=x&ticket=abc")),
    "json_null": (JSON, b"null"),
    "json_nested_objects": (JSON, _json({
        "grant_type": QR_GRANT, "ticket": {"$ne": ""}, "scan_code": {"$gt": ""},
        "user_code": ["WDJB-MJHT"], "scope": {"openid": True}, "wait": {"s": 1},
        "client_id": {"a": 1},
    })),
    "json_booleans": (JSON, _json({"grant_type": QR_GRANT, "ticket": True, "scan_code": False,
                                   "user_code": None, "scope": True, "wait": False})),
    "json_deeply_nested_arrays": (JSON, b"[" * 20000 + b"]" * 20000),
    "json_deeply_nested_objects": (JSON, b'{"ticket":' * 5000 + b'"x"' + b"}" * 5000),
    "json_huge_integer": (JSON, b'{"scope": "nope", "wait": 1' + b"0" * 5000
                          + b', "ticket": 1' + b"0" * 5000 + b"}"),
    "json_lone_surrogates": (JSON, (  # json.dumps would refuse to write these: by hand
        '{"grant_type": "' + QR_GRANT + '", "ticket": "\\ud800", "scan_code": "\\udfff", '
        '"user_code": "\\ud800", "scope": "openid", "nonce": "\\ud800", "client_id": "\\udc00"}'
    ).encode()),
    "json_non_utf8": (JSON, b'{"ticket": "\xff\xfe", "scan_code": "\xc3\x28", "scope": "\xff"}'),
    "json_sent_as_form": (FORM, _json({"grant_type": QR_GRANT, "ticket": "abc", "scope": "nope"})),
    "form_sent_as_json": (JSON, f"grant_type={QR_GRANT}&ticket=abc&scope=openid".encode()),
    "text_plain": ("text/plain", (f"grant_type={QR_GRANT}&ticket=abc&scan_code=abc"
                                  "&user_code=WDJB-MJHT&scope=openid").encode()),
    "xml": ("application/xml", b"<request><ticket>abc</ticket><scope>openid</scope></request>"),
    "no_content_type": (None, b"scope=openid&ticket=abc&scan_code=abc&grant_type=x"),
    "broken_multipart": ("multipart/form-data; boundary=xyz",
                         b'--xyz\r\nContent-Disposition: form-data; name="scope"\r\n\r\nopenid'),
    "multipart_without_boundary": ("multipart/form-data", b"scope=openid&ticket=abc"),
    "form_raw_non_utf8": (FORM, (b"grant_type=\xff\xfe&ticket=\xff&scan_code=\xc3\x28"
                                 b"&user_code=\xff&scope=\xff&wait=\xff")),
    "form_percent_non_utf8": (FORM, (b"grant_type=%ff&ticket=%ff%fe&scan_code=%c3%28"
                                     b"&user_code=%ff&scope=%ff%fe&wait=%ff")),
    "form_nul_bytes": (FORM, (f"grant_type={QR_GRANT}%00&ticket=abc%00def&scan_code=abc%00"
                              "&user_code=WDJB%00MJHT&scope=openid%00").encode()),
    "repeated_parameters": (FORM, (b"grant_type=x&grant_type=y&ticket=a&ticket=b&scan_code=a"
                                   b"&scan_code=b&user_code=a&user_code=b&scope=nope&scope=nope2"
                                   b"&wait=1&wait=2")),
    "very_long_values": (FORM, urlencode({
        "grant_type": "g" * 12000, "ticket": "t" * 12000, "scan_code": "s" * 12000,
        "user_code": "U" * 12000, "scope": "o" * 12000,
    }).encode()),
    "many_parameters": (FORM, b"scope=nope&" + b"&".join(b"p%d=1" % i for i in range(4000))),
    "huge_form": (FORM, b"scope=nope&ticket=" + b"a" * (LIMIT + 1000)),
    "huge_json": (JSON, _json({"scope": "nope", "ticket": "a" * (LIMIT + 1000)})),
    "huge_chunked": (FORM, _chunks(b"scope=nope&ticket=" + b"a" * (LIMIT + 1000))),
}
HUGE = {"huge_form", "huge_json", "huge_chunked"}
# A JSON text sent as a form is a well-formed form with one odd, unrecognised parameter name; an
# endpoint whose parameters are all optional may ignore it (RFC 6749 §3.1) and act on its defaults.
ALL_OPTIONAL = {"qr_ticket", "device_authorization"}
TOLERABLE = {("json_sent_as_form", name) for name in ALL_OPTIONAL}


# -- a server of our own ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    own = Provider(tmp_path_factory.mktemp("bad-input"), {"QR_OIDC_POLL_INTERVAL": "1"})
    own.start()
    yield own
    own.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.create_client("--name", "Robust shop", "--scope", "openid profile offline_access")


@pytest.fixture(scope="module")
def phone_token(server):
    app = server.create_client("--name", "Our app", "--public", "--first-party",
                               "--redirect-uri", "http://127.0.0.1/callback",
                               "--grant-type", "authorization_code",
                               "--scope", "openid profile qr:approve")
    server.create_user("hilda", "hilda-password", name="Hilda")
    return sign_in_phone(server, app, "hilda", "hilda-password")["access_token"]


@pytest.fixture(scope="module")
def qr_tokens(server, client, phone_token) -> dict:
    ticket = approved_ticket(server, client, phone_token, scope="openid profile")
    response = server.poll(client, ticket["ticket"])
    assert response.status_code == 200, response.text
    return response.json()


def credentials(name: str, client: dict, phone_token: str) -> dict:
    auth = ENDPOINTS[name][1]
    if auth == "client":
        return {"auth": (client["client_id"], client["client_secret"])}
    if auth == "bearer":
        return {"headers": {"Authorization": f"Bearer {phone_token}"}}
    return {}


def send(server, name: str, body: str, creds: dict) -> requests.Response:
    content_type, data = BAD_BODIES[body]
    headers = dict(creds.get("headers", {}))
    if content_type is not None:
        headers["Content-Type"] = content_type
    data = data() if callable(data) else data
    return requests.post(server.meta[ENDPOINTS[name][0]], data=data, headers=headers,
                         auth=creds.get("auth"), timeout=30)


def assert_json_error(name: str, response: requests.Response) -> dict:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers.get("Content-Type", "").startswith("application/json"), \
        (response.status_code, response.headers.get("Content-Type"), response.text[:200])
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    if response.status_code == 401 and name in BEARER:  # RFC 6750 §3, or RFC 9449 §7.1
        assert response.headers.get("WWW-Authenticate", "").startswith(("Bearer ", "DPoP ")), \
            response.headers
    return body


def table_counts(server) -> dict:
    return {table: server.db(f"SELECT COUNT(*) FROM {table}")[0][0]
            for table in ("tickets", "tokens", "redeemed_codes", "clients", "users")}


# -- bodies ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", list(BAD_BODIES))
@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_a_malformed_body_from_a_legitimate_caller_gets_a_json_error_and_never_a_5xx(
        server, client, phone_token, name, body):
    response = send(server, name, body, credentials(name, client, phone_token))
    if body in HUGE:
        assert response.status_code == 413, (response.status_code, response.text[:300])
        assert_json_error(name, response)
    elif name in IGNORES_BODY or (body, name) in TOLERABLE:
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert_json_error(name, response)
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        assert_json_error(name, response)


@pytest.mark.parametrize("body", list(BAD_BODIES))
@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_a_malformed_body_without_credentials_gets_a_json_error_and_never_a_5xx(
        server, name, body):
    response = send(server, name, body, {})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert_json_error(name, response)
    if name in BEARER:
        assert response.status_code in (401, 413)


def test_a_large_body_just_under_the_limit_is_read_not_refused(server, client):
    body = urlencode({"scope": "nope", "pad": "x" * (LIMIT - 2000)})
    response = requests.post(server.meta["qr_ticket_endpoint"], data=body,
                             headers={"Content-Type": FORM},
                             auth=(client["client_id"], client["client_secret"]), timeout=30)
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


# -- headers ---------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(server, qr_tokens, how: str) -> str:
    real = qr_tokens["access_token"]
    header_b64, payload_b64, signature = real.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    claims = jwt.decode(real, options={"verify_signature": False})
    if how == "alg_none":
        return f"{_b64(_json({**header, 'alg': 'none'}))}.{payload_b64}."
    if how == "hs256_with_the_public_key":
        jwks = requests.get(server.meta["jwks_uri"], timeout=10).json()["keys"]
        public = next(k for k in jwks if k["kid"] == header["kid"])
        signing_input = f"{_b64(_json({**header, 'alg': 'HS256'}))}.{payload_b64}"
        mac = hmac.new(json.dumps(public).encode(), signing_input.encode(), hashlib.sha256)
        return f"{signing_input}.{_b64(mac.digest())}"
    if how == "foreign_key_with_the_real_kid":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(claims, key, algorithm="RS256",
                          headers={"kid": header["kid"], "typ": "at+jwt"})
    if how == "tampered_claims":
        return f"{header_b64}.{_b64(_json({**claims, 'scope': 'openid qr:approve'}))}.{signature}"
    if how == "id_token_instead":
        return qr_tokens["id_token"]
    if how == "truncated_signature":
        return real[:-10]
    raise AssertionError(how)


FORGED = ["alg_none", "hs256_with_the_public_key", "foreign_key_with_the_real_kid",
          "tampered_claims", "id_token_instead", "truncated_signature"]
RAW_HEADERS = {
    "bearer_without_token": "Bearer",
    "bearer_with_blank": "Bearer    ",
    "basic_instead": "Basic " + base64.b64encode(b"a:b").decode(),
    "three_dots": "Bearer a.b.c",
    "long_garbage": "Bearer " + "x" * 7000,
    "latin1_bytes": "Bearer \xe9\xff".encode("latin-1"),
    "two_tokens": "Bearer a.b.c, Bearer d.e.f",
}


@pytest.mark.parametrize("how", FORGED + list(RAW_HEADERS))
@pytest.mark.parametrize("name", BEARER)
def test_a_bad_or_forged_bearer_token_gets_401_invalid_token_with_a_challenge(
        server, qr_tokens, name, how):
    value = RAW_HEADERS[how] if how in RAW_HEADERS else "Bearer " + _forged(server, qr_tokens,
                                                                              how)
    response = requests.post(server.meta[ENDPOINTS[name][0]], data={"scan_code": "abc"},
                             headers={"Authorization": value}, timeout=30)
    assert response.status_code == 401, (response.status_code, response.text[:300])
    assert assert_json_error(name, response)["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


BASIC_HEADERS = {
    "not_base64": "Basic !!!not-base64!!!",
    "no_colon": "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "non_utf8": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "empty": "Basic",
    "empty_pair": "Basic " + base64.b64encode(b":").decode(),
    "long_client_id": "Basic " + base64.b64encode(b"c" * 3000 + b":s").decode(),
    "nul_bytes": "Basic " + base64.b64encode(b"a\x00b:c\x00d").decode(),
}


@pytest.mark.parametrize("how", list(BASIC_HEADERS))
@pytest.mark.parametrize("name", CLIENT)
def test_a_bad_basic_authorization_header_gets_a_json_client_error(server, name, how):
    data = {"grant_type": QR_GRANT, "ticket": "abc", "scope": "openid"}
    response = requests.post(server.meta[ENDPOINTS[name][0]], data=data,
                             headers={"Authorization": BASIC_HEADERS[how]}, timeout=30)
    assert response.status_code in (400, 401), (response.status_code, response.text[:300])
    assert assert_json_error(name, response)["error"] in ("invalid_client", "invalid_request")
    if response.status_code == 401:  # RFC 6749 §5.2: the scheme the client tried
        assert response.headers.get("WWW-Authenticate", "").startswith("Basic")


# -- malformed DPoP proofs (RFC 9449) --------------------------------------------------------------
DPOP_GRANTS = ("authorization_code", "refresh_token", QR_GRANT, DEVICE_GRANT)


def bad_proofs(url: str, method: str, key: DPoPKey, access_token: str | None = None) -> dict:
    """Proof headers that must each be refused for ``method`` ``url`` (a str is sent as it is, a
    bytes value as raw header bytes, a list as that many ``DPoP`` headers)."""
    def proof(**kwargs):
        return key.proof(method, kwargs.pop("htu", url), access_token=access_token, **kwargs)

    private = {**key.public(), "d": key.key.as_dict(private=True)["d"]}
    claims = {"jti": secrets.token_urlsafe(12), "htm": method, "htu": url,
              "iat": int(time.time()), **({"ath": _b64(hashlib.sha256(
                  access_token.encode()).digest())} if access_token else {})}
    good = proof()
    return {
        "not_a_jwt": "not-a-jwt",
        "two_parts": "a.b",
        "four_parts": good + ".x",
        "garbage_parts": "!!.??.**",
        "base64_of_junk": f"{_b64(b'junk')}.{_b64(b'more junk')}.{_b64(b'sig')}",
        "json_array_header": f"{_b64(b'[1, 2]')}.{_b64(_json(claims))}.c2ln",
        "wrong_typ": proof(header={"typ": "JWT"}),
        "at_jwt_typ": proof(header={"typ": "at+jwt"}),
        "no_typ": proof(header={"typ": None}),
        "private_key_in_the_header": proof(header={"jwk": private}),
        "no_jwk": proof(header={"jwk": None}),
        "jwk_not_an_object": unsigned({"typ": "dpop+jwt", "alg": "ES256", "jwk": "key"}, claims,
                                      "c2ln"),
        "symmetric_jwk": unsigned({"typ": "dpop+jwt", "alg": "ES256",
                                   "jwk": {"kty": "oct", "k": "c2VjcmV0"}}, claims, "c2ln"),
        "alg_none": unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": key.public()}, claims),
        "alg_none_with_signature": unsigned({"typ": "dpop+jwt", "alg": "none",
                                             "jwk": key.public()}, claims, "c2ln"),
        "hs256": _hs256({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public()}, claims,
                        json.dumps(key.public()).encode()),
        "another_keys_jwk": proof(header={"jwk": DPoPKey().public()}),
        "bad_signature": good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB"),
        "huge": "a" * 9000 + "." + "b" * 10 + "." + "c",
        "huge_real_proof": proof(padding="x" * 9000),
        "non_ascii_latin1": (good + "\u00e9").encode("latin-1"),
        "non_ascii_utf8": (good[:40] + "\u00e9\u2603" + good[40:]).encode("utf-8"),
        "htu_with_a_query": proof(htu=url + "?x=1"),
        "htu_with_a_fragment": proof(htu=url + "#frag"),
        "htu_other_path": proof(htu=url + "/more"),
        "htu_other_scheme": proof(htu=url.replace("http://", "ftp://", 1)),
        "other_method": key.proof("GET" if method == "POST" else "POST", url,
                                  access_token=access_token),
        "too_old": proof(iat=int(time.time()) - 3600),
        "from_the_future": proof(iat=int(time.time()) + 3600),
        "iat_a_string": proof(iat="now"),
        "iat_a_boolean": proof(iat=True),
        "no_jti": proof(jti=None),
        "short_jti": proof(jti="x"),
        "jti_not_a_string": proof(jti=12345678901),
        "two_headers": [proof(), proof()],
        "two_proofs_joined": proof() + ", " + proof(),
        "a_lone_comma": ",",
    }


def _hs256(header: dict, claims: dict, secret: bytes) -> str:
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def raw_post(url: str, headers: list[tuple[str, str | bytes]], body: bytes = b"",
             content_type: str = FORM) -> tuple[int, dict, bytes]:
    """A POST whose headers go out as given: repeated, or raw bytes (requests would merge or
    re-encode them)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("POST", parts.path or "/")
        for name, value in [("Content-Type", content_type),
                            ("Content-Length", str(len(body))), *headers]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def send_proof(url: str, proof, headers: dict, body: dict) -> tuple[int, dict, dict]:
    """The request with ``proof`` as its DPoP header(s); (status, headers, JSON body)."""
    values = proof if isinstance(proof, list) else [proof]
    raw = [*headers.items(), *(("DPoP", value) for value in values)]
    status, answer_headers, content = raw_post(url, raw, urlencode(body).encode())
    assert status < 500, (status, content[:300])
    assert answer_headers.get("content-type", "").startswith("application/json"), \
        (status, answer_headers, content[:200])
    return status, answer_headers, json.loads(content)


def basic(client: dict) -> dict:
    raw = f"{client['client_id']}:{client['client_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.fixture(scope="module")
def bound_phone(server) -> tuple[DPoPKey, str]:
    """A phone app (``--require-dpop``, as the real one may be) whose access token is bound to
    its key."""
    app = server.create_client("--name", "Bound app", "--public", "--first-party",
                               "--redirect-uri", "http://127.0.0.1/callback",
                               "--grant-type", "authorization_code",
                               "--scope", "openid profile qr:approve", "--require-dpop")
    server.create_user("hugo", "hugo-password", name="Hugo")
    key = DPoPKey()
    _session, query, verifier = authorize(server, app, "hugo", "hugo-password",
                                          scope="openid profile qr:approve")
    answer = requests.post(server.url + "/token", timeout=30, headers={
        "DPoP": key.proof("POST", server.url + "/token")}, data={
        "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": app["redirect_uris"][0], "client_id": app["client_id"],
        "code_verifier": verifier})
    assert answer.status_code == 200 and answer.json()["token_type"] == "DPoP", answer.text
    return key, answer.json()["access_token"]


def ticket_state(server, ticket: str) -> tuple:
    digest = hashlib.sha256(ticket.encode()).hexdigest()
    return tuple(server.db("SELECT status, user_id, scanned_at, decided_at, redeemed_at, "
                           "last_poll_at, poll_interval, dpop_jkt FROM tickets "
                           "WHERE ticket_hash = ?", digest)[0])


def test_malformed_dpop_proofs_at_the_token_endpoint_are_refused_and_change_nothing(
        server, client, phone_token):
    """Every grant that the token endpoint serves, on both of its paths (the event path's QR and
    device polls, the WSGI path's refresh): 400 ``invalid_dpop_proof``, no token, no poll
    recorded, nothing used up; the same tickets then redeem with a good proof."""
    key = DPoPKey()
    url = server.meta["token_endpoint"]
    auth = basic(client)
    bound = requests.post(server.meta["qr_ticket_endpoint"], timeout=30, data={"scope": "openid"},
                          headers={**auth, "DPoP": key.proof(
                              "POST", server.meta["qr_ticket_endpoint"])})
    assert bound.status_code == 201, bound.text
    bound = bound.json()
    for action in ("scan", "approve"):
        assert server.phone(action, phone_token,
                            scan_code=server.scan_code(bound)).status_code == 200
    pending = server.ticket(client, scope="openid")
    unbound = approved_ticket(server, client, phone_token, scope="openid offline_access")
    refresh = server.poll(client, unbound["ticket"]).json()["refresh_token"]
    requests_by_grant = {
        "bound QR ticket": {"grant_type": QR_GRANT, "ticket": bound["ticket"]},
        "pending QR ticket": {"grant_type": QR_GRANT, "ticket": pending["ticket"]},
        "refresh token": {"grant_type": "refresh_token", "refresh_token": refresh},
        "device code": {"grant_type": DEVICE_GRANT, "device_code": "never-issued"},
        "code": {"grant_type": "authorization_code", "code": "never-issued"},
    }
    states = {name: ticket_state(server, t["ticket"]) for name, t in
              (("bound", bound), ("pending", pending))}
    before = table_counts(server)
    problems = []
    for what, body in requests_by_grant.items():
        for how, proof in bad_proofs(url, "POST", key).items():
            status, headers, answer = send_proof(url, proof, auth, body)
            if (status, answer.get("error")) != (400, "invalid_dpop_proof") \
                    or "access_token" in answer or headers.get("cache-control") != "no-store":
                problems.append(f"{what} {how}: {status} {answer}")
    assert not problems, "\n".join(problems)
    assert table_counts(server) == before
    assert {name: ticket_state(server, t["ticket"]) for name, t in
            (("bound", bound), ("pending", pending))} == states
    assert server.status(bound["ticket"]).json()["status"] == "approved"
    assert server.status(pending["ticket"]).json()["status"] == "pending"
    # nothing was used up: the bound ticket and the refresh token work with good proofs
    good = requests.post(url, timeout=30, data=requests_by_grant["bound QR ticket"],
                         headers={**auth, "DPoP": key.proof("POST", url)})
    assert good.status_code == 200 and good.json()["token_type"] == "DPoP", good.text
    renewed = requests.post(url, timeout=30, data=requests_by_grant["refresh token"],
                            headers={**auth, "DPoP": key.proof("POST", url)})
    assert renewed.status_code == 200, renewed.text


@pytest.mark.parametrize("name", ["qr_ticket", "device_authorization"])
def test_malformed_dpop_proofs_at_ticket_creation_are_refused_and_make_no_ticket(
        server, client, name):
    key = DPoPKey()
    url = server.meta[ENDPOINTS[name][0]]
    before = table_counts(server)
    problems = []
    for with_jkt in (False, True):
        body = {"scope": "openid", **({"dpop_jkt": key.jkt} if with_jkt else {})}
        for how, proof in bad_proofs(url, "POST", key).items():
            status, _headers, answer = send_proof(url, proof, basic(client), body)
            if (status, answer.get("error")) != (400, "invalid_dpop_proof"):
                problems.append(f"{how} (dpop_jkt: {with_jkt}): {status} {answer}")
    assert not problems, "\n".join(problems)
    assert table_counts(server) == before  # no ticket was made
    # a dpop_jkt that is not a thumbprint
    for jkt in ("x" * 42, "x" * 44, "+" * 43, key.jkt + "=", "\u00e9" * 43):
        answer = requests.post(url, timeout=30, data={"dpop_jkt": jkt}, headers=basic(client))
        assert answer.status_code == 400, (jkt, answer.text)
        assert answer.json()["error"] == "invalid_request", (jkt, answer.text)
    assert table_counts(server) == before


PHONE = ["qr_scan", "qr_approve", "qr_deny", "qr_inbox", "userinfo"]


@pytest.mark.parametrize("name", PHONE)
def test_malformed_dpop_proofs_at_the_phones_endpoints_are_refused_and_change_nothing(
        server, client, bound_phone, name):
    """With a DPoP-bound token: 401 ``invalid_dpop_proof`` (or ``invalid_token`` for a key that is
    not the token's) with a DPoP challenge; a pending ticket stays pending, a scanned one
    scanned."""
    key, token = bound_phone
    url = server.meta[ENDPOINTS[name][0]]
    ticket = server.ticket(client, scope="openid")
    code = server.scan_code(ticket)
    if name in ("qr_approve", "qr_deny"):  # a ticket the phone scanned, waiting for its decision
        scan_url = server.meta["qr_scan_endpoint"]
        scanned = requests.post(scan_url, data={"scan_code": code}, timeout=30, headers={
            "Authorization": f"DPoP {token}",
            "DPoP": key.proof("POST", scan_url, access_token=token)})
        assert scanned.status_code == 200, scanned.text
    state = ticket_state(server, ticket["ticket"])
    before = table_counts(server)
    problems = []
    for how, proof in bad_proofs(url, "POST", key, access_token=token).items():
        status, headers, answer = send_proof(url, proof, {"Authorization": f"DPoP {token}"},
                                             {"scan_code": code})
        challenge = headers.get("www-authenticate", "")
        if status != 401 or answer.get("error") not in ("invalid_dpop_proof", "invalid_token") \
                or not challenge.startswith(f'DPoP error="{answer.get("error")}"') \
                or 'algs="' not in challenge:
            problems.append(f"{how}: {status} {answer} {challenge!r}")
    # the token as Bearer, or with no proof at all
    for how, headers in (("as Bearer", {"Authorization": f"Bearer {token}"}),
                         ("no proof", {"Authorization": f"DPoP {token}"})):
        answer = requests.post(url, data={"scan_code": code}, headers=headers, timeout=30)
        if answer.status_code != 401 or not answer.headers.get(
                "WWW-Authenticate", "").startswith("DPoP "):
            problems.append(f"{how}: {answer.status_code} {answer.text[:200]}")
    assert not problems, "\n".join(problems)
    assert table_counts(server) == before
    assert ticket_state(server, ticket["ticket"]) == state
    expected = "pending" if name in ("qr_scan", "qr_inbox", "userinfo") else "scanned"
    assert server.status(ticket["ticket"]).json()["status"] == expected
    # the same request with a good proof is answered
    good = requests.post(url, data={"scan_code": code}, timeout=30, headers={
        "Authorization": f"DPoP {token}", "DPoP": key.proof("POST", url, access_token=token)})
    assert good.status_code == 200, good.text


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize("name", ["token", "qr_ticket", "device_authorization"])
def test_an_empty_dpop_header_is_refused_like_any_malformed_proof(server, client, phone_token,
                                                                  name, blank):
    url = server.meta[ENDPOINTS[name][0]]
    body = {"scope": "openid"}
    if name == "token":
        unbound = approved_ticket(server, client, phone_token, scope="openid offline_access")
        body = {"grant_type": "refresh_token",
                "refresh_token": server.poll(client, unbound["ticket"]).json()["refresh_token"]}
    before = table_counts(server)
    status, _headers, answer = send_proof(url, blank, basic(client), body)
    assert (status, answer.get("error")) == (400, "invalid_dpop_proof"), (status, answer)
    assert table_counts(server) == before


@pytest.mark.parametrize("name", ["qr_scan", "userinfo"])
def test_a_dpop_header_beside_a_bearer_token_is_not_acted_on(server, client, phone_token, name):
    """An unbound token is sent as Bearer; a DPoP header beside it, however malformed, is not
    read (RFC 9449 §7.2) and never a 5xx."""
    url = server.meta[ENDPOINTS[name][0]]
    key = DPoPKey()
    ticket = server.ticket(client, scope="openid")  # the same user scanning again: the same view
    bearer = {"Authorization": f"Bearer {phone_token}"}
    for how, proof in bad_proofs(url, "POST", key).items():
        status, _headers, answer = send_proof(url, proof, bearer,
                                              {"scan_code": server.scan_code(ticket)})
        assert status == 200, (how, status, answer)


# -- methods and paths -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("name", POST_ONLY)
def test_a_post_only_endpoint_answers_other_methods_with_405(server, name, method):
    response = requests.request(method, server.meta[ENDPOINTS[name][0]], timeout=30)
    assert response.status_code == 405
    assert_json_error(name, response)
    assert "POST" in response.headers.get("Allow", "")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_userinfo_answers_methods_other_than_get_and_post_with_405(server, method):
    response = requests.request(method, server.meta["userinfo_endpoint"], timeout=30)
    assert response.status_code == 405
    assert_json_error("userinfo", response)
    allowed = response.headers.get("Allow", "")
    assert "GET" in allowed and "POST" in allowed


UNKNOWN_PATHS = ["/nope", "/token/extra", "/qr", "/qr/", "/qr/nope", "/qr/ticket/extra",
                 "/qr/status/x", "/userinfo/me", "/.well-known/nope", "/jwks.json/x",
                 "/%ff%fe", "/qr/%00", "/" + "a" * 2000]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", UNKNOWN_PATHS, ids=lambda p: quote(p[:40], safe=""))
def test_an_unknown_path_answers_404_with_a_json_error(server, path, method):
    response = requests.request(method, server.url + path, data={"ticket": "abc"}, timeout=30)
    assert response.status_code == 404, (response.status_code, response.text[:200])
    assert_json_error("unknown", response)


# -- repeated parameters at the token endpoint (RFC 6749 §3.2) -------------------------------------
@pytest.mark.parametrize("repeated", ["ticket", "grant_type"])
def test_a_token_request_with_a_repeated_parameter_is_refused_and_uses_nothing_up(
        server, client, phone_token, repeated):
    ticket = approved_ticket(server, client, phone_token, scope="openid")
    pairs = [("grant_type", QR_GRANT), ("ticket", ticket["ticket"])]
    pairs.append((repeated, "junk" if repeated == "ticket" else QR_GRANT))
    tokens_before = table_counts(server)["tokens"]
    response = requests.post(server.meta["token_endpoint"], data=pairs,
                             auth=(client["client_id"], client["client_secret"]), timeout=30)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"] == "invalid_request"
    assert "access_token" not in response.json()
    assert table_counts(server)["tokens"] == tokens_before
    assert server.status(ticket["ticket"]).json()["status"] == "approved"
    good = server.poll(client, ticket["ticket"])
    assert good.status_code == 200, good.text


# -- the database is unharmed ----------------------------------------------------------------------
def test_a_batch_of_bad_requests_leaves_the_database_and_live_tickets_unharmed(
        server, client, phone_token):
    pending = server.ticket(client, scope="openid")
    approved = approved_ticket(server, client, phone_token, scope="openid")
    auth = (client["client_id"], client["client_secret"])
    before = table_counts(server)

    problems = []
    for name in ENDPOINTS:
        for body in BAD_BODIES:
            for creds in ({}, credentials(name, client, phone_token)):
                if creds and (body, name) in TOLERABLE:
                    continue
                status = send(server, name, body, creds).status_code
                if status >= 500 or (status < 400 and name not in IGNORES_BODY):
                    problems.append(f"{name} {body} {'with' if creds else 'without'} "
                                    f"credentials: {status}")
    # the live secrets, sent in ways that must not work
    token_url, scan_url = server.meta["token_endpoint"], server.meta["qr_scan_endpoint"]
    bearer = {"Authorization": f"Bearer {phone_token}"}
    scan_code = server.scan_code(pending)
    attempts = {
        "token: ticket in a JSON object": (token_url, {
            "data": _json({"grant_type": QR_GRANT, "ticket": {"t": approved["ticket"]}}),
            "headers": {"Content-Type": JSON}, "auth": auth}),
        "token: form sent as text/plain": (token_url, {
            "data": f"grant_type={QR_GRANT}&ticket={approved['ticket']}",
            "headers": {"Content-Type": "text/plain"}, "auth": auth}),
        "token: ticket repeated": (token_url, {
            "data": [("grant_type", QR_GRANT), ("ticket", approved["ticket"]),
                     ("ticket", "junk")], "auth": auth}),
        "token: parameters in the query string": (
            token_url + "?" + urlencode({"grant_type": QR_GRANT, "ticket": approved["ticket"]}),
            {"auth": auth}),
        "scan: JSON array": (scan_url, {"data": _json([{"scan_code": scan_code}]),
                                        "headers": {**bearer, "Content-Type": JSON}}),
        "scan: scan_code in a list": (scan_url, {"data": _json({"scan_code": [scan_code]}),
                                                 "headers": {**bearer, "Content-Type": JSON}}),
        "scan: text/plain": (scan_url, {"data": f"scan_code={scan_code}",
                                        "headers": {**bearer, "Content-Type": "text/plain"}}),
        "scan: scan_code in the query string": (
            scan_url + "?" + urlencode({"scan_code": scan_code}), {"headers": bearer}),
        "scan: no token": (scan_url, {"data": {"scan_code": scan_code}}),
    }
    for what, (url, kwargs) in attempts.items():
        status = requests.post(url, timeout=30, **kwargs).status_code
        if not 400 <= status < 500:
            problems.append(f"{what}: {status}")

    after = table_counts(server)
    if after != before:
        problems.append(f"row counts changed: {before} -> {after}")
    for label, live, expected in (("pending", pending, "pending"),
                                  ("approved", approved, "approved")):
        status = server.status(live["ticket"]).json()["status"]
        if status != expected:
            problems.append(f"the {label} ticket is now {status}")
    assert not problems, "\n".join(problems)
    # and the server still works
    assert server.poll(client, approved["ticket"]).status_code == 200


# -- the log keeps no secrets ----------------------------------------------------------------------
def test_the_server_log_never_contains_a_ticket_code_or_token_in_play(server, client,
                                                                      phone_token):
    auth = (client["client_id"], client["client_secret"])
    log_before = len(server.log())
    secret_values: dict[str, str] = {"phone access token": phone_token,
                                     "client secret": client["client_secret"]}

    # QR login: ticket, image by scan code, status, scan, approve, redeem, userinfo, refresh
    ticket = server.ticket(client, scope="openid profile offline_access",
                           nonce=secrets.token_urlsafe(12))
    scan_code = server.scan_code(ticket)
    secret_values.update(ticket=ticket["ticket"], scan_code=scan_code,
                         user_code=ticket["user_code"],
                         user_code_plain=ticket["user_code"].replace("-", ""))
    assert requests.get(ticket["qr_image"], timeout=30).status_code == 200
    requests.get(ticket["qr_content"], timeout=30)  # opened in a browser without the app
    assert server.status(ticket["ticket"]).json()["status"] == "pending"
    requests.post(server.meta["qr_status_endpoint"] + "?ticket=" + ticket["ticket"], timeout=30)
    requests.get(server.url + "/nope/" + ticket["ticket"], timeout=30)
    assert server.phone("scan", phone_token, scan_code=scan_code).status_code == 200
    assert server.phone("approve", phone_token, scan_code=scan_code).status_code == 200
    redeemed = server.poll(client, ticket["ticket"])
    assert redeemed.status_code == 200, redeemed.text
    tokens = redeemed.json()
    assert server.poll(client, ticket["ticket"]).json()["error"] == "invalid_grant"
    assert requests.get(server.meta["userinfo_endpoint"], timeout=30, headers={
        "Authorization": f"Bearer {tokens['access_token']}"}).status_code == 200
    refreshed = requests.post(server.meta["token_endpoint"], data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=auth,
        timeout=30)
    assert refreshed.status_code == 200, refreshed.text
    for key in ("access_token", "id_token", "refresh_token"):
        secret_values[key] = tokens[key]
        secret_values["refreshed " + key] = refreshed.json()[key]

    # device flow, approved by typed user code
    device = requests.post(server.meta["device_authorization_endpoint"],
                           data={"scope": "openid"}, auth=auth, timeout=30)
    assert device.status_code == 200, device.text
    device = device.json()
    secret_values.update(device_code=device["device_code"], device_user_code=device["user_code"],
                         device_scan_code=device["verification_uri_complete"].rsplit("/", 1)[1])
    assert server.phone("scan", phone_token, user_code=device["user_code"]).status_code == 200
    assert server.phone("approve", phone_token, user_code=device["user_code"]).status_code == 200
    got = requests.post(server.meta["token_endpoint"], data={
        "grant_type": DEVICE_GRANT, "device_code": device["device_code"]}, auth=auth, timeout=30)
    assert got.status_code == 200, got.text
    secret_values["device access_token"] = got.json()["access_token"]

    # and the same secrets thrown at the endpoints in malformed ways
    requests.post(server.meta["qr_status_endpoint"], data=_json({"ticket": [ticket["ticket"]]}),
                  headers={"Content-Type": JSON}, timeout=30)
    requests.post(server.meta["qr_scan_endpoint"], data={"scan_code": scan_code},
                  headers={"Authorization": "Bearer " + tokens["access_token"][:-4]}, timeout=30)

    log = server.log()
    assert len(log) > log_before, "the server logs requests (else this test proves nothing)"
    leaked = []
    for what, value in secret_values.items():
        needles = [value]
        if value.count(".") == 2:  # a JWT: its signature alone identifies it
            needles.append(value.rsplit(".", 1)[1])
        if any(needle in log for needle in needles):
            leaked.append(what)
    assert not leaked, f"the log holds: {leaked}"
