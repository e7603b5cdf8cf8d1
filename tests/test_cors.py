"""CORS: a relying party's page on its own origin may use the widget; other origins may not read
ticket or token answers; the status endpoint is readable by any origin."""

from __future__ import annotations

import requests

from helpers import pkce

RP_ORIGIN = "https://shop.example"


def test_the_clients_own_origin_may_create_tickets_and_read_tokens(provider):
    client = provider.create_client("--name", "SPA", "--public",
                                    "--redirect-uri", RP_ORIGIN + "/callback")
    _verifier, challenge = pkce()
    body = {"client_id": client["client_id"], "scope": "openid", "code_challenge": challenge,
            "code_challenge_method": "S256"}
    mine = requests.post(provider.url + "/qr/ticket", data=body,
                         headers={"Origin": RP_ORIGIN}, timeout=10)
    assert mine.status_code == 201
    assert mine.headers["Access-Control-Allow-Origin"] == RP_ORIGIN
    assert "Origin" in mine.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in mine.headers

    phishing = requests.post(provider.url + "/qr/ticket", data=body,
                             headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in phishing.headers

    poll = requests.post(provider.url + "/token", data={
        "grant_type": "urn:qr-oidc:params:oauth:grant-type:qr-ticket",
        "ticket": mine.json()["ticket"], "client_id": client["client_id"]},
        headers={"Origin": RP_ORIGIN}, timeout=10)
    assert poll.status_code == 400  # pending: the error is readable by the page too
    assert poll.headers["Access-Control-Allow-Origin"] == RP_ORIGIN
    assert "Retry-After" in poll.headers["Access-Control-Expose-Headers"]
    assert "DPoP-Nonce" in poll.headers["Access-Control-Expose-Headers"]

    status = requests.post(provider.url + "/qr/status", data={"ticket": mine.json()["ticket"]},
                           headers={"Origin": "https://anywhere.example"}, timeout=10)
    assert status.headers["Access-Control-Allow-Origin"] == "*"


def test_a_preflight_is_answered_without_credentials(provider):
    response = requests.options(provider.url + "/qr/ticket", headers={
        "Origin": RP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == RP_ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    # a DPoP proof is a header of its own (RFC 9449 §4.1): a browser may send it
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, DPoP"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_the_phone_endpoints_are_not_opened_to_other_origins(provider, web_client, alice_phone):
    ticket = provider.ticket(web_client)
    response = requests.post(provider.url + "/qr/scan", data={
        "scan_code": provider.scan_code(ticket)},
        headers={"Authorization": f"Bearer {alice_phone}", "Origin": "https://evil.example"},
        timeout=10)
    assert "Access-Control-Allow-Origin" not in response.headers
