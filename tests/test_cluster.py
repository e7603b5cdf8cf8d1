"""Several instances on one PostgreSQL database: exactly-once redemption, the poll interval,
realtime status and every transition hold across instances; a SIGKILLed instance loses nothing;
500 open long polls starve nothing; expired tickets are purged in the background."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from conftest import phone_app
from helpers import (
    Provider,
    approved_ticket,
    create_pg_database,
    drop_pg_database,
    sign_in_phone,
)

CLUSTER_ENV = {
    "QR_OIDC_POLL_INTERVAL": "2",
    # a waiting long poll re-reads the database only every 60 s: anything quicker than that is
    # the LISTEN/NOTIFY wake-up from the other instance
    "QR_OIDC_LONG_POLL_RECHECK": "60",
    "QR_OIDC_MAINTENANCE_INTERVAL": "1",
}


def pair(tmp_path_factory, url):
    """Two instances of one provider: one issuer (as behind a load balancer), one database."""
    a = Provider(tmp_path_factory.mktemp("a"), CLUSTER_ENV, database_url=url)
    b = Provider(tmp_path_factory.mktemp("b"), CLUSTER_ENV, database_url=url)
    a.env["QR_OIDC_ISSUER"] = b.env["QR_OIDC_ISSUER"] = a.url
    return a, b


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    url = create_pg_database()
    a, b = pair(tmp_path_factory, url)
    try:
        a.start()
        b.start("--workers", "2")
        web = a.create_client("--name", "Cluster shop")
        a.create_user("erin", "erin-password", name="Erin")
        phone = sign_in_phone(b, phone_app(a), "erin", "erin-password")["access_token"]
        yield {"a": a, "b": b, "web": web, "phone": phone, "url": url}
    finally:
        a.stop()
        b.stop()
        drop_pg_database(url)


def test_the_instances_share_one_key_set_and_issuer_metadata(cluster):
    a, b = cluster["a"], cluster["b"]
    jwks_a = requests.get(a.url + "/jwks.json", timeout=10).json()
    jwks_b = requests.get(b.url + "/jwks.json", timeout=10).json()
    assert jwks_a == jwks_b and jwks_a["keys"]


def test_concurrent_polls_across_instances_give_exactly_one_token_response(cluster):
    a, b, web, phone = cluster["a"], cluster["b"], cluster["web"], cluster["phone"]
    for _round in range(8):
        ticket = approved_ticket(a, web, phone)
        barrier = threading.Barrier(24)
        results, lock = [], threading.Lock()

        def poll(server, as_json, barrier=barrier, ticket=ticket, lock=lock, results=results):
            barrier.wait()
            response = server.poll(web, ticket["ticket"], as_json=as_json)
            with lock:
                results.append(response)

        # both instances, and on each both body shapes (forms and JSON)
        threads = [threading.Thread(target=poll, args=(a if i % 2 else b, i % 4 >= 2))
                   for i in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(results) == 24
        assert sum(r.status_code == 200 for r in results) == 1, [r.text for r in results]
        assert {r.json()["error"] for r in results if r.status_code != 200} <= {
            "invalid_grant", "slow_down"}


def test_the_poll_interval_holds_across_instances(cluster):
    a, b, web = cluster["a"], cluster["b"], cluster["web"]
    ticket = a.ticket(web)
    assert a.poll(web, ticket["ticket"]).json()["error"] == "authorization_pending"
    # the same client, through the other instance, a moment later: too early
    assert b.poll(web, ticket["ticket"]).json()["error"] == "slow_down"


def test_a_long_poll_on_one_instance_hears_an_approval_on_the_other(cluster):
    """PostgreSQL: LISTEN/NOTIFY carries the change from B to A."""
    _long_poll_hears_the_other_instance(cluster["a"], cluster["b"], cluster["web"],
                                        cluster["phone"], "NOTIFY")


@pytest.fixture(scope="module")
def sqlite_pair(tmp_path_factory):
    """Two processes on one SQLite file: as the workers of ``serve --workers N`` are."""
    folder = tmp_path_factory.mktemp("sqlite-pair")
    a, b = pair(tmp_path_factory, f"sqlite:///{folder / 'shared.db'}")
    try:
        a.start()
        b.start()
        web = a.create_client("--name", "Pair shop")
        a.create_user("fay", "fay-password", name="Fay")
        phone = sign_in_phone(b, phone_app(a), "fay", "fay-password")["access_token"]
        yield {"a": a, "b": b, "web": web, "phone": phone}
    finally:
        a.stop()
        b.stop()


def test_on_sqlite_a_long_poll_in_one_process_hears_an_approval_in_another(sqlite_pair):
    """SQLite: the ticket_events rows carry the change from B to A (provider/storage/notify.py)."""
    _long_poll_hears_the_other_instance(sqlite_pair["a"], sqlite_pair["b"], sqlite_pair["web"],
                                        sqlite_pair["phone"], "ticket_events")
    rows = sqlite_pair["a"].db("SELECT COUNT(*) FROM ticket_events")
    assert rows[0][0] >= 6  # a scan and an approval per round, kept a minute


def _long_poll_hears_the_other_instance(a, b, web, phone, channel):
    for _round in range(3):
        ticket = a.ticket(web)
        answers = {}

        def long_poll(last_status, ticket=ticket, answers=answers):
            response = a.status(ticket["ticket"], wait="25", last_status=last_status)
            answers[last_status] = response.json()

        waiter = threading.Thread(target=long_poll, args=("pending",))
        waiter.start()
        time.sleep(0.3)
        assert b.phone("scan", phone, scan_code=a.scan_code(ticket)).status_code == 200
        # Not a speed check: the poll waits up to 25 s and re-reads the database only every
        # 60 s, so answering well inside its wait means the other instance's wake-up reached it.
        waiter.join(12)
        assert not waiter.is_alive(), f"the long poll on A did not hear the scan on B ({channel})"
        assert answers["pending"]["status"] == "scanned"
        assert answers["pending"]["user"]["name"] in ("Erin", "Fay")

        waiter = threading.Thread(target=long_poll, args=("scanned",))
        waiter.start()
        time.sleep(0.3)
        assert b.phone("approve", phone, scan_code=a.scan_code(ticket)).status_code == 200
        waiter.join(12)
        assert not waiter.is_alive(), \
            f"the long poll on A did not hear the approval on B ({channel})"
        assert answers["scanned"]["status"] == "approved"


def test_a_flow_survives_the_instance_it_started_on_being_killed(tmp_path_factory):
    url = create_pg_database()
    a, b = pair(tmp_path_factory, url)
    try:
        a.start()
        b.start()
        web = a.create_client("--name", "Kill shop")
        a.create_user("finn", "finn-password", name="Finn")
        phone = sign_in_phone(a, phone_app(a), "finn", "finn-password")["access_token"]

        scanned = a.ticket(web)
        approved = a.ticket(web)
        assert a.phone("scan", phone, scan_code=a.scan_code(scanned)).status_code == 200
        assert a.phone("scan", phone, scan_code=a.scan_code(approved)).status_code == 200
        assert a.phone("approve", phone, scan_code=a.scan_code(approved)).status_code == 200
        a.kill()  # SIGKILL, mid-flow
        with pytest.raises(requests.ConnectionError):
            requests.get(a.url + "/jwks.json", timeout=5)

        # the ticket approved through A completes through B
        response = b.poll(web, approved["ticket"])
        assert response.status_code == 200, response.text
        # the ticket scanned through A is approved and redeemed through B
        assert b.status(scanned["ticket"]).json()["status"] == "scanned"
        assert b.phone("approve", phone, scan_code=b.scan_code(scanned)).status_code == 200
        assert b.poll(web, scanned["ticket"]).status_code == 200
    finally:
        a.stop()
        b.stop()
        drop_pg_database(url)


def test_500_open_long_polls_starve_neither_token_polls_nor_discovery(cluster):
    """Four long polls on each of 125 tickets (four is what one ticket may hold at once)."""
    a, web, phone = cluster["a"], cluster["web"], cluster["phone"]
    tickets = [a.ticket(web) for _ in range(125)]
    finished = []
    lock = threading.Lock()
    session_local = threading.local()

    def long_poll(ticket):
        if not hasattr(session_local, "session"):
            session_local.session = requests.Session()
        response = session_local.session.post(a.url + "/qr/status", data={
            "ticket": ticket["ticket"], "wait": "25", "last_status": "pending"}, timeout=60)
        with lock:
            finished.append(response.json()["status"])

    threads = [threading.Thread(target=long_poll, args=(tickets[i % 125],)) for i in range(500)]
    for thread in threads:
        thread.start()
    # wait until the server holds them (each answers only when its ticket changes)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        held = len(a.db("SELECT 1"))  # a round trip; the long polls need a moment to arrive
        time.sleep(0.5)
        if held and sum(t.is_alive() for t in threads) == 500:
            break
    time.sleep(2)

    discovery = requests.get(a.url + "/.well-known/openid-configuration", timeout=30)
    fresh = approved_ticket(a, web, phone)
    token = a.poll(web, fresh["ticket"])
    with lock:
        answered_meanwhile = len(finished)
    assert discovery.status_code == 200
    assert token.status_code == 200, token.text
    assert answered_meanwhile == 0, "the long polls were still open while the others answered"

    for ticket in tickets:  # release them: each long poll answers as soon as its ticket changes
        assert a.phone("scan", phone, scan_code=a.scan_code(ticket)).status_code == 200
    for thread in threads:
        thread.join(60)
    assert len(finished) == 500 and set(finished) == {"scanned"}


def test_expired_tickets_are_purged_in_the_background(cluster):
    a, web = cluster["a"], cluster["web"]
    ticket = a.ticket(web)
    # make it look expired long ago (past the ten-minute retention)
    a.db("UPDATE tickets SET expires_at = expires_at - 3600, created_at = created_at - 3600 "
         "WHERE expires_at = (SELECT MAX(expires_at) FROM tickets)")
    assert a.status(ticket["ticket"]).json()["status"] == "expired"
    deadline = time.monotonic() + 20
    while a.status(ticket["ticket"]).status_code != 404:
        assert time.monotonic() < deadline, "not purged by the maintenance thread"
        time.sleep(0.5)
