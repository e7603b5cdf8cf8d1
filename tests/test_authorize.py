"""The hosted login page and the authorization code flow with PKCE, as a browser and a relying
party drive them against a real server process: CSRF, passwords, consent, redirect URI matching
(RFC 8252 §7.3 loopback ports), PKCE, single-use codes, the ID token, and no open redirect."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from test_e2e import verify_with_jwks

from helpers import authorize, csrf_of, forms_of, login_form, pkce, submit_form


# -- reading pages -------------------------------------------------------------------------------
def fields(form: dict, name: str) -> list[dict]:
    return [f for f in form["fields"] if f["name"] == name]


def query_of(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def browser_target(base: str, location: str) -> str:
    """Where a browser goes for this Location header (WHATWG URL parsing, the parts that matter
    for open redirects: surrounding C0/space stripped, tabs and newlines removed, backslashes
    read as slashes in http(s) URLs)."""
    cleaned = location.strip("".join(chr(c) for c in range(0x21)))
    cleaned = cleaned.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    return urljoin(base, cleaned)


def auth_params(client: dict, redirect_uri: str | None = None, **extra) -> tuple[dict, str]:
    verifier, challenge = pkce()
    params = {
        "response_type": "code", "client_id": client["client_id"],
        "redirect_uri": redirect_uri or client["redirect_uris"][0], "scope": "openid profile",
        "state": secrets.token_hex(8), "code_challenge": challenge,
        "code_challenge_method": "S256", **extra,
    }
    return params, verifier


def exchange(provider, client: dict, code: str, verifier: str | None, redirect_uri: str,
             **extra) -> requests.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            **extra}
    if verifier is not None:
        data["code_verifier"] = verifier
    auth = None
    if client.get("client_secret"):
        auth = (client["client_id"], client["client_secret"])
    else:
        data["client_id"] = client["client_id"]
    return requests.post(provider.url + "/token", data=data, auth=auth, timeout=30)


def code_for(provider, client: dict, session: requests.Session, redirect_uri: str | None = None,
             **extra) -> tuple[dict, str, dict]:
    """An authorization request in a signed-in browser (first-party: no consent); returns the
    redirect's query, the verifier and the request's parameters."""
    params, verifier = auth_params(client, redirect_uri=redirect_uri, **extra)
    response = session.get(f"{provider.url}/authorize?{urlencode(params)}",
                           allow_redirects=False, timeout=30)
    assert response.status_code in (302, 303), response.text
    location = response.headers["Location"]
    assert location.startswith(params["redirect_uri"] + "?"), location
    query = query_of(location)
    assert query["state"] == params["state"] and query["code"], query
    return query, verifier, params


def sign_in(provider, username: str, password: str) -> requests.Session:
    session = requests.Session()
    page = session.get(provider.url + "/login", timeout=30)
    response = login_form(session, page, username, password)
    assert response.status_code == 302, response.text
    return session


def is_signed_in(provider, session: requests.Session, first_party: dict) -> bool:
    """A first-party authorization request goes straight back to the client only when signed in."""
    params, _ = auth_params(first_party)
    response = session.get(f"{provider.url}/authorize?{urlencode(params)}",
                           allow_redirects=False, timeout=30)
    assert response.status_code in (200, 302, 303), response.text
    if response.status_code == 200:
        return 'name="password"' not in response.text
    target = browser_target(response.url, response.headers["Location"])
    if target.startswith(params["redirect_uri"]):
        return "code" in query_of(target)
    return False


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def printer(provider):
    """A confidential third-party relying party: it gets the consent page."""
    return provider.create_client("--name", "Photo printer",
                                  "--redirect-uri", "https://printer.example/cb")


@pytest.fixture(scope="module")
def alice_browser(provider, alice):
    return sign_in(provider, "alice", "alice-password")


# -- the login page --------------------------------------------------------------------------------
def test_the_login_page_has_username_and_password_inputs_and_a_hidden_csrf_token(provider):
    page = requests.get(provider.url + "/login", timeout=30)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    login = [f for f in forms_of(page.text) if fields(f, "password")]
    assert len(login) == 1, "exactly one sign-in form"
    form = login[0]
    assert form["method"] == "post"
    assert fields(form, "username") and fields(form, "username")[0]["type"] in ("text", "email")
    assert fields(form, "password")[0]["type"] == "password"
    csrf = fields(form, "csrf_token")
    assert len(csrf) == 1 and csrf[0]["type"] == "hidden"
    assert len(csrf[0]["value"] or "") >= 16


def test_an_authorization_request_without_a_session_leads_to_the_login_form(provider,
                                                                            phone_client):
    params, _ = auth_params(phone_client)
    response = requests.get(f"{provider.url}/authorize?{urlencode(params)}", timeout=30)
    assert response.status_code == 200
    assert urlsplit(response.url).netloc == urlsplit(provider.url).netloc
    assert 'name="username"' in response.text and 'name="password"' in response.text


def _missing(_session, _own):
    return None


def _wrong(_session, _own):
    return secrets.token_urlsafe(32)


def _another_sessions(provider_url, _own):
    return csrf_of(requests.Session().get(provider_url + "/login", timeout=30).text)


@pytest.mark.parametrize("csrf", [_missing, _wrong, _another_sessions],
                         ids=["missing", "wrong", "from_another_session"])
def test_a_sign_in_without_this_sessions_csrf_token_is_refused_and_signs_nobody_in(
        provider, alice, phone_client, csrf):
    session = requests.Session()
    page = session.get(provider.url + "/login", timeout=30)
    token = csrf(provider.url, csrf_of(page.text))
    data = {"username": "alice", "password": "alice-password", "next": "/"}
    if token is not None:
        data["csrf_token"] = token
    response = session.post(provider.url + "/login", data=data, allow_redirects=False,
                            timeout=30)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert not is_signed_in(provider, session, phone_client)


@pytest.mark.parametrize("username, password", [
    ("alice", "wrong-password"),
    ("alice", ""),
    ("alice", "alice-password "),
    ("nobody-here", "alice-password"),
    ("alice' OR '1'='1", "x' OR '1'='1"),
], ids=["wrong_password", "empty_password", "password_with_trailing_space", "unknown_user",
        "sql_injection"])
def test_a_wrong_password_gives_a_401_page_with_an_error_and_no_session(
        provider, alice, phone_client, username, password):
    session = requests.Session()
    page = session.get(provider.url + "/login", timeout=30)
    response = login_form(session, page, username, password)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/html")
    assert 'name="password"' in response.text, "the form is shown again"
    assert 'role="alert"' in response.text or 'class="error"' in response.text
    if password:
        assert password not in response.text, "the page does not echo the password"
    assert not is_signed_in(provider, session, phone_client)


# -- first-party and third-party clients ---------------------------------------------------------
def test_a_first_party_client_gets_a_code_right_after_sign_in_without_a_consent_page(
        provider, alice, phone_client):
    session = requests.Session()
    params, verifier = auth_params(phone_client)
    page = session.get(f"{provider.url}/authorize?{urlencode(params)}", timeout=30)
    signed_in = login_form(session, page, "alice", "alice-password")
    assert signed_in.status_code in (302, 303)
    back = session.get(browser_target(signed_in.url, signed_in.headers["Location"]),
                       allow_redirects=False, timeout=30)
    assert back.status_code in (302, 303), "no consent page: " + back.text[:300]
    location = back.headers["Location"]
    assert location.startswith(params["redirect_uri"] + "?")
    query = query_of(location)
    assert query["state"] == params["state"] and query["code"]
    tokens = exchange(provider, phone_client, query["code"], verifier, params["redirect_uri"])
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["token_type"] == "Bearer"


def _consent_page(provider, session, client, **extra):
    params, verifier = auth_params(client, **extra)
    page = session.get(f"{provider.url}/authorize?{urlencode(params)}", allow_redirects=False,
                       timeout=30)
    assert page.status_code == 200, page.text
    return params, verifier, page


def test_a_third_party_client_gets_a_consent_form_with_decision_buttons_and_csrf(
        provider, printer, alice_browser):
    _params, _verifier, page = _consent_page(provider, alice_browser, printer)
    assert "Photo printer" in page.text
    consent = [f for f in forms_of(page.text) if fields(f, "decision")]
    assert len(consent) == 1
    form = consent[0]
    assert form["method"] == "post"
    decisions = {f["value"] for f in fields(form, "decision") if f["type"] == "submit"}
    assert "approve" in decisions and len(decisions) >= 2, decisions
    csrf = fields(form, "csrf_token")
    assert len(csrf) == 1 and csrf[0]["type"] == "hidden" and csrf[0]["value"]


def test_approving_the_consent_gives_a_code_that_the_client_exchanges(provider, printer,
                                                                      alice_browser, alice):
    params, verifier, page = _consent_page(provider, alice_browser, printer)
    response = submit_form(alice_browser, page, "decision", decision="approve")
    assert response.status_code in (302, 303), response.text
    location = response.headers["Location"]
    assert location.startswith("https://printer.example/cb?")
    query = query_of(location)
    assert query["state"] == params["state"] and query["code"]
    tokens = exchange(provider, printer, query["code"], verifier, params["redirect_uri"])
    assert tokens.status_code == 200, tokens.text
    claims = verify_with_jwks(provider, tokens.json()["id_token"], audience=printer["client_id"])
    assert claims["sub"] == alice["sub"]


def test_denying_the_consent_redirects_with_access_denied_and_the_state(provider, printer,
                                                                        alice_browser):
    params, _verifier, page = _consent_page(provider, alice_browser, printer)
    form = next(f for f in forms_of(page.text) if fields(f, "decision"))
    deny = next(f["value"] for f in fields(form, "decision") if f["value"] != "approve")
    response = submit_form(alice_browser, page, "decision", decision=deny)
    assert response.status_code in (302, 303), response.text
    location = response.headers["Location"]
    assert location.startswith("https://printer.example/cb?")
    query = query_of(location)
    assert query["error"] == "access_denied"
    assert query["state"] == params["state"]
    assert "code" not in query


@pytest.mark.parametrize("csrf", [None, "not-the-token"], ids=["missing", "wrong"])
def test_a_consent_approval_without_the_csrf_token_is_refused(provider, printer, alice_browser,
                                                              csrf):
    _params, _verifier, page = _consent_page(provider, alice_browser, printer)
    response = submit_form(alice_browser, page, "decision", decision="approve", csrf_token=csrf)
    assert response.status_code == 400
    assert "code=" not in response.headers.get("Location", "")


# -- redirect URI matching -------------------------------------------------------------------------
@pytest.mark.parametrize("which, redirect_uri", [
    ("printer", "https://printer.example/other"),
    ("printer", "https://printer.example/cb/"),
    ("printer", "https://printer.example/cb/more"),
    ("printer", "https://printer.example/cb?x=1"),
    ("printer", "http://printer.example/cb"),
    ("printer", "https://printer.example:8443/cb"),
    ("printer", "https://evil.example/cb"),
    ("printer", "https://printer.example.evil.example/cb"),
    ("phone", "http://127.0.0.1:5555/other"),
    ("phone", "http://127.0.0.1/callback/x"),
    ("phone", "https://127.0.0.1:5555/callback"),
    ("phone", "http://localhost:5555/callback"),
    ("phone", "http://127.0.0.2:5555/callback"),
])
def test_a_redirect_uri_that_does_not_match_gives_an_error_page_and_never_a_redirect_to_it(
        provider, printer, phone_client, alice_browser, which, redirect_uri):
    client = {"printer": printer, "phone": phone_client}[which]
    params, _ = auth_params(client, redirect_uri=redirect_uri)
    for browser in (alice_browser, requests.Session()):  # signed in, and not
        response = browser.get(f"{provider.url}/authorize?{urlencode(params)}",
                               allow_redirects=False, timeout=30)
        assert response.status_code == 400, (response.status_code, response.headers)
        assert "Location" not in response.headers
        assert response.headers["Content-Type"].startswith("text/html")
        assert f'href="{redirect_uri}' not in response.text


def test_a_loopback_ip_redirect_may_use_any_port(provider, phone_client, alice_browser, alice):
    """RFC 8252 §7.3: registered http://127.0.0.1/callback, asked with port 5555."""
    assert phone_client["redirect_uris"] == ["http://127.0.0.1/callback"]
    redirect_uri = "http://127.0.0.1:5555/callback"
    # in a fresh browser, through the login form ...
    on_port = {**phone_client, "redirect_uris": [redirect_uri]}
    _session, query, verifier = authorize(provider, on_port, "alice", "alice-password")
    tokens = exchange(provider, phone_client, query["code"], verifier, redirect_uri)
    assert tokens.status_code == 200, tokens.text
    # ... and in a signed-in one, on yet another port
    redirect_uri = "http://127.0.0.1:61234/callback"
    query, verifier, _params = code_for(provider, phone_client, alice_browser,
                                        redirect_uri=redirect_uri)
    tokens = exchange(provider, phone_client, query["code"], verifier, redirect_uri)
    assert tokens.status_code == 200, tokens.text
    claims = verify_with_jwks(provider, tokens.json()["id_token"],
                              audience=phone_client["client_id"])
    assert claims["sub"] == alice["sub"]


