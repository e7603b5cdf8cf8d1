"""Wake long polls when a ticket changes.

A change made in this process wakes its waiters at once. On PostgreSQL every transition also sends
``NOTIFY qr_oidc_tickets, '<ticket id>'`` in its transaction, and each process keeps one connection
that LISTENs and wakes its own waiters, so a long poll on instance A answers as soon as the phone's
approval commits on instance B, with no extra infrastructure. SQLite has no NOTIFY: there every
transition writes a ``ticket_events`` row in its transaction, and each serving process reads the
rows after the last it saw every ``SqliteWatcher.interval`` (50 ms; one indexed ``SELECT``, however
many long polls wait, and only after a commit: ``PRAGMA data_version`` on a connection of its own
tells, on the event loop, without a thread), so the workers of ``--workers N`` wake each other too.

The waiters are coroutines on the server's event loop (provider/web/longpoll.py): a waiting page
costs a future, not a thread. They also re-read the database at least every ``recheck`` seconds
(``QR_OIDC_LONG_POLL_RECHECK``; by default only when their wait ends), as a safety net, and all
of them re-read at once after the LISTEN connection was lost and made again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from urllib.parse import quote

from sqlalchemy import delete, func, insert, select, text

from qr_oidc.provider.storage.models import TicketEvent

CHANNEL = "qr_oidc_tickets"
log = logging.getLogger("qr_oidc.notify")


def notify_in_transaction(session, ticket_id: str) -> None:
    """Queue a cross-process wake-up, delivered when the transaction commits."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :id)"),
                        {"channel": CHANNEL, "id": ticket_id})
    elif dialect == "sqlite":
        session.execute(insert(TicketEvent).values(ticket_id=ticket_id, at=time.time()))


EVENT_RETENTION = 60.0  # seconds a ticket_events row is kept (a watcher reads it within 50 ms)


def purge_events(db) -> int:
    """Delete old ``ticket_events`` rows (the maintenance thread); 0 on other databases."""
    if not db.is_sqlite:
        return 0
    with db.engine.begin() as connection:
        return connection.execute(
            delete(TicketEvent).where(TicketEvent.at < time.time() - EVENT_RETENTION)).rowcount


