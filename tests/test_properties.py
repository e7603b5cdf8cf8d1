"""Property-based tests (hypothesis).

1. The pure functions behind the codes a person reads or types (``provider/security.py``): user
   codes normalise and round-trip; number-matching choices are three distinct two-digit numbers,
   the right one among them, the same every time for a ticket.
2. Request bodies (``provider/web/body.py``) through the app itself (its WSGI stack, in-process, on
   SQLite and on PostgreSQL): whatever text, form, JSON or bytes arrive at the JSON endpoints, the
   answer is never a 5xx and every error is JSON with a string ``error``; what body.py promises
   to refuse (repeated parameters, JSON that is not an object of strings) is refused. Whatever
   arrives in a ``DPoP`` header (RFC 9449) at the token endpoint, at ticket creation and, with a
   DPoP-bound token, at the phone's endpoints and userinfo (random bytes, JWT-shaped junk, JOSE
   headers and claims of any shape, alg none, HS256, private keys, huge, repeated) is refused with
   400/401 ``invalid_dpop_proof`` and changes nothing.
3. The ticket lifecycle (SPEC.md) as a state machine against a real ``qr-oidc serve``: arbitrary
   sequences of ticket creation, scans, approvals and denials by two users, right and wrong
   numbers, status reads, token polls (alone and concurrent) and expiry. Every answer is the one
   the lifecycle gives; the stored ticket is always in a state the lifecycle can reach; a ticket
   yields tokens at most once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from typing import ClassVar
from urllib.parse import urlencode

import jwt
import pytest
import requests
from dpop_client import DPoPKey
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from qr_oidc.provider.security import (
    USER_CODE_ALPHABET,
    binding_choices,
    binding_code,
    normalize_user_code,
    user_code_for,
)

from conftest import phone_app
from helpers import (
    DEVICE_GRANT,
    GENEROUS_LIMITS,
    QR_GRANT,
    Provider,
    create_pg_database,
    drop_pg_database,
    sign_in_phone,
)

USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
QUICK = settings(max_examples=300, deadline=None, database=None)


# -- 1. codes --------------------------------------------------------------------------------------
@QUICK
@given(st.text())
def test_what_the_user_code_normaliser_accepts_is_a_canonical_code_that_round_trips(text):
    code = normalize_user_code(text)
    if code is None:
        return
    assert USER_CODE.match(code), code
    assert normalize_user_code(code) == code
    assert normalize_user_code(code.lower()) == code
    # nothing but case, dashes and blanks was dropped or changed
    assert code.replace("-", "") == "".join(ch for ch in text.upper() if ch not in "- \t")


typed_code = st.lists(st.sampled_from(USER_CODE_ALPHABET), min_size=8, max_size=8).map("".join)


@QUICK
@given(typed_code, st.data())
def test_a_user_code_typed_in_any_case_with_dashes_and_blanks_normalises_to_itself(raw, data):
    canonical = raw[:4] + "-" + raw[4:]
    typed = ""
    for ch in raw:
        typed += data.draw(st.sampled_from(["", "-", " ", "\t", " - "]))
        typed += data.draw(st.sampled_from([ch, ch.lower()]))
    typed += data.draw(st.sampled_from(["", " ", "-"]))
    assert normalize_user_code(typed) == canonical


@QUICK
@given(typed_code, st.sampled_from(USER_CODE_ALPHABET + "AEIOUY0123456789"))
def test_a_code_one_character_off_in_length_or_alphabet_is_refused(raw, extra):
    assert normalize_user_code(raw[:7]) is None
    assert normalize_user_code(raw + extra) is None
    if extra not in USER_CODE_ALPHABET:
        assert normalize_user_code(raw[:7] + extra) is None


@QUICK
@given(st.text(min_size=1, max_size=64))
def test_the_user_code_derived_from_a_scan_code_is_canonical_and_stable(scan_code):
    code = user_code_for(scan_code)
    assert USER_CODE.match(code), code
    assert user_code_for(scan_code) == code
    assert normalize_user_code(code) == code


@QUICK
@given(st.integers(0, 99), st.text(max_size=64))
def test_binding_choices_are_three_distinct_two_digit_numbers_with_the_right_one(number, seed):
    correct = f"{number:02d}"
    choices = binding_choices(correct, seed)
    assert len(choices) == 3 and len(set(choices)) == 3, choices
    assert all(re.fullmatch(r"[0-9]{2}", c) for c in choices), choices
    assert correct in choices
    # deterministic per ticket: scanning twice shows the same three, in the same order
    assert binding_choices(correct, seed) == choices


def test_binding_choices_differ_between_tickets_and_put_the_right_one_anywhere():
    """Not always the same distractors, and the right one not always at the same place."""
    seen_sets, positions = set(), set()
    for i in range(200):
        choices = binding_choices("42", f"ticket-{i}")
        seen_sets.add(tuple(sorted(choices)))
        positions.add(choices.index("42"))
    assert len(seen_sets) > 50
    assert positions == {0, 1, 2}


@QUICK
@given(st.integers(0, 1000))
def test_a_binding_code_is_two_digits(_):
    assert re.fullmatch(r"[0-9]{2}", binding_code())


# -- 2. bodies, through the app --------------------------------------------------------------------
POST_ENDPOINTS = ["/qr/ticket", "/qr/status", "/token", "/device_authorization", "/revoke",
                  "/introspect", "/qr/scan", "/qr/approve", "/qr/deny", "/userinfo",
                  "/backchannel/authenticate", "/qr/inbox"]
PARAMS = ["grant_type", "ticket", "scope", "nonce", "code_challenge", "code_challenge_method",
          "client_id", "client_secret", "wait", "last_status", "scan_code", "user_code",
          "binding_code", "device_code", "code", "code_verifier", "refresh_token", "redirect_uri",
          "resource", "token", "token_type_hint", "login_hint", "id_token_hint",
          "binding_message", "requested_expiry", "client_notification_token", "auth_req_id",
          "cursor", "requester_ip", "requester_user_agent"]
WEB = {"client_id": "web-client", "client_secret": "web-secret-" + "x" * 20}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, tmp_path_factory):
    from qr_oidc.provider.security import digest
    from qr_oidc.provider.storage.models import (
        CIBA_GRANT_TYPE,
        DEVICE_GRANT_TYPE,
        QR_GRANT_TYPE,
        Client,
    )
    from qr_oidc.provider.web.app import create_app

    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path_factory.mktemp('props')}/app.db", None
    else:
        url = drop = create_pg_database()
    limits = {key.removeprefix("QR_OIDC_"): value for key, value in GENEROUS_LIMITS.items()}
    application = create_app({"DATABASE_URL": url, "LONG_POLL_MAX": 0, **limits})
    parts = application.extensions["qr_oidc"]
    with parts.db.session_factory() as session:
        session.add(Client(
            client_id=WEB["client_id"], name="Web shop", secret_hash=digest(WEB["client_secret"]),
            public=False, grant_types=[QR_GRANT_TYPE, DEVICE_GRANT_TYPE, "refresh_token",
                                       "authorization_code", CIBA_GRANT_TYPE],
            redirect_uris=["https://shop.example/cb"], scope="openid profile email offline_access",
        ))
        session.commit()
    yield application
    parts.db.engine.dispose()
    if drop:
        drop_pg_database(drop)


def assert_protocol_answer(response, where: str) -> dict | None:
    """Never a 5xx; an error is JSON with a non-empty string ``error``."""
    assert response.status_code < 500, (where, response.status_code, response.get_data()[:300])
    if response.status_code < 400:
        return None
    assert response.mimetype == "application/json", (where, response.status_code,
                                                     response.mimetype)
    body = json.loads(response.get_data())
    assert isinstance(body, dict), (where, body)
    assert isinstance(body.get("error"), str) and body["error"], (where, body)
    return body


text = st.text(max_size=80)
interesting = st.sampled_from([
    "", "openid", "openid profile offline_access", QR_GRANT, DEVICE_GRANT, "authorization_code",
    "refresh_token", "S256", "0", "-1", "1.5", "nan", "inf", "-inf", "1e400", "25", "1_0",
    "WDJB-MJHT", "wdjb mjht", "\x00", "a\x00b", "ä", "💥", "\u202e", "%00", "%", "&", "=",
    '"', "\\", "a" * 300, "a" * 5000, WEB["client_id"], WEB["client_secret"],
])
values = st.one_of(text, interesting)
keys = st.one_of(st.sampled_from(PARAMS), text)
pairs = st.lists(st.tuples(keys, values), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
content_types = st.sampled_from([
    None, "application/x-www-form-urlencoded", "application/json", "text/plain",
    "application/vnd.example+json", "multipart/form-data", "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded; charset=latin-1", "application/json; charset=utf-16",
    "application/xml", "*/*", "application/json, text/plain", "",
])


def basic_header(user: str, password: str) -> str:
    raw = f"{user}:{password}".encode("utf-8", "surrogatepass")
    return "Basic " + base64.b64encode(raw).decode()


origins = st.sampled_from([None, "https://shop.example", "https://evil.example", "null"])
authorization = st.one_of(
    st.none(),
    st.just(basic_header(WEB["client_id"], WEB["client_secret"])),
    st.builds(basic_header, text, text),
    st.builds(lambda t: "Bearer " + t, st.text(alphabet=st.characters(
        min_codepoint=0x21, max_codepoint=0x7E), max_size=300)),
    st.builds(lambda t: "Basic " + t, st.text(alphabet=st.characters(
        min_codepoint=0x21, max_codepoint=0x7E), max_size=60)),
)


def post(app, path: str, body: bytes, content_type: str | None, auth: str | None,
         origin: str | None = None):
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    if origin is not None:  # a browser's call: the CORS layer looks the client up as well
        headers["Origin"] = origin
    with app.test_client() as client:
        return client.post(path, data=body, content_type=content_type, headers=headers)


def form_bytes(items) -> bytes:
    return urlencode([(k, v) for k, v in items], encoding="utf-8", errors="surrogatepass").encode()


BODY_SETTINGS = settings(max_examples=150, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])


@BODY_SETTINGS
@given(path=st.sampled_from(POST_ENDPOINTS), items=pairs, auth=authorization,
       as_json=st.booleans(), origin=origins)
def test_any_form_or_json_of_text_gets_a_protocol_answer_never_a_5xx(app, path, items, auth,
                                                                      as_json, origin):
    if as_json:
        # a JSON object keeps the last of repeated keys, as json.dumps would write them
        body, content_type = json.dumps(dict(items)).encode(), "application/json"
    else:
        body, content_type = form_bytes(items), "application/x-www-form-urlencoded"
    assert_protocol_answer(post(app, path, body, content_type, auth, origin),
                           f"{path} {items!r}")


@BODY_SETTINGS
@given(path=st.sampled_from(POST_ENDPOINTS), document=json_values, auth=authorization)
def test_any_json_document_gets_a_protocol_answer_never_a_5xx(app, path, document, auth):
    body = json.dumps(document).encode()
    assert_protocol_answer(post(app, path, body, "application/json", auth), f"{path} {body!r}")


@BODY_SETTINGS
@given(path=st.sampled_from(POST_ENDPOINTS), body=st.binary(max_size=400),
       content_type=content_types, auth=authorization)
def test_any_bytes_with_any_content_type_get_a_protocol_answer_never_a_5xx(app, path, body,
                                                                          content_type, auth):
    assert_protocol_answer(post(app, path, body, content_type, auth), f"{path} {body!r}")


@BODY_SETTINGS
@given(path=st.sampled_from(POST_ENDPOINTS), pieces=st.lists(st.one_of(
    st.sampled_from(['"', "\\ud800", "\\udfff", "\\u0000", "\\", "{", "}", "[", "]", ":", ",",
                     "null", "true", "1e999", "-0", '"ticket"', '"scope"', '"openid"']),
    text), max_size=12), auth=authorization)
def test_any_almost_json_text_gets_a_protocol_answer_never_a_5xx(app, path, pieces, auth):
    body = ("{" + "".join(pieces)).encode("utf-8", "surrogatepass")
    assert_protocol_answer(post(app, path, body, "application/json", auth), f"{path} {body!r}")


control_text = st.text(alphabet=st.sampled_from(["\x00", "\x01", "\x08", "\x1b", "\x1f", "\x7f",
                                                 "\x85", "\t", "\n", "\r", "a", "b", "-"]),
                       min_size=1, max_size=8)
VALID_BASIC = basic_header(WEB["client_id"], WEB["client_secret"])


@BODY_SETTINGS
@given(path=st.sampled_from(POST_ENDPOINTS),
       params=st.dictionaries(st.sampled_from(PARAMS), control_text, min_size=1, max_size=4),
       as_json=st.booleans(),
       auth=st.one_of(st.just(VALID_BASIC), st.builds(basic_header, control_text, control_text),
                      st.none()),
       origin=origins)
# a NUL in what is stored (the nonce) or looked up (the client id), in the body or in Basic
@example(path="/qr/ticket", params={"nonce": "a\x00b"}, as_json=False, auth=VALID_BASIC,
         origin=None)
@example(path="/device_authorization", params={"nonce": "\x00"}, as_json=True, auth=VALID_BASIC,
         origin=None)
@example(path="/qr/ticket", params={"scope": "openid"}, as_json=False,
         auth=basic_header("a\x00b", "secret"), origin=None)
@example(path="/token", params={"grant_type": QR_GRANT, "ticket": "x", "client_id": "a\x00b"},
         as_json=False, auth=None, origin=None)
@example(path="/revoke", params={"token": "x", "client_id": "\x00"}, as_json=True, auth=None,
         origin=None)
@example(path="/token", params={"grant_type": "x"}, as_json=False,
         auth=basic_header("a%00b", "secret"), origin="https://shop.example")
def test_control_characters_in_parameters_get_a_protocol_answer_never_a_5xx(
        app, path, params, as_json, auth, origin):
    """NUL and the other control characters in parameters and in the Basic credentials."""
    if as_json:
        body, content_type = json.dumps(params).encode(), "application/json"
    else:
        body, content_type = form_bytes(params.items()), "application/x-www-form-urlencoded"
    assert_protocol_answer(post(app, path, body, content_type, auth, origin),
                           f"{path} {params!r}")


# what body.py promises to refuse, whatever else the body holds
CLIENT_ENDPOINTS = ["/qr/ticket", "/token", "/device_authorization", "/revoke", "/introspect",
                    "/backchannel/authenticate"]


@BODY_SETTINGS
@given(path=st.sampled_from(CLIENT_ENDPOINTS + ["/qr/status"]), items=pairs,
       repeated=st.tuples(keys, values, values), where=st.integers(0, 8),
       auth=st.sampled_from([None, basic_header(WEB["client_id"], WEB["client_secret"])]))
def test_a_form_with_a_repeated_parameter_is_refused_as_invalid_request(app, path, items,
                                                                          repeated, where, auth):
    key, first, second = repeated
    items = list(items)
    items.insert(min(where, len(items)), (key, first))
    items.append((key, second))
    response = post(app, path, form_bytes(items), "application/x-www-form-urlencoded", auth)
    body = assert_protocol_answer(response, f"{path} {items!r}")
    assert response.status_code == 400 and body["error"] == "invalid_request", \
        (path, items, response.status_code, body)


@BODY_SETTINGS
@given(path=st.sampled_from(CLIENT_ENDPOINTS + ["/qr/status"]), document=json_values,
       auth=st.sampled_from([None, basic_header(WEB["client_id"], WEB["client_secret"])]))
def test_json_that_is_not_an_object_of_texts_is_refused_as_invalid_request(app, path, document,
                                                                           auth):
    if isinstance(document, dict):
        assume(any(isinstance(v, (bool, list, dict)) or v is None for v in document.values()))
    response = post(app, path, json.dumps(document).encode(), "application/json", auth)
    body = assert_protocol_answer(response, f"{path} {document!r}")
    assert response.status_code == 400 and body["error"] == "invalid_request", \
        (path, document, response.status_code, body)


@BODY_SETTINGS
@given(ticket=values, as_json=st.booleans())
def test_the_status_of_a_ticket_nobody_created_is_unknown_ticket(app, ticket, as_json):
    params = {"ticket": ticket}
    if as_json:
        body, content_type = json.dumps(params).encode(), "application/json"
    else:
        body, content_type = form_bytes(params.items()), "application/x-www-form-urlencoded"
    response = post(app, "/qr/status", body, content_type, None)
    body = assert_protocol_answer(response, repr(ticket))
    if ticket == "":
        assert (response.status_code, body["error"]) == (400, "invalid_request")
    elif "\x00" in ticket:  # a server may refuse NUL characters outright
        assert (response.status_code, body["error"]) in {(404, "unknown_ticket"),
                                                          (400, "invalid_request")}, body
    else:
        assert (response.status_code, body["error"]) == (404, "unknown_ticket"), (ticket, body)


@BODY_SETTINGS
@given(nonce=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                     max_size=512),
       scope=st.sampled_from(
    ["openid", "openid profile", "profile email openid offline_access", None]),
    as_json=st.booleans())
def test_any_nonce_up_to_512_characters_of_text_makes_a_ticket(app, nonce, scope, as_json):
    params = {"nonce": nonce, **({"scope": scope} if scope is not None else {})}
    if as_json:
        body, content_type = json.dumps(params).encode(), "application/json"
    else:
        body, content_type = form_bytes(params.items()), "application/x-www-form-urlencoded"
    response = post(app, "/qr/ticket", body, content_type,
                    basic_header(WEB["client_id"], WEB["client_secret"]))
    assert_protocol_answer(response, repr(params))
    assert response.status_code == 201, (params, response.get_data()[:300])
    created = json.loads(response.get_data())
    assert USER_CODE.match(created["user_code"]) and len(created["ticket"]) >= 43


# -- 2b. DPoP headers, through the app ----------------------------------------------------------
DPOP_KEY = DPoPKey()  # the phone's key, its token bound to it
PHONE_CLIENT = "bound-phone"


@pytest.fixture(scope="module")
def bound(app) -> dict:
    """A user, a phone app and an access token (``qr:approve``) bound to DPOP_KEY, minted as the
    token endpoint would; and a pending ticket of the web client."""
    from qr_oidc.grants.access_tokens import new_access_token, token_row
    from qr_oidc.provider.security import hash_password
    from qr_oidc.provider.storage.models import Client, Token, User

    parts = app.extensions["qr_oidc"]
    with parts.db.session_factory() as session:
        session.add(Client(client_id=PHONE_CLIENT, name="Bound phone", public=True,
                           first_party=True, redirect_uris=["http://127.0.0.1/cb"],
                           grant_types=["authorization_code"],
                           scope="openid profile qr:approve"))
        user = User(sub="bound-user-sub", username="bound-user",
                    password_hash=hash_password("bound-user-password"), name="Bound User")
        session.add(user)
        session.flush()
        token, pending = new_access_token(parts.settings, parts.keys,
                                          grant_type="authorization_code",
                                          client_id=PHONE_CLIENT, sub=user.sub,
                                          scope="openid profile qr:approve", jkt=DPOP_KEY.jkt)
        session.add(Token(**token_row(parts.settings, pending, client_id=PHONE_CLIENT,
                                      user_id=user.id, scope=token["scope"], family_id=None,
                                      auth_time=None, amr="pwd")))
        session.commit()
    created = post(app, "/qr/ticket", b"scope=openid", "application/x-www-form-urlencoded",
                   basic_header(WEB["client_id"], WEB["client_secret"]))
    assert created.status_code == 201, created.get_data()
    ticket = json.loads(created.get_data())
    return {"token": token["access_token"], "ticket": ticket["ticket"],
            "scan_code": ticket["qr_content"].rsplit("/", 1)[1],
            "issuer": parts.settings.issuer}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jose(header: dict, claims, signature: str) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}." \
           f"{signature}"


PRIVATE_JWK = DPOP_KEY.key.as_dict(private=True)
jose_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6)
proof_header = st.fixed_dictionaries({}, optional={
    "typ": st.one_of(st.sampled_from(["dpop+jwt", "JWT", "at+jwt", "DPOP+JWT"]), jose_values),
    "alg": st.one_of(st.sampled_from(["ES256", "RS256", "PS256", "EdDSA", "none", "None",
                                      "HS256", "ES512", ""]), jose_values),
    "jwk": st.one_of(st.sampled_from([DPOP_KEY.public(), PRIVATE_JWK,
                                      {"kty": "oct", "k": "c2VjcmV0"}]), jose_values),
    "kid": jose_values, "crit": jose_values, "b64": st.booleans(),
})
proof_claims = st.one_of(jose_values, st.fixed_dictionaries({}, optional={
    "htm": st.one_of(st.sampled_from(["POST", "GET", "post"]), jose_values),
    "htu": st.one_of(st.sampled_from(["http://127.0.0.1:8000/token",
                                      "http://127.0.0.1:8000/token?x=1",
                                      "http://127.0.0.1:8000/token#f", "http://[::1/token",
                                      "http://127.0.0.1:99999/token", "//token", ""]),
                     jose_values),
    "iat": st.one_of(st.just(int(time.time())), st.integers(), st.floats(), jose_values),
    "jti": jose_values, "ath": jose_values, "nonce": jose_values,
}))
signatures = st.one_of(st.just(""), st.from_regex(r"\A[A-Za-z0-9_-]{1,120}\Z"))
header_bytes = st.binary(min_size=1, max_size=600).map(lambda b: b.decode("latin-1"))
dpop_values = st.one_of(
    header_bytes,  # random bytes, as a server reads them (latin-1)
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=300),
    st.from_regex(r"\A[A-Za-z0-9_-]{0,80}\.[A-Za-z0-9_-]{0,300}\.[A-Za-z0-9_-]{0,120}\Z"),
    st.builds(jose, proof_header, proof_claims, signatures),
    st.builds(lambda n: "e" * n + ".e30." + "c" * 10, st.integers(8150, 12000)),  # huge
    st.lists(st.builds(jose, proof_header, proof_claims, signatures), min_size=2,
             max_size=3).map(", ".join),  # two proofs
).filter(lambda v: "\r" not in v and "\n" not in v)


def send_dpop(app, path: str, data: dict, dpop: str | None, auth: str | None):
    headers = {"DPoP": dpop} if dpop is not None else {}
    if auth is not None:
        headers["Authorization"] = auth
    with app.test_client() as client:
        return client.post(path, data=form_bytes(data.items()),
                           content_type="application/x-www-form-urlencoded", headers=headers)


def dpop_rows(app) -> dict:
    from sqlalchemy import text as sql

    parts = app.extensions["qr_oidc"]
    with parts.db.session_factory() as session:
        counts = {table: session.execute(sql(f"SELECT COUNT(*) FROM {table}")).scalar()
                  for table in ("tickets", "tokens")}
        counts["live tickets"] = session.execute(sql(
            "SELECT status, user_id, scanned_at, decided_at, redeemed_at, last_poll_at, "
            "poll_interval FROM tickets ORDER BY id")).all()
    return counts


DPOP_SETTINGS = settings(max_examples=120, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture,
                                                HealthCheck.filter_too_much])


@DPOP_SETTINGS
@given(dpop=dpop_values, target=st.sampled_from([
    ("/token", "qr"), ("/token", "refresh_token"), ("/token", "authorization_code"),
    ("/token", "device"), ("/qr/ticket", None), ("/device_authorization", None)]),
    with_jkt=st.booleans())
@example(dpop="not-a-jwt", target=("/token", "qr"), with_jkt=False)
@example(dpop=jose({"typ": "dpop+jwt", "alg": "none", "jwk": DPOP_KEY.public()},
                   {"jti": "abcdefghij", "htm": "POST", "htu": "http://127.0.0.1:8000/token",
                    "iat": int(time.time())}, ""), target=("/token", "qr"), with_jkt=False)
@example(dpop="\u00e9\u00ff" * 10, target=("/qr/ticket", None), with_jkt=True)
def test_any_dpop_header_at_the_token_endpoint_and_ticket_creation_is_refused_changing_nothing(
        app, bound, dpop, target, with_jkt):
    path, grant = target
    if path == "/token":
        data = {"qr": {"grant_type": QR_GRANT, "ticket": bound["ticket"]},
                "device": {"grant_type": DEVICE_GRANT, "device_code": bound["ticket"]},
                "refresh_token": {"grant_type": "refresh_token", "refresh_token": "x" * 43},
                "authorization_code": {"grant_type": "authorization_code", "code": "x"}}[grant]
    else:
        data = {"scope": "openid", **({"dpop_jkt": DPOP_KEY.jkt} if with_jkt else {})}
    before = dpop_rows(app)
    response = send_dpop(app, path, data, dpop,
                         basic_header(WEB["client_id"], WEB["client_secret"]))
    body = assert_protocol_answer(response, f"{path} {dpop!r}")
    assert (response.status_code, body and body["error"]) == (400, "invalid_dpop_proof"), \
        (path, dpop, response.status_code, body)
    assert "access_token" not in body and response.headers.get("Cache-Control") == "no-store"
    assert dpop_rows(app) == before  # no ticket made, no poll recorded, no token


PHONE_PATHS = ["/qr/scan", "/qr/approve", "/qr/deny", "/qr/inbox", "/userinfo"]


@DPOP_SETTINGS
@given(dpop=dpop_values, path=st.sampled_from(PHONE_PATHS))
@example(dpop="a.b.c", path="/qr/scan")
def test_any_dpop_header_beside_a_bound_token_is_refused_with_a_dpop_challenge(app, bound, dpop,
                                                                              path):
    before = dpop_rows(app)
    response = send_dpop(app, path, {"scan_code": bound["scan_code"]}, dpop,
                         f"DPoP {bound['token']}")
    body = assert_protocol_answer(response, f"{path} {dpop!r}")
    assert response.status_code == 401 and body["error"] in ("invalid_dpop_proof",
                                                             "invalid_token"), \
        (path, dpop, response.status_code, body)
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith(f'DPoP error="{body["error"]}"') and "algs=" in challenge, \
        challenge
    assert dpop_rows(app) == before  # the pending ticket is still pending, unscanned


@DPOP_SETTINGS
@given(token=st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200),
    st.from_regex(r"\A[A-Za-z0-9_-]{1,60}\.[A-Za-z0-9_-]{1,200}\.[A-Za-z0-9_-]{0,80}\Z")),
       dpop=st.one_of(st.none(), dpop_values), path=st.sampled_from(PHONE_PATHS))
def test_a_junk_dpop_token_is_refused_with_a_challenge_and_changes_nothing(app, bound, token,
                                                                          dpop, path):
    """``Authorization: DPoP <junk>``, with or without a proof: 401 in the protocol's format."""
    before = dpop_rows(app)
    response = send_dpop(app, path, {"scan_code": bound["scan_code"]}, dpop, f"DPoP {token}")
    body = assert_protocol_answer(response, f"{path} {token!r} {dpop!r}")
    assert response.status_code == 401 and body["error"] in (
        "invalid_token", "invalid_dpop_proof"), (path, token, response.status_code, body)
    assert response.headers.get("WWW-Authenticate", "").startswith(("Bearer ", "DPoP "))
    assert dpop_rows(app) == before


