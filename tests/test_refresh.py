"""Refresh tokens (rotation, reuse revokes the family), revocation (RFC 7009) and introspection
(RFC 7662), on tokens got through the QR grant."""

from __future__ import annotations

import requests

from helpers import approved_ticket


def refresh(provider, client, refresh_token, **extra):
    return requests.post(provider.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, **extra,
    }, auth=(client["client_id"], client["client_secret"]), timeout=10)


def introspect(provider, client, token, **extra):
    response = requests.post(provider.meta["introspection_endpoint"],
                             data={"token": token, **extra},
                             auth=(client["client_id"], client["client_secret"]), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def revoke(provider, client, token, **extra):
    return requests.post(provider.meta["revocation_endpoint"], data={"token": token, **extra},
                         auth=(client["client_id"], client["client_secret"]), timeout=10)


def qr_tokens(provider, client, phone, scope="openid profile offline_access"):
    ticket = approved_ticket(provider, client, phone, scope=scope)
    response = provider.poll(client, ticket["ticket"])
    assert response.status_code == 200, response.text
    return response.json()


def userinfo(provider, access_token):
    return requests.get(provider.meta["userinfo_endpoint"],
                        headers={"Authorization": f"Bearer {access_token}"}, timeout=10)


def test_offline_access_gives_a_refresh_token_that_rotates(provider, web_client, alice,
                                                           alice_phone):
    first = qr_tokens(provider, web_client, alice_phone)
    assert first["refresh_token"]

    second = refresh(provider, web_client, first["refresh_token"])
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] != first["access_token"]
    assert "id_token" in body
    assert introspect(provider, web_client, body["access_token"])["sub"] == alice["sub"]

    # the refreshed token keeps working; a narrower scope is allowed, a wider one is not
    narrower = refresh(provider, web_client, body["refresh_token"], scope="openid offline_access")
    assert narrower.status_code == 200 and narrower.json()["scope"] == "openid offline_access"
    wider = refresh(provider, web_client, narrower.json()["refresh_token"], scope="openid email")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(provider, web_client,
                                                                  alice_phone):
    first = qr_tokens(provider, web_client, alice_phone)
    second = refresh(provider, web_client, first["refresh_token"]).json()

    replay = refresh(provider, web_client, first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"

    # the legitimate client's newest tokens die with it
    newest = refresh(provider, web_client, second["refresh_token"])
    assert newest.status_code == 400 and newest.json()["error"] == "invalid_grant"
    assert userinfo(provider, second["access_token"]).status_code == 401
    assert introspect(provider, web_client, second["access_token"]) == {"active": False}


def test_no_refresh_token_without_offline_access(provider, web_client, alice_phone):
    tokens = qr_tokens(provider, web_client, alice_phone, scope="openid profile")
    assert "refresh_token" not in tokens


def test_refresh_token_of_another_client_is_refused(provider, web_client, alice_phone):
    other = provider.create_client("--name", "Other shop")
    tokens = qr_tokens(provider, web_client, alice_phone)
    stolen = refresh(provider, other, tokens["refresh_token"])
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"


def test_a_revoked_access_token_is_refused_at_once(provider, web_client, alice, alice_phone):
    tokens = qr_tokens(provider, web_client, alice_phone, scope="openid profile")
    assert userinfo(provider, tokens["access_token"]).status_code == 200
    active = introspect(provider, web_client, tokens["access_token"])
    assert active["active"] is True and active["client_id"] == web_client["client_id"]
    assert active["sub"] == alice["sub"] and active["scope"] == "openid profile"

    response = revoke(provider, web_client, tokens["access_token"])
    assert response.status_code == 200
    refused = userinfo(provider, tokens["access_token"])
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert introspect(provider, web_client, tokens["access_token"]) == {"active": False}


def test_revoking_a_refresh_token_revokes_its_family(provider, web_client, alice_phone):
    tokens = qr_tokens(provider, web_client, alice_phone)
    assert revoke(provider, web_client, tokens["refresh_token"],
                  token_type_hint="refresh_token").status_code == 200
    assert refresh(provider, web_client, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert userinfo(provider, tokens["access_token"]).status_code == 401


def test_revocation_answers_alike_for_unknown_and_foreign_tokens(provider, web_client, alice_phone):
    other = provider.create_client("--name", "Someone else")
    tokens = qr_tokens(provider, web_client, alice_phone, scope="openid")
    for token in ("not-a-token", tokens["access_token"]):
        response = revoke(provider, other, token)
        assert response.status_code == 200
    # the other client could not revoke web_client's token
    assert userinfo(provider, tokens["access_token"]).status_code == 200
    missing = revoke(provider, web_client, "")
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_introspection_needs_an_authenticated_confidential_client(provider, web_client,
                                                                 public_client, alice_phone):
    tokens = qr_tokens(provider, web_client, alice_phone, scope="openid")
    anonymous = requests.post(provider.meta["introspection_endpoint"],
                              data={"token": tokens["access_token"],
                                    "client_id": public_client["client_id"]}, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    assert introspect(provider, web_client, "garbage") == {"active": False}
