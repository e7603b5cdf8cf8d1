"""Wake long polls when a ticket changes.

A change made in this process wakes its waiters at once. On PostgreSQL every transition also sends
``NOTIFY qr_oidc_tickets, '<ticket id>'`` in its transaction, and each process keeps one connection
that LISTENs and wakes its own waiters, so a long poll on instance A answers as soon as the phone's
approval commits on instance B, with no extra infrastructure. SQLite has no NOTIFY: there every
transition writes a ``ticket_events`` row in its transaction, and each serving process reads the
rows after the last it saw every ``SqliteWatcher.interval`` (50 ms; one indexed ``SELECT``, however
many long polls wait), so the workers of ``--workers N`` wake each other too. Waiters also re-read
the database at least every ``recheck`` seconds, as a safety net.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import delete, func, insert, select, text

from .models import TicketEvent

CHANNEL = "qr_oidc_tickets"
log = logging.getLogger("qr_oidc.notify")


def notify_in_transaction(session, ticket_id: str) -> None:
    """Queue a cross-process wake-up, delivered when the transaction commits."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :id)"), {"channel": CHANNEL, "id": ticket_id})
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
    def __init__(self, recheck: float = 1.0):
        self.recheck = recheck
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}

    def version(self, key: str) -> int:
        with self._cond:
            return self._versions.get(key, 0)

    def publish(self, key: str) -> None:
        with self._cond:
            if len(self._versions) > 10000:
                # forget old tickets; a waiter that loses its entry just re-reads the database
                self._versions.clear()
            self._versions[key] = self._versions.get(key, 0) + 1
            self._cond.notify_all()

    def wait(self, key: str, seen: int, timeout: float) -> None:
        """Return when ``key`` moves past version ``seen``, or after at most ``timeout``/``recheck``."""
        deadline = time.monotonic() + min(timeout, self.recheck)
        with self._cond:
            while self._versions.get(key, 0) == seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)


class PgListener:
    """One LISTEN connection per process, feeding a LocalNotifier; reconnects on failure."""

    def __init__(self, url, notifier: LocalNotifier):
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.notifier = notifier
        self.ready = threading.Event()
        self._stop = threading.Event()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="qr-oidc-listen", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.ready.set()
                    backoff = 0.5
                    while not self._stop.is_set():
                        for message in conn.notifies(timeout=1.0):
                            self.notifier.publish(message.payload)
            except Exception as exc:  # the database restarted, the network blinked: retry
                self.ready.clear()
                log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


class SqliteWatcher:
    """Feeds a LocalNotifier from ``ticket_events``: SQLite's LISTEN, for the other processes
    (gunicorn workers, other instances on the same file) on the same database."""

    interval = 0.05

    def __init__(self, engine, notifier: LocalNotifier):
        self.engine, self.notifier = engine, notifier
        self._stop = threading.Event()
        self.last: int | None = None
        self._rounds = 0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="qr-oidc-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def poll_once(self) -> int:
        """Publish the events after the last one seen; returns how many."""
        with self.engine.connect() as connection:
            self._rounds += 1
            if self.last is None or self._rounds % 100 == 0:
                # start from now (earlier changes are in the rows already); and every 5 s make
                # sure the numbers did not go back (a database restored from a backup)
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

    def _run(self) -> None:
        warned = 0.0
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception as exc:  # a locked or busy database: the next round reads again
                if time.monotonic() - warned > 60:  # say so once a minute, not 20 times a second
                    warned = time.monotonic()
                    log.warning("ticket event read failed (%s)", type(exc).__name__)
