"""Ticket storage: every statement on the ``tickets`` table, and on the ``clients`` and ``users``
rows a token poll reads, for the state machine in ``grants/tickets.py`` (which holds the rules and
asks ``TicketStore`` for rows and conditional writes; nothing here decides what a state means).

Two ways to the database:

- **The request's ORM session** (``db.session``) for the phone's and the hosted page's steps:
  creating a ticket, finding one by a secret's digest, the conditional transitions (each one
  ``UPDATE ... WHERE id = ? AND status = <expected> AND expires_at > now``, with its cross-process
  wake-up in the same transaction), the hosted page's redeem, and the purge (a session of its own).
  Their callers keep using the ``Ticket`` rows, so these go through the ORM.

- **A raw DB-API cursor** on a pooled connection of the autocommit engine
  (``db.autocommit_engine``) for the token poll's and the status endpoint's statements:
  ``record_poll``, ``load_for_poll``, ``status_row``, ``slow_down``, ``client_for_poll`` and
  ``redeem_with_token`` (``grants/token_core.py``, ``provider/web/events.py``,
  ``provider/web/actions.py``). Every pending poll runs one of them, and a page waiting for its
  QR asks the status often: through a Session each would also cost SQLAlchemy's execution context,
  result processing and transaction handling (a ``BEGIN`` and a ``COMMIT``, round trips on
  PostgreSQL), which measured as most of a poll's time (docs/performance.md). On the raw cursor
  a statement is one ``execute`` in C and, on PostgreSQL, one round trip; each is its own
  transaction, except the redeem and its token row, which share one.

The raw statements are SQLAlchemy Core expressions on the model tables (``select``, ``update``,
``insert``, ``bindparam``), compiled once per store for the database's dialect: the text is the
dialect's own, in its DB-API paramstyle (``?`` for sqlite3, with the positional order of the
parameter names taken from the compilation; ``%(name)s`` for psycopg, with SQLAlchemy's
``::TYPE`` casts), and the constants are written into the text, so a statement's parameters are
exactly the caller's values. Nothing is rewritten at run time.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import (
    Float,
    Integer,
    Select,
    String,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from qr_oidc.provider.storage.models import Client, Ticket, Token, User, now
from qr_oidc.provider.storage.notify import notify_in_transaction

_T, _U, _C, _K = Ticket.__table__, User.__table__, Client.__table__, Token.__table__

# the kinds of ticket the QR and device grants redeem (the hosted page's ``authorize`` tickets
# become codes, push requests are the CIBA grant's)
TICKET_KINDS = ("qr", "device")

# the token row issuance writes with the redeem (``grants/access_tokens.token_row``'s keys)
TOKEN_COLUMNS = ("jti", "client_id", "user_id", "grant_type", "scope", "issued_at", "expires_at",
                 "revoked", "refresh_token_hash", "refresh_expires_at", "refresh_status",
                 "family_id", "auth_time", "amr", "dpop_jkt", "sid")


# -- the raw statements, as Core expressions -----------------------------------------------------
def _const(value: str | int | float):
    """A constant written into the statement's text, not a parameter."""
    if isinstance(value, str):
        return literal_column("'" + value.replace("'", "''") + "'", String)
    return literal_column(repr(value), Float if isinstance(value, float) else Integer)


def _param(name: str, column):
    return bindparam(name, type_=column.type)


def _poll(kinds: tuple[str, ...]):
    """An on-time poll of a waiting ticket of this client, of one of ``kinds`` (the grant's:
    QR and device tickets, or push requests), unbound or bound to the DPoP key ``k`` the poll
    proved: its ``last_poll_at`` (one row), or nothing. A poll up to 20% early (network
    jitter) is on time; the first always is."""
    at = _param("at", _T.c.last_poll_at)
    kind = (_T.c.kind == _const(kinds[0]) if len(kinds) == 1
            else _T.c.kind.in_([_const(k) for k in kinds]))
    return (update(_T).values(last_poll_at=at)
            .where(_T.c.ticket_hash == _param("h", _T.c.ticket_hash),
                   _T.c.client_id == _param("c", _T.c.client_id),
                   kind,
                   or_(_T.c.dpop_jkt.is_(None), _T.c.dpop_jkt == _param("k", _T.c.dpop_jkt)),
                   _T.c.status.in_([_const("pending"), _const("scanned")]),
                   _T.c.expires_at > at,
                   or_(_T.c.last_poll_at.is_(None),
                       _T.c.last_poll_at + _T.c.poll_interval * _const(0.8) <= at)))