class LocalNotifier:
    """Ticket changes of this process, for the long polls waiting on its event loop.

    ``publish`` may be called from any thread (a database thread that approved a ticket, the
    SQLite watcher, Flask's threads); ``wait`` is awaited on the event loop the notifier is
    bound to (``bind``, at the server's start). A waiter costs a future, not a thread."""

    def __init__(self, recheck: float = 30.0):
        self.recheck = recheck
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, set] = {}
        self._loop = None
        self._loop_thread: int | None = None

    def bind(self, loop) -> None:
        self._loop, self._loop_thread = loop, threading.get_ident()

    def version(self, key: str) -> int:
        with self._lock:
            return self._versions.get(key, 0)

    def publish(self, key: str) -> None:
        with self._lock:
            if len(self._versions) > 10000:
                # forget old tickets; a waiter that loses its entry just re-reads the database
                self._versions.clear()
            self._versions[key] = self._versions.get(key, 0) + 1
        self._call(self._wake, key)

    def publish_all(self) -> None:
        """Wake every waiter to re-read (changes may have been missed: a lost LISTEN
        connection, a server shutting down)."""
        self._call(self._wake_all)

    def _call(self, function, *args) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            function(*args)
        else:
            try:
                loop.call_soon_threadsafe(function, *args)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _wake(self, key: str) -> None:
        for future in self._waiters.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for key in list(self._waiters):
            self._wake(key)

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiters.values())

    async def wait(self, key: str, seen: int, timeout: float, also=None) -> None:
        """Return when ``key`` moves past version ``seen``, after at most ``timeout`` (and at
        most ``recheck``) seconds, or when the future ``also`` (a client's disconnect) is done."""
        if self.version(key) != seen:
            return
        future = self._loop.create_future()
        self._waiters.setdefault(key, set()).add(future)
        try:
            waits = {future} if also is None else {future, also}
            await asyncio.wait(waits, timeout=max(0.0, min(timeout, self.recheck)),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            futures = self._waiters.get(key)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiters[key]
            if not future.done():
                future.cancel()


async def pg_listen(url, notifier: LocalNotifier, ready: asyncio.Event | None = None) -> None:
    """LISTEN on one connection of this process (psycopg's async driver, on the event loop)
    and wake the process's waiters; reconnects with backoff, and wakes every waiter after a
    reconnection (a change may have been missed meanwhile). Runs until cancelled."""
    import psycopg

    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    backoff = 0.5
    while True:
        try:
            connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            async with connection:
                await connection.execute(f"LISTEN {CHANNEL}")
                notifier.publish_all()
                if ready is not None:
                    ready.set()
                backoff = 0.5
                async for message in connection.notifies():
                    notifier.publish(message.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database restarted, the network blinked: retry
            if ready is not None:
                ready.clear()
            log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


class SqliteWatcher:
    """Feeds a LocalNotifier from ``ticket_events``: SQLite's LISTEN, for the other processes
    (gunicorn workers, other instances on the same file) on the same database.

    An idle server does not read the table 20 times a second: each round first asks SQLite
    whether anything was committed since the last look (``PRAGMA data_version``, which changes
    when another connection commits; microseconds, no I/O in WAL mode beyond the shared-memory
    index), on the event loop, and reads the events in a database thread only then. Every
    ``full_every`` rounds (5 s) it reads anyway, on a freshly opened probe, as a safety net: a
    database file replaced under the server (restored from a backup) is seen that way."""

    interval = 0.05
    full_every = 100

    def __init__(self, engine, notifier: LocalNotifier):
        self.engine, self.notifier = engine, notifier
        self.last: int | None = None
        self._rounds = 0
        self._probe: sqlite3.Connection | None = None
        self._version: int | None = None

    def _open_probe(self) -> None:
        """(In a database thread.) A connection of the watcher's own for ``data_version``: it
        never waits for a lock (``timeout=0``: a busy database is read in the thread instead)
        and holds no transaction open."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        path = self.engine.url.database
        if not path or path == ":memory:":
            return  # no other process can share it: every round reads, as before
        try:  # (mode=rw: a file that is not there is an error, never a new empty database)
            self._probe = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, timeout=0,
                                          isolation_level=None, check_same_thread=False)
            self._version = self._probe.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            self._probe = None

    def changed(self) -> bool:
        """(On the event loop.) Whether anything may have been committed since the last look."""
        if self._probe is None:
            return True
        try:
            version = self._probe.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:  # busy, or gone: read the table to be sure
            return True
        if version == self._version:
            return False
        self._version = version
        return True

    def full_round(self) -> int:
        """(In a database thread.) A new probe, then the events, whatever the probe says."""
        self._open_probe()
        return self.poll_once(check=True)

    def poll_once(self, check: bool = False) -> int:
        """Publish the events after the last one seen; returns how many. With ``check``, also
        make sure the numbers did not go back (a database restored from a backup)."""
        with self.engine.connect() as connection:
            if self.last is None or check:
                # start from now (earlier changes are in the rows already)
                top = connection.scalar(select(func.max(TicketEvent.seq))) or 0
                if self.last is None or top < self.last:
                    self.last = top
                    return 0
            rows = connection.execute(
                select(TicketEvent.seq, TicketEvent.ticket_id)
                .where(TicketEvent.seq > self.last).order_by(TicketEvent.seq)).all()
        for seq, ticket_id in rows:
            self.notifier.publish(ticket_id)
            self.last = seq
        return len(rows)

    async def run(self, executor) -> None:
        """Read the events every ``interval`` in a thread of ``executor`` until cancelled."""
        loop = asyncio.get_running_loop()
        warned = 0.0
        try:
            while True:
                await asyncio.sleep(self.interval)
                self._rounds += 1
                full = self._rounds % self.full_every == 1  # the first round, then every 5 s
                if not full and not self.changed():
                    continue
                try:
                    await loop.run_in_executor(executor,
                                               self.full_round if full else self.poll_once)
                except Exception as exc:  # a locked or busy database: the next round reads again
                    self._version = None
                    if time.monotonic() - warned > 60:  # once a minute, not 20 times a second
                        warned = time.monotonic()
                        log.warning("ticket event read failed (%s)", type(exc).__name__)
        finally:
            if self._probe is not None:
                self._probe.close()
