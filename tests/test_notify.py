"""SQLite's stand-in for NOTIFY (provider/storage/notify.py): the ``ticket_events`` rows a
transition writes, read by each process's ``SqliteWatcher``. The cross-process behaviour is shown
against real servers in test_cluster.py; this checks the watcher itself on a real SQLite file."""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import delete, insert, select

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
    watcher.poll_once()
    assert watcher.last == 10**9  # an ordinary round reads only what comes after
    watcher.full_round()  # every 100 rounds (5 s at 50 ms)
    assert watcher.last < 10**9
    with database.engine.begin() as connection:
        connection.execute(insert(TicketEvent).values(ticket_id="after", at=time.time()))
    assert watcher.poll_once() == 1 and notifier.version("after") == 1
    database.engine.dispose()


def _event(database, ticket_id):
    with database.engine.begin() as connection:
        connection.execute(insert(TicketEvent).values(ticket_id=ticket_id, at=time.time()))


def test_the_watcher_reads_the_table_only_after_a_commit(tmp_path):
    """``changed``: PRAGMA data_version on the watcher's own connection moves when another
    connection commits, and only then."""
    database = Database(f"sqlite:///{tmp_path / 'events.db'}")
    database.prepare()
    notifier = LocalNotifier()
    watcher = SqliteWatcher(database.engine, notifier)
    assert watcher.full_round() == 0
    assert watcher.changed() is False
    assert watcher.changed() is False
    _event(database, "a")  # another connection (the engine's) commits
    assert watcher.changed() is True
    assert watcher.changed() is False  # told once
    assert watcher.poll_once() == 1 and notifier.version("a") == 1
    with database.engine.connect() as connection:  # a read commits nothing
        connection.execute(select(TicketEvent.seq)).all()
    assert watcher.changed() is False
    database.engine.dispose()


def test_an_idle_watcher_does_not_read_and_a_commit_wakes_it(tmp_path):
    """The watcher's loop on an event loop: idle rounds cost no database read in a thread;
    an event committed meanwhile is published within a few rounds."""
    database = Database(f"sqlite:///{tmp_path / 'events.db'}")
    database.prepare()
    notifier = LocalNotifier()
    reads = []

    class Watcher(SqliteWatcher):
        interval = 0.01

        def poll_once(self, check=False):
            reads.append(check)
            return super().poll_once(check)

    async def scenario():
        notifier.bind(asyncio.get_running_loop())
        with ThreadPoolExecutor(1) as pool:
            task = asyncio.create_task(Watcher(database.engine, notifier).run(pool))
            await asyncio.sleep(0.6)  # about 60 rounds with nothing committed
            idle = list(reads)
            await asyncio.get_running_loop().run_in_executor(pool, _event, database, "b")
            for _ in range(200):
                if notifier.version("b"):
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return idle

    idle = asyncio.run(scenario())
    assert idle == [True]  # only the first (full) round read the table
    assert notifier.version("b") == 1
    database.engine.dispose()
