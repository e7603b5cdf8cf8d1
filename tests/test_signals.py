"""The confirmation screen's signals (SPEC.md: "Scan response fields"; grants/signals.py): the
requester's browser in words, and the risk hints (``same_network``, ``first_time``,
``recent_denials``) in the phone's scan response and on the hosted confirmation page. Parsing and
address rules on their own; the hints through real servers, SQLite and PostgreSQL; the storage
and its upkeep in the app built here."""

from __future__ import annotations

import logging
import secrets
import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from qr_oidc.grants.signals import DAY, Signals, browser_label, requester_key, same_network
from qr_oidc.provider.runtime.maintenance import run_once
from qr_oidc.provider.storage.models import Client, User, UserSignal

from helpers import login_form, sign_in_phone, submit_form

FIREFOX_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:140.0) Gecko/20100101 Firefox/140.0"
FIREFOX_MAC_PATCHED = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:140.0) Gecko/20100101 "
                       "Firefox/140.0.2")
CHROME_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
                  " Chrome/131.0.0.0 Safari/537.36")
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
EDGE_WINDOWS = CHROME_WINDOWS + " Edg/131.0.2903.86"
CURL = "curl/8.5.0"


# -- the browser in words ------------------------------------------------------------------------
@pytest.mark.parametrize("user_agent, label", [
    (FIREFOX_MAC, "Firefox 140 on macOS"),
    (CHROME_WINDOWS, "Chrome 131 on Windows"),
    (SAFARI_IPHONE, "Mobile Safari 17 on iOS"),
    (EDGE_WINDOWS, "Edge 131 on Windows"),
    (CURL, "curl 8"),
])
def test_a_known_user_agent_reads_as_browser_version_and_system(user_agent, label):
    assert browser_label(user_agent) == label


@pytest.mark.parametrize("user_agent", [
    None, "", "   ", "TV/1.0", "garbage \u00a7\u00a7 ###", "<script>alert(1)</script>",
    "\x00\x01\x02", b"Firefox/140.0", 140,
])
def test_an_empty_or_unknown_user_agent_has_no_label(user_agent):
    assert browser_label(user_agent) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=700),
    st.builds(lambda a, b: a + b, st.sampled_from([FIREFOX_MAC, CHROME_WINDOWS, SAFARI_IPHONE,
                                                    EDGE_WINDOWS, CURL, "Mozilla/5.0 (", ""]),
              st.text(max_size=300)),
))
def test_any_string_gives_a_short_printable_label_or_none(user_agent):
    label = browser_label(user_agent)
    assert label is None or (isinstance(label, str) and 0 < len(label) <= 100
                             and label.isprintable())


def test_a_long_user_agent_is_labelled_by_what_a_ticket_keeps_of_it():
    assert browser_label(FIREFOX_MAC + " " + "x" * 5000) == "Firefox 140 on macOS"


# -- the same network ----------------------------------------------------------------------------
@pytest.mark.parametrize("a, b, same", [
    ("203.0.113.5", "203.0.113.250", True),
    ("127.0.0.1", "127.0.0.9", True),
    ("203.0.113.5", "203.0.114.5", False),
    ("203.0.113.5", "198.51.100.5", False),
    ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),
    ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
    ("::ffff:203.0.113.5", "203.0.113.77", True),
    ("203.0.113.5", "::ffff:203.0.114.5", False),
    ("203.0.113.5", "2001:db8::1", False),
    ("203.0.113.5", None, False),
    (None, None, False),
    ("", "", False),
    ("not an address", "not an address", False),
    ("203.0.113.0/24", "203.0.113.5", False),
    ("999.0.113.5", "999.0.113.6", False),
])
def test_same_network_is_a_shared_slash_24_or_slash_64(a, b, same):
    assert same_network(a, b) is same
    assert same_network(b, a) is same


# -- through a real server -----------------------------------------------------------------------
@pytest.fixture
def person(provider, phone_client):
    """A user of this test alone (the shared ones decide tickets in other modules), signed in on
    the phone app."""
    username = "signals-" + secrets.token_hex(4)
    password = secrets.token_urlsafe(12)
    provider.create_user(username, password, name="Signal Tester")
    token = sign_in_phone(provider, phone_client, username, password)["access_token"]
    return {"username": username, "password": password, "token": token}


def scanned(provider, web_client, person, **requester) -> tuple[dict, str]:
    """A ticket made by the web client's backend for ``requester``, scanned by ``person``: the
    scan response and the scan code."""
    made = provider.ticket(web_client, **requester)
    code = provider.scan_code(made)
    answer = provider.phone("scan", person["token"], scan_code=code)
    assert answer.status_code == 200, answer.text
    return answer.json(), code


def decided(provider, person, action: str, code: str) -> None:
    answer = provider.phone(action, person["token"], scan_code=code)
    assert answer.status_code == 200, answer.text


