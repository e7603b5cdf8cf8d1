"""SQLite's stand-in for NOTIFY (provider/storage/notify.py): the ``ticket_events`` rows a
transition writes, read by each process's ``SqliteWatcher``. The cross-process behaviour is shown
against real servers in test_cluster.py; this checks the watcher itself on a real SQLite file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sqlalchemy import delete, insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qr_oidc.provider.storage.db import Database
from qr_oidc.provider.storage.models import TicketEvent
from qr_oidc.provider.storage.notify import LocalNotifier, SqliteWatcher


def test_the_watcher_hears_every_event_after_it_started_even_once_the_table_was_purged(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'events.db'}")
    database.prepare()
    notifier = LocalNotifier()
    watcher = SqliteWatcher(database.engine, notifier)

    def event(ticket_id):
        with database.engine.begin() as connection:
            connection.execute(insert(TicketEvent).values(ticket_id=ticket_id, at=time.time()))

    event("before")  # made before the watcher started: already in the rows it will read
    assert watcher.poll_once() == 0
    event("a")
    event("b")
    assert watcher.poll_once() == 2
    assert notifier.version("a") == notifier.version("b") == 1
    assert notifier.version("before") == 0
    assert watcher.poll_once() == 0  # each event once

    # the maintenance purge empties the table; new events must still be new to the watcher
    with database.engine.begin() as connection:
        connection.execute(delete(TicketEvent))
    event("c")
    assert watcher.poll_once() == 1
    assert notifier.version("c") == 1
    database.engine.dispose()


def test_the_maintenance_purge_keeps_a_minute_of_events(tmp_path):
    from sqlalchemy import select

    from qr_oidc.provider.storage.notify import EVENT_RETENTION, purge_events

    database = Database(f"sqlite:///{tmp_path / 'events.db'}")
    database.prepare()
    with database.engine.begin() as connection:
        connection.execute(insert(TicketEvent), [
            {"ticket_id": "old", "at": time.time() - EVENT_RETENTION - 5},
            {"ticket_id": "new", "at": time.time() - EVENT_RETENTION + 30},
        ])
    assert purge_events(database) == 1
    with database.engine.connect() as connection:
        assert connection.scalars(select(TicketEvent.ticket_id)).all() == ["new"]
    database.engine.dispose()


def test_the_watcher_recovers_when_the_numbers_go_back(tmp_path):
    """A database restored from an older backup numbers its events from lower down."""
    database = Database(f"sqlite:///{tmp_path / 'events.db'}")
    database.prepare()
    notifier = LocalNotifier()
    watcher = SqliteWatcher(database.engine, notifier)
    watcher.poll_once()
    watcher.last = 10**9  # what it saw before the restore
    for _ in range(100):  # it checks every 100 rounds (5 s at 50 ms)
        watcher.poll_once()
    assert watcher.last < 10**9
    with database.engine.begin() as connection:
        connection.execute(insert(TicketEvent).values(ticket_id="after", at=time.time()))
    assert watcher.poll_once() == 1 and notifier.version("after") == 1
    database.engine.dispose()
