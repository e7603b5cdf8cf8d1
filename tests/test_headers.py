"""Security headers on every response: pages cannot be framed (the approval screens cannot be
clickjacked) and run only the provider's own scripts; JSON runs nothing.

The app sets them on its way out (provider/web/headers.py, an ``after_request`` of the Flask
app): these tests build the app in process and need no server. The event loop's answers carry
the same headers (test_token_core.py compares both front ends byte for byte), and a real
server's pages are checked too (test_hosted_sessions.py)."""

from __future__ import annotations

import re

import pytest

REDIRECT = "https://rp.example/callback"


def policy(response) -> dict[str, str]:
    header = response.headers["Content-Security-Policy"]
    return {d.split()[0]: " ".join(d.split()[1:]) for d in header.split(";") if d.strip()}


@pytest.mark.parametrize("path", ["/", "/login", "/device"])
def test_pages_allow_only_own_scripts_and_no_framing(in_process, path):
    response = in_process.client().get(path, follow_redirects=True)  # /device: to sign in
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    csp = policy(response)
    assert csp["frame-ancestors"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["form-action"] == "'self'"
    assert csp["base-uri"] == "'none'"
    assert "'unsafe-eval'" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def test_the_login_page_may_post_on_to_the_clients_redirect_origin_only(in_process):
    client = in_process.create_client("--name", "Headers RP", "--redirect-uri", REDIRECT)
    page = in_process.client().get("/authorize", query_string={
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
        "scope": "openid", "state": "s"})
    assert page.status_code == 200 and 'name="password"' in page.text
    assert policy(page)["form-action"] == "'self' https://rp.example"
    assert policy(page)["frame-ancestors"] == "'none'"


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/jwks.json"])
def test_json_runs_nothing_and_cannot_be_framed(in_process, path):
    response = in_process.client().get(path)
    assert response.status_code == 200
    assert policy(response) == {"default-src": "'none'", "frame-ancestors": "'none'"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_session_cookie_is_httponly_and_samesite(in_process):
    response = in_process.client().get("/login")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and re.search(r"SameSite=Lax", cookie)
    # loopback issuer: no Secure flag (it would break plain-http local use); an https issuer
    # sets it, as test_https_issuer_sets_secure_cookies_and_hsts shows
    assert "Secure" not in cookie
    assert "Strict-Transport-Security" not in response.headers


def test_https_issuer_sets_secure_cookies_and_hsts(make_in_process):
    app = make_in_process({"ISSUER": "https://login.example.com"})
    response = app.client().get("/login")
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie
    # the __Host- prefix: the browser keeps it only if Secure, Path=/ and no Domain, so a
    # sibling host cannot plant a session cookie for the provider
    assert cookie.startswith("__Host-qr_oidc_session=")
    assert "Path=/" in cookie and "Domain" not in cookie
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
