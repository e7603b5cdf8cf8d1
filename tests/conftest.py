"""Fixtures: real ``qr-oidc serve`` processes on free loopback ports, and the people and clients
a relying party and a phone bring to them. Nothing is mocked: every test talks HTTP to a server
process, and the CLI is run as the operator runs it.
"""

from __future__ import annotations

import pytest

from helpers import Provider, sign_in_phone


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def provider(request, tmp_path_factory):
    """The shared server; every test that uses it runs on SQLite and on PostgreSQL."""
    server = Provider(tmp_path_factory.mktemp("provider"), {"QR_OIDC_POLL_INTERVAL": "2"},
                      backend=request.param)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def web_client(provider):
    """A confidential relying party that may use the QR grant."""
    return provider.create_client("--name", "Web shop", "--logo-uri", "https://shop.example/logo.png")


@pytest.fixture(scope="session")
def post_client(provider):
    """A confidential relying party registered with client_secret_post (secret in the body)."""
    return provider.create_client("--name", "Form shop", "--token-endpoint-auth-method",
                                  "client_secret_post")


@pytest.fixture(scope="session")
def public_client(provider):
    return provider.create_client("--name", "Single-page app", "--public")


@pytest.fixture(scope="session")
def nm_client(provider):
    return provider.create_client("--name", "Bank", "--number-matching")


@pytest.fixture(scope="session")
def phone_client(provider):
    """The mobile app: first-party, public, PKCE, may ask for qr:approve."""
    return phone_app(provider)


def phone_app(provider):
    return provider.create_client(
        "--name", "Our app", "--public", "--first-party",
        "--redirect-uri", "http://127.0.0.1/callback",
        "--grant-type", "authorization_code",
        "--scope", "openid profile qr:approve",
    )


@pytest.fixture(scope="session")
def alice(provider):
    return provider.create_user("alice", "alice-password", name="Alice Liddell",
                                picture="https://pics.example/alice.png", email="alice@example.org")


@pytest.fixture(scope="session")
def bob(provider):
    return provider.create_user("bob", "bob-password", name="Bob Builder")


@pytest.fixture(scope="session")
def alice_phone(provider, phone_client, alice):
    """An access token with qr:approve, got the way the app gets it: the hosted login form."""
    return sign_in_phone(provider, phone_client, "alice", "alice-password")["access_token"]


@pytest.fixture(scope="session")
def bob_phone(provider, phone_client, bob):
    return sign_in_phone(provider, phone_client, "bob", "bob-password")["access_token"]
