"""Fixtures: real ``qr-oidc serve`` processes on free loopback ports, and the people and clients
a relying party and a phone bring to them; and the app built in the test's own process
(``in_process``, ``make_in_process``) for logic that needs no server process. Nothing is mocked:
tests talk HTTP to a server process or go through the whole Flask app, and the CLI is run as the
operator runs it.

The shared server runs once per backend for the whole session (per pytest-xdist worker): the
``provider`` fixture is parametrized per module, but what it hands out (the server, and the
clients, people and tokens made on it) is kept in ``_shared`` until the session ends. A module
that switches from SQLite to PostgreSQL therefore finds both already running instead of
stopping one and starting the other, which is what a session-scoped parametrized fixture does
each time the order of tests switches backends (with xdist's ``--dist loadscope``, in every
module).
"""

from __future__ import annotations

import pytest

from helpers import InProcess, Provider, sign_in_phone

# Modules that take longest, started first: pytest-xdist hands whole modules to its workers in
# the order of collection (``--dist loadscope``), so a long module collected last would run
# alone at the end. Those that mostly wait (poll intervals, retries' backoff, Node clients: their
# wall time two to four times their CPU) alternate with those that keep a core busy (benchmarks,
# the fuzzer, the browser), so that the two cores stay busy while some tests wait. Others follow
# in their usual order.
LONGEST_FIRST = [
    "test_bench_smoke.py", "test_openid_client.py", "test_openapi.py", "test_browser.py",
    "test_ciba.py", "test_long_polls.py", "test_progress.py", "test_cli.py",
    "test_push_webhook.py", "test_hardening.py", "test_hosted_sessions.py", "test_html_fuzz.py",
    "test_dpop.py", "test_properties.py", "test_metrics.py", "test_languages.py",
    "test_logout.py", "test_migrations.py", "test_cluster.py", "test_limits.py", "test_keys.py",
    "test_tickets.py",
]


@pytest.hookimpl(trylast=True)  # after pytest's own grouping of tests by fixture parameter
def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps the rest


class Shared:
    """One server per backend, started on first use; and what was made on it, made once."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.servers: dict[str, Provider] = {}
        self.made: dict[tuple[str, str], object] = {}

    def server(self, backend: str) -> Provider:
        if backend not in self.servers:
            server = Provider(self.tmp_path_factory.mktemp(f"provider-{backend}"),
                              {"QR_OIDC_POLL_INTERVAL": "2"}, backend=backend)
            try:
                server.start()
            except BaseException:
                server.stop()
                raise
            self.servers[backend] = server
        return self.servers[backend]

    def once(self, provider: Provider, name: str, make):
        key = (provider.backend, name)
        if key not in self.made:
            self.made[key] = make()
        return self.made[key]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def _shared(tmp_path_factory):
    shared = Shared(tmp_path_factory)
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def provider(request, _shared):
    """The shared server; every test that uses it runs on SQLite and on PostgreSQL."""
    return _shared.server(request.param)


@pytest.fixture(scope="module")
def web_client(provider, _shared):
    """A confidential relying party that may use the QR grant."""
    return _shared.once(provider, "web_client", lambda: provider.create_client(
        "--name", "Web shop", "--logo-uri", "https://shop.example/logo.png"))


@pytest.fixture(scope="module")
def post_client(provider, _shared):
    """A confidential relying party registered with client_secret_post (secret in the body)."""
    return _shared.once(provider, "post_client", lambda: provider.create_client(
        "--name", "Form shop", "--token-endpoint-auth-method", "client_secret_post"))


@pytest.fixture(scope="module")
def public_client(provider, _shared):
    return _shared.once(provider, "public_client", lambda: provider.create_client(
        "--name", "Single-page app", "--public"))


@pytest.fixture(scope="module")
def nm_client(provider, _shared):
    return _shared.once(provider, "nm_client", lambda: provider.create_client(
        "--name", "Bank", "--number-matching"))


@pytest.fixture(scope="module")
def phone_client(provider, _shared):
    """The mobile app: first-party, public, PKCE, may ask for qr:approve."""
    return _shared.once(provider, "phone_client", lambda: phone_app(provider))


def phone_app(provider):
    return provider.create_client(
        "--name", "Our app", "--public", "--first-party",
        "--redirect-uri", "http://127.0.0.1/callback",
        "--grant-type", "authorization_code",
        "--scope", "openid profile qr:approve",
    )


@pytest.fixture(scope="module")
def alice(provider, _shared):
    return _shared.once(provider, "alice", lambda: provider.create_user(
        "alice", "alice-password", name="Alice Liddell", picture="https://pics.example/alice.png",
        email="alice@example.org"))


@pytest.fixture(scope="module")
def bob(provider, _shared):
    return _shared.once(provider, "bob", lambda: provider.create_user(
        "bob", "bob-password", name="Bob Builder"))


@pytest.fixture(scope="module")
def alice_phone(provider, phone_client, alice, _shared):
    """An access token with qr:approve, got the way the app gets it: the hosted login form."""
    return _shared.once(provider, "alice_phone", lambda: sign_in_phone(
        provider, phone_client, "alice", "alice-password")["access_token"])


@pytest.fixture(scope="module")
def bob_phone(provider, phone_client, bob, _shared):
    return _shared.once(provider, "bob_phone", lambda: sign_in_phone(
        provider, phone_client, "bob", "bob-password")["access_token"])


# -- the app in this process -----------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def in_process(request, tmp_path_factory):
    """The app built here (``create_app``) on a database of its own, SQLite and PostgreSQL: see
    helpers.InProcess."""
    app = InProcess(tmp_path_factory.mktemp("in-process"), backend=request.param)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def make_in_process(tmp_path):
    """Build the app here with settings of the test's own: ``make_in_process({"ISSUER": ...},
    backend="sqlite", build=True)``; each is closed (its PostgreSQL database dropped) after the
    test."""
    made: list[InProcess] = []

    def make(settings: dict | None = None, backend: str = "sqlite",
             build: bool = True) -> InProcess:
        made.append(InProcess(tmp_path / f"app-{len(made)}", settings, backend, build))
        return made[-1]

    try:
        yield make
    finally:
        for app in made:
            app.close()
