"""The phone's inbox on the event loop (provider/web/events.py): ``POST /qr/inbox``, the signed-in
user's pending push requests, and with ``wait`` a long poll that answers as soon as they change.

As the status long poll (provider/web/longpoll.py), a waiting phone is a coroutine awaiting the
notifier, not a thread: a push request made on any instance wakes it (``inbox:<user>`` is
published in the request's transaction, through PostgreSQL's NOTIFY or SQLite's event table),
and so do its decision and its expiry. At most ``LONG_POLLS_PER_TICKET`` are held per user and
``LONG_POLL_LIMIT`` per process (shared with the status long polls); one more answers at once.
"""

from __future__ import annotations

import asyncio
import time

from qr_oidc.grants.tickets import inbox_key
from qr_oidc.provider.metrics import metrics
from qr_oidc.provider.web import actions
from qr_oidc.provider.web.event_request import Request


class InboxPolls:
    """``run(request, function, *args)`` runs ``function`` in a database thread and makes a
    failure an answer (``EventApp._db``); ``long_polls`` is the process's LongPolls, whose
    ceiling these share; ``proof(request)`` what the request offers as a DPoP proof."""

    def __init__(self, parts, run, long_polls, proof):
        self.parts, self.run, self.long_polls, self.proof = parts, run, long_polls, proof
        self.per_user = parts.settings.long_polls_per_ticket
        self.held_per_user: dict[int, int] = {}

    async def answer(self, request: Request, receive) -> actions.Answer:
        parts = self.parts
        found = await self.run(request, actions.inbox, parts,
                               request.headers.get("authorization"), request.params,
                               request.ip, parts.settings.long_poll_max, self.proof(request))
        if isinstance(found, actions.Answer):
            return found
        if (found.wait <= 0 or found.cursor != (found.known or found.cursor)
                or (found.known is None and found.requests)):
            return found.answer()  # something to show now
        polls = self.long_polls
        held = self.held_per_user.get(found.user_id, 0)
        if held >= self.per_user or polls.held >= polls.limit or polls.stopping:
            return found.answer()
        self.held_per_user[found.user_id] = held + 1
        polls.held += 1
        metrics.long_poll("inbox", 1)
        try:
            return await self._hold(request, receive, found)
        finally:
            polls.held -= 1
            metrics.long_poll("inbox", -1)
            left = self.held_per_user[found.user_id] - 1
            if left:
                self.held_per_user[found.user_id] = left
            else:
                del self.held_per_user[found.user_id]

    async def _hold(self, request: Request, receive, found: actions.Inbox) -> actions.Answer:
        notifier, key = self.parts.notifier, inbox_key(found.user_id)
        known = found.cursor
        deadline = time.monotonic() + found.wait
        left = asyncio.ensure_future(receive())  # the phone leaving frees its place
        try:
            while True:
                remaining = deadline - time.monotonic()
                if (found.cursor != known or remaining <= 0 or left.done()
                        or self.long_polls.stopping):
                    return found.answer()
                if found.wake_at is not None:  # wake when the first request expires, too
                    # (expires_at is in whole seconds: a second late rather than early)
                    remaining = min(remaining, max(0.0, found.wake_at - time.time()) + 1.0)
                seen = notifier.version(key)
                await notifier.wait(key, seen, remaining, also=left)
                if left.done():
                    return found.answer()
                again = await self.run(request, actions.inbox_again, self.parts,
                                       found.user_id, request.ip, found.wait, found.known)
                if isinstance(again, actions.Answer):
                    return again
                if again is None:  # the user is gone
                    return actions.error("invalid_token", 401, "The token names no user.")
                found = again
        finally:
            left.cancel()
