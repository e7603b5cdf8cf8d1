"""No GET changes state (SPEC.md): every GET route the server has, walked with the values that
reach its deepest branches (signed in and not, with a phone's token, tickets in every state, the
authorization endpoint's every prompt), leaves every row of every table as it was.

The route list comes from the app itself, so a new GET route fails this test until the walk
knows how to call it. Against real servers on SQLite and PostgreSQL; the demo's two pages
against a real ``qr-oidc demo``.
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlencode

import pytest
import requests

from conftest import phone_app
from helpers import (
    GENEROUS_LIMITS,
    Provider,
    login_form,
    pkce,
    sign_in_phone,
)

QUIET = {  # nothing in the background may write while the tables are compared
    "QR_OIDC_MAINTENANCE_INTERVAL": "3600",
    "QR_OIDC_KEY_ROTATION_PERIOD": "0",
    **GENEROUS_LIMITS,
}


def served_get_routes(demo: bool = False) -> set[str]:
    """The GET rules of the app ``qr-oidc serve`` (or ``demo``) runs, read from the app."""
    import tempfile

    from qr_oidc.provider.web.app import create_app

    folder = tempfile.mkdtemp(prefix="qr-oidc-routes-")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder}/routes.db", "DEMO": demo})
    rules = {rule.rule for rule in app.url_map.iter_rules() if "GET" in rule.methods}
    app.extensions["qr_oidc"].db.engine.dispose()
    return rules


def snapshot(server: Provider) -> dict:
    """Every row of every table, in an order that does not depend on the database."""
    if server.database_url.startswith("sqlite"):
        tables = [name for (name,) in server.db(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    else:
        tables = [name for (name,) in server.db(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert {"tickets", "tokens", "browser_sessions", "rate_counters"} <= set(tables)
    return {table: sorted(repr(row) for row in server.db(f'SELECT * FROM "{table}"'))
            for table in tables}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    """A server with something in every state a GET could touch."""
    server = Provider(tmp_path_factory.mktemp("get-safe"), QUIET, backend=request.param)
    server.start()
    try:
        yield _populate(server)
    finally:
        server.stop()


def _populate(server: Provider) -> dict:
    rp = server.create_client("--name", "Relying party", "--redirect-uri",
                              "https://rp.example/cb", "--number-matching")
    first = server.create_client("--name", "First party", "--first-party", "--redirect-uri",
                                 "https://first.example/cb")
    phone = phone_app(server)
    server.create_user("alice", "alice-password", name="Alice", picture="https://p.example/a.png")
    server.create_user("bob", "bob-password", name="Bob")
    alice_token = sign_in_phone(server, phone, "alice", "alice-password")["access_token"]
    bob_token = sign_in_phone(server, phone, "bob", "bob-password")["access_token"]
    tickets = {}
    for state in ("pending", "scanned", "approved", "denied", "redeemed", "expired"):
        made = server.ticket(rp)
        code = server.scan_code(made)
        if state != "pending":
            server.phone("scan", alice_token, scan_code=code)
        if state in ("approved", "redeemed"):
            server.phone("approve", alice_token, scan_code=code,
                         binding_code=made["binding_code"])
        if state == "denied":
            server.phone("deny", alice_token, scan_code=code)
        if state == "redeemed":
            assert server.poll(rp, made["ticket"]).status_code == 200
        if state == "expired":
            server.db("UPDATE tickets SET expires_at = ? WHERE ticket_hash = ?",
                      time.time() - 5, digest(made["ticket"]))
        tickets[state] = made
    # a browser signed in at the provider (alice), and one that is not
    signed_in = requests.Session()
    page = signed_in.get(server.url + "/login", timeout=30)
    assert login_form(signed_in, page, "alice", "alice-password").status_code == 302
    return {"server": server, "rp": rp, "first": first, "phone": phone, "tickets": tickets,
            "alice_token": alice_token, "bob_token": bob_token, "signed_in": signed_in}


def authorize_queries(world: dict) -> list[str]:
    """Authorization requests reaching each of /authorize's answers."""
    _verifier, challenge = pkce()

    def query(client, **extra):
        return urlencode({"response_type": "code", "client_id": client["client_id"],
                          "redirect_uri": client["redirect_uris"][0], "scope": "openid profile",
                          "state": "st", "nonce": "n", "code_challenge": challenge,
                          "code_challenge_method": "S256", **extra})

    rp, first = world["rp"], world["first"]
    return [
        query(rp), query(first),                                   # consent / a code at once
        query(first, prompt="login"), query(first, max_age="0"),   # the login page again
        query(first, prompt="none"), query(rp, prompt="none"),     # a code / consent_required
        query(first, prompt="consent"), query(first, max_age="3600"),
        query(rp, redirect_uri="https://evil.example/cb"),         # an error page
        query(rp, response_type="token"), query(rp, request="x"),  # redirected errors
        "client_id=nobody", "",
    ]