# -- PKCE and the code -----------------------------------------------------------------------------
@pytest.mark.parametrize("change", [
    {"code_challenge": None, "code_challenge_method": None},
    {"code_challenge": None},
    {"code_challenge_method": "plain"},
    {"code_challenge_method": None},
    {"code_challenge": "too-short"},
], ids=["no_pkce", "method_without_challenge", "plain_method", "challenge_without_method",
        "malformed_challenge"])
def test_a_public_client_without_an_s256_code_challenge_gets_an_error_and_no_code(
        provider, phone_client, alice_browser, change):
    params, _ = auth_params(phone_client)
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    response = alice_browser.get(f"{provider.url}/authorize?{urlencode(params)}",
                                 allow_redirects=False, timeout=30)
    if response.status_code in (302, 303):
        location = response.headers["Location"]
        assert location.startswith(params["redirect_uri"] + "?"), location
        query = query_of(location)
        assert "code" not in query
        assert query["error"] == "invalid_request"
        assert query["state"] == params["state"]
    else:
        assert response.status_code == 400, response.text
        assert "code=" not in response.text


def test_a_code_is_single_use(provider, phone_client, alice_browser):
    query, verifier, _params = code_for(provider, phone_client, alice_browser)
    redirect_uri = phone_client["redirect_uris"][0]
    first = exchange(provider, phone_client, query["code"], verifier, redirect_uri)
    assert first.status_code == 200, first.text
    second = exchange(provider, phone_client, query["code"], verifier, redirect_uri)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert "access_token" not in second.json()
    assert second.headers["Cache-Control"] == "no-store"


