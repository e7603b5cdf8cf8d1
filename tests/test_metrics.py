"""Prometheus metrics (SPEC.md "Operating it", provider/metrics.py): a provider of its own with
two worker processes, on SQLite and on PostgreSQL, takes a scripted set of logins (QR approved
and redeemed, QR denied, QR left to expire, a push login, a ticket over its client's rate), and
one scrape then shows each count exactly, summed over both workers; the scrape needs the token
and reveals nothing without it."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import phone_app
from helpers import QR_GRANT, Provider, sign_in_phone

CIBA = "urn:openid:params:grant-type:ciba"
TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def counted(request, tmp_path_factory):
    server = Provider(tmp_path_factory.mktemp("metrics"), {
        "QR_OIDC_METRICS_TOKEN": TOKEN, "QR_OIDC_MAINTENANCE_INTERVAL": "1",
        "QR_OIDC_TICKET_TTL": "6", "QR_OIDC_POLL_INTERVAL": "1"}, backend=request.param)
    try:
        server.start("--workers", "2")
        yield server
    finally:
        server.stop()


def scrape(server, token=TOKEN) -> dict:
    """{(name, frozenset(labels)): value} of one scrape."""
    answer = requests.get(server.url + "/metrics", timeout=30,
                          headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_scrape_without_the_token_gets_401_and_nothing_else(counted):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abc"},
                    {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        answer = requests.get(counted.url + "/metrics", headers=headers, timeout=30)
        assert answer.status_code == 401, headers
        assert answer.json()["error"] == "invalid_token"
        assert "qr_oidc_" not in answer.text and "python_" not in answer.text
    assert requests.post(counted.url + "/metrics", timeout=30).status_code == 405


def test_metrics_are_off_without_a_token(provider):
    assert requests.get(provider.url + "/metrics", timeout=30,
                        headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_each_count_of_a_scripted_set_of_logins_is_exact(counted):
    server = counted
    web = server.create_client("--name", "Counted shop", "--grant-type", QR_GRANT)
    slow = server.create_client("--name", "Slow shop", "--grant-type", QR_GRANT,
                                "--ticket-rate", "1/60")
    ciba = server.create_client("--name", "Counted centre", "--grant-type", CIBA)
    server.create_user("mia", "mia-password")
    phone = sign_in_phone(server, phone_app(server), "mia", "mia-password")["access_token"]
    auth = (web["client_id"], web["client_secret"])

    def poll(ticket):
        return requests.post(server.url + "/token", auth=auth, timeout=30,
                             data={"grant_type": QR_GRANT, "ticket": ticket})

    # 1: created, scanned, approved, redeemed (one pending poll before the approval)
    approved = server.ticket(web)
    assert poll(approved["ticket"]).json()["error"] == "authorization_pending"
    code = server.scan_code(approved)
    assert server.phone("scan", phone, scan_code=code).status_code == 200
    assert server.phone("approve", phone, scan_code=code).status_code == 200
    time.sleep(1.1)
    assert poll(approved["ticket"]).status_code == 200
    # 2: created, scanned, denied (the poll hears access_denied)
    denied = server.ticket(web)
    code = server.scan_code(denied)
    assert server.phone("scan", phone, scan_code=code).status_code == 200
    assert server.phone("deny", phone, scan_code=code).status_code == 200
    assert poll(denied["ticket"]).json()["error"] == "access_denied"
    # 3: created, never scanned: expires (the upkeep marks it, once, on one of the workers)
    server.ticket(web)
    # a push login: created, approved, redeemed
    asked = requests.post(server.url + "/backchannel/authenticate", timeout=30,
                          data={"scope": "openid", "login_hint": "mia"},
                          auth=(ciba["client_id"], ciba["client_secret"])).json()
    entry = requests.post(server.url + "/qr/inbox", timeout=30, headers={
        "Authorization": f"Bearer {phone}"}).json()["requests"][0]
    assert server.phone("approve", phone, scan_code=entry["scan_code"]).status_code == 200
    assert requests.post(server.url + "/token", timeout=30, data={
        "grant_type": CIBA, "auth_req_id": asked["auth_req_id"]},
        auth=(ciba["client_id"], ciba["client_secret"])).status_code == 200
    # a client over its own rate: one ticket, then 429
    server.ticket(slow)
    assert server.create_ticket(slow).status_code == 429
    # a held long poll shows while it is held
    held = {}
    waiter = threading.Thread(target=lambda: held.setdefault(
        "answer", server.status(approved["ticket"], wait="3", last_status="redeemed")))
    waiter.start()
    time.sleep(1.0)
    during = scrape(server)
    waiter.join(10)
    assert value(during, "qr_oidc_long_polls_open", kind="status") == 1

    time.sleep(7.5)  # ticket 3 expires (TTL 6 s) and a round of upkeep (every 1 s) marks it
    samples = scrape(server)
    shop, centre = web["client_id"], ciba["client_id"]
    funnel = {event: value(samples, "qr_oidc_tickets_total", client=shop, kind="qr",
                           event=event)
              for event in ("created", "scanned", "approved", "denied", "expired", "redeemed")}
    assert funnel == {"created": 3, "scanned": 2, "approved": 1, "denied": 1, "expired": 1,
                      "redeemed": 1}
    push = {event: value(samples, "qr_oidc_tickets_total", client=centre, kind="push",
                         event=event) for event in ("created", "approved", "redeemed")}
    assert push == {"created": 1, "approved": 1, "redeemed": 1}
    assert value(samples, "qr_oidc_tickets_total", client=slow["client_id"], kind="qr",
                 event="created") == 1
    for step, count in (("scan", 2), ("decision", 2), ("redemption", 1)):
        assert value(samples, "qr_oidc_ticket_seconds_count", kind="qr", step=step) == count
    assert value(samples, "qr_oidc_token_requests_total", grant=QR_GRANT,
                 outcome="issued") == 1
    assert value(samples, "qr_oidc_token_requests_total", grant=QR_GRANT,
                 outcome="authorization_pending") == 1
    assert value(samples, "qr_oidc_token_requests_total", grant=QR_GRANT,
                 outcome="access_denied") == 1
    assert value(samples, "qr_oidc_token_requests_total", grant=CIBA, outcome="issued") == 1
    assert value(samples, "qr_oidc_token_requests_total", grant="authorization_code",
                 outcome="issued") == 1  # the phone's sign-in
    assert value(samples, "qr_oidc_rate_limited_total", limit="ticket_client") == 1
    assert value(samples, "qr_oidc_long_polls_open", kind="status") == 0
    assert value(samples, "qr_oidc_request_seconds_count", endpoint="/qr/ticket") == 5
    assert value(samples, "qr_oidc_request_seconds_count", endpoint="/qr/scan") == 2
    assert value(samples, "qr_oidc_request_seconds_count", endpoint="/token") == 5