def _slow_down():
    """A poll too early: it counts, and the interval grows by 5 s up to ``max``."""
    at, most = _param("at", _T.c.last_poll_at), _param("max", _T.c.poll_interval)
    grown = _T.c.poll_interval + _const(5)
    return (update(_T).values(last_poll_at=at, poll_interval=case((grown > most, most),
                                                                  else_=grown))
            .where(_T.c.id == _param("id", _T.c.id)))


def _with_user(*columns):
    """The ticket whose poll secret's digest is ``h``, with ``columns`` (its user's: None until
    a user scanned it)."""
    return (select(*columns).select_from(_T.outerjoin(_U, _U.c.id == _T.c.user_id))
            .where(_T.c.ticket_hash == _param("h", _T.c.ticket_hash)))


def _load():
    return _with_user(_T.c.id, _T.c.client_id, _T.c.kind, _T.c.status, _T.c.created_at,
                      _T.c.expires_at,
                      _T.c.user_id, _T.c.scope, _T.c.nonce, _T.c.decided_at,
                      _T.c.code_challenge, _T.c.dpop_jkt, _U.c.sub, _U.c.username, _U.c.name,
                      _U.c.email, _U.c.picture)


def _status():
    return _with_user(_T.c.id, _T.c.status, _T.c.expires_at, _T.c.user_id, _U.c.name,
                      _U.c.username, _U.c.picture)


def _client():
    return (select(_C.c.secret_hash, _C.c.public, _C.c.grant_types,
                   _C.c.id_token_signed_response_alg, _C.c.token_endpoint_auth_method,
                   _C.c.redirect_uris, _C.c.require_dpop)
            .where(_C.c.client_id == _param("c", _C.c.client_id)))


def _redeem():
    """approved -> redeemed, unexpired, once (at the time ``at``)."""
    at = _param("at", _T.c.redeemed_at)
    return (update(_T).values(status=_const("redeemed"), redeemed_at=at)
            .where(_T.c.id == _param("id", _T.c.id), _T.c.status == _const("approved"),
                   _T.c.expires_at > at))


def _token_row():
    """The token row; its parameters are named as its columns (SQLite, after ``_redeem``)."""
    return insert(_K).values({name: _param(name, _K.c[name]) for name in TOKEN_COLUMNS}).inline()


def _redeem_with_token():
    """PostgreSQL: the redeem and the token row in one statement, so one transaction and one
    round trip. The ``INSERT`` takes its row from the ``UPDATE``'s ``RETURNING``: no row
    redeemed, no token row, and the statement's row count (psycopg reports the ``INSERT``'s, not
    the ``UPDATE``'s) is 1 exactly when this poll redeemed the ticket."""
    redeemed = _redeem().returning(_T.c.id).cte("redeemed")
    values = select(*(_param(name, _K.c[name]) for name in TOKEN_COLUMNS)).select_from(redeemed)
    return insert(_K).from_select(list(TOKEN_COLUMNS), values)


@dataclass(frozen=True)
class Statement:
    """One statement compiled for a dialect: its text, how its parameters are passed, and (a
    ``SELECT``) the names of its result columns."""

    sql: str
    order: tuple[str, ...] | None  # positional paramstyles: the parameter names in order
    columns: tuple[str, ...] = ()

    @classmethod
    def compile(cls, statement, dialect) -> Statement:
        compiled = statement.compile(dialect=dialect)
        if compiled.escaped_bind_names:  # (a name the paramstyle cannot carry as it is)
            raise ValueError(f"parameter names need escaping: {compiled.escaped_bind_names}")
        order = tuple(compiled.positiontup) if compiled.positional else None
        columns = tuple(statement.selected_columns.keys()) if isinstance(statement, Select) \
            else ()
        return cls(compiled.string, order, columns)

    def parameters(self, values: Mapping):
        """``values`` (by name) as the DB-API takes them: a tuple in order, or the mapping."""
        if self.order is None:
            return values
        return tuple([values[name] for name in self.order])


@contextlib.contextmanager
def _cursor(engine):
    """A cursor on a pooled DB-API connection of ``engine``; the connection goes back to the
    pool afterwards, or is thrown away if anything failed (it may be mid-transaction or dead)."""
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