def _other_public_client(provider, phone_client):
    return provider.create_client("--name", "Another app", "--public",
                                  "--redirect-uri", phone_client["redirect_uris"][0],
                                  "--grant-type", "authorization_code")


@pytest.mark.parametrize("case, expected", [
    ("wrong_verifier", {"invalid_grant"}),
    ("missing_verifier", {"invalid_request", "invalid_grant"}),
    ("other_redirect_uri", {"invalid_grant"}),
    ("other_client", {"invalid_grant"}),
])
def test_a_code_exchange_that_does_not_match_the_request_gets_an_error_and_no_tokens(
        provider, phone_client, alice_browser, case, expected):
    query, verifier, _params = code_for(provider, phone_client, alice_browser)
    redirect_uri = phone_client["redirect_uris"][0]
    client = phone_client
    if case == "wrong_verifier":
        verifier = pkce()[0]
    elif case == "missing_verifier":
        verifier = None
    elif case == "other_redirect_uri":
        redirect_uri = "http://127.0.0.1:5555/callback"
    elif case == "other_client":
        client = _other_public_client(provider, phone_client)
    response = exchange(provider, client, query["code"], verifier, redirect_uri)
    assert response.status_code == 400, response.text
    assert response.json()["error"] in expected
    assert "access_token" not in response.json()


