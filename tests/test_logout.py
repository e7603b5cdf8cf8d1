"""Logout (SPEC.md "Operating it"): OpenID RP-Initiated Logout 1.0 at ``end_session_endpoint``
and Back-Channel Logout 1.0, against a real server on SQLite and PostgreSQL, with a real relying
party on loopback that receives the logout tokens and checks them with PyJWT against the JWKS;
the phone's list of sign-ins, and ending one from it; every bad request a clear page, never an
open redirect, and GET changes nothing."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from receiver import Receiver

from helpers import QR_GRANT, approved_ticket, authorize, csrf_of, sign_in_phone

EVENT = "http://schemas.openid.net/event/backchannel-logout"
BACK = "https://rp.example/signed-out"


@pytest.fixture(scope="module")
def rp():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def portal(provider, rp):
    """A relying party of the code flow with both logouts registered."""
    return provider.create_client(
        "--name", "Logout portal", "--redirect-uri", "http://127.0.0.1:9/cb",
        "--grant-type", "authorization_code", "--grant-type", "refresh_token",
        "--grant-type", QR_GRANT, "--scope", "openid profile offline_access",
        "--post-logout-redirect-uri", BACK, "--backchannel-logout-uri", rp.url + "/bcl")


@pytest.fixture(scope="module")
def other(provider):
    return provider.create_client("--name", "Other portal", "--redirect-uri",
                                  "http://127.0.0.1:9/cb", "--grant-type", "authorization_code",
                                  "--post-logout-redirect-uri", BACK)


def code_tokens(provider, client, user="alice", password="alice-password"):
    session, query, verifier = authorize(provider, client, user, password,
                                         scope="openid profile offline_access")
    tokens = requests.post(provider.url + "/token", timeout=30, data={
        "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": client["redirect_uris"][0], "code_verifier": verifier},
        auth=(client["client_id"], client["client_secret"])).json()
    return session, tokens


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def userinfo_status(provider, access: str) -> int:
    return requests.get(provider.url + "/userinfo", timeout=30,
                        headers={"Authorization": f"Bearer {access}"}).status_code


def logout_tokens_for(rp, sid: str, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in rp.received if r["path"] == "/bcl" and
                 claims(parse_qs(r["body"].decode())["logout_token"][0]).get("sid") == sid]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no logout token for {sid}: {rp.received}")


def verified(provider, client, token: str) -> dict:
    """The logout token checked as Back-Channel Logout §2.6 asks a relying party to."""
    keys = jwt.PyJWKClient(provider.url + "/jwks.json")
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    body = jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"],
                      audience=client["client_id"], issuer=provider.url,
                      options={"require": ["iat", "exp", "jti", "sub", "sid", "events"]})
    assert body["events"] == {EVENT: {}} and "nonce" not in body
    return body


def test_discovery_names_the_logouts(provider):
    meta = requests.get(provider.url + "/.well-known/openid-configuration", timeout=30).json()
    assert meta["end_session_endpoint"] == provider.url + "/end_session"
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True
    assert "sid" in meta["claims_supported"]


def test_id_tokens_carry_the_sign_in_and_refreshes_keep_it(provider, portal, alice,
                                                           alice_phone):
    _session, tokens = code_tokens(provider, portal)
    sid = claims(tokens["id_token"])["sid"]
    assert len(sid) >= 16
    refreshed = requests.post(provider.url + "/token", timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(portal["client_id"], portal["client_secret"])).json()
    assert claims(refreshed["id_token"])["sid"] == sid
    ticket = approved_ticket(provider, portal, alice_phone)
    time.sleep(2.1)
    qr = provider.poll(portal, ticket["ticket"]).json()
    qr_sid = claims(qr["id_token"])["sid"]
    assert qr_sid and qr_sid != sid  # each approval on the phone is a sign-in of its own


def test_rp_initiated_logout_with_a_hint_ends_the_sign_in_and_tells_the_back_channel(
        provider, portal, rp, alice):
    browser, tokens = code_tokens(provider, portal)
    sid = claims(tokens["id_token"])["sid"]
    query = urlencode({"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": BACK,
                       "state": "s-123"})
    page = browser.get(f"{provider.url}/end_session?{query}", timeout=30)
    assert page.status_code == 200 and 'data-automatic="true"' in page.text
    assert userinfo_status(provider, tokens["access_token"]) == 200  # GET changed nothing
    form = {"csrf_token": csrf_of(page.text), "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": BACK, "state": "s-123"}
    done = browser.post(provider.url + "/end_session", data=form, allow_redirects=False,
                        timeout=30)
    assert done.status_code == 303
    assert done.headers["Location"] == BACK + "?state=s-123"
    assert userinfo_status(provider, tokens["access_token"]) == 401
    refresh = requests.post(provider.url + "/token", timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(portal["client_id"], portal["client_secret"]))
    assert refresh.json()["error"] == "invalid_grant"
    # the browser is signed out at the provider too: the next authorization asks again
    again = browser.get(provider.url + "/authorize?" + urlencode({
        "response_type": "code", "client_id": portal["client_id"], "scope": "openid",
        "redirect_uri": portal["redirect_uris"][0], "code_challenge": "x" * 43,
        "code_challenge_method": "S256"}), timeout=30, allow_redirects=False)
    assert 'name="password"' in again.text
    [delivery] = logout_tokens_for(rp, sid)
    assert delivery["headers"]["content-type"] == "application/x-www-form-urlencoded"
    body = verified(provider, portal, parse_qs(delivery["body"].decode())["logout_token"][0])
    assert body["sub"] == alice["sub"] and body["sid"] == sid


def test_without_a_hint_the_person_confirms_and_sees_they_are_signed_out(provider, portal, rp):
    browser, tokens = code_tokens(provider, portal)
    sid = claims(tokens["id_token"])["sid"]
    page = browser.get(provider.url + "/end_session", timeout=30)
    assert page.status_code == 200 and "data-automatic" not in page.text
    assert 'name="csrf_token"' in page.text
    done = browser.post(provider.url + "/end_session", timeout=30, allow_redirects=False,
                        data={"csrf_token": csrf_of(page.text)})
    assert done.status_code == 200 and "Signed out" in done.text
    assert userinfo_status(provider, tokens["access_token"]) == 401
    logout_tokens_for(rp, sid)
    forged = browser.post(provider.url + "/end_session", timeout=30, data={})
    assert forged.status_code == 400  # no CSRF token: nothing happens


def test_a_qr_sign_in_is_ended_by_its_id_token(provider, portal, rp, alice_phone):
    ticket = approved_ticket(provider, portal, alice_phone)
    time.sleep(2.1)
    tokens = provider.poll(portal, ticket["ticket"]).json()
    sid = claims(tokens["id_token"])["sid"]
    browser = requests.Session()  # no session at the provider: the QR signed it in nowhere
    page = browser.get(provider.url + "/end_session?" + urlencode(
        {"id_token_hint": tokens["id_token"]}), timeout=30)
    done = browser.post(provider.url + "/end_session", timeout=30, allow_redirects=False,
                        data={"csrf_token": csrf_of(page.text),
                              "id_token_hint": tokens["id_token"]})
    assert done.status_code == 200
    assert userinfo_status(provider, tokens["access_token"]) == 401
    verified(provider, portal,
             parse_qs(logout_tokens_for(rp, sid)[0]["body"].decode())["logout_token"][0])


@pytest.mark.parametrize("case", ["forged", "other client", "unregistered redirect",
                                  "redirect without client", "unknown client", "repeated"])
def test_bad_logout_requests_get_a_page_and_never_a_redirect(provider, portal, other, case):
    _browser, tokens = code_tokens(provider, portal)
    hint = tokens["id_token"]
    params = {
        "forged": {"id_token_hint": hint[:-8] + "AAAAAAAA"},
        "other client": {"id_token_hint": hint, "client_id": other["client_id"]},
        "unregistered redirect": {"id_token_hint": hint,
                                  "post_logout_redirect_uri": "https://evil.example/"},
        "redirect without client": {"post_logout_redirect_uri": BACK},
        "unknown client": {"client_id": "nobody", "post_logout_redirect_uri": BACK},
        "repeated": None,
    }[case]
    query = (urlencode(params) if params is not None
             else f"state=a&state=b&id_token_hint={hint}")
    answer = requests.get(f"{provider.url}/end_session?{query}", timeout=30,
                          allow_redirects=False)
    assert answer.status_code == 400, answer.text
    assert "Location" not in answer.headers
    assert answer.headers["Content-Type"].startswith("text/html")
    assert userinfo_status(provider, tokens["access_token"]) == 200


def test_a_hint_for_a_sign_in_already_gone_still_gets_a_clear_answer(provider, portal, rp):
    browser, tokens = code_tokens(provider, portal)
    form_for = browser.get(provider.url + "/end_session", timeout=30)
    browser.post(provider.url + "/end_session", timeout=30,
                 data={"csrf_token": csrf_of(form_for.text)})
    later = requests.Session()
    page = later.get(provider.url + "/end_session?" + urlencode(
        {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": BACK}), timeout=30)
    assert page.status_code == 200
    done = later.post(provider.url + "/end_session", timeout=30, allow_redirects=False, data={
        "csrf_token": csrf_of(page.text), "id_token_hint": tokens["id_token"],
        "post_logout_redirect_uri": BACK})
    assert done.status_code == 303 and done.headers["Location"] == BACK  # registered: fine


def test_the_phone_lists_its_users_sign_ins_and_ends_one(provider, portal, rp, phone_client):
    name = f"logout-{provider.backend}-{time.time_ns() % 10**6}"
    user = provider.create_user(name, name + "-password")
    phone = sign_in_phone(provider, phone_client, name, name + "-password")["access_token"]
    _browser, tokens = code_tokens(provider, portal, name, name + "-password")
    sid = claims(tokens["id_token"])["sid"]
    listed = requests.post(provider.url + "/qr/sessions", timeout=30,
                           headers={"Authorization": f"Bearer {phone}"})
    assert listed.status_code == 200, listed.text
    entries = {e["sid"]: e for e in listed.json()["sessions"]}
    assert {c["name"] for c in entries[sid]["clients"]} == {"Logout portal"}
    assert entries[sid]["amr"] == "pwd" and entries[sid]["browser"] is True
    [own] = [e for e in entries.values() if e.get("current")]  # the app's own sign-in
    assert own["sid"] != sid and {c["name"] for c in own["clients"]} == {"Our app"}
    refused = requests.post(provider.url + "/qr/sessions/end", data={"sid": own["sid"]},
                            headers={"Authorization": f"Bearer {phone}"}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    unknown = requests.post(provider.url + "/qr/sessions/end", data={"sid": "nope"},
                            headers={"Authorization": f"Bearer {phone}"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_session"
    ended = requests.post(provider.url + "/qr/sessions/end", data={"sid": sid}, timeout=30,
                          headers={"Authorization": f"Bearer {phone}"})
    assert ended.status_code == 200 and ended.json() == {"ended": sid, "clients_notified": 1}
    assert userinfo_status(provider, tokens["access_token"]) == 401
    body = verified(provider, portal, parse_qs(
        logout_tokens_for(rp, sid)[0]["body"].decode())["logout_token"][0])
    assert body["sub"] == user["sub"]
    after = requests.post(provider.url + "/qr/sessions", timeout=30,
                          headers={"Authorization": f"Bearer {phone}"}).json()["sessions"]
    assert sid not in {e["sid"] for e in after}
    anonymous = requests.post(provider.url + "/qr/sessions", timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_token"


def test_clients_create_checks_the_logout_uris(provider):
    for args in (["--backchannel-logout-uri", "http://rp.example/bcl"],
                 ["--backchannel-logout-uri", "https://rp.example/bcl#x"],
                 ["--post-logout-redirect-uri", "not a uri"]):
        result = provider.cli("clients", "create", "--name", "Bad", *args, "--json",
                              check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr, args
    made = provider.create_client("--name", "Good", "--post-logout-redirect-uri", BACK,
                                  "--backchannel-logout-uri", "https://rp.example/bcl")
    assert made["post_logout_redirect_uris"] == [BACK]
    assert made["backchannel_logout_uri"] == "https://rp.example/bcl"
    assert json.loads(json.dumps(made))  # (printed as JSON)


def test_a_back_channel_that_is_down_is_retried(provider, rp):
    with Receiver() as down:
        client = provider.create_client(
            "--name", "Flaky portal", "--redirect-uri", "http://127.0.0.1:9/cb",
            "--grant-type", "authorization_code", "--backchannel-logout-uri",
            down.url + "/bcl")
        down.fail_next(2)
        browser, tokens = code_tokens(provider, client)
        sid = claims(tokens["id_token"])["sid"]
        page = browser.get(provider.url + "/end_session", timeout=30)
        browser.post(provider.url + "/end_session", data={"csrf_token": csrf_of(page.text)},
                     timeout=30)
        attempts = down.wait_for(3, timeout=20)
        assert [a["status"] for a in attempts] == [503, 503, 200]
        assert all(claims(parse_qs(a["body"].decode())["logout_token"][0])["sid"] == sid
                   for a in attempts)
    assert urlsplit(BACK).scheme == "https"
