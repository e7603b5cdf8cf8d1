"""The phone's approval grants exactly what it showed (issue 20, SPEC.md "Hosted login"):

- a QR approved on the hosted login page answers that one authorization request and signs the
  browser in nowhere (the cross-device "session transfer" attack);
- the request is kept with the ticket: what the browser sends afterwards changes nothing;
- ``prompt=login``, ``max_age`` and ``prompt=none`` are honoured (OIDC Core §3.1.2.1);
- provider sessions live on the server: sign-out and a password change end a copied cookie;
- a loopback redirect URI may vary only in its port, and the page's CSP is built from scheme,
  host and port.

Real servers, SQLite and PostgreSQL; the browser is a requests session.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from helpers import (
    Provider,
    ask_for_qr,
    complete_qr,
    csrf_of,
    login_form,
    pkce,
    submit_form,
)

REDIRECT = "https://shop.example/cb"


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def query_of(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def request_params(client: dict, **extra) -> tuple[dict, str]:
    verifier, challenge = pkce()
    return {"response_type": "code", "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0], "scope": "openid",
            "state": secrets.token_hex(6), "nonce": secrets.token_hex(6),
            "code_challenge": challenge, "code_challenge_method": "S256", **extra}, verifier


def open_login_page(provider: Provider, browser: requests.Session, params: dict):
    page = browser.get(f"{provider.url}/authorize?{urlencode(params)}", timeout=30)
    assert page.status_code == 200 and 'name="password"' in page.text, page.text[:300]
    return page


def approve_on_phone(provider, phone_token, ticket: dict) -> None:
    code = ticket["qr_content"].rsplit("/", 1)[1]
    assert provider.phone("scan", phone_token, scan_code=code).status_code == 200
    body = {"scan_code": code}
    if "binding_code" in ticket:
        body["binding_code"] = ticket["binding_code"]
    assert provider.phone("approve", phone_token, **body).status_code == 200


def exchange(provider, client, code, verifier):
    return requests.post(provider.url + "/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": client["redirect_uris"][0]},
        auth=(client["client_id"], client["client_secret"]), timeout=30)


@pytest.fixture(scope="module")
def shop(provider):
    """A third-party relying party that may ask for a lot (offline_access included)."""
    return provider.create_client("--name", "Web shop", "--redirect-uri", REDIRECT)


@pytest.fixture(scope="module")
def first_party_app(provider):
    return provider.create_client("--name", "Our portal", "--first-party", "--redirect-uri",
                                  "https://portal.example/cb", "--scope",
                                  "openid profile qr:approve")


# -- session transfer ------------------------------------------------------------------------------
def test_a_qr_approval_answers_one_request_and_signs_the_browser_in_nowhere(
        provider, shop, phone_client, first_party_app, alice, alice_phone):
    """The attack: the attacker opens the hosted page signed out, relays its QR, the victim
    approves "Web shop, openid". The attacker's browser gets that one code, and no session
    with which to ask any other client (the first-party phone app, say) for anything."""
    attacker = requests.Session()
    params, verifier = request_params(shop)
    page = open_login_page(provider, attacker, params)
    made = ask_for_qr(attacker, page)
    assert made.status_code == 201, made.text
    approve_on_phone(provider, alice_phone, made.json())  # the victim, tricked
    sessions = provider.db("SELECT COUNT(*) FROM browser_sessions")[0][0]
    done = complete_qr(attacker, page, made.json()["ticket"])
    assert done.status_code == 302 and done.headers["Location"].startswith(REDIRECT + "?")
    assert exchange(provider, shop, query_of(done.headers["Location"])["code"],
                    verifier).status_code == 200
    # the browser is not signed in: not at the provider's home page, not for the phone app,
    # not for a first-party client, not with prompt=none
    assert "Signed in as" not in attacker.get(provider.url + "/", timeout=30).text
    for client in (phone_client, first_party_app):
        asked, _ = request_params(client, scope="openid qr:approve")
        answer = attacker.get(f"{provider.url}/authorize?{urlencode(asked)}",
                              allow_redirects=False, timeout=30)
        assert answer.status_code == 200 and 'name="password"' in answer.text
        silent, _ = request_params(client, prompt="none")
        answer = attacker.get(f"{provider.url}/authorize?{urlencode(silent)}",
                              allow_redirects=False, timeout=30)
        assert query_of(answer.headers["Location"])["error"] == "login_required"
    assert provider.db("SELECT COUNT(*) FROM browser_sessions")[0][0] == sessions


# -- the request is kept with the ticket -----------------------------------------------------------
def test_the_code_carries_exactly_the_request_the_phone_showed(provider, shop, alice_phone):
    """The browser asked (and the phone showed) openid; whatever it sends afterwards, the code
    gives openid: no profile, no email, no refresh token."""
    browser = requests.Session()
    params, verifier = request_params(shop, scope="openid")
    page = open_login_page(provider, browser, params)
    made = ask_for_qr(browser, page).json()
    code = made["qr_content"].rsplit("/", 1)[1]
    shown = provider.phone("scan", alice_phone, scan_code=code).json()
    assert shown["scopes"] == ["openid"]
    assert provider.phone("approve", alice_phone, scan_code=code).status_code == 200
    wider = urlencode({**params, "scope": "openid profile email offline_access",
                       "redirect_uri": "https://evil.example/cb", "state": "theirs"})
    done = complete_qr(browser, page, made["ticket"], return_to="/authorize?" + wider,
                       request=wider, scope="openid profile email offline_access")
    location = done.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    assert query_of(location)["state"] == params["state"]
    tokens = exchange(provider, shop, query_of(location)["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["scope"] == "openid"
    assert "refresh_token" not in tokens.json()
    claims = json.loads(_b64(tokens.json()["id_token"].split(".")[1]))
    assert claims["nonce"] == params["nonce"] and claims["amr"] == ["qr"]
    assert "name" not in claims and "email" not in claims
    # the ticket kept the whole request
    kept = provider.db("SELECT auth_request FROM tickets WHERE kind = 'authorize' AND scope = ?"
                       " ORDER BY created_at DESC LIMIT 1", "openid")[0][0]
    kept = kept if isinstance(kept, dict) else json.loads(kept)
    assert {k: kept[k] for k in ("client_id", "redirect_uri", "scope", "state", "nonce",
                                 "code_challenge", "code_challenge_method")} == {
        k: params[k] for k in ("client_id", "redirect_uri", "scope", "state", "nonce",
                               "code_challenge", "code_challenge_method")}


def test_the_phone_is_shown_only_the_scope_the_client_may_have(provider, alice_phone):
    narrow = provider.create_client("--name", "Narrow shop", "--redirect-uri", REDIRECT,
                                    "--scope", "openid profile")
    browser = requests.Session()
    params, _verifier = request_params(narrow, scope="openid profile email qr:approve")
    page = open_login_page(provider, browser, params)
    made = ask_for_qr(browser, page).json()
    shown = provider.phone("scan", alice_phone,
                           scan_code=made["qr_content"].rsplit("/", 1)[1]).json()
    assert shown["scopes"] == ["openid", "profile"]


# -- prompt and max_age ----------------------------------------------------------------------------
def signed_in_browser(provider, username="alice", password="alice-password"):
    browser = requests.Session()
    page = browser.get(provider.url + "/login", timeout=30)
    assert login_form(browser, page, username, password).status_code == 302
    return browser


def ask(provider, browser, client, **extra):
    params, verifier = request_params(client, **extra)
    answer = browser.get(f"{provider.url}/authorize?{urlencode(params)}",
                         allow_redirects=False, timeout=30)
    return answer, params, verifier


def test_prompt_login_asks_for_the_password_again_and_the_code_has_the_new_auth_time(
        provider, first_party_app, alice):
    browser = signed_in_browser(provider)
    quiet, _, _ = ask(provider, browser, first_party_app)
    assert quiet.status_code == 302 and "code=" in quiet.headers["Location"]
    time.sleep(1.2)
    again, params, verifier = ask(provider, browser, first_party_app, prompt="login")
    assert again.status_code == 200 and 'name="password"' in again.text
    signed = login_form(browser, again, "alice", "alice-password")
    assert signed.status_code == 302
    back = browser.get(provider.url + signed.headers["Location"], allow_redirects=False,
                       timeout=30)
    assert back.status_code == 302, back.text
    code = query_of(back.headers["Location"])["code"]
    tokens = exchange(provider, first_party_app, code, verifier).json()
    claims = json.loads(_b64(tokens["id_token"].split(".")[1]))
    assert time.time() - claims["auth_time"] < 5  # the new sign-in, not the old one
    # and once that request is answered, prompt=login asks again
    after, _, _ = ask(provider, browser, first_party_app, prompt="login")
    assert after.status_code == 200 and 'name="password"' in after.text


def test_max_age_sends_an_older_sign_in_back_to_the_password(provider, first_party_app):
    browser = signed_in_browser(provider)
    time.sleep(2.2)
    stale, _, _ = ask(provider, browser, first_party_app, max_age="1")
    assert stale.status_code == 200 and 'name="password"' in stale.text
    fresh_enough, _, _ = ask(provider, browser, first_party_app, max_age="3600")
    assert fresh_enough.status_code == 302 and "code=" in fresh_enough.headers["Location"]
    refused, _, _ = ask(provider, browser, first_party_app, max_age="soon")
    assert query_of(refused.headers["Location"])["error"] == "invalid_request"


def test_prompt_none_never_shows_a_page(provider, first_party_app, shop):
    signed_out = requests.Session()
    answer, params, _ = ask(provider, signed_out, first_party_app, prompt="none")
    assert answer.status_code == 302
    query = query_of(answer.headers["Location"])
    assert query["error"] == "login_required" and query["state"] == params["state"]
    browser = signed_in_browser(provider)
    answer, _, _ = ask(provider, browser, shop, prompt="none")  # third party: consent first
    assert query_of(answer.headers["Location"])["error"] == "consent_required"
    answer, _, _ = ask(provider, browser, first_party_app, prompt="none")
    assert "code" in query_of(answer.headers["Location"])
    time.sleep(1.2)
    answer, _, _ = ask(provider, browser, first_party_app, prompt="none", max_age="1")
    assert query_of(answer.headers["Location"])["error"] == "login_required"


def test_the_consent_form_answers_only_the_request_it_was_shown_for(provider, shop):
    """A consent form posted with another request (prompt=login, max_age=0 added by hand, say,
    on a shared computer left signed in) gives no code: that request goes back through
    /authorize, which asks for the password."""
    browser = signed_in_browser(provider)
    page, params, _ = ask(provider, browser, shop)
    assert 'name="decision"' in page.text
    forced = urlencode({**params, "prompt": "login", "max_age": "0"})
    answer = submit_form(browser, page, "decision", decision="approve", request=forced)
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/authorize?")
    assert "code=" not in answer.headers["Location"]
    again = browser.get(provider.url + answer.headers["Location"], allow_redirects=False,
                        timeout=30)
    assert again.status_code == 200 and 'name="password"' in again.text
    # the form of the page as shown still works (once)
    page, params, _ = ask(provider, browser, shop)
    approved = submit_form(browser, page, "decision", decision="approve")
    assert approved.status_code == 302 and "code=" in approved.headers["Location"]
    replayed = submit_form(browser, page, "decision", decision="approve")
    assert "code=" not in replayed.headers.get("Location", "")


def test_a_signed_out_consent_post_with_a_broken_request_gets_a_page(provider):
    browser = requests.Session()
    page = browser.get(provider.url + "/login", timeout=30)
    for request_query in ("a=b\r\nSet-Cookie: x=y", "client_id=%0d%0a", "x=%ff"):
        answer = browser.post(provider.url + "/authorize/consent", timeout=30,
                              allow_redirects=False, data={"csrf_token": csrf_of(page.text),
                                                           "request": request_query})
        assert answer.status_code in (302, 400), answer.status_code
        assert "Set-Cookie: x" not in answer.headers.get("Location", "")


def test_a_nonce_is_bounded_by_its_bytes_so_every_code_can_be_redeemed(provider, first_party_app):
    browser = signed_in_browser(provider)
    long, _, _ = ask(provider, browser, first_party_app, nonce="😀" * 200)  # 800 bytes
    assert query_of(long.headers["Location"])["error"] == "invalid_request"
    fits, params, verifier = ask(provider, browser, first_party_app, nonce="😀" * 128)
    code = query_of(fits.headers["Location"])["code"]
    tokens = exchange(provider, first_party_app, code, verifier)
    assert tokens.status_code == 200, tokens.text
    assert json.loads(_b64(tokens.json()["id_token"].split(".")[1]))["nonce"] == "😀" * 128


def test_prompt_consent_shows_consent_even_to_a_first_party_client(provider, first_party_app):
    browser = signed_in_browser(provider)
    answer, _, _ = ask(provider, browser, first_party_app, prompt="consent")
    assert answer.status_code == 200 and 'name="decision"' in answer.text
    approved = submit_form(browser, answer, "decision", decision="approve")
    assert approved.status_code == 302 and "code=" in approved.headers["Location"]


# -- sessions on the server ------------------------------------------------------------------------
def is_signed_in(provider, browser) -> bool:
    """Whether the provider's home page greets this browser (a Session, whose cookie jar takes
    what the answer sets) or these cookies (a copy, as a thief holds it)."""
    if isinstance(browser, requests.Session):
        page = browser.get(provider.url + "/", timeout=30)
    else:
        page = requests.get(provider.url + "/", cookies=browser, timeout=30)
    return "Signed in as" in page.text


def test_signing_out_ends_a_copied_cookie_too(provider, alice):
    browser = signed_in_browser(provider)
    copied = browser.cookies.get_dict()
    assert is_signed_in(provider, copied)
    home = browser.get(provider.url + "/", timeout=30)
    out = submit_form(browser, home, "csrf_token")
    assert out.status_code == 302
    assert not is_signed_in(provider, browser)
    assert not is_signed_in(provider, copied)  # the thief's copy is dead as well


def test_signing_in_again_ends_the_browsers_previous_session(provider):
    browser = signed_in_browser(provider)
    copied = browser.cookies.get_dict()
    page = browser.get(provider.url + "/login", timeout=30)
    assert login_form(browser, page, "alice", "alice-password").status_code == 302
    assert is_signed_in(provider, browser)
    assert not is_signed_in(provider, copied)


def test_a_password_change_ends_every_session_of_the_user(provider):
    provider.create_user("dora", "dora-password")
    one, two = signed_in_browser(provider, "dora", "dora-password"), \
        signed_in_browser(provider, "dora", "dora-password")
    assert is_signed_in(provider, one)
    changed = provider.cli("users", "set-password", "--username", "dora", "--password",
                           "dora-new-password")
    assert "2 session(s) ended" in changed.stdout
    assert not is_signed_in(provider, one)
    assert not is_signed_in(provider, two)
    assert signed_in_browser(provider, "dora", "dora-new-password")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def short_sessions(request, tmp_path_factory):
    server = Provider(tmp_path_factory.mktemp("short-sessions"),
                      {"QR_OIDC_SESSION_IDLE": "2", "QR_OIDC_SESSION_LIFETIME": "6"},
                      backend=request.param)
    server.start()
    server.create_user("erin", "erin-password")
    yield server
    server.stop()


def test_a_session_ends_after_its_idle_time_and_after_its_lifetime(short_sessions):
    server = short_sessions
    idle = signed_in_browser(server, "erin", "erin-password")
    time.sleep(2.5)
    assert not is_signed_in(server, idle)
    busy = signed_in_browser(server, "erin", "erin-password")
    signed_in = time.monotonic()  # the server stamped the sign-in before this
    answers = []
    # a request every half second: never idle, for well past the idle time and (unless the
    # machine takes seconds per request) not past the lifetime
    while time.monotonic() - signed_in < 3.5:
        answers.append(is_signed_in(server, busy))
        time.sleep(0.5)
    assert all(answers) and len(answers) >= 5
    time.sleep(max(0.0, 6.5 - (time.monotonic() - signed_in)))
    assert not is_signed_in(server, busy)  # six seconds after sign-in, busy or not


# -- loopback redirect URIs ------------------------------------------------------------------------
@pytest.mark.parametrize("redirect_uri", [
    "http://evil.example@127.0.0.1:9/callback",
    "http://x;%20script-src-elem%20*@127.0.0.1:9/callback",
    "http://x; script-src-elem *@127.0.0.1:9/callback",
    "http://user:pass@127.0.0.1/callback",
])
def test_a_loopback_redirect_with_userinfo_is_no_port_variant(provider, phone_client,
                                                              redirect_uri):
    params, _ = request_params(phone_client, redirect_uri=redirect_uri)
    for browser in (requests.Session(), signed_in_browser(provider)):
        answer = browser.get(f"{provider.url}/authorize?{urlencode(params)}",
                             allow_redirects=False, timeout=30)
        assert answer.status_code == 400 and "Location" not in answer.headers
        assert "script-src-elem *" not in answer.headers["Content-Security-Policy"]


def test_the_login_pages_csp_names_only_the_redirects_scheme_host_and_port(provider,
                                                                           phone_client):
    params, _ = request_params(phone_client, redirect_uri="http://127.0.0.1:5555/callback")
    page = requests.get(f"{provider.url}/authorize?{urlencode(params)}", timeout=30)
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:5555;" in policy
    directives = [d.strip().split(" ")[0] for d in policy.split(";")]
    assert len(directives) == len(set(directives))  # nothing injected, nothing repeated

