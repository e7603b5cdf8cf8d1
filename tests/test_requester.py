"""Tickets made by a relying party's backend (door 2 of docs/integrate.md): the backend passes the
person's address and browser (``requester_ip``, ``requester_user_agent``), the phone and the audit
log show the person, and the limits count the person, not the backend that serves everyone
(SPEC.md: "Create a ticket", "Rate limits"). Against real servers, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from qr_oidc.provider.settings import DEFAULTS

from helpers import DEVICE_GRANT, Provider, pkce

FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:140.0) Gecko/20100101 Firefox/140.0"


def audit_events(provider: Provider, event: str) -> list[dict]:
    return [e for e in (json.loads(line) for line in provider.log().splitlines()
                        if line.startswith("{")) if e.get("event") == event]


def count_tickets(provider: Provider) -> int:
    return provider.db("SELECT COUNT(*) FROM tickets")[0][0]


def test_a_backend_passes_the_persons_address_and_browser_and_the_phone_shows_them(
        provider, web_client, alice_phone):
    made = provider.ticket(web_client, requester_ip="203.0.113.45",
                           requester_user_agent=FIREFOX)
    scanned = provider.phone("scan", alice_phone, scan_code=provider.scan_code(made))
    assert scanned.status_code == 200, scanned.text
    assert scanned.json()["requester"] == {"ip": "203.0.113.45", "user_agent": FIREFOX,
                                           "browser": "Firefox 140 on macOS"}
    # the audit log names the person, and the backend the request came through
    deadline = time.monotonic() + 10
    while True:
        created = [e for e in audit_events(provider, "ticket.created")
                   if e.get("ip") == "203.0.113.45"]
        if created or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert created, "no ticket.created line for the person's address"
    assert created[-1]["user_agent"] == FIREFOX[:200]
    assert created[-1]["via"] == "127.0.0.1"


def test_an_ipv6_requester_is_kept_in_its_canonical_form(provider, web_client, alice_phone):
    made = provider.ticket(web_client, requester_ip="2001:DB8:0:0::1")
    scanned = provider.phone("scan", alice_phone, scan_code=provider.scan_code(made)).json()
    assert scanned["requester"] == {"ip": "2001:db8::1", "user_agent": None, "browser": None}


def test_a_device_authorization_from_a_backend_takes_the_requester_too(provider, alice_phone):
    backend = provider.create_client("--name", "Set-top backend", "--grant-type", DEVICE_GRANT)
    made = requests.post(provider.url + "/device_authorization", timeout=30, data={
        "scope": "openid", "requester_ip": "198.51.100.7", "requester_user_agent": "TV/1.0"},
        auth=(backend["client_id"], backend["client_secret"]))
    assert made.status_code == 200, made.text
    code = made.json()["verification_uri_complete"].rsplit("/", 1)[1]
    scanned = provider.phone("scan", alice_phone, scan_code=code).json()
    assert scanned["requester"] == {"ip": "198.51.100.7", "user_agent": "TV/1.0",
                                    "browser": None}


def test_without_requester_context_the_requester_is_the_peer(provider, web_client, alice_phone):
    made = provider.ticket(web_client)
    scanned = provider.phone("scan", alice_phone, scan_code=provider.scan_code(made)).json()
    assert scanned["requester"]["ip"] == "127.0.0.1"
    assert scanned["requester"]["user_agent"].startswith("python-requests/")


@pytest.mark.parametrize("params, why", [
    ({"requester_ip": "999.1.1.1"}, "not an address"),
    ({"requester_ip": "login.example.com"}, "a name"),
    ({"requester_ip": "203.0.113.0/24"}, "a network"),
    ({"requester_ip": " 203.0.113.5"}, "padded"),
    ({"requester_ip": ""}, "empty"),
    ({"requester_ip": "1" * 70}, "long"),
    ({"requester_user_agent": "x" * 513}, "too long"),
    ({"requester_user_agent": "Firefox\r\nX-Injected: 1"}, "a line break"),
    ({"requester_user_agent": "Firefox\u202e"}, "a bidi override"),
    ({"requester_user_agent": "Firefox\u0085"}, "a C1 control"),
])
def test_malformed_requester_context_is_invalid_request_and_stores_nothing(provider, web_client,
                                                                         params, why):
    before = count_tickets(provider)
    refused = provider.create_ticket(web_client, **params)
    assert refused.status_code == 400, (why, refused.text)
    assert refused.json()["error"] == "invalid_request"
    assert "requester" in refused.json()["error_description"]
    assert count_tickets(provider) == before


@pytest.mark.parametrize("params", [{"requester_ip": "203.0.113.9"},
                                    {"requester_user_agent": FIREFOX}])
def test_a_public_client_may_not_pass_requester_context(provider, public_client, params):
    """A public client runs in the person's browser: it is the requester, and may not claim to
    speak for another."""
    before = count_tickets(provider)
    refused = provider.create_ticket(public_client, client_id=public_client["client_id"],
                                     code_challenge=pkce()[1], code_challenge_method="S256",
                                     **params)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    assert count_tickets(provider) == before


# -- limits that count the right thing, with the limits an operator starts with --------------------
DEFAULT_LIMITS = {f"QR_OIDC_{name}": str(value) for name, value in DEFAULTS.items()
                  if name.startswith("RATE_")}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def defaults(request, tmp_path_factory):
    """A server with the rate limits it ships with."""
    server = Provider(tmp_path_factory.mktemp("defaults"), DEFAULT_LIMITS, backend=request.param)
    server.start()
    yield server
    server.stop()


def test_the_default_lets_one_backend_make_at_least_ten_tickets_a_second():
    count, seconds = (int(part) for part in DEFAULTS["RATE_TICKET_CLIENT"].split("/"))
    assert count / seconds >= 10


def test_one_backend_makes_500_tickets_for_500_people_while_one_person_is_stopped(defaults):
    backend = defaults.create_client("--name", "Busy shop")

    def make(n: int) -> int:
        person = f"10.{n // 250}.{n % 250}.{1 + n % 7}"
        return defaults.create_ticket(backend, requester_ip=person,
                                      requester_user_agent=f"Browser/{n}").status_code

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(make, range(500)))
    assert answers == [201] * 500
    # one person hammering through the same backend is stopped at the per-address limit
    per_address, window = (int(part) for part in DEFAULTS["RATE_TICKET_IP"].split("/"))
    away_from_a_window_edge(window)
    hammering = [defaults.create_ticket(backend, requester_ip="192.0.2.66").status_code
                 for _ in range(per_address + 1)]
    assert hammering == [201] * per_address + [429]
    # while everyone else still gets in through the backend
    assert defaults.create_ticket(backend, requester_ip="192.0.2.67").status_code == 201


def away_from_a_window_edge(window: int, margin: float = 10.0) -> None:
    """Limits count in fixed windows of ``window`` seconds: wait out the end of one that is
    about to close, so that a count made now lands in one window."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.5)


