"""The audit log: a JSON line for every ticket event and every sign-in, with client, user, IP and
user agent, and never a secret."""

from __future__ import annotations

import json
import time

import requests

from helpers import Provider, approved_ticket


def events(provider, since: float) -> list[dict]:
    found = []
    for line in provider.log().splitlines():
        if line.startswith("{"):
            record = json.loads(line)  # every audit line is one JSON object
            if record["ts"] >= since:
                found.append(record)
    return found


def wait_for(provider, since, predicate):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        matching = [e for e in events(provider, since) if predicate(e)]
        if matching:
            return matching
        time.sleep(0.1)
    raise AssertionError("no such audit event")


def test_every_ticket_event_is_one_json_line_with_who_and_from_where(provider, web_client,
                                                                     alice_phone):
    since = time.time() - 0.01
    ticket = approved_ticket(provider, web_client, alice_phone)
    assert provider.poll(web_client, ticket["ticket"]).status_code == 200
    denied = provider.ticket(web_client)
    provider.phone("scan", alice_phone, scan_code=provider.scan_code(denied))
    provider.phone("deny", alice_phone, scan_code=provider.scan_code(denied))

    # (the client's own: ``since`` has a margin that may let the previous test's last line in)
    redeemed = wait_for(provider, since, lambda e: e["event"] == "ticket.redeemed"
                        and e["client_id"] == web_client["client_id"])
    assert len(redeemed) == 1, redeemed
    ticket_id = redeemed[0]["ticket"]
    story = [e["event"] for e in events(provider, since) if e.get("ticket") == ticket_id]
    assert story == ["ticket.created", "ticket.scanned", "ticket.approved", "ticket.redeemed"]
    for event in events(provider, since):
        if event.get("ticket") == ticket_id:
            assert event["client_id"] == web_client["client_id"]
            assert event["ip"] == "127.0.0.1" and event["user_agent"].startswith("python-requests")
            if event["event"] != "ticket.created":
                assert isinstance(event["user_id"], int)
    assert any(e["event"] == "ticket.denied" for e in events(provider, since))

    log = provider.log()
    for secret in (ticket["ticket"], provider.scan_code(ticket), ticket["user_code"],
                   denied["ticket"], alice_phone):
        assert secret not in log


def test_sign_ins_and_failed_sign_ins_are_audited(provider, alice):
    import requests

    from helpers import csrf_of

    since = time.time() - 0.01
    browser = requests.Session()
    page = browser.get(provider.url + "/login", timeout=10)
    browser.post(provider.url + "/login", data={"username": "alice", "password": "nope",
                                                 "csrf_token": csrf_of(page.text), "next": "/"},
                 allow_redirects=False, timeout=10)
    browser.post(provider.url + "/login", data={"username": "alice",
                                                 "password": "alice-password",
                                                 "csrf_token": csrf_of(page.text), "next": "/"},
                 allow_redirects=False, timeout=10)
    failed = wait_for(provider, since, lambda e: e["event"] == "signin.failed")
    assert failed[0]["username"] == "alice" and failed[0]["ip"] == "127.0.0.1"
    ok = wait_for(provider, since, lambda e: e["event"] == "signin")
    assert ok[0]["amr"] == "pwd"
    assert "alice-password" not in provider.log() and "nope" not in provider.log()


def test_every_request_gets_one_access_line_naming_the_route_not_the_path(tmp_path):
    """The access log (written by a thread of its own) has a line per request, the event
    path's included, with the route pattern: the path of a QR image holds its scan code."""
    server = Provider(tmp_path)
    server.start()
    try:
        client = server.create_client("--name", "Logged shop")
        ticket = server.ticket(client)
        code = server.scan_code(ticket)
        assert requests.get(f"{server.url}/qr/{code}.svg", timeout=30).status_code == 200
        assert server.poll(client, ticket["ticket"]).json()["error"] == "authorization_pending"
        assert server.poll(client, ticket["ticket"]).json()["error"] == "slow_down"
        assert requests.get(f"{server.url}/no/{code}", timeout=30).status_code == 404
        wanted = ["POST /qr/ticket 201", "GET /qr/<scan_code>.<fmt> 200", "POST /token 400",
                  "POST /token 400", "GET <unmatched> 404"]
        deadline = time.monotonic() + 10
        while True:
            log = server.log()
            got = [" ".join(line.split("qr_oidc.access ", 1)[1].split()[:3])
                   for line in log.splitlines() if "qr_oidc.access " in line]
            got = [line for line in got if "openid-configuration" not in line]  # start-up
            if got == wanted or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got == wanted
        assert code not in log and ticket["ticket"] not in log
    finally:
        server.stop()