def test_the_id_token_from_the_code_flow_says_pwd_carries_the_nonce_and_verifies(
        provider, phone_client, alice, alice_browser):
    nonce = secrets.token_urlsafe(16)
    query, verifier, _params = code_for(provider, phone_client, alice_browser, nonce=nonce)
    response = exchange(provider, phone_client, query["code"], verifier,
                        phone_client["redirect_uris"][0])
    assert response.status_code == 200, response.text
    tokens = response.json()
    claims = verify_with_jwks(provider, tokens["id_token"], audience=phone_client["client_id"])
    assert claims["amr"] == ["pwd"]
    assert claims["nonce"] == nonce
    assert claims["sub"] == alice["sub"]
    assert claims["iss"] == provider.url
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]
    access = verify_with_jwks(provider, tokens["access_token"], audience=provider.url,
                              typ="at+jwt")
    assert access["sub"] == alice["sub"] and access["client_id"] == phone_client["client_id"]


# -- no open redirect after sign-in ----------------------------------------------------------------
OFF_SITE = [
    "https://evil.example",
    "https://evil.example/",
    "//evil.example",
    "//evil.example/path",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/%2F%2Fevil.example/..//evil.example",
    " //evil.example",
    "https:evil.example",
    "http:/evil.example",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("next_url", OFF_SITE)
def test_the_login_next_parameter_cannot_lead_off_site(provider, alice, next_url):
    own = urlsplit(provider.url).netloc
    session = requests.Session()
    page = session.get(f"{provider.url}/login?{urlencode({'next': next_url})}", timeout=30)
    assert page.status_code == 200
    shown = [f["value"] for form in forms_of(page.text) for f in fields(form, "next")]
    for value in shown:
        assert urlsplit(browser_target(page.url, value or "/")).netloc == own, value
    # the server checks what it is sent, not only what it rendered
    response = session.post(provider.url + "/login", data={
        "username": "alice", "password": "alice-password", "csrf_token": csrf_of(page.text),
        "next": next_url,
    }, allow_redirects=False, timeout=30)
    assert response.status_code in (302, 303), response.text
    target = browser_target(response.url, response.headers["Location"])
    assert urlsplit(target).scheme in ("http", "https")
    assert urlsplit(target).netloc == own, response.headers["Location"]


def test_the_login_next_parameter_keeps_an_on_site_path(provider, alice):
    session = requests.Session()
    page = session.get(provider.url + "/login", timeout=30)
    response = session.post(provider.url + "/login", data={
        "username": "alice", "password": "alice-password", "csrf_token": csrf_of(page.text),
        "next": "/device?x=1",
    }, allow_redirects=False, timeout=30)
    assert response.status_code in (302, 303)
    assert browser_target(response.url, response.headers["Location"]) == \
        provider.url + "/device?x=1"