def test_a_client_with_its_own_ticket_rate_is_held_to_it(defaults):
    metered = defaults.create_client("--name", "Metered", "--ticket-rate", "3/600")
    answers = [defaults.create_ticket(metered, requester_ip=f"192.0.2.{n}").status_code
               for n in range(1, 5)]
    assert answers == [201, 201, 201, 429]
    limited = defaults.create_ticket(metered)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    # the operator lifts it, and every instance sees that at once
    defaults.cli("clients", "update", metered["client_id"], "--ticket-rate", "off")
    assert defaults.create_ticket(metered, requester_ip="192.0.2.9").status_code == 201


def test_the_hosted_page_cannot_use_up_a_backends_quota(defaults):
    """Anonymous browsers opening a client's hosted login page count against a quota of their
    own, not the one its backend makes tickets with."""
    from urllib.parse import urlencode

    from helpers import ask_for_qr

    shop = defaults.create_client("--name", "Both doors", "--ticket-rate", "3/600",
                                  "--redirect-uri", "https://both.example/cb")
    query = urlencode({"response_type": "code", "client_id": shop["client_id"],
                       "redirect_uri": "https://both.example/cb", "scope": "openid",
                       "state": "s", "code_challenge": pkce()[1],
                       "code_challenge_method": "S256"})
    for _ in range(3):
        browser = requests.Session()
        page = browser.get(f"{defaults.url}/authorize?{query}", timeout=30)
        assert ask_for_qr(browser, page).status_code == 201
    answers = [defaults.create_ticket(shop, requester_ip=f"192.0.2.{n + 20}").status_code
               for n in range(4)]
    assert answers == [201, 201, 201, 429]
