"""The status long poll on the event loop (provider/web/events.py): ``POST /qr/status``, the
page's status, and with ``wait`` a long poll.

A waiting page is a coroutine awaiting the notifier (provider/storage/notify.py: this process's
changes at once, other processes' through PostgreSQL's LISTEN on psycopg's async driver or
SQLite's event table), not a thread: one process holds tens of thousands. At most
``LONG_POLLS_PER_TICKET`` (4) are held per ticket and ``LONG_POLL_LIMIT`` per process; one more
is answered at once with the current status (for a ticket already watched, from what its
watchers last read, without touching the database), at most one a second per address
(``LongPolls._pace``), so a flood on one ticket gets little and costs the server little.
"""

from __future__ import annotations

import asyncio
import time

from authlib.oauth2 import OAuth2Error

from qr_oidc.provider.metrics import metrics
from qr_oidc.provider.security import digest
from qr_oidc.provider.web import actions
from qr_oidc.provider.web.event_request import Request


def _done(turn: asyncio.Future) -> None:
    if not turn.done():
        turn.set_result(None)


class Watch:
    """The long polls held on one ticket in this process, and what they last read."""

    __slots__ = ("count", "state")

    def __init__(self, state):
        self.count, self.state = 0, state


class LongPolls:
    """The status requests of one process, and the long polls it holds.

    ``read(request, ticket, first=False)`` reads a ticket's status in a database thread and
    makes a failure an answer (``EventApp._read_status``): a long poll's first read in the
    status reads' own pool, a woken one's in the token work's."""

    def __init__(self, parts, read):
        settings = parts.settings
        self.parts, self.read = parts, read
        self.long_poll_max = settings.long_poll_max
        self.per_ticket = settings.long_polls_per_ticket
        self.limit = settings.long_poll_limit
        self.watches: dict[str, Watch] = {}
        self._paced: dict[str, float] = {}  # address -> when its last unheld answer is due
        self._pacing: set[asyncio.Future] = set()  # the unheld answers waiting their turn
        self.held = 0
        self.stopping = False

    def shutting_down(self) -> None:
        """The server stops: every held long poll answers now with what it knows."""
        self.stopping = True
        self.parts.notifier.publish_all()
        for turn in self._pacing:  # and those waiting their turn answer now, too
            _done(turn)

    async def answer(self, request: Request, receive) -> actions.Answer:
        try:
            asked = actions.status_request(request.params(), self.long_poll_max)
        except OAuth2Error as exc:
            return actions.oauth_refusal(exc)
        if isinstance(asked, actions.Answer):
            return asked
        key = digest(asked.ticket)
        watch = self.watches.get(key)
        if watch is not None and watch.count >= self.per_ticket:
            # this ticket has its share of long polls: the current status, from what they read
            await self._pace(request, asked.wait)
            return actions.status_answer(watch.state)
        state = await self.read(request, asked.ticket, first=True)
        if isinstance(state, actions.Answer):  # the database failed
            return state
        if state is None or asked.wait <= 0 or self.stopping:
            return actions.status_answer(state)
        if self.held >= self.limit or self.per_ticket <= 0:  # the process holds its ceiling
            await self._pace(request, asked.wait)
            return actions.status_answer(state)
        return await self._hold(request, receive, key, asked, state)

    async def _pace(self, request: Request, wait: float) -> None:
        """A long poll the server will not hold (its ticket has its share, or the process its
        ceiling) is answered at once, unless another from the same address was answered so
        within the last second: then it waits its turn, one a second per address, for at most
        its own ``wait``. A page never needs more than one long poll per ticket (and the widget
        waits a second before asking again), so this touches only a flood: whatever it does,
        reconnecting included, it gets one such answer a second per address, and what waits
        meanwhile is a sleeping coroutine, as cheap as a held long poll. When the server
        stops, they answer at once, as the held ones do (``shutting_down``)."""
        if self.stopping:
            return
        address = request.ip or ""
        now = time.monotonic()
        paced = self._paced
        if len(paced) > 100_000:  # forget addresses that have been quiet
            for old in [a for a, at in paced.items() if at < now - 2]:
                del paced[old]
        due = min(max(now, paced.get(address, 0.0) + 1.0), now + max(0.0, wait))
        paced[address] = max(due, paced.get(address, 0.0))
        if due > now:
            loop = asyncio.get_running_loop()
            turn = loop.create_future()
            timer = loop.call_later(due - now, _done, turn)
            self._pacing.add(turn)
            try:
                await turn
            finally:
                timer.cancel()
                self._pacing.discard(turn)

    async def _hold(self, request: Request, receive, key: str, asked, state) -> actions.Answer:
        notifier = self.parts.notifier
        watch = self.watches.get(key)
        if watch is None:
            watch = self.watches[key] = Watch(state)
        if watch.count >= self.per_ticket:  # others came in while this one read
            await self._pace(request, asked.wait)
            return actions.status_answer(watch.state)
        watch.count += 1
        self.held += 1
        metrics.long_poll("status", 1)
        left = asyncio.ensure_future(receive())  # the client leaving frees its place
        try:
            known = asked.known or state.public(time.time())
            deadline = time.monotonic() + asked.wait
            while True:
                at = time.time()
                status = state.public(at)
                if (status != known or time.monotonic() >= deadline or self.stopping
                        or left.done()):
                    return actions.status_answer(state, at)
                remaining = deadline - time.monotonic()
                if status != "expired":  # wake when it expires, too
                    remaining = min(remaining, state.expires_at - at + 0.01)
                seen = notifier.version(state.id)
                await notifier.wait(state.id, seen, remaining, also=left)
                if left.done():  # the client left: nobody reads this
                    return actions.status_answer(state)
                # (a woken long poll reads in the token work's pool: it must not queue behind
                # the new long polls' first reads, which a wave of renewals fills)
                fresh = await self.read(request, asked.ticket)
                if isinstance(fresh, actions.Answer):
                    return fresh
                if fresh is None:  # purged meanwhile
                    return actions.status_answer(None)
                state = watch.state = fresh
        finally:
            left.cancel()
            watch.count -= 1
            self.held -= 1
            metrics.long_poll("status", -1)
            if watch.count <= 0 and self.watches.get(key) is watch:
                del self.watches[key]
