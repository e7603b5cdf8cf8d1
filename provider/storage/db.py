"""The database: one engine per app, one session per request.

The request owns the transaction: handlers change rows through ``db.session`` and the grant or
endpoint commits once, so a redemption and the tokens it issues land together or not at all.
Whatever is left uncommitted when the request ends is rolled back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, scoped_session, sessionmaker

from qr_oidc.provider.storage import migrate

log = logging.getLogger("qr_oidc.db")


class Base(DeclarativeBase):
    pass


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    # WAL lets readers (long polls, status) run beside the one writer; busy_timeout makes a writer
    # wait for the lock instead of failing at once under concurrent polls.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def private_sqlite_file(url: str) -> None:
    """Make an SQLite database file readable by its owner only (0600), before SQLite opens it:
    it holds password hashes, token digests and, without a passphrase, the signing keys. SQLite
    gives its -wal and -shm files the database file's mode. A file made by an older version
    with wider permissions is narrowed, and the operator told."""
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:" \
            or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        pass
    except OSError:  # a folder that does not exist: SQLite's own error says it better
        return
    else:
        os.close(fd)
        return
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o077:
                os.chmod(name, 0o600)
                log.warning("%s was readable by others (mode %o); it is 0600 now", name, mode)
        except OSError:
            continue


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20, **options) -> Engine:
    """The engine for ``url``: SQLite with its pragmas on every connection, or a server database
    with a pre-ping on checkout (unless ``options`` say otherwise)."""
    options = dict(pool_size=pool_size, max_overflow=max_overflow, **options)
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15},
                               **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options.setdefault("pool_pre_ping", True)
    return create_engine(url, **options)


def make_autocommit_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine for single statements that are their own transaction (the token core's,
    grants/token_core.py).

    One round trip per statement on PostgreSQL (no ``BEGIN``/``COMMIT``, no pre-ping: a dead
    connection is replaced when a statement finds it closed: ``TicketStore._raw``,
    provider/storage/tickets.py); on SQLite the write lock is held only inside the statement,
    never while a thread waits for the GIL.
    """
    # Every connection it opens is kept (opened on demand, at most ``pool_size``): one opened and
    # closed per poll under load costs more than the statement. A poll that cannot get one
    # within a second fails (the token endpoint then answers 503).
    return make_engine(url, pool_size, 0, pool_timeout=1, isolation_level="AUTOCOMMIT",
                       pool_reset_on_return=None, pool_pre_ping=False)


class Database:
    """Engine plus a thread-scoped session registry; ``init_app`` ends the session per request."""

    def __init__(self, url: str, pool_size: int = 10, max_overflow: int = 20,
                 fast_pool_size: int = 10, pool_timeout: float = 10):
        self.url = url
        # a request never holds more than one of these at a time, and never across slow work
        # (a password hash, a network call); one that waits longer than pool_timeout answers 503
        self.engine = make_engine(url, pool_size, max_overflow, pool_timeout=pool_timeout)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.session = scoped_session(self.session_factory)
        self._fast_pool_size = max(1, fast_pool_size)
        self._autocommit: Engine | None = None
        self._autocommit_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @property
    def autocommit_engine(self) -> Engine:
        """The engine of ``make_autocommit_engine``, made on first use."""
        if self._autocommit is None:
            with self._autocommit_lock:
                if self._autocommit is None:
                    self._autocommit = make_autocommit_engine(self.url, self._fast_pool_size)
        return self._autocommit

    def write_lock(self):
        """Hold around a short write transaction. SQLite has one writer: threads of a process
        queue here instead of sleeping in SQLite's busy handler (1, 2, 5 ... 100 ms steps), which
        is what makes its tail latency. Other databases lock rows, not the file: no lock."""
        return self._write_lock if self.is_sqlite else contextlib.nullcontext()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def prepare(self) -> None:
        """Create the schema in an empty database; refuse one that is behind (provider/migrate)."""
        migrate.ensure(self.engine)

    def init_app(self, app) -> None:
        app.extensions["qr_oidc_db"] = self

        @app.teardown_appcontext
        def _end_session(_exc):
            self.session.remove()
