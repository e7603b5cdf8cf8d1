"""Login tickets: creation and every state transition, each one atomic.

```
pending --scan--> scanned --approve--> approved --token poll--> redeemed
   |                 |--deny-------> denied
   +------ any state before redeemed passes expires_at ------> expired
```

Every transition is a single conditional ``UPDATE tickets SET ... WHERE id = ? AND status = ?
AND expires_at > now``; a row count of 0 means another request (maybe on another instance) got
there first, and the caller reloads to say why. Nothing is read-then-written.

The three secrets of a ticket are stored only as SHA-256 digests: ``ticket`` (the poll secret,
held by the web client), ``scan_code`` (what the QR encodes) and ``user_code`` (typed by hand,
derived from the scan code so the scan response can show it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from qr_oidc.provider.audit import audit, audit_after_commit
from qr_oidc.provider.security import (
    binding_choices,
    binding_code,
    digest,
    new_id,
    new_secret,
    normalize_user_code,
    user_code_for,
)
from qr_oidc.provider.settings import Settings
from qr_oidc.provider.storage.models import Client, Ticket, User, now
from qr_oidc.provider.storage.notify import notify_in_transaction


class TicketError(Exception):
    """A mobile-side refusal: ``error`` code and HTTP status, as SPEC.md lists them."""

    def __init__(self, error: str, status: int, description: str):
        super().__init__(description)
        self.error = error
        self.status = status
        self.description = description


@dataclass
class NewTicket:
    row: Ticket
    ticket: str
    scan_code: str
    user_code: str


# issuance's redeem and the token row it writes (Tickets._SQL), as Token(**oauth.token_row())
_REDEEM = ("UPDATE tickets SET status = 'redeemed', redeemed_at = :at"
           " WHERE id = :id AND status = 'approved' AND expires_at > :at")
_TOKEN_COLUMNS = ("jti", "client_id", "user_id", "grant_type", "scope", "issued_at", "expires_at",
                  "revoked", "refresh_token_hash", "refresh_expires_at", "refresh_status",
                  "family_id", "auth_time", "amr")
_TOKEN_INSERT = f"INSERT INTO tokens ({', '.join(_TOKEN_COLUMNS)})"
_TOKEN_VALUES = "(" + ", ".join(f":{name}" for name in _TOKEN_COLUMNS) + ")"


@functools.cache
def _statement(name: str, paramstyle: str) -> str:
    sql = Tickets._SQL[name]
    if paramstyle == "pyformat":  # psycopg; sqlite3 takes the :named form as it is
        sql = re.sub(r":(\w+)", r"%(\1)s", sql)
    return sql


@contextlib.contextmanager
def _cursor(engine):
    """A cursor on a pooled DBAPI connection of ``engine``; the connection goes back to the pool
    afterwards, or is thrown away if anything failed (it may be mid-transaction or dead)."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        yield cursor
        cursor.close()
    except BaseException:  # (also a worker's timeout: never pool a connection mid-transaction)
        connection.invalidate()
        raise
    finally:
        connection.close()


@dataclass
class _Spent:
    rowcount: int
    rows: list

    def fetchone(self):
        return self.rows[0] if self.rows else None


