"""Hosted QR login: a relying party using plain authorization code flow (Authlib's own OAuth client)
gets QR login through the login page behind the authorization endpoint. The browser part is plain
HTTP here (a requests session); a real browser drives the same page in the browser tests."""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from helpers import ask_for_qr, complete_qr

REDIRECT = "https://rp.example/callback"


@pytest.fixture(scope="module")
def rp_client(provider):
    return provider.create_client("--name", "Relying party", "--redirect-uri", REDIRECT,
                                  "--grant-type", "authorization_code")


def start(provider, client, browser=None, **extra):
    """The relying party sends the browser to the authorization endpoint; the page's script asks
    for its QR (a POST, as qr-login.js does)."""
    rp = OAuth2Session(client["client_id"], client["client_secret"], scope="openid profile",
                       redirect_uri=REDIRECT, code_challenge_method="S256")
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(12)
    uri, state = rp.create_authorization_url(provider.meta["authorization_endpoint"],
                                             code_verifier=verifier, nonce=nonce, **extra)
    browser = browser or requests.Session()
    page = browser.get(uri, timeout=10)
    assert page.status_code == 200
    assert 'name="username"' in page.text and 'name="password"' in page.text  # beside the QR
    made = ask_for_qr(browser, page)
    assert made.status_code == 201, made.text
    ticket = made.json()
    return rp, browser, page, {"ticket": ticket["ticket"],
                               "scan_code": ticket["qr_content"].rsplit("/", 1)[1],
                               "binding_code": ticket.get("binding_code"), "state": state,
                               "verifier": verifier, "nonce": nonce}


def finish(provider, browser, page, flow) -> requests.Response:
    """What the page's script does once the status long poll says the phone decided: the
    provider answers the relying party at once, from the request kept with the ticket."""
    response = complete_qr(browser, page, flow["ticket"])
    assert response.status_code == 302, response.text
    return response


def test_the_login_page_shows_a_qr_owned_by_the_requesting_client(provider, bob_phone):
    # a client that may use every grant, the QR grant included
    rp_client = provider.create_client("--name", "Relying party", "--redirect-uri", REDIRECT)
    _rp, _browser, page, flow = start(provider, rp_client)
    scanned = provider.phone("scan", bob_phone, scan_code=flow["scan_code"])
    assert scanned.status_code == 200
    assert scanned.json()["client"]["client_id"] == rp_client["client_id"]
    assert scanned.json()["scopes"] == ["openid", "profile"]
    status = provider.status(flow["ticket"]).json()
    assert status["status"] == "scanned" and status["user"]["name"] == "Bob Builder"
    # the page's ticket is not redeemable at the token endpoint: it belongs to the browser flow
    assert provider.phone("approve", bob_phone, scan_code=flow["scan_code"]).status_code == 200
    poll = provider.poll(rp_client, flow["ticket"])
    assert poll.status_code == 400 and poll.json()["error"] == "invalid_grant"


def test_approving_on_the_phone_continues_the_code_flow_with_amr_qr(provider, rp_client, alice,
                                                                    alice_phone):
    rp, browser, page, flow = start(provider, rp_client)
    assert provider.phone("scan", alice_phone, scan_code=flow["scan_code"]).status_code == 200
    assert provider.phone("approve", alice_phone, scan_code=flow["scan_code"]).status_code == 200

    response = finish(provider, browser, page, flow)
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")  # no consent page: the phone's screen was it
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [flow["state"]]

    token = rp.fetch_token(provider.meta["token_endpoint"], authorization_response=location,
                           code_verifier=flow["verifier"])
    claims = jwt.decode(token["id_token"], options={"verify_signature": False})
    assert claims["sub"] == alice["sub"]
    assert claims["amr"] == ["qr"]
    assert claims["nonce"] == flow["nonce"]
    assert claims["aud"] == rp_client["client_id"]
    # the ticket is used up: the page cannot finish twice
    again = complete_qr(browser, page, flow["ticket"])
    assert again.status_code in (302, 400)
    assert "code=" not in again.headers.get("Location", "")


def test_denying_on_the_phone_redirects_with_access_denied_and_state(provider, rp_client,
                                                                     alice_phone):
    _rp, browser, page, flow = start(provider, rp_client)
    assert provider.phone("scan", alice_phone, scan_code=flow["scan_code"]).status_code == 200
    assert provider.phone("deny", alice_phone, scan_code=flow["scan_code"]).status_code == 200
    response = finish(provider, browser, page, flow)
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert response.headers["Location"].startswith(REDIRECT + "?")
    assert query["error"] == ["access_denied"] and query["state"] == [flow["state"]]
    assert "code" not in query