def test_the_bound_token_and_the_pending_ticket_still_work_with_good_proofs(app, bound):
    """(So that the refusals above were the proofs', and used nothing up.)"""
    url = bound["issuer"]
    scanned = send_dpop(app, "/qr/scan", {"scan_code": bound["scan_code"]},
                        DPOP_KEY.proof("POST", url + "/qr/scan", access_token=bound["token"]),
                        f"DPoP {bound['token']}")
    assert scanned.status_code == 200, scanned.get_data()
    polled = send_dpop(app, "/token", {"grant_type": QR_GRANT, "ticket": bound["ticket"]},
                       DPOP_KEY.proof("POST", url + "/token"),
                       basic_header(WEB["client_id"], WEB["client_secret"]))
    assert json.loads(polled.get_data())["error"] == "authorization_pending", polled.get_data()


# -- 3. the ticket lifecycle, as a state machine against a real server -----------------------------
class Ticket:
    """The model: what SPEC.md's lifecycle says the ticket is."""

    def __init__(self, secret: str, scan_code: str, user_code: str, client: str, kind: str,
                 binding: str | None):
        self.secret, self.scan_code, self.user_code = secret, scan_code, user_code
        self.client, self.kind, self.binding = client, kind, binding
        self.status = "pending"  # stored: pending, scanned, approved, denied, redeemed
        self.scanned_by: str | None = None
        self.expired = False
        self.tokens = 0
        self.choices: list[str] | None = None

    @property
    def public(self) -> str:
        if self.status in ("redeemed", "denied"):
            return self.status
        return "expired" if self.expired else self.status

    def __repr__(self) -> str:
        return f"<{self.kind} ticket {self.status}{' expired' if self.expired else ''}>"


