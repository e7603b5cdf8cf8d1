"""One mechanism per concern (issue 14): CSRF checked for every HTML form post in one place,
client authentication by one function that honours the client's registered method on every
path (the event path and Authlib's), a client's changed secret or settings seen by every
process within a second, and security headers from one place (also on the event path's
answers). Real servers, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
import requests

from helpers import QR_GRANT, Provider, csrf_of, login_form, pkce

FAILED = {"error": "invalid_client", "error_description": "Client authentication failed."}


def html_post_routes() -> dict[str, str]:
    """Every POST route of the HTML pages, read from the app: rule -> endpoint."""
    import tempfile

    from qr_oidc.provider.web.app import create_app
    from qr_oidc.provider.web.csrf import EXEMPT, HTML_BLUEPRINTS

    folder = tempfile.mkdtemp(prefix="qr-oidc-routes-")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder}/routes.db", "DEMO": True})
    routes = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()
              if "POST" in rule.methods and rule.endpoint.partition(".")[0] in HTML_BLUEPRINTS
              and rule.endpoint not in EXEMPT}
    app.extensions["qr_oidc"].db.engine.dispose()
    return routes


def counts(provider: Provider) -> dict:
    return {table: provider.db(f"SELECT COUNT(*) FROM {table}")[0][0]
            for table in ("tickets", "tokens", "browser_sessions", "redeemed_codes", "users")}


# -- CSRF ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("csrf", ["none", "another session's"])
def test_every_html_post_without_this_sessions_csrf_token_is_refused_and_changes_nothing(
        provider, web_client, alice, csrf):
    routes = html_post_routes()
    assert {"/login", "/logout", "/authorize/ticket", "/authorize/consent", "/authorize/qr",
            "/s/<scan_code>", "/device", "/confirm", "/end_session"} <= set(routes)
    browser = requests.Session()
    page = browser.get(provider.url + "/login", timeout=30)
    assert login_form(browser, page, "alice", "alice-password").status_code == 302
    stranger = csrf_of(requests.Session().get(provider.url + "/login", timeout=30).text)
    pending = provider.ticket(web_client)
    values = {"<scan_code>": provider.scan_code(pending)}
    before = counts(provider)
    for rule, endpoint in routes.items():
        if endpoint.startswith("demo."):
            continue  # (served by qr-oidc demo only: tests/test_browser.py posts to them bare)
        path = rule
        for name, value in values.items():
            path = path.replace(name, value)
        data = {"username": "alice", "password": "alice-password", "ticket": pending["ticket"],
                "user_code": pending["user_code"], "decision": "approve", "request": ""}
        if csrf != "none":
            data["csrf_token"] = stranger
        refused = browser.post(provider.url + path, data=data, allow_redirects=False, timeout=30)
        assert refused.status_code == 400, (rule, refused.status_code)
        assert refused.headers["Content-Type"].startswith("text/html"), rule
        assert "did not come from this site" in refused.text, rule
    assert counts(provider) == before
    assert provider.status(pending["ticket"]).json()["status"] == "pending"
    # still signed in: the refused logout ended nothing
    assert "Signed in as" in browser.get(provider.url + "/", timeout=30).text


def test_an_authorization_request_may_be_posted_from_the_relying_partys_page(provider):
    """OIDC Core §3.1.2.1: the authorization endpoint takes POST; it is exempt from CSRF
    because it changes nothing (its answer is a page or a redirect)."""
    client = provider.create_client("--name", "Posting shop", "--redirect-uri",
                                    "https://post.example/cb")
    answer = requests.post(provider.url + "/authorize", data={
        "response_type": "code", "client_id": client["client_id"],
        "redirect_uri": "https://post.example/cb", "scope": "openid", "state": "s",
        "code_challenge": pkce()[1], "code_challenge_method": "S256"}, timeout=30)
    assert answer.status_code == 200 and 'name="password"' in answer.text


# -- client authentication -------------------------------------------------------------------------
def token_poll(provider, ticket, auth=None, as_json=False, **body):
    data = {"grant_type": QR_GRANT, "ticket": ticket, **body}
    extra = {"json": data} if as_json else {"data": data}
    return requests.post(provider.url + "/token", auth=auth, timeout=30, **extra)


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_a_client_authenticates_only_with_its_registered_method(provider, web_client,
                                                                post_client, as_json):
    basic_ticket = provider.ticket(web_client)["ticket"]
    post_ticket = provider.ticket(post_client)["ticket"]
    # right: each with its own method
    assert token_poll(provider, basic_ticket, (web_client["client_id"],
                                               web_client["client_secret"]),
                      as_json).json()["error"] == "authorization_pending"
    assert token_poll(provider, post_ticket, None, as_json, client_id=post_client["client_id"],
                      client_secret=post_client["client_secret"]).json()["error"] == \
        "authorization_pending"
    # wrong: the right secret, the other method
    for answer in (
        token_poll(provider, basic_ticket, None, as_json, client_id=web_client["client_id"],
                   client_secret=web_client["client_secret"]),
        token_poll(provider, post_ticket, (post_client["client_id"],
                                           post_client["client_secret"]), as_json),
        token_poll(provider, basic_ticket, None, as_json, client_id=web_client["client_id"]),
    ):
        assert answer.status_code == 401 and answer.json() == FAILED


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_two_authentication_methods_in_one_request_are_refused(provider, web_client, as_json):
    ticket = provider.ticket(web_client)["ticket"]
    both = token_poll(provider, ticket, (web_client["client_id"], web_client["client_secret"]),
                      as_json, client_secret=web_client["client_secret"])
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    assert "one client authentication method" in both.json()["error_description"]
    made = requests.post(provider.url + "/qr/ticket", data={"client_secret": "x"},
                         auth=(web_client["client_id"], web_client["client_secret"]), timeout=30)
    assert made.status_code == 400 and made.json()["error"] == "invalid_request"


@pytest.mark.parametrize("where", ["/token", "/qr/ticket", "/revoke", "/introspect"])
def test_an_unknown_client_and_a_wrong_secret_are_told_the_same(provider, web_client, where):
    data = {"grant_type": QR_GRANT, "ticket": "x", "token": "x"}
    unknown = requests.post(provider.url + where, data=data, auth=("no-such-client", "secret"),
                            timeout=30)
    wrong = requests.post(provider.url + where, data=data,
                          auth=(web_client["client_id"], "not-the-secret"), timeout=30)
    unreadable = requests.post(provider.url + where, data=data, timeout=30,
                               headers={"Authorization": "Basic !!!"})
    for answer in (unknown, wrong, unreadable):
        assert answer.status_code == 401 and answer.json() == FAILED, answer.text
        assert answer.headers["WWW-Authenticate"].startswith("Basic")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_workers(request, tmp_path_factory):
    server = Provider(tmp_path_factory.mktemp("two-workers"), backend=request.param)
    server.start("--workers", "2")
    yield server
    server.stop()


def test_a_changed_secret_is_seen_by_every_process_within_a_second(two_workers):
    server = two_workers
    client = server.create_client("--name", "Rotating shop")
    old = (client["client_id"], client["client_secret"])
    tickets = [server.ticket(client)["ticket"] for _ in range(6)]
    # every process has the old secret in its cache now (six polls: the event path's cache)
    assert all(token_poll(server, t, old).json()["error"] == "authorization_pending"
               for t in tickets)
    updated = server.cli("clients", "update", client["client_id"], "--new-secret", "--json")
    new = (client["client_id"], json.loads(updated.stdout)["client_secret"])
    assert new[1] != old[1]
    time.sleep(1.0)
    for ticket in tickets:
        for as_json in (False, True):
            assert token_poll(server, ticket, old, as_json).status_code == 401
    answers = {token_poll(server, t, new).json()["error"] for t in tickets}
    assert answers <= {"authorization_pending", "slow_down"}
    # settings too: the client now authenticates with client_secret_post, and only so
    server.cli("clients", "update", client["client_id"], "--token-endpoint-auth-method",
               "client_secret_post")
    time.sleep(1.0)
    for ticket in tickets:
        assert token_poll(server, ticket, new).status_code == 401
        assert token_poll(server, ticket, None, client_id=new[0],
                          client_secret=new[1]).status_code == 400  # pending or slow_down


# -- security headers ------------------------------------------------------------------------------
SECURITY = ("X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options",
            "Content-Security-Policy")


def test_the_event_paths_answers_carry_the_same_security_headers(provider, web_client):
    ticket = provider.ticket(web_client)["ticket"]
    event = token_poll(provider, ticket, (web_client["client_id"], web_client["client_secret"]))
    flask_json = requests.get(provider.url + "/jwks.json", timeout=30)
    too_big = requests.post(provider.url + "/token", data={"x": "y" * 70_000}, timeout=30)
    assert too_big.status_code == 413
    for header in SECURITY:
        assert event.headers[header] == flask_json.headers[header] == too_big.headers[header]