def test_a_pending_ticket_cannot_finish_the_flow(provider, rp_client):
    _rp, browser, page, flow = start(provider, rp_client)
    response = complete_qr(browser, page, flow["ticket"])
    # back to the login page with a new QR, never to the relying party
    assert response.status_code == 302
    assert not response.headers["Location"].startswith(REDIRECT)
    assert response.headers["Location"].startswith("/authorize?")


def test_another_browser_cannot_finish_with_a_stolen_ticket(provider, rp_client, alice_phone):
    _rp, _browser, page, flow = start(provider, rp_client)
    assert provider.phone("scan", alice_phone, scan_code=flow["scan_code"]).status_code == 200
    assert provider.phone("approve", alice_phone, scan_code=flow["scan_code"]).status_code == 200
    attacker = requests.Session()
    attacker_page = attacker.get(provider.url + "/login", timeout=10)
    response = complete_qr(attacker, attacker_page, flow["ticket"])
    assert response.status_code == 400


def test_number_matching_applies_to_the_hosted_page(provider):
    client = provider.create_client("--name", "Bank portal", "--number-matching",
                                    "--redirect-uri", REDIRECT)
    _rp, _browser, _page, flow = start(provider, client)
    assert re.fullmatch(r"\d\d", flow["binding_code"]), "the page shows the number to pick"


def test_pkce_s256_is_what_the_page_flow_checks(provider, rp_client, alice_phone):
    rp, browser, page, flow = start(provider, rp_client)
    provider.phone("scan", alice_phone, scan_code=flow["scan_code"])
    provider.phone("approve", alice_phone, scan_code=flow["scan_code"])
    location = finish(provider, browser, page, flow).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    wrong = requests.post(provider.meta["token_endpoint"], data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": secrets.token_urlsafe(48)},
        auth=(rp_client["client_id"], rp_client["client_secret"]), timeout=10)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert create_s256_code_challenge(flow["verifier"]) in page.url


@pytest.mark.parametrize("extra, error", [
    ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    ({"request_uri": "https://rp.example/request.jwt"}, "request_uri_not_supported"),
    ({"response_mode": "form_post"}, "invalid_request"),
    ({"response_mode": "fragment"}, "invalid_request"),
])
def test_what_discovery_says_is_unsupported_is_refused_not_ignored(provider, rp_client, extra,
                                                                    error):
    assert provider.meta["request_parameter_supported"] is False
    assert provider.meta["request_uri_parameter_supported"] is False
    assert provider.meta["response_modes_supported"] == ["query"]
    response = requests.get(provider.meta["authorization_endpoint"], params={
        "response_type": "code", "client_id": rp_client["client_id"], "redirect_uri": REDIRECT,
        "scope": "openid", "state": "st", **extra}, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert response.headers["Location"].startswith(REDIRECT)
    assert query["error"] == [error] and query["state"] == ["st"] and "code" not in query


def test_the_page_flow_redemption_is_audited_like_the_token_endpoint_one(provider, rp_client,
                                                                         alice_phone):
    import json
    import time

    rp, browser, page, flow = start(provider, rp_client)
    assert provider.phone("scan", alice_phone, scan_code=flow["scan_code"]).status_code == 200
    assert provider.phone("approve", alice_phone, scan_code=flow["scan_code"]).status_code == 200
    approved = provider.status(flow["ticket"]).json()
    assert approved["status"] == "approved"
    finish(provider, browser, page, flow)
    deadline = time.monotonic() + 10
    while True:
        events = [json.loads(line) for line in provider.log().splitlines()
                  if line.startswith("{")]
        ticket_ids = {e["ticket"] for e in events if e["event"] == "ticket.approved"
                      and e.get("client_id") == rp_client["client_id"]}
        redeemed = [e for e in events if e["event"] == "ticket.redeemed"
                    and e.get("ticket") in ticket_ids]
        signin = [e for e in events if e["event"] == "code.issued" and e.get("amr") == "qr"
                  and e.get("ticket") in ticket_ids]
        if (redeemed and signin) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert redeemed and signin
    assert redeemed[-1]["ticket"] == signin[-1]["ticket"]
