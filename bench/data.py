"""What the benchmark puts in a database: clients and a user through the operator's CLI, and
tickets straight into the ``tickets`` table (thousands of approved tickets through the phone API
would take longer than the benchmark itself; each row is what ``grants/tickets.py`` writes: the
secrets as SHA-256 digests, ``user_code`` derived from the scan code).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import time

from sqlalchemy import create_engine, insert, select, text

from qr_oidc.provider.storage.models import Ticket, User

from .servers import QR_OIDC


def cli(env: dict, *args: str, program: list[str] | None = None) -> str:
    """``qr-oidc ARGS`` (or ``program ARGS``: a variant's own command, bench/ab.py)."""
    result = subprocess.run([*(program or [QR_OIDC]), *args], check=False, env=env,
                            capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"qr-oidc {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def seed_people(env: dict, program: list[str] | None = None) -> dict:
    """A confidential web client, the phone app (public, first-party) and one user, made by
    ``program`` (the variant's own ``qr-oidc``, whose schema the database gets)."""
    web = json.loads(cli(env, "clients", "create", "--name", "Bench shop", "--json",
                         program=program))
    phone = json.loads(cli(env, "clients", "create", "--name", "Bench app", "--public",
                           "--first-party", "--redirect-uri", "http://127.0.0.1/callback",
                           "--grant-type", "authorization_code",
                           "--scope", "openid profile qr:approve", "--json", program=program))
    cli(env, "users", "create", "--username", "bench", "--password", "bench-password",
        "--name", "Bench User", "--picture", "https://pics.example/bench.png", "--json",
        program=program)
    return {"web": web, "phone": phone, "username": "bench", "password": "bench-password"}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def engine_for(url: str):
    return create_engine(url)


def user_id(engine, username: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(User.id).where(User.username == username))


def ticket_row(client_id: str, status: str = "pending", user: int | None = None,
               ttl: float = 7200, scope: str = "openid profile") -> tuple[dict, dict]:
    """One ticket row and its secrets (``ticket``, ``scan_code``)."""
    ticket, scan_code = secrets.token_urlsafe(32), secrets.token_urlsafe(22)
    at = time.time()
    row = {
        "id": secrets.token_hex(16),
        "ticket_hash": digest(ticket),
        "scan_code_hash": digest(scan_code),
        # random, not derived from the scan code: nobody types these tickets' user codes, and 10^5
        # or more codes derived in the 20^8 space would meet (the server draws again on a clash)
        "user_code_hash": secrets.token_hex(32),
        "kind": "qr",
        "client_id": client_id,
        "scope": scope,
        "nonce": None,
        "code_challenge": None,
        "code_challenge_method": None,
        "binding_code": None,
        "status": status,
        "user_id": user,
        "requester_ip": "127.0.0.1",
        "requester_ua": "qr-oidc-bench",
        "created_at": at,
        "expires_at": at + ttl,
        "scanned_at": at if status in ("scanned", "approved") else None,
        "decided_at": at if status == "approved" else None,
        "redeemed_at": None,
        "poll_interval": 1,
        "last_poll_at": None,
        "auth_request": None,
    }
    return row, {"ticket": ticket, "scan_code": scan_code}


def insert_tickets(engine, client_id: str, count: int, status: str = "pending",
                   user: int | None = None, poll_interval: int = 0) -> list[dict]:
    """``count`` tickets through SQL; returns their secrets.

    ``poll_interval`` 0 (which the server never gives a ticket: its smallest is 1 s) makes every
    poll of these tickets on time, so a table of 10^3 tickets can take a load of more than 1250
    polls a second without ``slow_down``: each poll runs the same on-time ``UPDATE``
    (``last_poll_at + poll_interval * 0.8 <= now``) as a real ticket's on-time poll.
    """
    rows, out = [], []
    for _ in range(count):
        row, secrets_ = ticket_row(client_id, status, user)
        row["poll_interval"] = poll_interval
        rows.append(row)
        out.append(secrets_)
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(Ticket.__table__), rows[start:start + 5000])
    return out


def insert_filler(engine, client_id: str, count: int, ttl: float = 7200) -> None:
    """``count`` live pending tickets nobody polls, made inside the database (fast): the table a
    busy provider has. They expire after the run, so the background purge leaves them alone."""
    if count <= 0:
        return
    at = time.time()
    params = {"client_id": client_id, "at": at, "exp": at + ttl, "n": count}
    columns = ("id, ticket_hash, scan_code_hash, user_code_hash, kind, client_id, scope, status, "
               "requester_ip, requester_ua, created_at, expires_at, poll_interval")
    if engine.dialect.name == "postgresql":
        sql = text(
            f"INSERT INTO tickets ({columns}) "
            "SELECT md5('i' || i), encode(sha256(('t' || i)::bytea), 'hex'), "
            "encode(sha256(('s' || i)::bytea), 'hex'), encode(sha256(('u' || i)::bytea), 'hex'), "
            "'qr', :client_id, 'openid profile', 'pending', '127.0.0.1', 'filler', "
            ":at - (i % 600), :exp, 2 FROM generate_series(1, :n) AS i"
        )
        with engine.begin() as conn:
            conn.execute(sql, params)
            conn.execute(text("ANALYZE tickets"))
        return
    # SQLite: the same, with a digest function registered on the connection
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        dbapi.create_function("sha", 1, lambda s: hashlib.sha256(s.encode()).hexdigest(),
                              deterministic=True)
        dbapi.create_function("md5", 1, lambda s: hashlib.md5(s.encode()).hexdigest(),
                              deterministic=True)
        cursor = dbapi.cursor()
        cursor.execute(
            f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?) "
            f"INSERT INTO tickets ({columns}) "
            "SELECT md5('i' || i), sha('t' || i), sha('s' || i), sha('u' || i), 'qr', ?, "
            "'openid profile', 'pending', '127.0.0.1', 'filler', ? - (i % 600), ?, 2 FROM seq",
            (count, client_id, at, at + ttl),
        )
        dbapi.commit()  # no ANALYZE: a provider's SQLite file never gets one either
    finally:
        raw.close()


def write_tickets(path, tickets: list[dict]) -> None:
    path.write_text("".join(t["ticket"] + "\n" for t in tickets))
