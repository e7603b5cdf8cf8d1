"""Security headers on every response: pages cannot be framed (the approval screens cannot be
clickjacked) and run only the provider's own scripts; JSON runs nothing."""

from __future__ import annotations

import re

import pytest
import requests

REDIRECT = "https://rp.example/callback"


def policy(response) -> dict[str, str]:
    header = response.headers["Content-Security-Policy"]
    return {d.split()[0]: " ".join(d.split()[1:]) for d in header.split(";") if d.strip()}


@pytest.mark.parametrize("path", ["/", "/login", "/device"])
def test_pages_allow_only_own_scripts_and_no_framing(provider, path):
    response = requests.get(provider.url + path, timeout=10)
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


def test_the_login_page_may_post_on_to_the_clients_redirect_origin_only(provider):
    client = provider.create_client("--name", "Headers RP", "--redirect-uri", REDIRECT)
    page = requests.get(provider.url + "/authorize", params={
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
        "scope": "openid", "state": "s"}, timeout=10)
    assert page.status_code == 200 and 'name="password"' in page.text
    assert policy(page)["form-action"] == "'self' https://rp.example"
    assert policy(page)["frame-ancestors"] == "'none'"


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/jwks.json"])
def test_json_runs_nothing_and_cannot_be_framed(provider, path):
    response = requests.get(provider.url + path, timeout=10)
    assert policy(response) == {"default-src": "'none'", "frame-ancestors": "'none'"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_session_cookie_is_httponly_and_samesite(provider):
    response = requests.get(provider.url + "/login", timeout=10)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and re.search(r"SameSite=Lax", cookie)
    # loopback issuer: no Secure flag (it would break plain-http local use); an https issuer
    # sets it, as test_https_issuer_sets_secure_cookies_and_hsts shows
    assert "Secure" not in cookie


def test_https_issuer_sets_secure_cookies_and_hsts(tmp_path):
    from helpers import Provider

    server = Provider(tmp_path, {"QR_OIDC_ISSUER": "https://login.example.com"})
    server.start()
    try:
        response = requests.get(server.url + "/login", timeout=10)
        cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie
        # the __Host- prefix: the browser keeps it only if Secure, Path=/ and no Domain, so a
        # sibling host cannot plant a session cookie for the provider
        assert cookie.startswith("__Host-qr_oidc_session=")
        assert "Path=/" in cookie and "Domain" not in cookie
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    finally:
        server.stop()