def test_a_browser_and_address_are_new_until_the_user_approves_one(provider, web_client, person,
                                                                   phone_client):
    firefox = {"requester_ip": "198.51.100.23", "requester_user_agent": FIREFOX_MAC}
    view, code = scanned(provider, web_client, person, **firefox)
    assert view["requester"] == {"ip": "198.51.100.23", "user_agent": FIREFOX_MAC,
                                 "browser": "Firefox 140 on macOS"}
    assert view["risk"] == {"same_network": False, "first_time": True, "recent_denials": 0}
    # scanned again before deciding: still new
    again = provider.phone("scan", person["token"], scan_code=code).json()
    assert again["risk"]["first_time"] is True
    decided(provider, person, "approve", code)

    view, code = scanned(provider, web_client, person, **firefox)
    assert view["risk"] == {"same_network": False, "first_time": False, "recent_denials": 0}
    decided(provider, person, "approve", code)
    # a patch release is the same browser
    view, _ = scanned(provider, web_client, person, requester_ip="198.51.100.23",
                      requester_user_agent=FIREFOX_MAC_PATCHED)
    assert view["risk"]["first_time"] is False
    # another browser at the same address, the same browser at another address: new
    view, _ = scanned(provider, web_client, person, requester_ip="198.51.100.23",
                      requester_user_agent=CHROME_WINDOWS)
    assert view["requester"]["browser"] == "Chrome 131 on Windows"
    assert view["risk"]["first_time"] is True
    view, _ = scanned(provider, web_client, person, requester_ip="198.51.100.24",
                      requester_user_agent=FIREFOX_MAC)
    assert view["risk"]["first_time"] is True
    # and another user's approval makes nothing known to this one
    other_name = "signals-" + secrets.token_hex(4)
    provider.create_user(other_name, "other-password")
    other = {"token": sign_in_phone(provider, phone_client, other_name,
                                    "other-password")["access_token"]}
    view, _ = scanned(provider, web_client, other, **firefox)
    assert view["risk"]["first_time"] is True
    # what is kept names no address
    keys = provider.db("SELECT key FROM user_signals WHERE kind = 'approved'")
    assert (requester_key("198.51.100.23", FIREFOX_MAC),) in keys
    assert not [key for (key,) in keys if "198.51.100" in key]


def test_a_requester_without_a_user_agent_is_known_by_its_address(provider, web_client, person):
    view, code = scanned(provider, web_client, person, requester_ip="2001:db8:5::7")
    assert view["requester"]["browser"] is None and view["risk"]["first_time"] is True
    decided(provider, person, "approve", code)
    view, _ = scanned(provider, web_client, person, requester_ip="2001:db8:5::7")
    assert view["risk"]["first_time"] is False


def test_denials_of_the_last_day_are_counted(provider, web_client, person):
    requester = {"requester_ip": "203.0.113.5", "requester_user_agent": CHROME_WINDOWS}
    view, code = scanned(provider, web_client, person, **requester)
    assert view["risk"]["recent_denials"] == 0
    decided(provider, person, "deny", code)
    view, code = scanned(provider, web_client, person, **requester)
    assert view["risk"] == {"same_network": False, "first_time": True, "recent_denials": 1}
    decided(provider, person, "deny", code)
    view, code = scanned(provider, web_client, person, **requester)
    assert view["risk"]["recent_denials"] == 2
    # a denial is not an approval: the requester is still new
    assert view["risk"]["first_time"] is True
    # a denial older than a day does not count
    user_id = provider.db("SELECT id FROM users WHERE username = ?", person["username"])[0][0]
    provider.db("UPDATE user_signals SET at = ? WHERE user_id = ? AND kind = 'denied'",
                time.time() - DAY - 60, user_id)
    view, _ = scanned(provider, web_client, person, **requester)
    assert view["risk"]["recent_denials"] == 0


def test_same_network_compares_the_phone_with_the_requester(provider, web_client, person):
    # the phone (this test) comes from 127.0.0.1
    near, _ = scanned(provider, web_client, person, requester_ip="127.0.0.9")
    assert near["risk"]["same_network"] is True
    far, _ = scanned(provider, web_client, person, requester_ip="203.0.113.5")
    assert far["risk"]["same_network"] is False
    # without requester context the requester is the backend's peer: this machine
    peer, _ = scanned(provider, web_client, person)
    assert peer["requester"]["browser"] == "Python Requests " + requests.__version__.split(".")[0]
    assert peer["risk"]["same_network"] is True


def confirm_page(provider, browser: requests.Session, code: str) -> requests.Response:
    """Open the QR's link in a signed-in browser and continue: the confirmation page."""
    page = browser.get(f"{provider.url}/s/{code}", timeout=30)
    assert page.status_code == 200, page.text
    shown = submit_form(browser, page, "csrf_token")
    assert shown.status_code == 200 and 'name="decision"' in shown.text, shown.text
    return shown


