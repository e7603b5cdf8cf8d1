"""Signing keys: rotation on a running server without breaking a token, every algorithm verified
with an independent JOSE library (PyJWT), private keys encrypted at rest with a passphrase."""

from __future__ import annotations

import json
import subprocess
import time

import jwt
import pytest
import requests

from conftest import phone_app
from helpers import BIN, Provider, approved_ticket, sign_in_phone

MAX_AGE = 2  # the JWKS max-age this server advertises
REFRESH = 1  # how often an instance re-reads the key table
MIN_PUBLISHED = MAX_AGE + 2 * REFRESH  # keys/rotation + provider/maintenance


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    server = Provider(tmp_path_factory.mktemp("keys"), {
        "QR_OIDC_KEY_PASSPHRASE": "correct horse battery staple",
        "QR_OIDC_JWKS_MAX_AGE": str(MAX_AGE),
        "QR_OIDC_KEY_REFRESH": str(REFRESH),
        "QR_OIDC_POLL_INTERVAL": "1",
    })
    server.start()
    server.client = server.create_client("--name", "RS shop")
    server.create_user("kim", "kim-password", name="Kim")
    server.phone_token = sign_in_phone(server, phone_app(server), "kim", "kim-password")[
        "access_token"]
    yield server
    server.stop()


def login(server, client) -> dict:
    ticket = approved_ticket(server, client, server.phone_token)
    response = server.poll(client, ticket["ticket"])
    assert response.status_code == 200, response.text
    return response.json()


def verify(token: str, jwks: dict, audience: str, issuer: str) -> dict:
    header = jwt.get_unverified_header(token)
    keys = {k["kid"]: k for k in jwks["keys"]}
    if header["kid"] not in keys:
        raise LookupError(f"unknown kid {header['kid']}")
    key = jwt.PyJWK(keys[header["kid"]])
    return jwt.decode(token, key.key, algorithms=[header["alg"]], audience=audience, issuer=issuer)


class CachingRelyingParty:
    """Fetches the JWKS and keeps it for exactly the max-age the response advertises."""

    def __init__(self, server):
        self.server, self.jwks, self.fetched = server, None, 0.0
        self.max_age = None

    def keys(self) -> dict:
        if self.jwks is None or time.monotonic() - self.fetched >= self.max_age:
            response = requests.get(self.server.meta["jwks_uri"], timeout=10)
            self.max_age = int(response.headers["Cache-Control"].split("max-age=")[1])
            self.jwks, self.fetched = response.json(), time.monotonic()
        return self.jwks

    def check(self, tokens: dict, client: dict) -> str:
        claims = verify(tokens["id_token"], self.keys(), client["client_id"], self.server.url)
        assert claims["amr"] == ["qr"]
        return jwt.get_unverified_header(tokens["id_token"])["kid"]


def active_kid(server, alg="RS256") -> str:
    keys = json.loads(server.cli("keys", "list", "--json").stdout)
    active = [k["kid"] for k in keys if k["alg"] == alg and k["status"] == "active"]
    assert len(active) == 1
    return active[0]


def rotate_when_allowed(server) -> None:
    """keys rotate refuses while the next key is younger than any JWKS cache; wait that out."""
    listed = json.loads(server.cli("keys", "list", "--json").stdout)
    newest_next = max(k["created_at"] for k in listed if k["status"] == "next")
    time.sleep(max(0.0, newest_next + MIN_PUBLISHED + 1 - time.time()))
    server.cli("keys", "rotate", "--alg", "RS256")


def test_jwks_advertises_a_max_age_shorter_than_a_next_key_waits(keyed):
    response = requests.get(keyed.meta["jwks_uri"], timeout=10)
    assert response.headers["Cache-Control"] == f"public, max-age={MAX_AGE}"
    statuses = {(k["alg"], k["status"])
                for k in json.loads(keyed.cli("keys", "list", "--json").stdout)}
    published = {k["kid"] for k in response.json()["keys"]}
    listed = json.loads(keyed.cli("keys", "list", "--json").stdout)
    assert {k["kid"] for k in listed if k["status"] in ("active", "next")} <= published
    for alg in ("RS256", "ES256", "EdDSA"):
        assert (alg, "active") in statuses and (alg, "next") in statuses


def test_rotating_too_soon_is_refused_with_a_reason(keyed):
    # right after a rotation the new next key is brand new: rotating again would let a
    # relying party meet an unknown kid
    server = keyed
    rotate_when_allowed(server)
    early = server.cli("keys", "rotate", "--alg", "RS256", check=False)
    assert early.returncode != 0
    assert early.stderr.startswith("qr-oidc: error:") and "JWKS" in early.stderr
    assert len(early.stderr.strip().splitlines()) == 1