class Tickets:
    """Ticket storage and the state machine; one instance per app, sessions from ``db``."""

    def __init__(self, db, settings: Settings, notifier, secret: str):
        self.db = db
        # keys the number-matching choices of a ticket: nothing a browser holds derives them
        self._binding_key = hmac.new(secret.encode(), b"qr-oidc binding choices",
                                     hashlib.sha256).digest()
        self.ttl = settings.ticket_ttl
        self.interval = settings.poll_interval
        self.max_interval = settings.max_poll_interval
        self.retention = settings.expired_retention
        self.notifier = notifier

    # -- creation ----------------------------------------------------------------------------
    def create(
        self,
        client: Client,
        scope: str,
        *,
        kind: str = "qr",
        nonce: str | None = None,
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
        requester_ip: str | None = None,
        requester_ua: str | None = None,
        auth_request: dict | None = None,
    ) -> NewTicket:
        session = self.db.session
        for _attempt in range(5):
            ticket, scan_code = new_secret(), secrets.token_urlsafe(22)
            user_code = user_code_for(scan_code)
            created = now()
            row = Ticket(
                id=new_id(),
                ticket_hash=digest(ticket),
                scan_code_hash=digest(scan_code),
                user_code_hash=digest(user_code),
                kind=kind,
                client_id=client.client_id,
                scope=scope,
                nonce=nonce,
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
                binding_code=binding_code() if client.number_matching else None,
                status="pending",
                requester_ip=requester_ip,
                requester_ua=(requester_ua or "")[:512] or None,
                created_at=created,
                expires_at=created + self.ttl,
                poll_interval=self.interval,
                auth_request=auth_request,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                # a user code (34 bits) met a live one: draw new codes
                session.rollback()
                continue
            audit("ticket.created", ticket=row.id, kind=kind, client_id=client.client_id,
                  scope=scope, ip=requester_ip, user_agent=row.requester_ua)
            return NewTicket(row, ticket, scan_code, user_code)
        raise RuntimeError("could not draw a unique user code")

    # -- lookups -----------------------------------------------------------------------------
    def by_ticket(self, ticket: str) -> Ticket | None:
        if not isinstance(ticket, str) or not ticket or len(ticket) > 200:
            return None
        return self.db.session.scalar(select(Ticket).where(Ticket.ticket_hash == digest(ticket)))

    def by_code(self, scan_code: str | None, user_code: str | None) -> tuple[Ticket | None, str | None]:
        """The ticket a phone means, and its user code (to show); by scan code or typed user code."""
        if isinstance(scan_code, str) and scan_code:
            if len(scan_code) > 200:
                return None, None
            row = self.db.session.scalar(
                select(Ticket).where(Ticket.scan_code_hash == digest(scan_code))
            )
            return row, user_code_for(scan_code) if row else None
        code = normalize_user_code(user_code) if user_code else None
        if code is None:
            return None, None
        row = self.db.session.scalar(select(Ticket).where(Ticket.user_code_hash == digest(code)))
        return row, code

    def reload(self, row: Ticket) -> Ticket:
        self.db.session.refresh(row)
        return row

    # -- the web client's side: the token core's statements (grants/token_core.py) ------------
    # Single statements on the autocommit engine's pooled DBAPI connections: no ORM, no
    # transaction of their own but the statement (one round trip on PostgreSQL).
    def record_poll(self, ticket_hash: str, client_id: str, at: float) -> bool:
        """Record a token poll of a waiting ticket that came on time; False (and nothing
        changed) when the ticket is not ``client_id``'s, not waiting (pending or scanned),
        expired, or polled too early. One conditional ``UPDATE``, so the interval holds across
        instances: a poll up to 20% early (network jitter) is on time, the first always is."""
        return self._raw(self._engine(), "poll",
                         {"h": ticket_hash, "c": client_id, "at": at}).rowcount == 1

    def load_for_poll(self, ticket_hash: str) -> dict | None:
        """The ticket a poll names, with its user's claims once a user scanned it; None if
        there is none."""
        row = self._raw(self._engine(), "load", {"h": ticket_hash}).fetchone()
        return dict(zip(self._LOADED, row)) if row is not None else None

    def status_row(self, ticket_hash: str) -> dict | None:
        """What the status endpoint shows of a ticket (and its user's name and picture), in
        one statement on the autocommit engine: ten thousand pages asking at once cost ten
        thousand single SELECTs, no ORM and no transaction."""
        row = self._raw(self._engine(), "status", {"h": ticket_hash}).fetchone()
        return dict(zip(self._STATUS, row)) if row is not None else None

    def slow_down(self, ticket_id: str, at: float) -> None:
        """A poll came too early: it counts as a poll, and the interval grows by 5 s, never
        past the maximum (RFC 8628 §3.5)."""
        self._raw(self._engine(), "slow_down",
                  {"id": ticket_id, "at": at, "max": self.max_interval})

    def _engine(self):
        return self.db.autocommit_engine

    def client_for_poll(self, client_id: str):
        """(secret_hash, public, grant_types, id_token_alg, token_endpoint_auth_method,
        redirect_uris) of a client, or None: what the event path's client authentication,
        issuance and CORS need."""
        row = self._raw(self._engine(), "client", {"c": client_id}).fetchone()
        if row is None:
            return None
        secret_hash, public, grant_types, id_token_alg, auth_method, redirect_uris = row
        if isinstance(grant_types, str):
            grant_types = json.loads(grant_types)
        if isinstance(redirect_uris, str):
            redirect_uris = json.loads(redirect_uris)
        return (secret_hash, bool(public), frozenset(grant_types or ()), id_token_alg,
                auth_method, tuple(redirect_uris or ()))

    def redeem_with_token(self, ticket_id: str, token: dict) -> bool:
        """Issuance's write: approved -> redeemed and the token row, in one transaction. False
        when another request redeemed it first (or it expired meanwhile): nothing is written.
        The time is read when the transaction starts (after the signatures, and on SQLite after
        the process's write lock: its threads queue there, not in SQLite's busy handler)."""
        engine = self._engine()
        if not self.db.is_sqlite:  # one statement, so one transaction and one round trip
            params = dict(token, id=ticket_id, at=now())
            return self._raw(engine, "redeem_with_token", params).rowcount == 1
        with self.db.write_lock(), _cursor(engine) as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                params = dict(token, id=ticket_id, at=now())
                cursor.execute(_statement("redeem", "named"), params)
                done = cursor.rowcount == 1
                if done:
                    cursor.execute(_statement("token_row", "named"), params)
                cursor.execute("COMMIT" if done else "ROLLBACK")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return done

    _SQL = {
        "poll": "UPDATE tickets SET last_poll_at = :at"
                " WHERE ticket_hash = :h AND client_id = :c AND kind <> 'authorize'"
                " AND status IN ('pending', 'scanned') AND expires_at > :at"
                " AND (last_poll_at IS NULL OR last_poll_at + poll_interval * 0.8 <= :at)",
        "client": "SELECT secret_hash, public, grant_types, id_token_signed_response_alg,"
                  " token_endpoint_auth_method, redirect_uris FROM clients WHERE client_id = :c",
        "load": "SELECT t.id, t.client_id, t.kind, t.status, t.expires_at, t.user_id, t.scope,"
                " t.nonce, t.decided_at, t.code_challenge,"
                " u.sub, u.username, u.name, u.email, u.picture"
                " FROM tickets t LEFT JOIN users u ON u.id = t.user_id"
                " WHERE t.ticket_hash = :h",
        "status": "SELECT t.id, t.status, t.expires_at, t.user_id, u.name, u.username,"
                  " u.picture FROM tickets t LEFT JOIN users u ON u.id = t.user_id"
                  " WHERE t.ticket_hash = :h",
        "slow_down": "UPDATE tickets SET last_poll_at = :at, poll_interval = CASE"
                     " WHEN poll_interval + 5 > :max THEN :max ELSE poll_interval + 5 END"
                     " WHERE id = :id",
        "redeem": _REDEEM,
        "token_row": _TOKEN_INSERT + " VALUES " + _TOKEN_VALUES,
        "redeem_with_token": "WITH redeemed AS (" + _REDEEM + " RETURNING id) "
                             + _TOKEN_INSERT + " SELECT " + _TOKEN_VALUES[1:-1]
                             + " FROM redeemed",
    }
    _STATUS = ("id", "status", "expires_at", "user_id", "name", "username", "picture")
    _LOADED = ("id", "client_id", "kind", "status", "expires_at", "user_id", "scope", "nonce",
               "decided_at", "code_challenge", "sub", "username", "name", "email", "picture")

    def _raw(self, engine, name: str, params: dict) -> _Spent:
        """Run ``_SQL[name]`` on a pooled DBAPI connection; returns the spent cursor's results.

        A kept connection the database closed meanwhile (a restart, an idle timeout) fails
        before the statement ran: it is thrown away and the statement runs once more on a new
        one, so the first poll after a database restart does not fail."""
        sql = _statement(name, engine.dialect.paramstyle)
        for attempt in (1, 2):
            try:
                with _cursor(engine) as cursor:
                    cursor.execute(sql, params)
                    return _Spent(cursor.rowcount,
                                  cursor.fetchall() if cursor.description else [])
            except engine.dialect.loaded_dbapi.Error as exc:
                if attempt == 2 or not engine.dialect.is_disconnect(exc, None, None):
                    raise
        raise AssertionError("unreachable")

    def redeem(self, row: Ticket, at: float) -> bool:
        """approved -> redeemed, once. Not committed here: the caller commits it with the tokens."""
        done = bool(
            self.db.session.execute(
                update(Ticket)
                .where(Ticket.id == row.id, Ticket.status == "approved", Ticket.expires_at > at)
                .values(status="redeemed", redeemed_at=at)
                .execution_options(synchronize_session=False)
            ).rowcount
        )
        if done:
            audit_after_commit("ticket.redeemed", ticket=row.id, client_id=row.client_id,
                               user_id=row.user_id)
        return done

    # -- the phone's side --------------------------------------------------------------------
    def _transition(self, row: Ticket, expected: str, at: float, **values) -> bool:
        conditions = [Ticket.id == row.id, Ticket.status == expected, Ticket.expires_at > at]
        if expected == "scanned":
            conditions.append(Ticket.user_id == values.pop("by_user"))
        done = self.db.session.execute(
            update(Ticket).where(*conditions).values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if done:
            notify_in_transaction(self.db.session, row.id)
        self.db.session.commit()
        self.reload(row)
        if done:
            self.notifier.publish(row.id)
            audit(f"ticket.{values['status']}", ticket=row.id, client_id=row.client_id,
                  user_id=row.user_id)
        return bool(done)

    @staticmethod
    def _refuse_unless_live(row: Ticket | None, at: float) -> Ticket:
        if row is None:
            raise TicketError("unknown_code", 404, "No ticket has this code.")
        if row.status in ("denied", "redeemed"):
            raise TicketError("invalid_state", 409, f"The ticket is already {row.status}.")
        if row.is_expired(at):
            raise TicketError("expired", 410, "The ticket has expired.")
        if row.status == "approved":
            raise TicketError("invalid_state", 409, "The ticket is already approved.")
        return row

    def scan(self, row: Ticket | None, user: User) -> Ticket:
        at = now()
        row = self._refuse_unless_live(row, at)
        if row.status == "pending":
            if self._transition(row, "pending", at, status="scanned", user_id=user.id, scanned_at=at):
                return row
            row = self._refuse_unless_live(row, now())
        if row.user_id != user.id:
            raise TicketError("already_scanned", 409, "Another user has scanned this ticket.")
        return row  # the same user scanning again (an app retry) sees the same screen

    def _refuse_unless_scanned_by(self, row: Ticket | None, user: User, at: float) -> Ticket:
        row = self._refuse_unless_live(row, at)
        if row.status == "pending":
            raise TicketError("invalid_state", 409, "Scan the ticket before deciding.")
        if row.user_id != user.id:
            raise TicketError("access_denied", 403, "Another user scanned this ticket.")
        return row

    def approve(self, row: Ticket | None, user: User, binding: str | None) -> Ticket:
        at = now()
        row = self._refuse_unless_scanned_by(row, user, at)
        if row.binding_code is not None:
            if not isinstance(binding, str) or not binding:
                raise TicketError("invalid_request", 400, "Number matching: send binding_code.")
            if not secrets.compare_digest(binding.encode(), row.binding_code.encode()):
                self._transition(row, "scanned", at, by_user=user.id, status="denied",
                                 decided_at=at)
                audit("ticket.binding_mismatch", ticket=row.id, client_id=row.client_id,
                      user_id=user.id)
                raise TicketError(
                    "binding_mismatch", 403, "The number does not match; the login was cancelled."
                )
        if not self._transition(row, "scanned", at, by_user=user.id, status="approved", decided_at=at):
            self._refuse_unless_scanned_by(row, user, now())
            raise TicketError("invalid_state", 409, "The ticket changed meanwhile.")
        return row

    def deny(self, row: Ticket | None, user: User) -> Ticket:
        at = now()
        row = self._refuse_unless_scanned_by(row, user, at)
        if not self._transition(row, "scanned", at, by_user=user.id, status="denied", decided_at=at):
            self._refuse_unless_scanned_by(row, user, now())
            raise TicketError("invalid_state", 409, "The ticket changed meanwhile.")
        return row

    def scan_view(self, row: Ticket, user_code: str, client: Client) -> dict:
        """What the phone shows before the user decides (SPEC.md: scan response fields)."""
        view = {
            "client": {
                "client_id": client.client_id,
                "name": client.name,
                "logo_uri": client.logo_uri,
            },
            "scopes": row.scope.split() if row.scope else [],
            "requester": {"ip": row.requester_ip, "user_agent": row.requester_ua},
            "created_at": int(row.created_at),
            "expires_at": int(row.expires_at),
            "user_code": user_code,
            "status": row.public_status(),
        }
        if row.binding_code is not None:
            seed = hmac.new(self._binding_key, row.id.encode(), hashlib.sha256).hexdigest()
            view["binding_choices"] = binding_choices(row.binding_code, seed)
        return view

    # -- upkeep ------------------------------------------------------------------------------
    def purge(self) -> int:
        """Delete tickets that expired more than the retention time ago (redeemed ones included):
        until then an expired ticket keeps answering ``expired`` / ``expired_token``. Run by the
        background maintenance thread with a session of its own."""
        cutoff = now() - self.retention
        with self.db.session_factory() as session:
            gone = session.execute(
                select(Ticket.id, Ticket.client_id, Ticket.status).where(Ticket.expires_at < cutoff)
            ).all()
            result = session.execute(delete(Ticket).where(Ticket.expires_at < cutoff))
            session.commit()
        for ticket_id, client_id, status in gone:
            if status not in ("redeemed", "denied"):
                audit("ticket.expired", ticket=ticket_id, client_id=client_id, status=status)
        return result.rowcount or 0