def walk(world: dict, routes: set[str]) -> set[str]:
    """GET every route (of ``routes``) in every way this test knows; returns the routes it
    called. Every answer must be below 500."""
    server = world["server"]
    url = server.url
    tickets = world["tickets"]
    codes = [server.scan_code(t) for t in tickets.values()] + ["no-such-code"]
    bearer = {"Authorization": f"Bearer {world['alice_token']}"}
    calls = {
        "/": [("/", {})],
        "/login": [("/login", {}), ("/login?next=/device", {}), ("/login?next=//evil", {})],
        "/device": [("/device", {}), ("/device?user_code=" + tickets["pending"]["user_code"], {})],
        "/authorize": [("/authorize?" + q, {}) for q in authorize_queries(world)],
        "/s/<scan_code>": [(f"/s/{code}", {}) for code in codes],
        "/qr/<scan_code>.<fmt>": [(f"/qr/{code}.{fmt}", {}) for code in codes
                                  for fmt in ("png", "svg", "gif")],
        "/userinfo": [("/userinfo", bearer), ("/userinfo", {})],
        "/.well-known/openid-configuration": [("/.well-known/openid-configuration", {})],
        "/jwks.json": [("/jwks.json", {})],
        "/static/<path:filename>": [("/static/qr-login.js", {}), ("/static/nothing.js", {})],
        "/demo": [("/demo", {})],
        "/phone": [("/phone", {})],
        "/metrics": [("/metrics", {}), ("/metrics", {"Authorization": "Bearer not-the-token"})],
        # the end-session page: a signed-in browser stays signed in until it posts the form
        "/end_session": [("/end_session", {}), ("/end_session?id_token_hint=x.y.z", {}),
                         ("/end_session?client_id=nobody&post_logout_redirect_uri="
                          "https://evil.example/", {})],
    }
    called = set()
    for rule in routes:
        assert rule in calls, f"the walk does not know how to GET {rule}: teach it"
        for path, headers in calls[rule]:
            for browser in (requests.Session(), world["signed_in"]):
                answer = browser.get(url + path, headers=headers, allow_redirects=False,
                                     timeout=30)
                assert answer.status_code < 500, (path, answer.status_code, answer.text[:200])
        called.add(rule)
    return called


def test_no_get_route_changes_a_row(world):
    server = world["server"]
    routes = served_get_routes()
    before = snapshot(server)
    called = walk(world, routes)
    assert called == routes
    after = snapshot(server)
    changed = {table for table in before if before[table] != after[table]}
    assert not changed, {t: (len(before[t]), len(after[t])) for t in changed}


def test_the_walk_reaches_the_branches_that_used_to_write(world):
    """The walk is no walk around the danger: opening a QR link signed in shows a page (it once
    scanned the ticket), and the signed-in first-party request gets its code (once a row)."""
    server = world["server"]
    signed_in = world["signed_in"]
    pending = world["tickets"]["pending"]
    page = signed_in.get(server.url + "/s/" + server.scan_code(pending), timeout=30)
    assert page.status_code == 200 and "Continue" in page.text
    assert server.status(pending["ticket"]).json()["status"] == "pending"
    first_party = authorize_queries(world)[1]
    answer = signed_in.get(server.url + "/authorize?" + first_party, allow_redirects=False,
                           timeout=30)
    assert answer.status_code == 302 and "code=" in answer.headers["Location"]
    signed_out = requests.get(server.url + "/authorize?" + authorize_queries(world)[0],
                              timeout=30)
    assert 'id="qr-start"' in signed_out.text  # the QR comes from a POST, not from this GET


def test_the_demo_pages_change_nothing(tmp_path):
    from test_browser import Demo

    demo = Demo(tmp_path)
    demo.start()
    try:
        server = Provider(tmp_path, database_url=f"sqlite:///{tmp_path / 'demo.db'}")
        server.url = demo.url
        server.create_user("carol", "carol-password")
        signed_in = requests.Session()
        page = signed_in.get(demo.url + "/login", timeout=30)
        assert login_form(signed_in, page, "carol", "carol-password").status_code == 302
        before = snapshot(server)
        for path in ("/demo", "/phone", "/", "/demo/logouts?sid=x", "/demo/logouts"):
            for browser in (requests.Session(), signed_in):
                assert browser.get(demo.url + path, timeout=30).status_code == 200
        assert snapshot(server) == before
        routes = served_get_routes(demo=True) - served_get_routes()
        assert routes == {"/demo", "/phone", "/demo/logouts"}
    finally:
        demo.stop()


def test_opening_a_qr_link_tells_its_creator_nothing(world):
    """What the ticket's creator can see (its status) is the same before and after someone
    signed in opens the link: no name, no picture."""
    server = world["server"]
    made = server.ticket(world["rp"])
    before = server.status(made["ticket"]).json()
    signed_in = world["signed_in"]
    assert signed_in.get(f"{server.url}/s/{server.scan_code(made)}", timeout=30).ok
    after = server.status(made["ticket"]).json()
    assert after["status"] == before["status"] == "pending"
    assert "user" not in after
