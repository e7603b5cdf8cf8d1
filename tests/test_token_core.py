"""One token core (grants/token_core.py) behind both front ends of the ticket grants.

``qr-oidc serve`` answers the QR and device token polls on its event loop (provider/web/events.py);
the same app's Flask side answers them through Authlib's grant (grants/qr_ticket.py) when Flask
gets the request (here: the app in process, on the same database as a running server). Both
call ``TokenCore.poll``: the same bytes for the same case, one interval kept with the ticket,
one redemption across both. Which front end answered is shown by the access log: the event
path's lines end ``event``, Flask's the milliseconds.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
import requests

from conftest import phone_app
from helpers import (
    DEVICE_GRANT,
    QR_GRANT,
    Provider,
    approved_ticket,
    pkce,
    sign_in_phone,
)

SHOWN = ("content-type", "cache-control", "pragma", "www-authenticate",
         "x-content-type-options", "referrer-policy", "x-frame-options",
         "content-security-policy")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def both(request, tmp_path_factory):
    """A running server, and the same app in process on its database."""
    from qr_oidc.provider.web.app import create_app

    server = Provider(tmp_path_factory.mktemp("core"), {"QR_OIDC_POLL_INTERVAL": "2"},
                      backend=request.param)
    server.start()
    app = create_app({"DATABASE_URL": server.database_url, "MAINTENANCE_INTERVAL": 3600,
                      "ISSUER": server.url})
    web = server.create_client("--name", "Core shop")
    spa = server.create_client("--name", "Core app", "--public")
    phone = phone_app(server)
    server.create_user("dora", "dora-password", name="Dora")
    token = sign_in_phone(server, phone, "dora", "dora-password")["access_token"]
    try:
        yield server, app.test_client(), web, spa, token
    finally:
        app.extensions["qr_oidc"].db.engine.dispose()
        app.extensions["qr_oidc"].db.autocommit_engine.dispose()
        server.stop()


def _flask(client, data, auth=None):
    headers = {}
    if auth:
        import base64

        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{auth[0]}:{auth[1]}".encode()).decode()
    return client.post("/token", data=data, headers=headers)


def _served(server, data, auth=None):
    return requests.post(server.url + "/token", data=data, auth=auth, timeout=30)


def _shown(headers) -> dict:
    return {k.lower(): v for k, v in headers.items() if k.lower() in SHOWN}


def _lines(server, marker: str) -> int:
    return sum(1 for line in server.log().splitlines()
               if "qr_oidc.access POST /token " in line and line.endswith(marker))


def test_both_front_ends_give_the_same_bytes_for_every_error(both, caplog):
    server, flask, web, spa, phone = both
    auth = (web["client_id"], web["client_secret"])
    denied = server.ticket(web)
    server.phone("scan", phone, scan_code=server.scan_code(denied))
    server.phone("deny", phone, scan_code=server.scan_code(denied))
    cases = {
        "missing ticket": ({"grant_type": QR_GRANT}, auth),
        "wrong secret": ({"grant_type": QR_GRANT, "ticket": "x"}, (web["client_id"], "nope")),
        "unknown ticket": ({"grant_type": QR_GRANT, "ticket": "no-such-ticket"}, auth),
        "denied": ({"grant_type": QR_GRANT, "ticket": denied["ticket"]}, auth),
        "bad resource": ({"grant_type": QR_GRANT, "ticket": "x", "resource": "no-uri"}, auth),
        "device code of another client": (
            {"grant_type": DEVICE_GRANT, "device_code": denied["ticket"],
             "client_id": spa["client_id"]}, None),
    }
    before = _lines(server, "event")
    with caplog.at_level(logging.INFO, logger="qr_oidc.access"):
        for name, (data, credentials) in cases.items():
            event, flask_answer = _served(server, data, credentials), _flask(flask, data,
                                                                              credentials)
            assert event.status_code == flask_answer.status_code, name
            assert event.content == flask_answer.data, name
            assert _shown(event.headers) == _shown(flask_answer.headers), name
    # the served ones were the event path's; the others Flask's, through Authlib's grant
    assert _lines(server, "event") >= before + len(cases)
    flask_lines = [r.getMessage() for r in caplog.records if r.name == "qr_oidc.access"]
    assert len(flask_lines) == len(cases)
    assert all(line.startswith("POST /token ") and line.endswith("ms") for line in flask_lines)


def test_the_interval_is_kept_with_the_ticket_whichever_front_end_is_polled(both):
    server, flask, web, _spa, _phone = both
    auth = (web["client_id"], web["client_secret"])
    ticket = server.ticket(web)["ticket"]
    data = {"grant_type": QR_GRANT, "ticket": ticket}
    first = _flask(flask, data, auth)
    assert first.status_code == 400 and first.get_json()["error"] == "authorization_pending"
    second = _served(server, data, auth)
    assert second.json()["error"] == "slow_down"
    third = _flask(flask, data, auth)
    assert third.get_json()["error"] == "slow_down"
    digest = __import__("hashlib").sha256(ticket.encode()).hexdigest()
    assert server.db("SELECT poll_interval FROM tickets WHERE ticket_hash = ?",
                     digest) == [(12,)]
    # and a pending answer is the same bytes from both
    again = server.ticket(web)["ticket"]
    event = _served(server, {"grant_type": QR_GRANT, "ticket": again}, auth)
    other = server.ticket(web)["ticket"]
    flask_answer = _flask(flask, {"grant_type": QR_GRANT, "ticket": other}, auth)
    assert event.content == flask_answer.data
    assert json.loads(event.content)["error"] == "authorization_pending"


@pytest.mark.parametrize("first", ["event", "flask"])
def test_a_ticket_is_redeemed_once_across_both_front_ends(both, first):
    server, flask, _web, spa, phone = both
    verifier, challenge = pkce()
    ticket = approved_ticket(server, spa, phone, client_id=spa["client_id"],
                             code_challenge=challenge, code_challenge_method="S256",
                             scope="openid profile", nonce="n-1")
    data = {"grant_type": QR_GRANT, "ticket": ticket["ticket"], "client_id": spa["client_id"],
            "code_verifier": verifier}
    if first == "event":
        won, lost = _served(server, data), _flask(flask, data)
        tokens, refused = won.json(), lost.get_json()
    else:
        won, lost = _flask(flask, data), _served(server, data)
        tokens, refused = won.get_json(), lost.json()
    assert won.status_code == 200 and list(tokens) == ["access_token", "token_type",
                                                       "expires_in", "scope", "id_token"]
    assert lost.status_code == 400 and refused["error"] == "invalid_grant"
    # the tokens of either front end work at the server
    info = requests.get(server.url + "/userinfo", timeout=30,
                        headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200 and info.json()["name"] == "Dora"


def test_the_apps_own_status_endpoint_answers_at_once(both):
    """Without the event loop a long poll would hold a thread: the app alone answers with the
    current status whatever ``wait`` asks (``qr-oidc serve`` holds it: test_long_polls.py)."""
    server, flask, web, _spa, _phone = both
    ticket = server.ticket(web)["ticket"]
    answer = flask.post("/qr/status", data={"ticket": ticket, "wait": "20",
                                            "last_status": "pending"})
    assert answer.status_code == 200 and answer.get_json()["status"] == "pending"
    event = requests.post(server.url + "/qr/status", timeout=30,
                          data={"ticket": ticket, "wait": "0"})
    # the same bytes but for the seconds left, which may have ticked meanwhile
    assert re.sub(rb'"expires_in":\d+', b"", event.content) == \
        re.sub(rb'"expires_in":\d+', b"", answer.data)
