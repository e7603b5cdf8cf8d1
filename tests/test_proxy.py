"""The requesting IP the phone is shown: the peer's address, unless trusted proxies are
configured."""

from __future__ import annotations

import requests

from conftest import phone_app
from helpers import Provider, sign_in_phone


def requester_ip(server, client, phone, headers) -> str:
    response = requests.post(server.url + "/qr/ticket", data={"scope": "openid"},
                             auth=(client["client_id"], client["client_secret"]),
                             headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    scan_code = response.json()["qr_content"].rsplit("/", 1)[1]
    scanned = server.phone("scan", phone, scan_code=scan_code)
    assert scanned.status_code == 200
    return scanned.json()["requester"]["ip"]


def test_a_client_cannot_forge_its_address_without_a_trusted_proxy(provider, web_client,
                                                                 alice_phone):
    forged = {"X-Forwarded-For": "203.0.113.9"}
    assert requester_ip(provider, web_client, alice_phone, forged) == "127.0.0.1"


def test_behind_one_trusted_proxy_the_forwarded_address_is_shown(tmp_path):
    server = Provider(tmp_path, {"QR_OIDC_TRUSTED_PROXIES": "1"})
    server.start()
    try:
        client = server.create_client("--name", "Proxied shop")
        server.create_user("gail", "gail-password")
        phone = sign_in_phone(server, phone_app(server), "gail", "gail-password")["access_token"]
        # the proxy appends the address it saw; only the last hop is trusted
        chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}
        assert requester_ip(server, client, phone, chain) == "203.0.113.9"
    finally:
        server.stop()