def test_rotation_on_a_running_server_never_breaks_a_token(keyed):
    server, client = keyed, keyed.client
    relying_party = CachingRelyingParty(server)
    # the server signs with the active key (an earlier test may have rotated less than a
    # KEY_REFRESH ago: until the server re-reads the key table it signs with the one before)
    active, deadline = active_kid(server), time.monotonic() + 10
    while True:
        before = login(server, client)
        first_kid = relying_party.check(before, client)
        if first_kid == active or time.monotonic() > deadline:
            break
    assert first_kid == active

    seen = [first_kid]
    for _rotation in range(2):
        rotate_when_allowed(server)
        new_kid = active_kid(server)
        assert new_kid not in seen
        # the running server signs with the new key within ten seconds, with no restart;
        # meanwhile every token it hands out verifies for the caching relying party
        deadline = time.monotonic() + 10
        while True:
            kid = relying_party.check(login(server, client), client)
            if kid == new_kid:
                break
            assert kid in seen and time.monotonic() < deadline, "new key not used in 10 s"
        seen.append(new_kid)

    # the token signed before both rotations still verifies against the served JWKS
    jwks = requests.get(server.meta["jwks_uri"], timeout=10).json()
    assert verify(before["id_token"], jwks, client["client_id"], server.url)["amr"] == ["qr"]
    info = requests.get(server.meta["userinfo_endpoint"],
                        headers={"Authorization": f"Bearer {before['access_token']}"}, timeout=10)
    assert info.status_code == 200


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_each_algorithm_verifies_with_an_independent_library(keyed, alg):
    client = keyed.create_client("--name", f"{alg} shop", "--id-token-alg", alg)
    assert client["id_token_signed_response_alg"] == alg
    tokens = login(keyed, client)
    header = jwt.get_unverified_header(tokens["id_token"])
    assert header["alg"] == alg and header["kid"] == active_kid(keyed, alg)
    jwks = requests.get(keyed.meta["jwks_uri"], timeout=10).json()
    assert verify(tokens["id_token"], jwks, client["client_id"], keyed.url)["sub"]
    assert alg in keyed.meta["id_token_signing_alg_values_supported"]


def test_no_private_key_in_clear_and_none_published(keyed):
    rows = keyed.db("SELECT private_pem, encrypted FROM signing_keys")
    assert rows
    for pem, encrypted in rows:
        assert encrypted == 1
        assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    for key in requests.get(keyed.meta["jwks_uri"], timeout=10).json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    assert "PRIVATE KEY" not in keyed.log()


def test_encrypted_keys_and_no_passphrase_refuse_to_start(keyed):
    env = {k: v for k, v in keyed.env.items() if k != "QR_OIDC_KEY_PASSPHRASE"}
    env["QR_OIDC_PORT"] = "1"  # never reached: it must stop before binding
    for extra in ({}, {"QR_OIDC_KEY_PASSPHRASE": "wrong"}):
        result = subprocess.run([BIN, "serve"], env={**env, **extra}, capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode != 0
        assert "QR_OIDC_KEY_PASSPHRASE" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_the_signer_makes_tokens_joserfc_and_pyjwt_accept(alg):
    """keys/jws.py signs without joserfc: what it makes must verify with both libraries, claims
    outside ASCII included, and a tampered payload must not."""
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import KeySet

    from qr_oidc.keys.jws import sign_compact
    from qr_oidc.keys.keyset import generate

    key = generate(alg)
    public = KeySet.import_key_set({"keys": [dict(key.as_dict(private=False), kid="k1")]})
    claims = {"iss": "https://issuer.example", "sub": "s", "name": "Zoë \u00e9\u4e2d \U0001f600",
              "exp": 4102444800}
    token = sign_compact(key, {"alg": alg, "kid": "k1", "typ": "JWT"}, claims)
    assert jose_jwt.decode(token, public, algorithms=[alg]).claims == claims
    pyjwt_key = jwt.PyJWK(dict(key.as_dict(private=False), kid="k1", alg=alg)).key
    assert jwt.decode(token, pyjwt_key, algorithms=[alg], options={"verify_aud": False}) == claims
    head, payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(json.dumps({**claims, "sub": "t"}).encode()).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{forged}.{signature}", pyjwt_key, algorithms=[alg],
                   options={"verify_aud": False})