def test_the_hosted_confirmation_page_shows_the_signals(provider, web_client, person):
    browser = requests.Session()
    login = browser.get(provider.url + "/login", timeout=30)
    assert login_form(browser, login, person["username"],
                      person["password"]).status_code == 302
    requester = {"requester_ip": "203.0.113.5", "requester_user_agent": CHROME_WINDOWS}
    made = provider.ticket(web_client, **requester)
    page = confirm_page(provider, browser, provider.scan_code(made))
    assert "Chrome 131 on Windows · 203.0.113.5" in page.text
    assert "Not on this phone's network" in page.text
    assert "First request from this browser and address" in page.text
    assert "You declined" not in page.text
    assert submit_form(browser, page, "decision", decision="deny").status_code == 200

    made = provider.ticket(web_client, requester_ip="127.0.0.5",
                           requester_user_agent="<b>Shop</b>/1.0")
    page = confirm_page(provider, browser, provider.scan_code(made))
    assert "You declined 1 request in the last 24 hours" in page.text
    assert "Same network as this phone" in page.text
    assert "Unknown browser · 127.0.0.5" in page.text
    assert "&lt;b&gt;Shop&lt;/b&gt;/1.0" in page.text and "<b>Shop" not in page.text
    assert submit_form(browser, page, "decision", decision="approve").status_code == 200
    made = provider.ticket(web_client, requester_ip="127.0.0.5",
                           requester_user_agent="<b>Shop</b>/1.0")
    page = confirm_page(provider, browser, provider.scan_code(made))
    assert "First request from this browser and address" not in page.text


# -- the storage and its upkeep, in the app built here ---------------------------------------------
def test_signals_are_kept_once_per_requester_and_old_denials_are_purged(in_process):
    parts = in_process.app.extensions["qr_oidc"]
    signals: Signals = parts.tickets.signals
    now = time.time()
    with parts.db.session_factory() as session:
        user = User(sub="signals-" + secrets.token_hex(4), username="s-" + secrets.token_hex(4),
                    password_hash="x")
        session.add(user)
        session.commit()
        user_id = user.id
    try:
        assert signals.risk(user_id, "203.0.113.1", "203.0.113.2", FIREFOX_MAC, now) == {
            "same_network": True, "first_time": True, "recent_denials": 0}
        signals.record_approval(user_id, "203.0.113.2", FIREFOX_MAC, now - 100)
        signals.record_approval(user_id, "203.0.113.2", FIREFOX_MAC_PATCHED, now)  # an upsert
        signals.record_denial(user_id, "ticket-new", now - 60)
        signals.record_denial(user_id, "ticket-old", now - DAY - 60)
        signals.record_denial(user_id, "ticket-new", now - 30)  # the same ticket twice: one row
        assert signals.risk(user_id, "198.51.100.1", "203.0.113.2", FIREFOX_MAC, now) == {
            "same_network": False, "first_time": False, "recent_denials": 1}
        with parts.db.session_factory() as session:
            rows = session.execute(select(UserSignal.kind, UserSignal.key, UserSignal.at)
                                   .where(UserSignal.user_id == user_id)).all()
        approvals = [row for row in rows if row.kind == "approved"]
        assert len(approvals) == 1 and approvals[0].at == pytest.approx(now)
        assert sorted(row.key for row in rows if row.kind == "denied") == ["ticket-new",
                                                                          "ticket-old"]
        run_once(parts)  # the maintenance round purges denials older than a day
        with parts.db.session_factory() as session:
            kept = session.execute(select(UserSignal.kind, UserSignal.key)
                                   .where(UserSignal.user_id == user_id)).all()
        assert sorted(tuple(row) for row in kept) == [
            ("approved", requester_key("203.0.113.2", FIREFOX_MAC)), ("denied", "ticket-new")]
    finally:
        parts.db.session.remove()


def test_a_failed_signal_write_leaves_the_decision_standing(in_process, monkeypatch, caplog):
    parts = in_process.app.extensions["qr_oidc"]
    tickets = parts.tickets
    with parts.db.session_factory() as session:
        user = User(sub="s-" + secrets.token_hex(4), username="s-" + secrets.token_hex(4),
                    password_hash="x")
        client = Client(client_id="c-" + secrets.token_hex(4), name="Shop", public=False)
        session.add_all([user, client])
        session.commit()

    def broken(*_args, **_kwargs):
        raise OperationalError("INSERT INTO user_signals", {}, Exception("database is gone"))

    try:
        for action in ("approve", "deny"):
            made = tickets.create(client, "openid", requester_ip="203.0.113.9",
                                  requester_ua=FIREFOX_MAC)
            row = tickets.scan(made.row, user)
            monkeypatch.setattr(tickets.signals, "record_approval", broken)
            monkeypatch.setattr(tickets.signals, "record_denial", broken)
            with caplog.at_level(logging.WARNING, logger="qr_oidc.tickets"):
                if action == "approve":
                    row = tickets.approve(row, user, None)
                else:
                    row = tickets.deny(row, user)
            monkeypatch.undo()
            assert row.status == ("approved" if action == "approve" else "denied")
            assert tickets.reload(row).status == row.status
            assert any("risk hints" in record.getMessage() for record in caplog.records)
            caplog.clear()
        # nothing was kept, and the session still works
        assert tickets.signals.risk(user.id, None, "203.0.113.9", FIREFOX_MAC, time.time()) == {
            "same_network": False, "first_time": True, "recent_denials": 0}
    finally:
        parts.db.session.remove()
