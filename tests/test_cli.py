"""The operator's CLI, run as a subprocess against the test server's database: clients, users and
keys; machine-readable output with --json, one-line errors, and no secret stored in clear."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from helpers import DEVICE_GRANT, QR_GRANT

ALL_GRANTS = ["authorization_code", "refresh_token", DEVICE_GRANT, QR_GRANT]


# Commands run in a process forked from one that made the CLI's imports once (helpers.run_cli):
# the CLI's own code, its own standard streams and exit status. These tests run the installed
# ``qr-oidc`` script from scratch instead, so that the whole program (interpreter start, imports,
# exit) is held to "only JSON on standard output" and "one line on standard error" too.
FROM_SCRATCH = {
    "test_creating_a_confidential_client_prints_only_json_with_its_id_and_secret",
    "test_creating_a_user_prints_json_without_the_password",
    "test_a_duplicate_username_exits_non_zero_with_one_error_line",
    "test_keys_list_shows_an_active_and_a_next_key_for_each_algorithm",
}


@pytest.fixture(autouse=True)
def as_the_operator_runs_it(request, provider):
    provider.fork_cli = request.node.originalname not in FROM_SCRATCH
    yield
    provider.fork_cli = True


def create(provider, *args: str):
    return provider.cli("clients", "create", *args, "--json", check=False)


def only_json(result) -> dict | list:
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out[:1] in ("{", "["), f"standard output is not only JSON: {result.stdout!r}"
    return json.loads(out)  # raises on anything but exactly one JSON document


def one_error_line(result) -> str:
    assert result.returncode != 0
    assert result.stdout == "", f"nothing on standard output, got {result.stdout!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"exactly one line on standard error, got {result.stderr!r}"
    assert lines[0].startswith("qr-oidc: error:"), lines[0]
    return lines[0]


def stored_bytes(provider) -> bytes:
    """Everything the database keeps (SQLite: the file and its journals; PostgreSQL: all rows)."""
    return provider.dump()


def count(provider, table: str) -> int:
    return provider.db(f"SELECT COUNT(*) FROM {table}")[0][0]


# -- clients create --------------------------------------------------------------------------------
def test_creating_a_confidential_client_prints_only_json_with_its_id_and_secret(provider):
    out = only_json(create(provider, "--name", "Shop backend"))
    assert isinstance(out["client_id"], str) and out["client_id"]
    assert isinstance(out["client_secret"], str)
    assert len(out["client_secret"]) >= 22, "a client secret carries at least 128 bits"
    assert out["client_secret"] != out["client_id"]
    assert out["first_party"] is False and out["number_matching"] is False
    assert out["redirect_uris"] == []
    assert set(out["grant_types"]) <= set(ALL_GRANTS)


def test_creating_a_public_client_prints_no_secret(provider):
    out = only_json(create(provider, "--name", "Browser app", "--public"))
    assert out["client_id"]
    assert out.get("client_secret") is None
    assert provider.db("SELECT secret_hash FROM clients WHERE client_id=?",
                       out["client_id"]) == [(None,)]


def test_client_creation_echoes_every_setting_and_keeps_repeated_options_in_order(provider):
    out = only_json(create(
        provider, "--name", "Kiosk", "--first-party", "--number-matching",
        "--redirect-uri", "https://kiosk.example/cb", "--redirect-uri", "http://127.0.0.1/cb",
        "--redirect-uri", "com.example.kiosk:/oauth",
        "--grant-type", QR_GRANT, "--grant-type", "refresh_token",
        "--grant-type", "authorization_code",
        "--scope", "openid profile qr:approve", "--logo-uri", "https://kiosk.example/logo.png",
    ))
    assert out["redirect_uris"] == ["https://kiosk.example/cb", "http://127.0.0.1/cb",
                                    "com.example.kiosk:/oauth"]
    assert out["grant_types"] == [QR_GRANT, "refresh_token", "authorization_code"]
    assert out["scope"].split() == ["openid", "profile", "qr:approve"]
    assert out["number_matching"] is True
    assert out["first_party"] is True
    assert out["client_secret"]


def test_a_client_limited_by_grant_type_may_use_only_those_grants(provider):
    code_only = only_json(create(provider, "--name", "Code only",
                                 "--redirect-uri", "https://code.example/cb",
                                 "--grant-type", "authorization_code"))
    qr = only_json(create(provider, "--name", "QR only", "--grant-type", QR_GRANT))
    refused = requests.post(provider.url + "/qr/ticket", data={"scope": "openid"},
                            auth=(code_only["client_id"], code_only["client_secret"]),
                            timeout=30)
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    allowed = requests.post(provider.url + "/qr/ticket", data={"scope": "openid"},
                            auth=(qr["client_id"], qr["client_secret"]), timeout=30)
    assert allowed.status_code == 201, allowed.text


def test_a_client_may_ask_only_for_the_scope_it_was_given(provider):
    narrow = only_json(create(provider, "--name", "Narrow", "--scope", "openid"))
    response = requests.post(provider.url + "/qr/ticket", data={"scope": "openid email"},
                             auth=(narrow["client_id"], narrow["client_secret"]), timeout=30)
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("args", [
    ["--name", "X", "--grant-type", "client_credentials"],
    ["--name", "X", "--grant-type", "authorization_code", "--grant-type", "password"],
    ["--name", "X", "--grant-type", "urn:qr-oidc:params:oauth:grant-type:qr"],
    ["--name", "X", "--redirect-uri", "not a uri"],
    ["--name", "X", "--redirect-uri", "/relative/callback"],
    ["--name", "X", "--redirect-uri", "https://rp.example/cb#fragment"],
    ["--name", "X", "--redirect-uri", "https:///cb"],
    ["--name", "X", "--redirect-uri", "https://ok.example/cb", "--redirect-uri", "nope"],
    ["--name", "X", "--redirect-uri", "javascript:alert(1)"],
    ["--name", "X", "--redirect-uri", "data:text/html,<script>alert(1)</script>"],
    ["--public"],
    ["--name", ""],
    ["--name", "   "],
], ids=["unknown_grant_type", "one_unknown_grant_type", "misspelt_qr_grant", "uri_with_spaces",
        "relative_uri", "uri_with_fragment", "uri_without_host", "one_bad_uri_of_two",
        "javascript_uri", "data_uri", "missing_name", "empty_name", "blank_name"])
def test_a_bad_client_option_exits_non_zero_with_one_error_line_and_creates_nothing(provider,
                                                                                   args):
    before = count(provider, "clients")
    result = create(provider, *args)
    one_error_line(result)
    assert count(provider, "clients") == before


def test_the_client_secret_is_stored_only_as_its_sha256_digest(provider):
    out = only_json(create(provider, "--name", "Digest check"))
    secret = out["client_secret"]
    rows = provider.db("SELECT secret_hash FROM clients WHERE client_id=?", out["client_id"])
    assert rows == [(hashlib.sha256(secret.encode()).hexdigest(),)]
    assert secret.encode() not in stored_bytes(provider)


# -- users create ----------------------------------------------------------------------------------
def test_creating_a_user_prints_json_without_the_password(provider):
    result = provider.cli("users", "create", "--username", "carol", "--password",
                          "carol-secret-pw", "--name", "Carol", "--email", "carol@example.org",
                          "--json", check=False)
    out = only_json(result)
    assert out["username"] == "carol" and out["name"] == "Carol"
    assert out["email"] == "carol@example.org" and out["sub"]
    assert "carol-secret-pw" not in result.stdout + result.stderr


def test_a_duplicate_username_exits_non_zero_with_one_error_line(provider):
    provider.cli("users", "create", "--username", "dave", "--password", "dave-password-1")
    before = provider.db("SELECT password_hash FROM users WHERE username='dave'")
    result = provider.cli("users", "create", "--username", "dave", "--password",
                          "dave-password-2", check=False)
    line = one_error_line(result)
    assert "dave-password" not in line
    assert provider.db("SELECT password_hash FROM users WHERE username='dave'") == before
    assert count_users(provider, "dave") == 1


def count_users(provider, username: str) -> int:
    return provider.db("SELECT COUNT(*) FROM users WHERE username=?", username)[0][0]


@pytest.mark.parametrize("args", [
    ["--password", "some-password"],
    ["--username", "erin"],
    ["--username", "", "--password", "some-password"],
], ids=["missing_username", "missing_password", "empty_username"])
def test_a_bad_user_option_exits_non_zero_with_one_error_line(provider, args):
    before = count(provider, "users")
    one_error_line(provider.cli("users", "create", *args, "--json", check=False))
    assert count(provider, "users") == before


def test_the_user_password_is_not_stored_in_clear_and_is_salted(provider):
    password = "frank-and-gina-share-this-one"
    provider.cli("users", "create", "--username", "frank", "--password", password)
    provider.cli("users", "create", "--username", "gina", "--password", password)
    rows = provider.db("SELECT * FROM users WHERE username IN ('frank', 'gina')")
    assert len(rows) == 2
    for row in rows:
        for value in row:
            assert password not in str(value)
    hashes = [h for (h,) in provider.db(
        "SELECT password_hash FROM users WHERE username IN ('frank', 'gina')")]
    assert hashes[0] != hashes[1], "the same password hashes differently per user (salt)"
    for fast in (hashlib.sha256, hashlib.sha1, hashlib.md5):
        assert fast(password.encode()).hexdigest() not in hashes[0]
    assert password.encode() not in stored_bytes(provider)


# -- keys ------------------------------------------------------------------------------------------
def test_keys_list_shows_an_active_and_a_next_key_for_each_algorithm(provider):
    keys = only_json(provider.cli("keys", "list", "--json", check=False))
    assert isinstance(keys, list)
    assert {k["alg"] for k in keys} == {"RS256", "ES256", "EdDSA"}
    assert len({k["kid"] for k in keys}) == len(keys), "kids are unique"
    for alg in ("RS256", "ES256", "EdDSA"):
        statuses = [k["status"] for k in keys if k["alg"] == alg]
        assert statuses.count("active") == 1, (alg, statuses)
        assert statuses.count("next") == 1, (alg, statuses)
        assert set(statuses) <= {"active", "next", "retired"}
    published = {k["kid"] for k in requests.get(provider.meta["jwks_uri"], timeout=10)
                 .json()["keys"]}
    for key in keys:
        if key["status"] in ("active", "next"):
            assert key["kid"] in published, key


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("env, names", [
    ({"QR_OIDC_HOST": "0.0.0.0"}, "QR_OIDC_ISSUER"),
    ({"QR_OIDC_ISSUER": "http://login.example.com"}, "QR_OIDC_ISSUER"),
    ({"QR_OIDC_TICKET_TTL": "five minutes"}, "QR_OIDC_TICKET_TTL"),
    ({"QR_OIDC_EXPIRED_RETENTION": "60"}, "QR_OIDC_EXPIRED_RETENTION"),
    ({"QR_OIDC_POLL_INTERVAL": "0"}, "QR_OIDC_POLL_INTERVAL"),
], ids=["http_issuer_off_loopback_by_host", "http_issuer_off_loopback", "ttl_not_a_number",
        "retention_under_ten_minutes", "zero_interval"])
def test_a_bad_setting_stops_serve_before_it_binds_with_one_line_naming_it(provider, env, names):
    import subprocess

    from helpers import BIN

    result = subprocess.run([BIN, "serve"], env={**provider.env, **env}, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    line = one_error_line(result)
    assert names in line


def test_an_https_issuer_is_accepted_and_named_in_discovery_metadata(provider, tmp_path):
    from helpers import Provider

    server = Provider(tmp_path, {"QR_OIDC_ISSUER": "https://login.example.com/"})
    server.start()
    try:
        assert server.meta["issuer"] == "https://login.example.com"
        ticket = server.ticket(server.create_client("--name", "Web"))
        assert ticket["qr_content"].startswith("https://login.example.com/s/")
    finally:
        server.stop()
