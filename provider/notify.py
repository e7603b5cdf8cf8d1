"""Wake long polls when a ticket changes.

A change made in this process wakes its waiters at once. On PostgreSQL every transition also sends
``NOTIFY qr_oidc_tickets, '<ticket id>'`` in its transaction, and each process keeps one connection
that LISTENs and wakes its own waiters, so a long poll on instance A answers as soon as the phone's
approval commits on instance B, with no extra infrastructure. Waiters also re-read the database at
least every ``recheck`` seconds: on SQLite with several workers, and as a safety net should the
listening connection drop, a change is seen within that bound.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import text

CHANNEL = "qr_oidc_tickets"
log = logging.getLogger("qr_oidc.notify")


def notify_in_transaction(session, ticket_id: str) -> None:
    """Queue a cross-instance wake-up; PostgreSQL delivers it when the transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :id)"), {"channel": CHANNEL, "id": ticket_id})


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