class TicketStore:
    """The ticket rows of one database (``provider/storage/db.Database``); one per app."""

    def __init__(self, db):
        self.db = db
        # The autocommit engine is made from the same URL as ``db.engine`` when first used; the
        # statements are compiled now, for the dialect both share.
        dialect = db.engine.dialect
        self.sqlite = dialect.name == "sqlite"
        self._poll = Statement.compile(_poll(TICKET_KINDS), dialect)
        self._poll_push = Statement.compile(_poll(("push",)), dialect)
        self._slow_down = Statement.compile(_slow_down(), dialect)
        self._load = Statement.compile(_load(), dialect)
        self._status = Statement.compile(_status(), dialect)
        self._client = Statement.compile(_client(), dialect)
        if self.sqlite:  # no DML in a WITH: two statements in one BEGIN IMMEDIATE
            self._redeem = Statement.compile(_redeem(), dialect)
            self._token_row = Statement.compile(_token_row(), dialect)
        else:
            self._redeem_with_token = Statement.compile(_redeem_with_token(), dialect)

    # -- the request's session: the phone's and the hosted page's steps -----------------------
    def add(self, row: Ticket) -> bool:
        """Insert and commit a new ticket; False (rolled back) when one of its unique digests
        met an existing row's."""
        session = self.db.session
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return False
        return True

    def by_ticket_hash(self, ticket_hash: str) -> Ticket | None:
        return self.db.session.scalar(select(Ticket).where(Ticket.ticket_hash == ticket_hash))

    def by_scan_code_hash(self, scan_code_hash: str) -> Ticket | None:
        return self.db.session.scalar(
            select(Ticket).where(Ticket.scan_code_hash == scan_code_hash))

    def by_user_code_hash(self, user_code_hash: str) -> Ticket | None:
        return self.db.session.scalar(
            select(Ticket).where(Ticket.user_code_hash == user_code_hash))

    def reload(self, row: Ticket) -> Ticket:
        self.db.session.refresh(row)
        return row

    def transition(self, ticket_id: str, expected: str, at: float, values: dict,
                   by_user: int | None = None, also=None) -> bool:
        """``UPDATE tickets SET <values> WHERE id AND status = expected AND unexpired`` (and,
        given ``by_user``, the user who scanned it), with the cross-process wake-up when it
        changed the row, and ``also(session)`` then (what the change owes: a CIBA ping, an
        inbox's wake-up), in the same transaction; committed. False when another request got
        there first."""
        conditions = [Ticket.id == ticket_id, Ticket.status == expected, Ticket.expires_at > at]
        if by_user is not None:
            conditions.append(Ticket.user_id == by_user)
        session = self.db.session
        done = session.execute(
            update(Ticket).where(*conditions).values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if done:
            notify_in_transaction(session, ticket_id)
            if also is not None:
                also(session)
        session.commit()
        return bool(done)

    # -- push requests (CIBA): tickets made for a named user -----------------------------------
    def add_push(self, row: Ticket, most: int, also) -> float | None:
        """Insert a push request for ``row.user_id`` unless that user already has ``most``
        undecided ones, with ``also(session)`` (the push gateway's notice, the inbox's wake-up)
        in the same transaction; committed. None when added; else the seconds until the
        oldest outstanding one expires (for ``Retry-After``), nothing written.

        On PostgreSQL the user's row is locked first, so two instances cannot both see two
        outstanding and both add a third and fourth; SQLite writes one transaction at a
        time (this process's write lock, the database's for others)."""
        session = self.db.session
        at = row.created_at
        with self.db.write_lock():
            if not self.sqlite:
                session.execute(select(User.id).where(User.id == row.user_id).with_for_update())
            outstanding = session.execute(
                select(func.count(), func.min(Ticket.expires_at))
                .where(Ticket.user_id == row.user_id, Ticket.kind == "push",
                       Ticket.status == "scanned", Ticket.expires_at > at)).one()
            if outstanding[0] >= most:
                session.rollback()
                return max(1.0, outstanding[1] - at)
            session.add(row)
            also(session)
            session.commit()
        return None

    def inbox(self, user_id: int, at: float) -> list[Ticket]:
        """A user's undecided, unexpired push requests, oldest first."""
        return list(self.db.session.scalars(
            select(Ticket).where(Ticket.user_id == user_id, Ticket.kind == "push",
                                 Ticket.status == "scanned", Ticket.expires_at > at)
            .order_by(Ticket.created_at, Ticket.id)))

    def redeem(self, ticket_id: str, at: float) -> bool:
        """approved -> redeemed, once, in the request's session; not committed here."""
        return bool(
            self.db.session.execute(
                update(Ticket)
                .where(Ticket.id == ticket_id, Ticket.status == "approved",
                       Ticket.expires_at > at)
                .values(status="redeemed", redeemed_at=at)
                .execution_options(synchronize_session=False)
            ).rowcount
        )

    def mark_expired(self, at: float) -> list[tuple[str, str, str]]:
        """``status = 'expired'`` for the tickets whose time ran out before they were redeemed or
        denied (an expired ticket answered ``expired`` already: its time says so; this makes it
        a state, counted once): their (id, client_id, kind). One conditional ``UPDATE``, in a
        session of its own, so two instances' upkeep never marks one ticket twice."""
        with self.db.session_factory() as session:
            marked = session.execute(
                update(Ticket)
                .where(Ticket.status.in_(("pending", "scanned", "approved")),
                       Ticket.expires_at <= at)
                .values(status="expired")
                .returning(Ticket.id, Ticket.client_id, Ticket.kind)
                .execution_options(synchronize_session=False)).all()
            session.commit()
        return [tuple(row) for row in marked]

    def purge(self, cutoff: float) -> tuple[list, int]:
        """Delete the tickets that expired before ``cutoff``, in a session of its own: their
        (id, client_id, status), and how many rows went."""
        with self.db.session_factory() as session:
            gone = session.execute(
                select(Ticket.id, Ticket.client_id, Ticket.status)
                .where(Ticket.expires_at < cutoff)
            ).all()
            result = session.execute(delete(Ticket).where(Ticket.expires_at < cutoff))
            session.commit()
        return [tuple(row) for row in gone], result.rowcount or 0

    # -- the raw cursor: the token poll and the status endpoint --------------------------------
    @property
    def engine(self):
        return self.db.autocommit_engine

    def record_poll(self, ticket_hash: str, client_id: str, at: float,
                    push: bool = False, jkt: str | None = None) -> bool:
        """``last_poll_at = at`` if the poll is on time for a waiting, unexpired ticket of
        ``client_id`` (a push request if ``push``, else a QR or device ticket), not bound to a
        DPoP key other than ``jkt``: one conditional ``UPDATE``; False when nothing changed."""
        statement = self._poll_push if push else self._poll
        return self._raw(statement, {"h": ticket_hash, "c": client_id, "at": at,
                                     "k": jkt}).rowcount == 1

    def load_for_poll(self, ticket_hash: str) -> dict | None:
        row = self._raw(self._load, {"h": ticket_hash}).fetchone()
        return dict(zip(self._load.columns, row, strict=True)) if row is not None else None

    def status_row(self, ticket_hash: str) -> dict | None:
        row = self._raw(self._status, {"h": ticket_hash}).fetchone()
        return dict(zip(self._status.columns, row, strict=True)) if row is not None else None

    def slow_down(self, ticket_id: str, at: float, max_interval: int) -> None:
        self._raw(self._slow_down, {"id": ticket_id, "at": at, "max": max_interval})

    def client_for_poll(self, client_id: str):
        """(secret_hash, public, grant_types, id_token_alg, token_endpoint_auth_method,
        redirect_uris, require_dpop) of a client, or None. The JSON columns come as text from
        sqlite3 and decoded from psycopg: both give the same values here."""
        row = self._raw(self._client, {"c": client_id}).fetchone()
        if row is None:
            return None
        secret_hash, public, grant_types, id_token_alg, auth_method, redirect_uris, dpop = row
        if isinstance(grant_types, str):
            grant_types = json.loads(grant_types)
        if isinstance(redirect_uris, str):
            redirect_uris = json.loads(redirect_uris)
        return (secret_hash, bool(public), frozenset(grant_types or ()), id_token_alg,
                auth_method, tuple(redirect_uris or ()), bool(dpop))

    def redeem_with_token(self, ticket_id: str, token: Mapping) -> bool:
        """approved -> redeemed and the token row (``TOKEN_COLUMNS``), in one transaction; False
        (nothing written) when the ticket was not approved and unexpired any more. The time is
        read when the transaction starts (on SQLite after the process's write lock: its threads
        queue there, not in SQLite's busy handler)."""
        engine = self.engine
        if not self.sqlite:  # one statement, so one transaction and one round trip
            values = dict(token, id=ticket_id, at=now())
            return self._raw(self._redeem_with_token, values).rowcount == 1
        with self.db.write_lock(), _cursor(engine) as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                values = dict(token, id=ticket_id, at=now())
                cursor.execute(self._redeem.sql, self._redeem.parameters(values))
                done = cursor.rowcount == 1
                if done:
                    cursor.execute(self._token_row.sql, self._token_row.parameters(values))
                cursor.execute("COMMIT" if done else "ROLLBACK")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return done

    def _raw(self, statement: Statement, values: Mapping) -> _Spent:
        """Run ``statement`` on a pooled DB-API connection of the autocommit engine; returns the
        spent cursor's results.

        A kept connection the database closed meanwhile (a restart, an idle timeout) fails
        before the statement ran: it is thrown away and the statement runs once more on a new
        one, so the first poll after a database restart does not fail."""
        engine = self.engine
        parameters = statement.parameters(values)
        for attempt in (1, 2):
            try:
                with _cursor(engine) as cursor:
                    cursor.execute(statement.sql, parameters)
                    return _Spent(cursor.rowcount,
                                  cursor.fetchall() if cursor.description else [])
            except engine.dialect.loaded_dbapi.Error as exc:
                if attempt == 2 or not engine.dialect.is_disconnect(exc, None, None):
                    raise
        raise AssertionError("unreachable")
