"""No 5xx from the pages either (issue 14): the authorization, login, consent, device,
confirmation and logout routes and the hosted page's QR routes, fuzzed like the JSON endpoints
(tests/test_properties.py, tests/test_openapi.py) are.

1. hypothesis, through the app itself (its WSGI stack, in process, on SQLite and PostgreSQL):
   any parameters (non-ASCII, control and bidi characters, huge and repeated values, a valid
   authorization request with one parameter spoilt), any method, any content type, signed in or
   not, with the session's CSRF token or without. The answer is below 500; an error is an HTML
   page (or the protocol's redirect); and an error stores nothing.
2. a sweep against a real ``qr-oidc serve`` (SQLite and PostgreSQL) of the values that broke
   such servers before (a ``redirect_uri`` with ``"``, ``\\``, DEL or non-ASCII answered 500).
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    Provider,
    create_pg_database,
    csrf_of,
    drop_pg_database,
    login_form,
    pkce,
)

OFF = {name: "off" for name in ("RATE_TICKET_CLIENT", "RATE_TICKET_IP", "RATE_USER_CODE_USER",
                                "RATE_USER_CODE_IP", "RATE_LOGIN_ACCOUNT", "RATE_LOGIN_IP")}
REDIRECT = "https://rp.example/cb"
NASTY = ["", " ", "ä", "💥", "\u202e", "\u2066", "\u200f", "\x01", "\x7f", "\x85", "\u2028",
         '"', "\\", "'", "<script>alert(1)</script>", "%", "%00", "%ff", "\r\n", "a" * 5000,
         "..", "//evil.example", "javascript:alert(1)", "-1", "1e400", "nan", "0",
         "none", "login", "consent", "none login", "code", "token", "code id_token",
         "openid", "openid profile email offline_access qr:approve", "S256", "plain",
         REDIRECT, REDIRECT + '"', REDIRECT + "\\", REDIRECT + "\x7f", REDIRECT + "ä",
         "http://evil@127.0.0.1:9/cb", "http://x;script-src *@127.0.0.1:9/cb",
         "http://127.0.0.1:99999/cb", "http://[::1/cb", "https://rp.example:0/cb"]
KEYS = ["response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "prompt",
        "max_age", "code_challenge", "code_challenge_method", "response_mode", "request",
        "request_uri", "username", "password", "next", "user_code", "ticket", "decision",
        "binding_code", "csrf_token", "login_hint", "ui_locales", "id_token_hint",
        "post_logout_redirect_uri"]
ROUTES = [("GET", "/authorize"), ("POST", "/authorize"), ("POST", "/authorize/ticket"),
          ("POST", "/authorize/consent"), ("POST", "/authorize/qr"), ("GET", "/login"),
          ("POST", "/login"), ("POST", "/logout"), ("GET", "/device"), ("POST", "/device"),
          ("POST", "/confirm"), ("GET", "/s/{code}"), ("POST", "/s/{code}"), ("GET", "/"),
          ("PUT", "/login"), ("DELETE", "/authorize"), ("PATCH", "/confirm"),
          ("GET", "/confirm"), ("GET", "/authorize/qr"), ("GET", "/end_session"),
          ("POST", "/end_session")]
COUNTED = ("tickets", "tokens", "browser_sessions", "redeemed_codes", "users", "clients")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, tmp_path_factory):
    from qr_oidc.provider.security import digest, hash_password
    from qr_oidc.provider.storage.models import Client, User
    from qr_oidc.provider.web.app import create_app

    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path_factory.mktemp('html-fuzz')}/app.db", None
    else:
        url = drop = create_pg_database()
    application = create_app({"DATABASE_URL": url, "LONG_POLL_MAX": 0, **OFF})
    parts = application.extensions["qr_oidc"]
    with parts.db.session_factory() as session:
        session.add(Client(client_id="rp", name="Relying party", secret_hash=digest("s" * 40),
                           public=False, number_matching=True, grant_types=[
                               "authorization_code", "refresh_token"],
                           redirect_uris=[REDIRECT, "http://127.0.0.1/cb"],
                           scope="openid profile email offline_access",
                           token_endpoint_auth_method="client_secret_basic"))
        session.add(Client(client_id="first", name="First party", public=True, first_party=True,
                           grant_types=["authorization_code"], redirect_uris=[REDIRECT],
                           scope="openid profile", token_endpoint_auth_method="none"))
        session.add(User(sub="alice-sub", username="alice", password_hash=hash_password("pw")))
        session.commit()
        application.fuzz_user_id = session.query(User).filter_by(username="alice").one().id
    yield application
    parts.db.engine.dispose()
    if drop:
        drop_pg_database(drop)


def counts(app) -> dict:
    from sqlalchemy import text

    with app.extensions["qr_oidc"].db.engine.connect() as connection:
        return {t: connection.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
                for t in COUNTED}


def browser(app, signed_in: bool):
    """A test client with a CSRF token in its session, and (signed in) a session record."""
    from qr_oidc.provider.security import digest
    from qr_oidc.provider.storage.models import BrowserSession
    from qr_oidc.provider.web import sessions as _sessions  # noqa: F401  (the module the record is for)

    client = app.test_client()
    with client.session_transaction() as cookie:
        cookie["csrf"] = "fuzz-csrf-token"
        if signed_in:
            sid = "fuzz-" + str(time.time_ns())
            parts = app.extensions["qr_oidc"]
            with parts.db.session_factory() as session:
                session.add(BrowserSession(id=digest(sid), user_id=app.fuzz_user_id, amr="pwd",
                                           auth_time=time.time(), created_at=time.time(),
                                           expires_at=time.time() + 3600))
                session.commit()
            cookie["sid"], cookie["seen"] = sid, int(time.time())
    return client


def a_request():
    _verifier, challenge = pkce()
    return {"response_type": "code", "client_id": "rp", "redirect_uri": REDIRECT,
            "scope": "openid profile", "state": "st", "nonce": "n", "code_challenge": challenge,
            "code_challenge_method": "S256"}


values = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12))
pairs = st.lists(st.tuples(keys, values), max_size=6)
content_types = st.sampled_from([None, "application/x-www-form-urlencoded", "application/json",
                                 "text/plain", "multipart/form-data", "application/xml"])
FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(route=st.sampled_from(ROUTES), extra=pairs, spoil=st.none() | st.tuples(keys, values),
       base=st.booleans(), signed_in=st.booleans(), csrf=st.booleans(), as_json=st.booleans(),
       content_type=content_types, code=values)
def test_any_input_to_a_page_gets_a_4xx_page_or_a_redirect_never_a_5xx(
        app, route, extra, spoil, base, signed_in, csrf, as_json, content_type, code):
    method, path = route
    # (a "/" in the code would make another path, which no page has: a JSON 404 by design)
    path = path.replace("{code}", requests.utils.quote(code.replace("/", "_"), safe="") or "x")
    params = a_request() if base else {}
    request_query = urlencode(a_request())
    if spoil is not None:
        params[spoil[0]] = spoil[1]
        request_query = urlencode({**a_request(), spoil[0]: spoil[1]})
    items = list(params.items()) + extra + [("request", request_query)]
    if csrf:
        items.append(("csrf_token", "fuzz-csrf-token"))
    client = browser(app, signed_in)
    headers = {"Accept": "application/json" if as_json else "text/html"}
    before = counts(app)
    if method == "GET":
        response = client.get(path + "?" + urlencode(items, errors="surrogatepass"),
                              headers=headers)
    else:
        body = urlencode(items, errors="surrogatepass").encode("utf-8", "surrogatepass")
        response = client.open(path, method=method, data=body, headers=headers,
                               content_type=content_type or "application/x-www-form-urlencoded")
    where = (method, path[:60], response.status_code)
    assert response.status_code < 500, (where, response.get_data()[:300])
    if 300 <= response.status_code < 400:
        assert response.headers.get("Location"), where
    if response.status_code >= 400:
        json_allowed = as_json and path == "/authorize/ticket" or response.status_code == 429
        assert response.mimetype == "text/html" or (json_allowed and
                                                    response.mimetype == "application/json"), where
        assert counts(app) == before, where  # a refusal stores nothing


# -- a sweep against a real server -----------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    provider = Provider(tmp_path_factory.mktemp("html-sweep"),
                        {f"QR_OIDC_{k}": v for k, v in OFF.items()}, backend=request.param)
    provider.start()
    provider.rp = provider.create_client("--name", "Sweep shop", "--redirect-uri", REDIRECT,
                                         "--redirect-uri", "http://127.0.0.1/cb")
    provider.create_user("sam", "sam-password")
    yield provider
    provider.stop()


def signed_in(server: Provider) -> requests.Session:
    session = requests.Session()
    page = session.get(server.url + "/login", timeout=30)
    assert login_form(session, page, "sam", "sam-password").status_code == 302
    return session


@pytest.mark.parametrize("value", [
    REDIRECT + '"', REDIRECT + "\\", REDIRECT + "\x7f", REDIRECT + "ä", REDIRECT + "\u202e",
    "http://evil@127.0.0.1:9/cb", "http://x;script-src *@127.0.0.1:9/cb", "a" * 3000, "\x00",
])
def test_a_bad_redirect_uri_gets_an_error_page_never_a_5xx(server, value):
    params = {**a_request(), "client_id": server.rp["client_id"], "redirect_uri": value}
    for session in (requests.Session(), signed_in(server)):
        answer = session.get(server.url + "/authorize", params=params, allow_redirects=False,
                             timeout=30)
        assert answer.status_code == 400, (value, answer.status_code)
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "Location" not in answer.headers


@pytest.mark.parametrize("key", ["response_type", "scope", "state", "nonce", "prompt",
                                 "max_age", "code_challenge", "code_challenge_method",
                                 "response_mode", "client_id"])
def test_every_authorization_parameter_with_bad_text_gets_a_clear_answer(server, key):
    """Each answer is below 500, an error a page (or JSON, for the page's script); what is
    refused stores nothing (some of these values are fine where they are: a state may hold
    a quote, a nonce any text)."""
    session = signed_in(server)
    stored = {t: server.db(f"SELECT COUNT(*) FROM {t}")[0][0] for t in COUNTED}
    made_tickets = 0
    for value in ["ä", "💥", "\u202e", "\x01", "\x7f", '"', "\\", "a" * 3000, "%ff", "\r\n"]:
        params = {**a_request(), "client_id": server.rp["client_id"], key: value}
        for who in (requests.Session(), session):
            answer = who.get(server.url + "/authorize", params=params, allow_redirects=False,
                             timeout=30)
            assert answer.status_code < 500, (key, value, answer.status_code)
            if answer.status_code >= 400:
                assert answer.headers["Content-Type"].startswith("text/html")
            made = who.post(server.url + "/authorize/ticket", timeout=30, data={
                "csrf_token": csrf_of(who.get(server.url + "/login", timeout=30).text),
                "request": urlencode(params)}, headers={"Accept": "application/json"})
            assert made.status_code in (201, 400), (key, value, made.status_code)
            assert made.json().get("error") or made.json().get("ticket")
            made_tickets += made.status_code == 201
    stored["tickets"] += made_tickets
    assert {t: server.db(f"SELECT COUNT(*) FROM {t}")[0][0] for t in COUNTED} == stored


@pytest.mark.parametrize("path", ["/login", "/device", "/confirm", "/authorize/qr",
                                  "/authorize/consent", "/s/abc", "/logout"])
def test_form_posts_with_bad_text_huge_or_repeated_fields_get_a_4xx(server, path):
    session = signed_in(server)
    token = csrf_of(session.get(server.url + "/login", timeout=30).text)
    for field in ("username", "password", "next", "user_code", "ticket", "decision",
                  "binding_code", "request"):
        for value in ["ä", "\u202e", "\x00", "\x85", "a" * 20_000, '"\\']:
            answer = session.post(server.url + path, data=[("csrf_token", token), (field, value),
                                                           (field, value)],
                                  allow_redirects=False, timeout=30)
            assert answer.status_code < 500, (path, field, answer.status_code)
    for content_type in ("application/json", "text/plain", "multipart/form-data"):
        answer = session.post(server.url + path, data=b'{"csrf_token": "x"}',
                              headers={"Content-Type": content_type}, timeout=30)
        assert 400 <= answer.status_code < 500
    for method in ("PUT", "PATCH", "DELETE"):
        answer = session.request(method, server.url + path, timeout=30)
        assert answer.status_code == 405 and answer.headers["Content-Type"].startswith(
            "text/html")
