"""One QR login end to end, as a relying party and a phone do it, against a real server process;
tokens checked with an independent JOSE library (PyJWT) against the served JWKS."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import jwt
import requests

from helpers import QR_GRANT, approved_ticket, pkce


def verify_with_jwks(provider, token: str, audience: str, typ: str | None = None) -> dict:
    jwks = requests.get(provider.meta["jwks_uri"], timeout=10).json()
    header = jwt.get_unverified_header(token)
    matching = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert len(matching) == 1, "the header's kid names exactly one published key"
    if typ:
        assert header["typ"] == typ
    key = jwt.PyJWK(matching[0])
    return jwt.decode(token, key.key, algorithms=[header["alg"]], audience=audience,
                      issuer=provider.url)


def test_qr_login_end_to_end(provider, web_client, alice, alice_phone):
    # the web client asks for a ticket; the QR shows only the scan code
    nonce = "n-" + str(time.time())
    ticket = provider.ticket(web_client, scope="openid profile email", nonce=nonce)
    assert set(ticket) >= {"ticket", "qr_content", "qr_image", "user_code", "expires_in",
                           "interval"}
    assert "binding_code" not in ticket
    assert ticket["ticket"] not in ticket["qr_content"]
    assert ticket["qr_content"].startswith(provider.url + "/")
    assert provider.status(ticket["ticket"]).json()["status"] == "pending"

    # the first poll is pending
    first = provider.poll(web_client, ticket["ticket"])
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    assert first.headers["Cache-Control"] == "no-store"

    # the phone scans: it sees who is asking, from where
    scan_code = provider.scan_code(ticket)
    scanned = provider.phone("scan", alice_phone, scan_code=scan_code)
    assert scanned.status_code == 200, scanned.text
    view = scanned.json()
    assert view["client"] == {"client_id": web_client["client_id"], "name": "Web shop",
                              "logo_uri": "https://shop.example/logo.png"}
    assert view["scopes"] == ["openid", "profile", "email"]
    assert view["requester"]["ip"] == "127.0.0.1"
    assert view["requester"]["user_agent"].startswith("python-requests")
    assert view["user_code"] == ticket["user_code"]
    assert view["expires_at"] - view["created_at"] == ticket["expires_in"]
    status = provider.status(ticket["ticket"]).json()
    assert status["status"] == "scanned"
    assert status["user"] == {"name": "Alice Liddell", "picture": "https://pics.example/alice.png"}

    time.sleep(1.7)  # respect the interval (2 s, 20% jitter allowed)
    still = provider.poll(web_client, ticket["ticket"])
    assert still.json()["error"] == "authorization_pending"

    approved = provider.phone("approve", alice_phone, scan_code=scan_code)
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    approved_at = int(time.time())

    response = provider.poll(web_client, ticket["ticket"])
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "openid profile email"
    assert tokens["expires_in"] > 0
    assert "refresh_token" not in tokens  # no offline_access asked
    assert response.headers["Cache-Control"] == "no-store"

    claims = verify_with_jwks(provider, tokens["id_token"], audience=web_client["client_id"])
    assert claims["sub"] == alice["sub"]
    assert claims["nonce"] == nonce
    assert claims["amr"] == ["qr"]
    assert abs(claims["auth_time"] - approved_at) <= 2
    assert claims["name"] == "Alice Liddell" and claims["email"] == "alice@example.org"
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "RS256"

    access = verify_with_jwks(provider, tokens["access_token"], audience=provider.url,
                              typ="at+jwt")
    assert access["sub"] == alice["sub"] and access["client_id"] == web_client["client_id"]
    assert access["scope"] == "openid profile email" and access["jti"]

    info = requests.get(provider.meta["userinfo_endpoint"],
                        headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    assert info.status_code == 200
    assert info.json()["sub"] == alice["sub"] and info.json()["name"] == "Alice Liddell"

    # redeemed: the same ticket never gives tokens again, and answers like an unknown one
    again = provider.poll(web_client, ticket["ticket"])
    unknown = provider.poll(web_client, "no-such-ticket")
    assert again.status_code == unknown.status_code == 400
    assert again.json() == unknown.json()
    assert again.json()["error"] == "invalid_grant"
    assert provider.status(ticket["ticket"]).json()["status"] == "redeemed"


def test_exactly_one_of_many_concurrent_polls_gets_tokens(provider, web_client, alice_phone):
    """Half the polls are forms, half JSON: the two race each other."""
    for _round in range(3):
        ticket = approved_ticket(provider, web_client, alice_phone)
        barrier = threading.Barrier(16)
        results: list[requests.Response] = []
        lock = threading.Lock()
        started = time.time()

        def poll(as_json, barrier=barrier, ticket=ticket, lock=lock, results=results):
            barrier.wait()
            response = provider.poll(web_client, ticket["ticket"], as_json=as_json)
            with lock:
                results.append(response)

        threads = [threading.Thread(target=poll, args=(i % 2 == 1,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(results) == 16
        winners = [r for r in results if r.status_code == 200]
        assert len(winners) == 1, [r.text for r in results]
        assert "access_token" in winners[0].json()
        assert {r.json()["error"] for r in results if r.status_code != 200} <= {
            "invalid_grant", "slow_down"}
        # and the storage agrees: the ticket redeemed, one token row written for it
        digest = hashlib.sha256(ticket["ticket"].encode()).hexdigest()
        assert provider.db("SELECT status FROM tickets WHERE ticket_hash = ?",
                           digest) == [("redeemed",)]
        assert provider.db("SELECT count(*) FROM tokens WHERE client_id = ? AND issued_at >= ?",
                           web_client["client_id"], started) == [(1,)]


def test_public_client_with_pkce(provider, public_client, alice_phone):
    verifier, challenge = pkce()
    params = {"client_id": public_client["client_id"], "code_challenge": challenge,
              "code_challenge_method": "S256"}
    ticket = approved_ticket(provider, public_client, alice_phone, **params)
    cid = {"client_id": public_client["client_id"]}

    missing = provider.poll(public_client, ticket["ticket"], **cid)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    wrong = provider.poll(public_client, ticket["ticket"], code_verifier=pkce()[0], **cid)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # a wrong verifier does not use the ticket up
    right = provider.poll(public_client, ticket["ticket"], code_verifier=verifier, **cid)
    assert right.status_code == 200, right.text
    assert "id_token" in right.json()


def test_token_poll_with_client_secret_post(provider, post_client, alice_phone):
    ticket = approved_ticket(provider, post_client, alice_phone, scope="profile")
    response = requests.post(provider.url + "/token", data={
        "grant_type": QR_GRANT, "ticket": ticket["ticket"],
        "client_id": post_client["client_id"], "client_secret": post_client["client_secret"],
    }, timeout=10)
    assert response.status_code == 200, response.text
    assert "id_token" not in response.json()  # no openid scope: OAuth only


def test_a_requested_resource_becomes_the_access_tokens_audience(provider, web_client,
                                                                 alice_phone):
    ticket = approved_ticket(provider, web_client, alice_phone)
    bad = provider.poll(web_client, ticket["ticket"], resource="not a uri")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_target"
    # the refused request used nothing up
    response = provider.poll(web_client, ticket["ticket"], resource="https://api.example/orders")
    assert response.status_code == 200, response.text
    access = verify_with_jwks(provider, response.json()["access_token"],
                              audience="https://api.example/orders", typ="at+jwt")
    assert access["aud"] == "https://api.example/orders"
