"""Rate limits (SPEC.md; RFC 8628 §5.1): ticket creation per client and per IP, user-code entry per
user and per IP, sign-in per account and per IP. Over the limit: 429, Retry-After and
{"error": "too_many_requests"}; the limits hold across instances (database or Redis counters).

Ticket creation and sign-in are counted by the Flask app: those tests build it in process with
tight limits (no server needed). User codes are entered through the event loop's phone
endpoints, and "across instances" is two servers: those run real servers."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from conftest import phone_app
from helpers import (
    Provider,
    create_pg_database,
    csrf_of,
    drop_pg_database,
    sign_in_phone,
)

TIGHT = {
    "QR_OIDC_RATE_TICKET_CLIENT": "3/600",
    "QR_OIDC_RATE_TICKET_IP": "5/600",
    "QR_OIDC_RATE_USER_CODE_USER": "10/600",
    "QR_OIDC_RATE_USER_CODE_IP": "20/600",
    "QR_OIDC_RATE_LOGIN_ACCOUNT": "3/900",
    "QR_OIDC_RATE_LOGIN_IP": "12/900",
}


def assert_limited(response):
    """A 429 as JSON (a requests or a Flask test client response)."""
    assert response.status_code == 429, response.text
    assert json.loads(response.text)["error"] == "too_many_requests"
    assert int(response.headers["Retry-After"]) >= 1


@pytest.fixture()
def tight_app(make_in_process):
    return make_in_process({name.removeprefix("QR_OIDC_"): value for name, value in TIGHT.items()})


def create_ticket(app, client: dict, **params):
    """POST /qr/ticket as a confidential client (HTTP Basic) or a public one (its client_id and
    PKCE in ``params``)."""
    headers = {}
    if client.get("client_secret"):
        raw = f"{client['client_id']}:{client['client_secret']}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    return app.client().post("/qr/ticket", data={"scope": "openid profile", **params},
                             headers=headers)


@pytest.fixture()
def tight(tmp_path):
    server = Provider(tmp_path, TIGHT)
    server.start()
    server.phone_client = phone_app(server)
    yield server
    server.stop()


def wrong_code() -> str:
    return "BCDF-" + "".join(secrets.choice("GHJKLMNP") for _ in range(4))


def test_ticket_creation_is_limited_per_client_and_per_address(tight_app):
    app = tight_app
    first, second = (app.create_client("--name", n) for n in ("First", "Second"))
    for _ in range(3):
        assert create_ticket(app, first).status_code == 201
    assert_limited(create_ticket(app, first))           # the client's 3 are used up
    # a backend is not one person: its own address counts for nothing (6 > 5 from it now)
    for _ in range(3):
        assert create_ticket(app, second).status_code == 201
    # the person's address it passes does count, across clients
    roomy, other = (app.create_client("--name", n, "--ticket-rate", "100/600")
                    for n in ("Roomy", "Other"))
    for client in (roomy, roomy, roomy, roomy, other):
        assert create_ticket(app, client, requester_ip="203.0.113.7").status_code == 201
    assert_limited(create_ticket(app, roomy, requester_ip="203.0.113.7"))
    assert create_ticket(app, roomy, requester_ip="203.0.113.8").status_code == 201
    # a public client's requester is the peer: 5 from this address, then no more
    spa = app.create_client("--name", "SPA", "--public", "--ticket-rate", "100/600")
    pkce = {"client_id": spa["client_id"], "code_challenge": "x" * 43,
            "code_challenge_method": "S256"}
    for _ in range(5):
        assert create_ticket(app, spa, **pkce).status_code == 201
    assert_limited(create_ticket(app, spa, **pkce))
    device = app.client().post("/device_authorization",
                               data={"scope": "openid", "client_id": spa["client_id"]})
    assert_limited(device)


def test_a_user_code_guesser_is_stopped_within_50_wrong_tries(tight):
    tight.create_user("mallory", "mallory-password")
    tight.create_user("trudy", "trudy-password")
    mallory = sign_in_phone(tight, tight.phone_client, "mallory", "mallory-password")[
        "access_token"]
    trudy = sign_in_phone(tight, tight.phone_client, "trudy", "trudy-password")["access_token"]
    web = tight.create_client("--name", "Target")
    target = tight.ticket(web)

    answers = [tight.phone("scan", mallory, user_code=wrong_code()).status_code
               for _ in range(10)]
    assert answers == [404] * 10
    assert_limited(tight.phone("scan", mallory, user_code=wrong_code()))
    # stopped: even the right code is refused for this user now
    assert_limited(tight.phone("scan", mallory, user_code=target["user_code"]))
    # a second account from the same address gets the rest of the address's 20, then stops too
    answers = [tight.phone("scan", trudy, user_code=wrong_code()).status_code for _ in range(10)]
    assert answers == [404] * 10
    assert_limited(tight.phone("approve", trudy, user_code=wrong_code()))
    # 20 wrong tries in all, and the ticket was never touched; scanning by the QR still works
    assert tight.status(target["ticket"]).json()["status"] == "pending"
    assert tight.phone("scan", trudy, scan_code=tight.scan_code(target)).status_code == 200


def login(app, username, password, **headers):
    """The sign-in form, as a new browser submits it (its cookie, its CSRF token)."""
    browser = app.client()
    page = browser.get("/login")
    return browser.post("/login", data={
        "username": username, "password": password, "csrf_token": csrf_of(page.text),
        "next": "/"}, headers=headers)


def test_sign_in_is_limited_per_account(tight_app):
    app = tight_app
    app.create_user("victor", "victor-password")
    app.create_user("wendy", "wendy-password")
    assert [login(app, "victor", "wrong").status_code for _ in range(3)] == [401] * 3
    limited = login(app, "victor", "victor-password")  # right password, too late
    assert_limited(limited)
    assert login(app, "wendy", "wendy-password").status_code == 302
    # the account counter does not care how the name is typed
    assert_limited(login(app, "VICTOR", "victor-password"))


def test_a_browser_gets_the_refusal_as_a_page(tight_app):
    tight_app.create_user("xena", "xena-password")
    for _ in range(3):
        assert login(tight_app, "xena", "wrong").status_code == 401
    response = login(tight_app, "xena", "xena-password", Accept="text/html")
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("store", ["postgresql", "redis"])
def test_the_limits_hold_across_two_instances(tmp_path_factory, store):
    env = {**TIGHT, "QR_OIDC_RATE_TICKET_CLIENT": "100/600", "QR_OIDC_RATE_TICKET_IP": "4/600"}
    if store == "redis":
        env["QR_OIDC_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    url = create_pg_database()
    a = Provider(tmp_path_factory.mktemp("la"), env, database_url=url)
    b = Provider(tmp_path_factory.mktemp("lb"), env, database_url=url)
    a.env["QR_OIDC_ISSUER"] = b.env["QR_OIDC_ISSUER"] = a.url
    try:
        a.start()
        b.start()
        web = a.create_client("--name", "Shared")
        # (Redis keeps counters between runs; a run later in the same window on the same port
        # must not find this person's tickets counted already)
        person = {"requester_ip": f"198.51.100.{secrets.randbelow(254) + 1}"}
        codes = [server.create_ticket(web, **person).status_code for server in (a, b, a, b)]
        assert codes == [201] * 4
        assert_limited(a.create_ticket(web, **person))
        assert_limited(b.create_ticket(web, **person))
        if store == "postgresql":
            assert a.db("SELECT COUNT(*) FROM rate_counters")[0][0] >= 1
        else:  # the counters live in Redis, not in the database
            assert a.db("SELECT COUNT(*) FROM rate_counters")[0][0] == 0
    finally:
        a.stop()
        b.stop()
        drop_pg_database(url)
