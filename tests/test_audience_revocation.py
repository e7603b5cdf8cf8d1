"""Tokens by the book (SPEC.md "Details that clients rely on"): the provider's own endpoints take
only tokens meant for it (RFC 9068 ``aud``); access and refresh tokens are revoked apart, reuse
detection fires only on a real reuse, a replayed authorization code revokes what it issued
(RFC 6749 §4.1.2); introspection answers only what the token's scope allows, and only to whom
the token concerns (RFC 7662 §4). Real servers, SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
import requests
from test_refresh import introspect, qr_tokens, refresh, revoke, userinfo

from helpers import authorize


def reuse_alarms(provider) -> int:
    return provider.log().count("refresh token reuse")


def replay_alarms(provider) -> int:
    return provider.log().count("authorization code replayed")


# -- audience --------------------------------------------------------------------------------------
def phone_tokens(provider, phone_client, **extra) -> dict:
    """The phone app's tokens (qr:approve), through the code flow; ``extra`` goes to /token."""
    _session, query, verifier = authorize(provider, phone_client, "alice", "alice-password",
                                          scope="openid profile qr:approve")
    response = requests.post(provider.url + "/token", data={
        "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": phone_client["redirect_uris"][0], "client_id": phone_client["client_id"],
        "code_verifier": verifier, **extra}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_token_for_another_resource_is_refused_where_the_provider_is_the_resource(
        provider, phone_client, web_client, alice):
    elsewhere = phone_tokens(provider, phone_client, resource="https://api.example/")
    here = phone_tokens(provider, phone_client)
    ticket = provider.ticket(web_client)
    code = provider.scan_code(ticket)
    for token in (elsewhere["access_token"],):
        refused = userinfo(provider, token)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        for action in ("scan", "approve", "deny"):
            answer = provider.phone(action, token, scan_code=code)
            assert answer.status_code == 401, (action, answer.text)
            assert answer.json()["error"] == "invalid_token"
    assert provider.status(ticket["ticket"]).json()["status"] == "pending"
    # the same user's token for this provider works
    assert userinfo(provider, here["access_token"]).json()["sub"] == alice["sub"]
    assert provider.phone("scan", here["access_token"], scan_code=code).status_code == 200


# -- revocation ------------------------------------------------------------------------------------
def test_revoking_an_access_token_leaves_its_refresh_token_working_and_raises_no_alarm(
        provider, web_client, alice_phone):
    tokens = qr_tokens(provider, web_client, alice_phone)
    alarms = reuse_alarms(provider)
    assert revoke(provider, web_client, tokens["access_token"],
                  token_type_hint="access_token").status_code == 200
    assert userinfo(provider, tokens["access_token"]).status_code == 401
    renewed = refresh(provider, web_client, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert userinfo(provider, renewed.json()["access_token"]).status_code == 200
    assert introspect(provider, web_client, renewed.json()["refresh_token"])["active"] is True
    time.sleep(0.5)  # (the log is written by a thread of its own)
    assert reuse_alarms(provider) == alarms


def test_a_revoked_refresh_token_is_invalid_without_a_reuse_alarm(provider, web_client,
                                                                  alice_phone):
    tokens = qr_tokens(provider, web_client, alice_phone)
    alarms = reuse_alarms(provider)
    assert revoke(provider, web_client, tokens["refresh_token"]).status_code == 200
    refused = refresh(provider, web_client, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert userinfo(provider, tokens["access_token"]).status_code == 401  # its grant's, too
    time.sleep(0.5)
    assert reuse_alarms(provider) == alarms


def test_a_rotated_refresh_token_used_again_is_a_reuse_and_revokes_the_family(
        provider, web_client, alice_phone):
    tokens = qr_tokens(provider, web_client, alice_phone)
    alarms = reuse_alarms(provider)
    newer = refresh(provider, web_client, tokens["refresh_token"]).json()
    # the older access token stays good after a rotation; the reuse is what revokes
    assert userinfo(provider, tokens["access_token"]).status_code == 200
    assert refresh(provider, web_client, tokens["refresh_token"]).status_code == 400
    assert refresh(provider, web_client, newer["refresh_token"]).status_code == 400
    assert userinfo(provider, newer["access_token"]).status_code == 401
    assert userinfo(provider, tokens["access_token"]).status_code == 401
    deadline = time.monotonic() + 5
    while reuse_alarms(provider) == alarms and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reuse_alarms(provider) == alarms + 1


@pytest.fixture(scope="module")
def shop(provider):
    """A confidential client of the code flow with refresh tokens, first-party (no consent)."""
    return provider.create_client("--name", "Code shop", "--first-party",
                                  "--redirect-uri", "https://code-shop.example/cb",
                                  "--grant-type", "authorization_code",
                                  "--grant-type", "refresh_token")


def exchange(provider, client, query, verifier):
    return requests.post(provider.url + "/token", data={
        "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": client["redirect_uris"][0], "code_verifier": verifier},
        auth=(client["client_id"], client["client_secret"]), timeout=30)


def test_a_replayed_code_fails_and_revokes_every_token_it_issued(provider, shop, alice):
    _session, query, verifier = authorize(provider, shop, "alice", "alice-password",
                                          scope="openid profile offline_access")
    first = exchange(provider, shop, query, verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    renewed = refresh(provider, shop, tokens["refresh_token"]).json()  # a descendant too
    assert userinfo(provider, renewed["access_token"]).status_code == 200
    alarms = replay_alarms(provider)

    replay = exchange(provider, shop, query, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert "access_token" not in replay.json()
    for token in (tokens["access_token"], renewed["access_token"]):
        assert userinfo(provider, token).status_code == 401
    assert refresh(provider, shop, renewed["refresh_token"]).json()["error"] == "invalid_grant"
    deadline = time.monotonic() + 5
    while replay_alarms(provider) == alarms and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replay_alarms(provider) == alarms + 1


def test_a_code_is_redeemed_once_also_when_two_exchanges_race(provider, shop, alice):
    from concurrent.futures import ThreadPoolExecutor

    _session, query, verifier = authorize(provider, shop, "alice", "alice-password")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: exchange(provider, shop, query, verifier), range(6)))
    assert sorted(a.status_code for a in answers).count(200) == 1
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code != 200)


def spellings(code: str) -> list[str]:
    """The same bytes written otherwise: padded, with the standard alphabet, with spare bits."""
    import base64

    raw = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
    variants = [code + "=", code + "==", base64.b64encode(raw).decode(),
                base64.urlsafe_b64encode(raw).decode()]
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(code[-1])
    for spare in range(1, 4):  # the unused low bits of the last character
        variant = code[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[
            last ^ spare]
        if base64.urlsafe_b64decode(variant + "=" * (-len(variant) % 4)) == raw:
            variants.append(variant)
    return [v for v in variants if v != code]


def test_a_redeemed_code_cannot_come_back_spelled_another_way(provider, shop, alice):
    _session, query, verifier = authorize(provider, shop, "alice", "alice-password",
                                          scope="openid profile offline_access")
    first = exchange(provider, shop, query, verifier)
    assert first.status_code == 200, first.text
    variants = spellings(query["code"])
    assert len(variants) >= 3
    for variant in variants:
        again = exchange(provider, shop, {"code": variant}, verifier)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant", variant
    # no second set of tokens: the first ones still work, nothing was revoked either
    assert userinfo(provider, first.json()["access_token"]).status_code == 200


def test_another_client_presenting_a_used_code_revokes_nothing(provider, shop, alice):
    other = provider.create_client("--name", "Other shop", "--first-party", "--redirect-uri",
                                   shop["redirect_uris"][0], "--grant-type", "authorization_code")
    _session, query, verifier = authorize(provider, shop, "alice", "alice-password")
    tokens = exchange(provider, shop, query, verifier).json()
    stolen = exchange(provider, other, query, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert userinfo(provider, tokens["access_token"]).status_code == 200


def test_a_code_is_sealed_not_stored(provider, shop, alice):
    before = provider.db("SELECT COUNT(*) FROM redeemed_codes")[0][0]
    _session, query, verifier = authorize(provider, shop, "alice", "alice-password")
    assert provider.db("SELECT COUNT(*) FROM redeemed_codes")[0][0] == before
    assert query["code"].encode() not in provider.dump()
    assert exchange(provider, shop, query, verifier).status_code == 200
    assert provider.db("SELECT COUNT(*) FROM redeemed_codes")[0][0] == before + 1
    # a code altered by one character is no code at all
    code = query["code"]
    forged = code[:10] + ("A" if code[10] != "A" else "B") + code[11:]
    answer = exchange(provider, shop, {"code": forged}, verifier)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


# -- introspection ---------------------------------------------------------------------------------
def test_introspection_answers_only_what_the_tokens_scope_allows(provider, web_client,
                                                                  alice_phone, alice):
    narrow = qr_tokens(provider, web_client, alice_phone, scope="openid")
    wide = qr_tokens(provider, web_client, alice_phone, scope="openid profile")
    narrow_answer = introspect(provider, web_client, narrow["access_token"])
    assert narrow_answer["active"] is True and narrow_answer["sub"] == alice["sub"]
    assert "username" not in narrow_answer  # userinfo would give only sub
    wide_answer = introspect(provider, web_client, wide["access_token"])
    assert wide_answer["username"] == "alice"


def test_a_client_introspects_its_own_tokens_and_a_first_party_one_any(provider, web_client,
                                                                       alice_phone):
    tokens = qr_tokens(provider, web_client, alice_phone, scope="openid profile offline_access")
    stranger = provider.create_client("--name", "Another shop")
    gateway = provider.create_client("--name", "Operator's API gateway", "--first-party")
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert introspect(provider, stranger, token) == {"active": False}
        assert introspect(provider, gateway, token)["active"] is True
        assert introspect(provider, web_client, token)["active"] is True
    refresh_answer = introspect(provider, web_client, tokens["refresh_token"])
    assert refresh_answer["token_type"] == "refresh_token" and "jti" not in refresh_answer
