"""Discovery (OIDC Discovery 1.0, RFC 8414) and the JWKS: the metadata SPEC.md promises, every
advertised endpoint answering with its method, RFC 7638 kids computed here independently, no
private key material, and ID tokens naming the active key."""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
import pytest
import requests
from test_e2e import verify_with_jwks

from helpers import DEVICE_GRANT, QR_GRANT, approved_ticket

QR_ENDPOINTS = ["qr_ticket_endpoint", "qr_status_endpoint", "qr_scan_endpoint",
                "qr_approve_endpoint", "qr_deny_endpoint", "qr_inbox_endpoint",
                "backchannel_authentication_endpoint"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
# RFC 7638 §3.2 (RSA, EC) and RFC 8037 §2 (OKP): the required members, in the thumbprint
THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                      "OKP": ("crv", "kty", "x")}


@pytest.fixture(scope="module")
def meta(provider) -> dict:
    response = requests.get(provider.url + "/.well-known/openid-configuration", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


@pytest.fixture(scope="module")
def jwks(meta) -> list[dict]:
    response = requests.get(meta["jwks_uri"], timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].split(";")[0] in ("application/json",
                                                             "application/jwk-set+json")
    body = response.json()
    assert set(body) == {"keys"}
    return body["keys"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rfc7638_thumbprint(jwk: dict) -> str:
    required = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def test_the_thumbprint_helper_gives_the_rfc_7638_example_value():
    # RFC 7638 §3.1: the example RSA key and its thumbprint
    example = {
        "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
             "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v"
             "-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08"
             "qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8"
             "awapJzKnqDKgw",
    }
    assert rfc7638_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


# -- the metadata ----------------------------------------------------------------------------------
def test_discovery_names_the_issuer_this_server_answers_as(provider, meta):
    assert meta["issuer"] == provider.url
    assert not meta["issuer"].endswith("/")


@pytest.mark.parametrize("name", [
    "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
    "device_authorization_endpoint", *QR_ENDPOINTS, "revocation_endpoint",
    "introspection_endpoint",
])
def test_discovery_carries_each_endpoint_as_an_absolute_url(meta, name):
    value = meta.get(name)
    assert isinstance(value, str), f"{name} is missing"
    assert value.startswith(("https://", "http://127.0.0.1", "http://localhost")), value
    assert "?" not in value and "#" not in value


def test_grant_types_supported_are_exactly_the_ones_of_spec(meta):
    """SPEC.md's four, and push login's (CIBA Core §4: an OP that supports CIBA lists it)."""
    grants = meta["grant_types_supported"]
    assert len(grants) == len(set(grants))
    assert set(grants) == {"authorization_code", "refresh_token", DEVICE_GRANT, QR_GRANT,
                           "urn:openid:params:grant-type:ciba"}


def test_discovery_carries_the_required_oidc_metadata(meta):
    assert "code" in meta["response_types_supported"]
    assert meta["subject_types_supported"] and \
        set(meta["subject_types_supported"]) <= {"public", "pairwise"}
    algs = meta["id_token_signing_alg_values_supported"]
    assert "RS256" in algs and "none" not in algs
    assert meta["code_challenge_methods_supported"] == ["S256"]
    methods = meta["token_endpoint_auth_methods_supported"]
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(methods)
    assert "openid" in meta.get("scopes_supported", ["openid"])


def test_every_advertised_id_token_algorithm_has_a_published_key(meta, jwks):
    published = {key["alg"] for key in jwks}
    assert set(meta["id_token_signing_alg_values_supported"]) <= published


# -- every endpoint answers with its method --------------------------------------------------------
METHODS = {
    "authorization_endpoint": "GET",
    "token_endpoint": "POST",
    "userinfo_endpoint": "GET",
    "jwks_uri": "GET",
    "device_authorization_endpoint": "POST",
    "qr_ticket_endpoint": "POST",
    "qr_status_endpoint": "POST",
    "qr_scan_endpoint": "POST",
    "qr_approve_endpoint": "POST",
    "qr_deny_endpoint": "POST",
    "qr_inbox_endpoint": "POST",
    "backchannel_authentication_endpoint": "POST",
    "revocation_endpoint": "POST",
    "introspection_endpoint": "POST",
}


def test_every_advertised_endpoint_answers_with_its_method(meta):
    advertised = {k: v for k, v in meta.items()
                  if (k.endswith("_endpoint") or k == "jwks_uri") and isinstance(v, str)}
    assert set(METHODS) <= set(advertised)
    for name, url in advertised.items():
        method = METHODS.get(name)
        tried = [method] if method else ["GET", "POST"]
        statuses = [requests.request(m, url, allow_redirects=False, timeout=10).status_code
                    for m in tried]
        assert any(s not in (404, 405) and s < 500 for s in statuses), (name, url, statuses)
    assert requests.get(meta["jwks_uri"], timeout=10).status_code == 200


def test_discovery_is_served_under_the_issuer(meta):
    again = requests.get(meta["issuer"] + "/.well-known/openid-configuration", timeout=10)
    assert again.status_code == 200 and again.json()["issuer"] == meta["issuer"]


# -- the JWKS --------------------------------------------------------------------------------------
def test_the_jwks_offers_rs256_es256_and_eddsa_keys_for_signing(jwks):
    assert {key["alg"] for key in jwks} >= {"RS256", "ES256", "EdDSA"}
    kty = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
    for key in jwks:
        assert key["kty"] == kty[key["alg"]], key
        assert key.get("use", "sig") == "sig"
    assert len({key["kid"] for key in jwks}) == len(jwks), "kids are unique"


def test_every_kid_is_the_rfc_7638_thumbprint_of_its_key(jwks):
    assert jwks
    for key in jwks:
        assert key["kid"] == rfc7638_thumbprint(key), key


def test_the_jwks_holds_no_private_key_material(jwks, meta):
    for key in jwks:
        assert not PRIVATE_MEMBERS & set(key), key
        assert key["kty"] != "oct"
    raw = requests.get(meta["jwks_uri"], timeout=10).text
    for member in PRIVATE_MEMBERS - {"k"}:
        assert f'"{member}"' not in raw


def test_the_jwks_publishes_every_active_and_next_key_the_cli_lists(provider, jwks):
    listed = json.loads(provider.cli("keys", "list", "--json").stdout)
    published = {key["kid"] for key in jwks}
    for key in listed:
        if key["status"] in ("active", "next"):
            assert key["kid"] in published, key


def test_tokens_name_the_active_rs256_key_in_their_header(provider, web_client, alice_phone):
    listed = json.loads(provider.cli("keys", "list", "--json").stdout)
    active = [k["kid"] for k in listed if k["alg"] == "RS256" and k["status"] == "active"]
    assert len(active) == 1
    ticket = approved_ticket(provider, web_client, alice_phone, scope="openid")
    response = provider.poll(web_client, ticket["ticket"])
    assert response.status_code == 200, response.text
    tokens = response.json()
    header = jwt.get_unverified_header(tokens["id_token"])
    assert header["alg"] == "RS256"
    assert header["kid"] == active[0]
    verify_with_jwks(provider, tokens["id_token"], audience=web_client["client_id"])
    access = jwt.get_unverified_header(tokens["access_token"])
    assert access["kid"] == active[0] and access["typ"] == "at+jwt"