class Storage:
    """One connection to a server's database, for the machine's reads and its clock moves
    (Provider.db connects anew for every statement, too slow to run after every step)."""

    def __init__(self, server: Provider):
        if server.database_url.startswith("sqlite"):
            import sqlite3

            self.conn = sqlite3.connect(server.db_path, timeout=15, isolation_level=None)
            self.mark = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(
                server.database_url.replace("postgresql+psycopg://", "postgresql://"),
                autocommit=True)
            self.mark = "%s"

    def __call__(self, sql: str, *params) -> list[tuple]:
        cursor = self.conn.execute(sql.replace("?", self.mark), params)
        return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        self.conn.close()


class Lifecycle(RuleBasedStateMachine):
    # set by the test that runs the machine
    server: Provider = None
    db: Storage = None
    clients: dict = None
    phones: dict = None  # user -> access token
    user_ids: dict = None
    names: dict = None
    issued = 0  # tokens issued for tickets, over every run of the machine
    reached: ClassVar[set] = set()  # the lifecycle states tickets entered, over every run
    baseline = 0  # tokens for tickets in the database before the first run

    tickets = Bundle("tickets")
    users = st.sampled_from(["alice", "bob"])

    def __init__(self):
        super().__init__()
        self.created: list[Ticket] = []  # for the invariants (bundles only feed rules)

    # -- helpers --------------------------------------------------------------------------------
    def post(self, path: str, data: dict, **kwargs) -> requests.Response:
        response = requests.post(self.server.url + path, data=data, timeout=30, **kwargs)
        assert response.status_code < 500, (path, response.status_code, response.text[:300])
        return response

    def phone(self, action: str, user: str, t: Ticket, how: str, **extra) -> requests.Response:
        if how == "scan_code":
            body = {"scan_code": t.scan_code}
        elif how == "user_code":
            body = {"user_code": t.user_code}
        else:  # typed by hand: lower case, blanks
            body = {"user_code": " ".join(t.user_code.lower().replace("-", ""))}
        return self.post(f"/qr/{action}", {**body, **extra},
                         headers={"Authorization": f"Bearer {self.phones[user]}"})

    @staticmethod
    def outcome(response: requests.Response) -> tuple[int, str | None]:
        body = response.json()
        return response.status_code, body.get("error")

    def refusal_before_decision(self, t: Ticket, user: str) -> set | None:
        """What approve/deny must answer when the lifecycle refuses; None when it may proceed."""
        if t.status in ("denied", "redeemed"):
            return {(409, "invalid_state")} | ({(410, "expired")} if t.expired else set())
        if t.expired:
            return {(410, "expired")}
        if t.status in ("approved", "pending"):
            return {(409, "invalid_state")}
        if t.scanned_by != user:
            return {(403, "access_denied")}
        return None

    def digest(self, t: Ticket) -> str:
        return hashlib.sha256(t.secret.encode()).hexdigest()

    # -- rules ------------------------------------------------------------------------------------
    @precondition(lambda self: len(self.created) < 3)  # few tickets: many steps on each
    @rule(target=tickets, client=st.sampled_from(["web", "bank"]),
          kind=st.sampled_from(["qr", "qr", "device"]), as_json=st.booleans())
    def create(self, client, kind, as_json):
        creds = self.clients[client]
        auth = (creds["client_id"], creds["client_secret"])
        path = "/qr/ticket" if kind == "qr" else "/device_authorization"
        if as_json:
            response = requests.post(self.server.url + path, json={"scope": "openid profile"},
                                     auth=auth, timeout=30)
        else:
            response = self.post(path, {"scope": "openid profile"}, auth=auth)
        assert response.status_code == (201 if kind == "qr" else 200), response.text
        body = response.json()
        if kind == "qr":
            secret, url = body["ticket"], body["qr_content"]
        else:
            secret, url = body["device_code"], body["verification_uri_complete"]
        assert USER_CODE.match(body["user_code"])
        binding = body.get("binding_code")
        assert (binding is not None) == (client == "bank"), body
        t = Ticket(secret, url.rsplit("/", 1)[1], body["user_code"], client, kind, binding)
        self.created.append(t)
        return t

    @rule(t=tickets, user=users, how=st.sampled_from(["scan_code", "user_code", "typed"]))
    def scan(self, t, user, how):
        got = self.phone("scan", user, t, how)
        if t.status in ("denied", "redeemed"):
            expected = {(409, "invalid_state")} | ({(410, "expired")} if t.expired else set())
        elif t.expired:
            expected = {(410, "expired")}
        elif t.status == "approved":
            expected = {(409, "invalid_state")}
        elif t.status == "scanned" and t.scanned_by != user:
            expected = {(409, "already_scanned")}
        else:
            expected = {(200, None)}
        assert self.outcome(got) in expected, (t, user, got.text)
        if got.status_code != 200:
            return
        t.status, t.scanned_by = "scanned", user
        Lifecycle.reached.add("scanned")
        view = got.json()
        assert view["user_code"] == t.user_code
        assert view["client"]["client_id"] == self.clients[t.client]["client_id"]
        if t.client == "bank":
            choices = view["binding_choices"]
            assert len(set(choices)) == 3 and t.binding in choices, (choices, t.binding)
            assert t.choices in (None, choices), "a second scan showed other choices"
            t.choices = choices
        else:
            assert "binding_choices" not in view

    @rule(t=tickets, user=users, pick=st.sampled_from(["right", "wrong", "missing"]),
          how=st.sampled_from(["scan_code", "user_code", "typed"]))
    def approve(self, t, user, pick, how):
        extra = {}
        if pick == "right" and t.binding is not None:
            extra["binding_code"] = t.binding
        elif pick == "wrong":
            extra["binding_code"] = f"{(int(t.binding or 0) + 37) % 100:02d}"
        got = self.phone("approve", user, t, how, **extra)
        refused = self.refusal_before_decision(t, user)
        if refused is not None:
            assert self.outcome(got) in refused, (t, user, got.text)
            return
        if t.binding is None:  # no number matching: the number, if any, is not looked at
            assert self.outcome(got) == (200, None), (t, got.text)
            t.status = "approved"
        elif pick == "missing":
            assert self.outcome(got) == (400, "invalid_request"), (t, got.text)
        elif pick == "wrong":
            assert self.outcome(got) == (403, "binding_mismatch"), (t, got.text)
            t.status = "denied"
        else:
            assert self.outcome(got) == (200, None), (t, got.text)
            t.status = "approved"
        if got.status_code == 200:
            assert got.json() == {"status": "approved"}
        Lifecycle.reached.add(t.status)

    @rule(t=tickets, user=users, how=st.sampled_from(["scan_code", "user_code", "typed"]))
    def deny(self, t, user, how):
        got = self.phone("deny", user, t, how)
        refused = self.refusal_before_decision(t, user)
        if refused is not None:
            assert self.outcome(got) in refused, (t, user, got.text)
            return
        assert self.outcome(got) == (200, None) and got.json() == {"status": "denied"}, got.text
        t.status = "denied"
        Lifecycle.reached.add("denied")

    @rule(t=tickets, as_json=st.booleans())
    def status(self, t, as_json):
        if as_json:
            got = requests.post(self.server.url + "/qr/status",
                                json={"ticket": t.secret, "wait": 0}, timeout=30)
        else:
            got = self.post("/qr/status", {"ticket": t.secret})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["status"] == t.public, (t, body)
        if t.scanned_by is not None and t.public != "expired":
            assert body["user"]["name"] == self.names[t.scanned_by], body
        else:
            assert "user" not in body, body

    def poll_once(self, t: Ticket, grant: str) -> requests.Response:
        creds = self.clients[t.client]
        param = "ticket" if grant == QR_GRANT else "device_code"
        return requests.post(self.server.url + "/token", data={"grant_type": grant,
                                                               param: t.secret},
                             auth=(creds["client_id"], creds["client_secret"]), timeout=30)

    def expected_poll(self, t: Ticket) -> tuple[int, str | None]:
        if t.status == "redeemed":
            return 400, "invalid_grant"
        if t.status == "denied":
            return 400, "access_denied"
        if t.expired:
            return 400, "expired_token"
        if t.status in ("pending", "scanned"):
            return 400, "authorization_pending"
        return 200, None

    def on_time(self, t: Ticket) -> None:
        """The next poll counts as on time: the interval rule is tested elsewhere, and waiting
        it out here would only make this slow."""
        self.db("UPDATE tickets SET last_poll_at = NULL WHERE ticket_hash = ?", self.digest(t))

    def got_tokens(self, t: Ticket, response: requests.Response) -> None:
        t.tokens += 1
        Lifecycle.issued += 1
        t.status = "redeemed"
        Lifecycle.reached.add("redeemed")
        tokens = response.json()
        claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
        assert claims["amr"] == ["qr"], claims
        assert claims["sub"] and claims["aud"] == self.clients[t.client]["client_id"]

    @rule(t=tickets, grant=st.sampled_from([QR_GRANT, DEVICE_GRANT]))
    def poll(self, t, grant):
        self.on_time(t)
        expected = self.expected_poll(t)
        got = self.poll_once(t, grant)
        assert self.outcome(got) == expected, (t, got.text)
        if got.status_code == 200:
            self.got_tokens(t, got)

    @rule(t=tickets, n=st.integers(2, 5))
    def poll_concurrently(self, t, n):
        self.on_time(t)
        expected = self.expected_poll(t)
        answers: list[requests.Response] = []
        start = threading.Barrier(n)

        def one():
            start.wait()
            answers.append(self.poll_once(t, QR_GRANT))

        threads = [threading.Thread(target=one) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(answers) == n
        outcomes = [self.outcome(a) for a in answers]
        assert all(status < 500 for status, _ in outcomes), outcomes
        if expected == (200, None):
            winners = [a for a in answers if a.status_code == 200]
            assert len(winners) == 1, outcomes  # exactly once, also under concurrent polls
            assert all(o in {(200, None), (400, "invalid_grant"), (400, "slow_down")}
                       for o in outcomes), outcomes
            self.got_tokens(t, winners[0])
        elif expected == (400, "authorization_pending"):
            assert set(outcomes) <= {expected, (400, "slow_down")}, outcomes
            assert expected in outcomes, outcomes  # the first of them was on time
        else:
            assert set(outcomes) == {expected}, outcomes

    @rule(t=tickets, user=users)
    def log_in(self, t, user):
        """Scan, approve with the right number, poll: a whole login (each step as the model says,
        whatever state the ticket is in)."""
        self.scan(t, user, "scan_code")
        self.approve(t, user, "right", "user_code")
        self.poll(t, QR_GRANT)

    @rule(t=tickets, user=users)
    def cancel(self, t, user):
        """Scan, then cancel on the phone."""
        self.scan(t, user, "user_code")
        self.deny(t, user, "scan_code")

    @rule(t=tickets)
    def expire(self, t):
        """Its TTL passes (the clock moved by moving its expiry into the past)."""
        self.db("UPDATE tickets SET expires_at = ? WHERE ticket_hash = ?", time.time() - 1,
                self.digest(t))
        t.expired = True
        Lifecycle.reached.add("expired")

    @rule(user=users, code=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
                                   min_size=10, max_size=40))
    def scan_unknown(self, user, code):
        got = self.post("/qr/scan", {"scan_code": code},
                        headers={"Authorization": f"Bearer {self.phones[user]}"})
        assert self.outcome(got) == (404, "unknown_code"), got.text

    # -- what holds after every step ------------------------------------------------------------
    @invariant()
    def stored_tickets_are_in_lifecycle_states_the_model_agrees_with(self):
        if not self.created:
            return
        by_hash = {self.digest(t): t for t in self.created}
        marks = ", ".join("?" for _ in by_hash)
        rows = self.db(
            "SELECT ticket_hash, status, user_id, scanned_at, decided_at, redeemed_at "
            f"FROM tickets WHERE ticket_hash IN ({marks})", *by_hash)
        assert len(rows) == len(by_hash), (len(rows), len(by_hash))
        for ticket_hash, status, user_id, scanned_at, decided_at, redeemed_at in rows:
            t = by_hash[ticket_hash]
            row = (status, user_id, scanned_at, decided_at, redeemed_at)
            assert status == t.status, (t, row)
            assert user_id == (self.user_ids[t.scanned_by] if t.scanned_by else None), (t, row)
            assert (scanned_at is not None) == (status != "pending"), (t, row)
            assert (decided_at is not None) == (status in ("approved", "denied", "redeemed")), \
                (t, row)
            assert (redeemed_at is not None) == (status == "redeemed"), (t, row)
            assert t.tokens <= 1, t

    @invariant()
    def tokens_were_issued_once_per_redeemed_ticket(self):
        issued = self.db("SELECT COUNT(*) FROM tokens WHERE grant_type IN (?, ?)",
                         QR_GRANT, DEVICE_GRANT)[0][0]
        assert issued == Lifecycle.baseline + Lifecycle.issued, \
            (issued, Lifecycle.baseline, Lifecycle.issued)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def lifecycle_server(request, tmp_path_factory):
    server = Provider(tmp_path_factory.mktemp("lifecycle"), {"QR_OIDC_POLL_INTERVAL": "1"},
                      backend=request.param)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_any_sequence_of_lifecycle_steps_by_two_users_gives_the_answers_the_spec_gives(
        lifecycle_server):
    server = lifecycle_server
    web = server.create_client("--name", "Web shop")
    bank = server.create_client("--name", "Bank", "--number-matching")
    phone = phone_app(server)
    server.create_user("alice", "alice-password", name="Alice Liddell")
    server.create_user("bob", "bob-password", name="Bob Builder")
    phones = {user: sign_in_phone(server, phone, user, f"{user}-password")["access_token"]
              for user in ("alice", "bob")}
    user_ids = {name: uid for uid, name in server.db("SELECT id, username FROM users")}

    Lifecycle.server, Lifecycle.phones = server, phones
    Lifecycle.clients = {"web": web, "bank": bank}
    Lifecycle.user_ids = user_ids
    Lifecycle.names = {"alice": "Alice Liddell", "bob": "Bob Builder"}
    Lifecycle.issued, Lifecycle.reached = 0, set()
    Lifecycle.baseline = server.db("SELECT COUNT(*) FROM tokens WHERE grant_type IN (?, ?)",
                                   QR_GRANT, DEVICE_GRANT)[0][0]
    Lifecycle.db = Storage(server)
    everything = {"scanned", "approved", "denied", "redeemed", "expired"}
    try:
        # Batches of 20 random runs, until the runs have walked the whole lifecycle (at most 5
        # batches). One batch alone missed a state (usually "denied") in about one run of the
        # suite in four; the properties are checked on every step of every batch either way.
        for _batch in range(5):
            run_state_machine_as_test(Lifecycle, settings=settings(
                max_examples=20, stateful_step_count=25, deadline=None, database=None,
                suppress_health_check=list(HealthCheck)))
            if Lifecycle.reached == everything:
                break
    finally:
        Lifecycle.db.close()
    # the machine did walk the whole lifecycle
    assert Lifecycle.reached == everything, Lifecycle.reached
    assert Lifecycle.issued > 0
