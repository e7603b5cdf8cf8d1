"""Schema migrations (provider/storage/migrate.py, Alembic under provider/storage/migrations), on
SQLite and on PostgreSQL: ``qr-oidc db upgrade`` builds exactly the schema the models describe,
every migration goes down and up again, rows survive an upgrade, and a server refuses to start on
a schema that is behind, saying what to run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine

from helpers import Provider

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qr_oidc.provider.storage import migrate
from qr_oidc.provider.storage.models import Base

REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"]


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh(request, tmp_path):
    """A provider whose database is empty and whose server is not started."""
    server = Provider(tmp_path, backend=request.param)
    yield server
    server.stop()  # (drops its PostgreSQL database)


def engine_of(server):
    return create_engine(server.database_url)


def test_the_revisions_shipped_are_the_ones_this_test_knows(fresh):
    assert migrate.head() == REVISIONS[-1]
    assert "needed: " + REVISIONS[-1] in fresh.cli("db", "current").stdout


def test_db_upgrade_builds_exactly_the_schema_the_models_describe(fresh):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    out = fresh.cli("db", "upgrade")
    assert f"empty -> {REVISIONS[-1]}" in out.stdout
    engine = engine_of(fresh)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
    # a second upgrade has nothing to do
    current = fresh.cli("db", "current").stdout
    assert f"database: {REVISIONS[-1]}; needed: {REVISIONS[-1]}" in current


def test_every_migration_goes_down_and_up_again(fresh):
    fresh.cli("db", "upgrade")
    for revision in reversed(["base", *REVISIONS[:-1]]):
        fresh.cli("db", "downgrade", revision)
        shown = fresh.cli("db", "current").stdout
        assert shown.startswith(f"database: {'empty' if revision == 'base' else revision};"), shown
    fresh.cli("db", "upgrade")
    assert fresh.cli("db", "current").stdout.startswith(f"database: {REVISIONS[-1]};")


def test_a_server_refuses_a_schema_that_is_behind_and_says_what_to_run(fresh):
    fresh.cli("db", "upgrade", "--revision", REVISIONS[0])
    refused = fresh.cli("serve", check=False)
    assert refused.returncode != 0
    message = refused.stderr.strip()
    assert "qr-oidc db upgrade" in message and REVISIONS[0] in message, message
    assert "Traceback" not in refused.stderr
    assert len(message.splitlines()) == 1, message
    # the other commands that need the schema refuse too, the same way
    refused = fresh.cli("clients", "create", "--name", "Too early", "--json", check=False)
    assert refused.returncode != 0 and "qr-oidc db upgrade" in refused.stderr


def test_rows_survive_an_upgrade_and_the_server_then_starts(fresh):
    fresh.cli("db", "upgrade", "--revision", REVISIONS[0])
    engine = engine_of(fresh)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO clients (client_id, name, secret_hash, public, first_party, "
                "number_matching, redirect_uris, grant_types, scope, created_at) VALUES "
                "('old-client', 'Old shop', NULL, true, false, false, '[]', "
                "'[\"urn:qr-oidc:params:oauth:grant-type:qr-ticket\"]', 'openid', 0)")
            connection.exec_driver_sql(
                "INSERT INTO clients (client_id, name, secret_hash, public, first_party, "
                "number_matching, redirect_uris, grant_types, scope, created_at) VALUES "
                "('old-backend', 'Old backend', 'x', false, false, false, '[]', '[]', 'openid', 0)")
            for jti, revoked, refresh in (("t1", "true", "r1"), ("t2", "false", "r2"),
                                          ("t3", "false", None)):
                connection.exec_driver_sql(
                    "INSERT INTO tokens (jti, client_id, grant_type, scope, issued_at, expires_at,"
                    " revoked, refresh_token_hash) VALUES "
                    f"('{jti}', 'old-client', 'x', 'openid', 0, 0, {revoked}, "
                    f"{repr(refresh) if refresh else 'NULL'})")
    finally:
        engine.dispose()
    out = fresh.cli("db", "upgrade")
    assert f"{REVISIONS[0]} -> {REVISIONS[-1]}" in out.stdout
    # 0005: each client has the one authentication method it used; a refresh token revoked
    # before counts as rotated (a reuse of it still revokes its family)
    assert sorted(fresh.db("SELECT client_id, token_endpoint_auth_method FROM clients")) == [
        ("old-backend", "client_secret_basic"), ("old-client", "none")]
    assert sorted(fresh.db("SELECT jti, refresh_status FROM tokens")) == [
        ("t1", "rotated"), ("t2", "active"), ("t3", None)]
    fresh.start()
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeJF8bB6fCqnvTTdtpm8"  # RFC 7636 appendix B
    ticket = requests.post(fresh.url + "/qr/ticket", timeout=30, data={
        "client_id": "old-client", "scope": "openid", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert ticket.status_code == 201, ticket.text
