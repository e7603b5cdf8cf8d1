"""The ticket state machine as the web client and the phone see it (SPEC.md "Ticket lifecycle",
"Mobile app", "Details that clients rely on"): every transition, every refusal and its error code,
number matching, the status endpoint with its long poll, the QR image, and expiry (on a second
server with a two-second ticket lifetime).

The token poll's own errors and the poll interval live in test_token_poll.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import threading
import time

import PIL.Image
import pytest
import requests
import zxingcpp

from conftest import phone_app
from helpers import Provider, authorize, pkce, sign_in_phone

TWO_DIGITS = re.compile(r"^[0-9]{2}$")


# -- small helpers ------------------------------------------------------------------------------
def assert_error(response: requests.Response, status: int, error: str) -> dict:
    """A JSON error with this HTTP status and ``error`` code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["error"] == error, body
    return body


def status_of(provider: Provider, ticket: dict) -> dict:
    response = provider.status(ticket["ticket"])
    assert response.status_code == 200, response.text
    return response.json()


def scan(provider: Provider, token: str, ticket: dict) -> requests.Response:
    return provider.phone("scan", token, scan_code=provider.scan_code(ticket))


def decide(provider: Provider, action: str, token: str, ticket: dict, **extra) -> requests.Response:
    return provider.phone(action, token, scan_code=provider.scan_code(ticket), **extra)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def exchange_code(provider: Provider, client: dict, query: dict, verifier: str) -> dict:
    response = requests.post(provider.url + "/token", data={
        "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": client["redirect_uris"][0], "client_id": client["client_id"],
        "code_verifier": verifier,
    }, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reader_tokens(provider, alice):
    """Tokens of a first-party app whose scope lacks qr:approve: a valid token, the wrong scope."""
    reader = provider.create_client(
        "--name", "Reader app", "--public", "--first-party",
        "--redirect-uri", "http://127.0.0.1/reader",
        "--grant-type", "authorization_code",
        "--scope", "openid profile",
    )
    _session, query, verifier = authorize(provider, reader, "alice", "alice-password",
                                          scope="openid profile")
    tokens = exchange_code(provider, reader, query, verifier)
    assert "qr:approve" not in tokens["scope"].split()
    return tokens


@pytest.fixture(scope="module")
def untouched_ticket(provider, web_client):
    """A pending ticket that refused phone requests must leave pending."""
    return provider.ticket(web_client)


# == creating a ticket ============================================================================
def test_a_new_ticket_carries_strong_secrets_and_starts_pending(provider, web_client):
    response = provider.create_ticket(web_client)
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    ticket = response.json()
    scan_code = provider.scan_code(ticket)
    # 128 bits at least: 22 base64url characters
    assert len(ticket["ticket"]) >= 22 and len(scan_code) >= 22
    assert ticket["ticket"] != scan_code
    assert ticket["ticket"] not in ticket["qr_content"] + ticket["qr_image"]
    assert ticket["qr_content"].startswith(provider.url + "/")  # loopback: http is fine
    assert scan_code in ticket["qr_image"]  # the image is addressed by the scan code
    assert ticket["interval"] == 2  # the provider fixture's QR_OIDC_POLL_INTERVAL
    assert ticket["expires_in"] > 0
    assert "binding_code" not in ticket
    status = status_of(provider, ticket)
    assert status["status"] == "pending"
    assert 0 < status["expires_in"] <= ticket["expires_in"]
    assert "user" not in status


def test_two_tickets_never_share_a_secret(provider, web_client):
    first, second = provider.ticket(web_client), provider.ticket(web_client)
    for name in ("ticket", "qr_content", "user_code"):
        assert first[name] != second[name]


@pytest.mark.parametrize("how", ["basic auth", "secret in the body", "public client with PKCE"])
def test_a_json_body_is_accepted_for_ticket_creation(provider, web_client, post_client,
                                                      public_client, how):
    body = {"scope": "openid profile"}
    auth = None
    if how == "basic auth":
        auth = (web_client["client_id"], web_client["client_secret"])
    elif how == "secret in the body":
        body.update(client_id=post_client["client_id"], client_secret=post_client["client_secret"])
    else:
        body.update(client_id=public_client["client_id"], code_challenge=pkce()[1],
                    code_challenge_method="S256")
    response = requests.post(provider.url + "/qr/ticket", json=body, auth=auth, timeout=30)
    assert response.status_code == 201, response.text
    assert status_of(provider, response.json())["status"] == "pending"


def test_a_json_body_that_is_not_an_object_is_an_invalid_request(provider, web_client):
    response = requests.post(provider.url + "/qr/ticket", json=["scope", "openid"],
                             auth=(web_client["client_id"], web_client["client_secret"]),
                             timeout=30)
    assert_error(response, 400, "invalid_request")


@pytest.fixture(scope="module")
def code_only_client(provider):
    return provider.create_client("--name", "Code only", "--grant-type", "authorization_code",
                                  "--redirect-uri", "https://code-only.example/cb")


CREATION_ERRORS = {
    "public client without code_challenge": ("public", {}, 400, "invalid_request"),
    "code_challenge_method plain": (
        "public", {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
        400, "invalid_request"),
    "code_challenge without a method, for a confidential client": (
        "web", {"code_challenge": pkce()[1]}, 400, "invalid_request"),
    "a scope the client may not have": ("web", {"scope": "openid qr:approve"}, 400,
                                        "invalid_scope"),
    "an unknown scope": ("web", {"scope": "openid launch_missiles"}, 400, "invalid_scope"),
    "a wrong client secret": ("wrong secret", {}, 401, "invalid_client"),
    "a client that may not use the QR grant": ("code only", {}, 400, "unauthorized_client"),
}


@pytest.mark.parametrize("case", CREATION_ERRORS, ids=list(CREATION_ERRORS))
def test_ticket_creation_refuses(provider, web_client, public_client, code_only_client, case):
    who, params, status, error = CREATION_ERRORS[case]
    client = {"web": web_client, "public": public_client, "code only": code_only_client,
              "wrong secret": {**web_client, "client_secret": "not-the-secret"}}[who]
    if who == "public":
        params = {"client_id": client["client_id"], **params}
    body = assert_error(provider.create_ticket(client, **params), status, error)
    assert "ticket" not in body


# == scanning ======================================================================================
def test_scanning_moves_a_pending_ticket_to_scanned_and_binds_the_user(provider, web_client,
                                                                        alice_phone):
    ticket = provider.ticket(web_client)
    response = scan(provider, alice_phone, ticket)
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["client"]["client_id"] == web_client["client_id"]
    assert view["scopes"] == ["openid", "profile"]
    assert view["user_code"] == ticket["user_code"]
    assert view["expires_at"] > view["created_at"]
    assert "binding_choices" not in view
    status = status_of(provider, ticket)
    assert status["status"] == "scanned"
    assert status["user"] == {"name": "Alice Liddell", "picture": "https://pics.example/alice.png"}


def test_the_same_user_scanning_again_sees_the_same_screen(provider, web_client, alice_phone):
    ticket = provider.ticket(web_client)
    first = scan(provider, alice_phone, ticket)
    again = scan(provider, alice_phone, ticket)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert status_of(provider, ticket)["status"] == "scanned"


def test_a_json_body_is_accepted_by_the_mobile_endpoints(provider, web_client, alice_phone):
    ticket = provider.ticket(web_client)
    headers = {"Authorization": f"Bearer {alice_phone}"}
    body = {"scan_code": provider.scan_code(ticket)}
    scanned = requests.post(provider.url + "/qr/scan", json=body, headers=headers, timeout=30)
    assert scanned.status_code == 200, scanned.text
    approved = requests.post(provider.url + "/qr/approve", json=body, headers=headers, timeout=30)
    assert approved.status_code == 200, approved.text
    assert status_of(provider, ticket)["status"] == "approved"


def typed_forms(user_code: str) -> dict[str, str]:
    return {
        "as shown": user_code,
        "in lower case": user_code.lower(),
        "without the dash": user_code.replace("-", ""),
        "lower case without the dash": user_code.replace("-", "").lower(),
        "with a space for the dash": user_code.replace("-", " "),
    }


@pytest.mark.parametrize("form", list(typed_forms("ABCD-EFGH")))
def test_a_typed_user_code_scans_the_ticket(provider, web_client, alice_phone, form):
    """RFC 8628 §6.1: case-insensitive, punctuation ignored."""
    ticket = provider.ticket(web_client)
    typed = typed_forms(ticket["user_code"])[form]
    response = provider.phone("scan", alice_phone, user_code=typed)
    assert response.status_code == 200, response.text
    assert response.json()["user_code"] == ticket["user_code"]
    assert response.json()["client"]["client_id"] == web_client["client_id"]
    assert status_of(provider, ticket)["status"] == "scanned"


def test_a_ticket_scanned_by_user_code_is_approved_by_user_code(provider, web_client,
                                                                alice_phone):
    ticket = provider.ticket(web_client)
    typed = ticket["user_code"].replace("-", "").lower()
    assert provider.phone("scan", alice_phone, user_code=typed).status_code == 200
    approved = provider.phone("approve", alice_phone, user_code=typed)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert provider.poll(web_client, ticket["ticket"]).status_code == 200


UNKNOWN_CODES = {
    "unknown scan_code": {"scan_code": secrets.token_urlsafe(22)},
    "unknown but well-formed user_code": {"user_code": "BCDF-GHJK"},
    "user_code too short": {"user_code": "BCD-FGH"},
    "user_code with digits": {"user_code": "1234-5678"},
    "user_code with punctuation": {"user_code": "BC!F-GH?K"},
}


@pytest.mark.parametrize("case", UNKNOWN_CODES, ids=list(UNKNOWN_CODES))
def test_an_unknown_or_malformed_code_answers_404_unknown_code(provider, alice_phone, case):
    for action in ("scan", "approve", "deny"):
        assert_error(provider.phone(action, alice_phone, **UNKNOWN_CODES[case]), 404,
                     "unknown_code")


def test_a_request_with_neither_code_is_an_invalid_request(provider, alice_phone):
    for action in ("scan", "approve", "deny"):
        assert_error(provider.phone(action, alice_phone), 400, "invalid_request")
        assert_error(provider.phone(action, alice_phone, scan_code="", user_code=""), 400,
                     "invalid_request")


# == the happy paths, state by state ==============================================================
def test_a_ticket_walks_pending_scanned_approved_redeemed(provider, web_client, alice_phone):
    ticket = provider.ticket(web_client)
    assert status_of(provider, ticket)["status"] == "pending"
    assert scan(provider, alice_phone, ticket).status_code == 200
    assert status_of(provider, ticket)["status"] == "scanned"
    approved = decide(provider, "approve", alice_phone, ticket)
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    status = status_of(provider, ticket)
    assert status["status"] == "approved" and status["user"]["name"] == "Alice Liddell"
    tokens = provider.poll(web_client, ticket["ticket"])
    assert tokens.status_code == 200, tokens.text
    assert {"access_token", "id_token", "token_type"} <= set(tokens.json())
    status = status_of(provider, ticket)
    assert status["status"] == "redeemed" and status["user"]["name"] == "Alice Liddell"


def test_a_ticket_walks_pending_scanned_denied(provider, web_client, alice_phone):
    ticket = provider.ticket(web_client)
    assert scan(provider, alice_phone, ticket).status_code == 200
    denied = decide(provider, "deny", alice_phone, ticket)
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    status = status_of(provider, ticket)
    assert status["status"] == "denied" and status["user"]["name"] == "Alice Liddell"
    poll = provider.poll(web_client, ticket["ticket"])
    assert_error(poll, 400, "access_denied")


# == refusals: wrong state, wrong user =============================================================
WRONG_STATE = {
    # what happened before -> what the phone tries -> the status the ticket keeps
    "approve before scan": ([], "approve", "pending"),
    "deny before scan": ([], "deny", "pending"),
    "approve after approve": (["scan", "approve"], "approve", "approved"),
    "deny after approve": (["scan", "approve"], "deny", "approved"),
    "approve after deny": (["scan", "deny"], "approve", "denied"),
    "deny after deny": (["scan", "deny"], "deny", "denied"),
    "scan after approve": (["scan", "approve"], "scan", "approved"),
    "scan after deny": (["scan", "deny"], "scan", "denied"),
    "scan after redeem": (["scan", "approve", "redeem"], "scan", "redeemed"),
    "approve after redeem": (["scan", "approve", "redeem"], "approve", "redeemed"),
    "deny after redeem": (["scan", "approve", "redeem"], "deny", "redeemed"),
}


@pytest.mark.parametrize("case", WRONG_STATE, ids=list(WRONG_STATE))
def test_a_step_in_the_wrong_state_answers_409_invalid_state(provider, web_client, alice_phone,
                                                             case):
    before, action, kept = WRONG_STATE[case]
    ticket = provider.ticket(web_client)
    for step in before:
        if step == "redeem":
            assert provider.poll(web_client, ticket["ticket"]).status_code == 200
        else:
            assert decide(provider, step, alice_phone, ticket).status_code == 200
    assert_error(decide(provider, action, alice_phone, ticket), 409, "invalid_state")
    assert status_of(provider, ticket)["status"] == kept
    # and the refused step changed nothing the web client sees
    poll = provider.poll(web_client, ticket["ticket"])
    if kept == "approved":
        assert poll.status_code == 200, poll.text
    elif kept == "denied":
        assert_error(poll, 400, "access_denied")
    elif kept == "redeemed":
        assert_error(poll, 400, "invalid_grant")
    else:
        assert_error(poll, 400, "authorization_pending")


OTHER_USER = {
    "scan": (409, "already_scanned"),
    "approve": (403, "access_denied"),
    "deny": (403, "access_denied"),
}


@pytest.mark.parametrize("action", OTHER_USER)
def test_another_user_cannot_act_on_a_ticket_someone_scanned(provider, web_client, alice_phone,
                                                             bob_phone, action):
    status, error = OTHER_USER[action]
    ticket = provider.ticket(web_client)
    assert scan(provider, alice_phone, ticket).status_code == 200
    assert_error(decide(provider, action, bob_phone, ticket), status, error)
    # still Alice's, still undecided, and Alice can still approve it
    current = status_of(provider, ticket)
    assert current["status"] == "scanned" and current["user"]["name"] == "Alice Liddell"
    assert decide(provider, "approve", alice_phone, ticket).status_code == 200
    tokens = provider.poll(web_client, ticket["ticket"])
    assert tokens.status_code == 200, tokens.text


def test_another_user_cannot_scan_by_user_code_either(provider, web_client, alice_phone,
                                                      bob_phone):
    ticket = provider.ticket(web_client)
    assert provider.phone("scan", alice_phone, user_code=ticket["user_code"]).status_code == 200
    assert_error(provider.phone("scan", bob_phone, user_code=ticket["user_code"].lower()), 409,
                 "already_scanned")


RACES = {
    # steps done first by Alice -> two requests sent at once -> the loser's status and error
    "two users scan at once": ([], [("scan", "alice"), ("scan", "bob")], 409, "already_scanned"),
    "approve and deny at once": (["scan"], [("approve", "alice"), ("deny", "alice")], 409,
                                 "invalid_state"),
    "two approves at once": (["scan"], [("approve", "alice"), ("approve", "alice")], 409,
                             "invalid_state"),
}


def at_once(provider: Provider, ticket: dict, steps: list) -> dict[int, requests.Response]:
    """Send the phone steps together (a barrier releases them at once); answers by index."""
    barrier = threading.Barrier(len(steps))
    results: dict[int, requests.Response] = {}

    def run(index, action, token):
        barrier.wait()
        results[index] = decide(provider, action, token, ticket)

    threads = [threading.Thread(target=run, args=(i, *step)) for i, step in enumerate(steps)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.mark.parametrize("case", RACES, ids=list(RACES))
def test_of_two_simultaneous_steps_exactly_one_wins(provider, web_client, alice_phone, bob_phone,
                                                    case):
    before, steps, status, error = RACES[case]
    tokens = {"alice": alice_phone, "bob": bob_phone}
    for _round in range(3):
        ticket = provider.ticket(web_client)
        for step in before:
            assert decide(provider, step, alice_phone, ticket).status_code == 200
        results = at_once(provider, ticket, [(action, tokens[who]) for action, who in steps])
        assert len(results) == 2
        winners = [i for i, r in results.items() if r.status_code == 200]
        assert len(winners) == 1, [r.text for r in results.values()]
        loser = results[1 - winners[0]]
        assert_error(loser, status, error)
        action, who = steps[winners[0]]
        current = status_of(provider, ticket)
        assert current["status"] == {"scan": "scanned", "approve": "approved",
                                     "deny": "denied"}[action]
        assert current["user"]["name"] == {"alice": "Alice Liddell", "bob": "Bob Builder"}[who]


# == the Bearer token ==============================================================================
def bad_authorizations(alice_phone: str, id_token: str) -> dict[str, str | None]:
    header, payload, signature = alice_phone.split(".")
    claims = b64url_json(payload)
    forged = dict(claims, sub="someone-else")
    return {
        "no Authorization header": None,
        "an empty Bearer": "Bearer ",
        "a garbage token": "Bearer not-a-token",
        "a token with its payload changed": "Bearer " + ".".join(
            [header, b64url(json.dumps(forged).encode()), signature]),
        "a token with its signature cut off": f"Bearer {header}.{payload}.",
        "an unsigned alg none token": "Bearer " + ".".join(
            [b64url(json.dumps({"alg": "none", "typ": "at+jwt"}).encode()), payload, ""]),
        "an ID token instead of an access token": f"Bearer {id_token}",
        "the token under the Basic scheme": f"Basic {alice_phone}",
    }


BAD_AUTHORIZATIONS = [
    "no Authorization header", "an empty Bearer", "a garbage token",
    "a token with its payload changed", "a token with its signature cut off",
    "an unsigned alg none token", "an ID token instead of an access token",
    "the token under the Basic scheme",
]


@pytest.mark.parametrize("case", BAD_AUTHORIZATIONS)
def test_the_mobile_endpoints_refuse_a_bad_token_with_401_invalid_token(
        provider, alice_phone, reader_tokens, untouched_ticket, case):
    cases = bad_authorizations(alice_phone, reader_tokens["id_token"])
    assert list(cases) == BAD_AUTHORIZATIONS
    authorization = cases[case]
    headers = {"Authorization": authorization} if authorization is not None else {}
    for action in ("scan", "approve", "deny"):
        response = requests.post(f"{provider.url}/qr/{action}", headers=headers, timeout=30,
                                 data={"scan_code": provider.scan_code(untouched_ticket)})
        assert_error(response, 401, "invalid_token")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), response.headers
    assert status_of(provider, untouched_ticket)["status"] == "pending"


def test_the_mobile_endpoints_refuse_a_token_without_qr_approve_with_403(
        provider, reader_tokens, untouched_ticket):
    for action in ("scan", "approve", "deny"):
        response = provider.phone(action, reader_tokens["access_token"],
                                  scan_code=provider.scan_code(untouched_ticket))
        assert_error(response, 403, "insufficient_scope")
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer") and 'error="insufficient_scope"' in challenge
    assert status_of(provider, untouched_ticket)["status"] == "pending"


# == number matching ==============================================================================
def test_a_number_matching_ticket_shows_its_binding_code_only_to_the_web_page(
        provider, nm_client, alice_phone):
    ticket = provider.ticket(nm_client)
    assert TWO_DIGITS.match(ticket["binding_code"]), ticket
    first = scan(provider, alice_phone, ticket)
    assert first.status_code == 200, first.text
    view = first.json()
    choices = view["binding_choices"]
    assert len(choices) == 3 and len(set(choices)) == 3
    assert all(isinstance(c, str) and TWO_DIGITS.match(c) for c in choices), choices
    assert ticket["binding_code"] in choices
    assert "binding_code" not in view
    assert "binding_code" not in status_of(provider, ticket)
    # a re-scan offers the very same choices (or the user learns which one stayed)
    again = scan(provider, alice_phone, ticket)
    assert again.status_code == 200 and again.json()["binding_choices"] == choices


def test_approve_without_binding_code_is_refused_and_leaves_the_ticket_scanned(
        provider, nm_client, alice_phone):
    ticket = provider.ticket(nm_client)
    assert scan(provider, alice_phone, ticket).status_code == 200
    assert_error(decide(provider, "approve", alice_phone, ticket), 400, "invalid_request")
    assert_error(decide(provider, "approve", alice_phone, ticket, binding_code=""), 400,
                 "invalid_request")
    assert status_of(provider, ticket)["status"] == "scanned"
    # unchanged: the right pick still approves it
    right = decide(provider, "approve", alice_phone, ticket, binding_code=ticket["binding_code"])
    assert right.status_code == 200 and right.json()["status"] == "approved"


def test_a_wrong_binding_code_denies_the_ticket(provider, nm_client, alice_phone):
    ticket = provider.ticket(nm_client)
    choices = scan(provider, alice_phone, ticket).json()["binding_choices"]
    wrong = next(c for c in choices if c != ticket["binding_code"])
    assert_error(decide(provider, "approve", alice_phone, ticket, binding_code=wrong), 403,
                 "binding_mismatch")
    assert status_of(provider, ticket)["status"] == "denied"
    assert_error(provider.poll(nm_client, ticket["ticket"]), 400, "access_denied")
    # denied for good: the right number afterwards does not revive it
    assert_error(decide(provider, "approve", alice_phone, ticket,
                        binding_code=ticket["binding_code"]), 409, "invalid_state")


def test_a_binding_code_that_was_not_even_offered_denies_the_ticket(provider, nm_client,
                                                                   alice_phone):
    ticket = provider.ticket(nm_client)
    choices = scan(provider, alice_phone, ticket).json()["binding_choices"]
    offered_not = next(f"{n:02d}" for n in range(100) if f"{n:02d}" not in choices)
    assert_error(decide(provider, "approve", alice_phone, ticket, binding_code=offered_not), 403,
                 "binding_mismatch")
    assert status_of(provider, ticket)["status"] == "denied"


def test_the_right_binding_code_approves_and_the_web_client_gets_tokens(provider, nm_client,
                                                                         alice_phone):
    ticket = provider.ticket(nm_client)
    assert scan(provider, alice_phone, ticket).status_code == 200
    approved = decide(provider, "approve", alice_phone, ticket,
                      binding_code=ticket["binding_code"])
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert status_of(provider, ticket)["status"] == "approved"
    tokens = provider.poll(nm_client, ticket["ticket"])
    assert tokens.status_code == 200, tokens.text
    assert "access_token" in tokens.json() and "id_token" in tokens.json()


def test_deny_needs_no_binding_code(provider, nm_client, alice_phone):
    ticket = provider.ticket(nm_client)
    assert scan(provider, alice_phone, ticket).status_code == 200
    denied = decide(provider, "deny", alice_phone, ticket)
    assert denied.status_code == 200 and denied.json()["status"] == "denied"


# == the status endpoint ==========================================================================
def test_the_status_of_an_unknown_ticket_is_a_404_json_error(provider):
    response = provider.status(secrets.token_urlsafe(32))
    assert response.status_code == 404, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, str) and error


def test_the_status_endpoint_does_not_take_a_scan_code_for_a_ticket(provider, web_client):
    ticket = provider.ticket(web_client)
    assert provider.status(provider.scan_code(ticket)).status_code == 404


def test_the_status_endpoint_accepts_a_json_body(provider, web_client):
    ticket = provider.ticket(web_client)
    response = requests.post(provider.url + "/qr/status", json={"ticket": ticket["ticket"]},
                             timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"


def test_a_long_poll_answers_with_the_scan(provider, web_client, alice_phone):
    ticket = provider.ticket(web_client)
    answers: list[requests.Response] = []
    waiter = threading.Thread(target=lambda: answers.append(
        provider.status(ticket["ticket"], wait="20")))
    waiter.start()
    time.sleep(0.5)  # let the long poll start waiting
    assert scan(provider, alice_phone, ticket).status_code == 200
    waiter.join(30)
    assert not waiter.is_alive() and len(answers) == 1
    assert answers[0].status_code == 200, answers[0].text
    body = answers[0].json()
    assert body["status"] == "scanned"
    assert body["user"] == {"name": "Alice Liddell", "picture": "https://pics.example/alice.png"}


def test_a_long_poll_on_an_unchanged_ticket_answers_pending(provider, web_client):
    ticket = provider.ticket(web_client)
    response = provider.status(ticket["ticket"], wait="1")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"


# == the QR image =================================================================================
def test_the_qr_image_is_a_png_that_decodes_to_the_qr_content(provider, web_client):
    ticket = provider.ticket(web_client)
    response = requests.get(ticket["qr_image"], timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    decoded = zxingcpp.read_barcodes(PIL.Image.open(io.BytesIO(response.content)))
    assert [code.text for code in decoded] == [ticket["qr_content"]]


def test_the_qr_image_is_also_served_as_svg(provider, web_client):
    ticket = provider.ticket(web_client)
    assert ticket["qr_image"].endswith(".png")
    response = requests.get(ticket["qr_image"][: -len(".png")] + ".svg", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in response.content


def test_the_qr_image_of_an_unknown_scan_code_is_not_found(provider, web_client):
    ticket = provider.ticket(web_client)
    other = ticket["qr_image"].replace(provider.scan_code(ticket), secrets.token_urlsafe(22))
    assert requests.get(other, timeout=30).status_code == 404


# == expiry, on a server whose tickets live two seconds ===========================================
@pytest.fixture(scope="module")
def short(tmp_path_factory):
    server = Provider(tmp_path_factory.mktemp("short"),
                      {"QR_OIDC_TICKET_TTL": "2", "QR_OIDC_POLL_INTERVAL": "1"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def expired(short):
    """Tickets in every state before redeemed, then left to expire."""
    web = short.create_client("--name", "Short web")
    short.create_user("carol", "carol-password", name="Carol")
    phone = sign_in_phone(short, phone_app(short), "carol", "carol-password")["access_token"]
    tickets = {state: short.ticket(web) for state in ("pending", "scanned", "approved")}
    for state, ticket in tickets.items():
        assert ticket["expires_in"] == 2 and ticket["interval"] == 1, ticket
        if state != "pending":
            assert scan(short, phone, ticket).status_code == 200
        if state == "approved":
            assert decide(short, "approve", phone, ticket).status_code == 200
    created = time.time()
    time.sleep(max(0.0, created + 2.3 - time.time()))  # each expired at most 2 s after `created`
    return {"server": short, "web": web, "phone": phone, **tickets}


@pytest.mark.parametrize("state", ["pending", "scanned", "approved"])
def test_an_expired_ticket_reports_expired_with_zero_seconds_left(expired, state):
    body = status_of(expired["server"], expired[state])
    assert body["status"] == "expired"
    assert body["expires_in"] == 0


@pytest.mark.parametrize("state", ["pending", "scanned", "approved"])
def test_polling_an_expired_ticket_answers_expired_token(expired, state):
    response = expired["server"].poll(expired["web"], expired[state]["ticket"])
    assert_error(response, 400, "expired_token")
    assert response.headers["Cache-Control"] == "no-store"
    assert status_of(expired["server"], expired[state])["status"] == "expired"


EXPIRED_PHONE_STEPS = {
    "scan of a pending ticket": ("pending", "scan", "scan_code"),
    "scan of a pending ticket by user code": ("pending", "scan", "user_code"),
    "approve of a pending ticket": ("pending", "approve", "scan_code"),
    "re-scan of a scanned ticket": ("scanned", "scan", "scan_code"),
    "approve of a scanned ticket": ("scanned", "approve", "scan_code"),
    "approve of a scanned ticket by user code": ("scanned", "approve", "user_code"),
    "deny of a scanned ticket": ("scanned", "deny", "scan_code"),
    "scan of an approved ticket": ("approved", "scan", "scan_code"),
    "approve of an approved ticket": ("approved", "approve", "scan_code"),
    "deny of an approved ticket": ("approved", "deny", "user_code"),
}


@pytest.mark.parametrize("case", EXPIRED_PHONE_STEPS, ids=list(EXPIRED_PHONE_STEPS))
def test_the_phone_cannot_act_on_an_expired_ticket(expired, case):
    state, action, by = EXPIRED_PHONE_STEPS[case]
    server, ticket = expired["server"], expired[state]
    code = server.scan_code(ticket) if by == "scan_code" else ticket["user_code"]
    assert_error(server.phone(action, expired["phone"], **{by: code}), 410, "expired")
    assert status_of(server, ticket)["status"] == "expired"


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_the_qr_image_of_an_expired_ticket_is_gone(expired, fmt):
    url = expired["pending"]["qr_image"][: -len(".png")] + "." + fmt
    assert requests.get(url, timeout=30).status_code == 410


def test_a_token_from_another_provider_is_invalid_token_here(provider, expired, untouched_ticket):
    """The short-lived server's phone token, shown to the main provider: a foreign signature."""
    response = provider.phone("scan", expired["phone"],
                              scan_code=provider.scan_code(untouched_ticket))
    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert status_of(provider, untouched_ticket)["status"] == "pending"
