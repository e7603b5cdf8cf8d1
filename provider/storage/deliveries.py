"""The outbox: HTTP notices the provider owes someone, kept in the database until sent.

Two kinds go out (provider/runtime/deliveries.py sends them):

- ``ping``: a CIBA ping (OpenID CIBA Core 1.0 §10.2) to a client's
  ``backchannel_client_notification_endpoint`` once a push request it made is decided, with
  ``Authorization: Bearer <client_notification_token>`` (kept sealed here: it must be sent back
  as it was, so it cannot be a digest);
- ``push``: a notice to the operator's push gateway (``QR_OIDC_PUSH_WEBHOOK``) that a user has a
  new push request, signed with HMAC-SHA256 when sent. It names the user and the request, never
  a token or a code;
- ``logout``: a Back-Channel Logout token to a client's ``backchannel_logout_uri`` (a form with
  ``logout_token``, grants/logout.py).

A notice is written in the transaction of the change it tells of (``add`` with that session),
so a change that rolls back owes nothing and one that commits is not forgotten when the process
dies: any serving instance sends it. Sending never happens in the request that caused it. The
queue is bounded (``DELIVERY_QUEUE_MAX``): past it a new notice is dropped, counted and logged,
rather than letting a dead endpoint grow the table without end; a notice not delivered within
``DELIVERY_TTL`` seconds is dropped too (a ping about a request that has expired helps nobody).
"""

from __future__ import annotations

import json
import logging
import threading
from urllib.parse import urlencode

from sqlalchemy import delete, func, or_, select, update

from qr_oidc.provider.seal import Sealer
from qr_oidc.provider.storage.models import Delivery, now

log = logging.getLogger("qr_oidc.deliveries")

BACKOFF_MAX = 60.0  # seconds between attempts at most
# notices sent as a form, not JSON: a Back-Channel Logout 1.0 §2.5 logout token
FORM_KINDS = frozenset({"logout"})


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 1, 2, 4 ... 60."""
    return min(BACKOFF_MAX, 2.0 ** max(0, attempts - 1))


class Outbox:
    """The ``deliveries`` table of one database; one per app (``parts.outbox``)."""

    def __init__(self, db, settings, secret: str):
        self.db = db
        self.ttl = settings.delivery_ttl
        self.queue_max = settings.delivery_queue_max
        self._sealer = Sealer(secret, "qr-oidc delivery authorization")
        # set when this process added a notice: its sender looks at once instead of at its
        # next round (other instances' senders find it at theirs)
        self.added = threading.Event()
        self.dropped = 0

    def add(self, session, kind: str, url: str, body: dict,
            authorization: str | None = None) -> bool:
        """Owe ``body`` (JSON) to ``url``, in ``session``'s transaction (the caller commits).
        False, and nothing written, when the queue is full."""
        waiting = session.scalar(select(func.count()).select_from(Delivery))
        if waiting >= self.queue_max:
            self.dropped += 1
            log.warning("delivery queue full (%d): a %s notice was dropped", waiting, kind)
            return False
        at = now()
        text = urlencode(body) if kind in FORM_KINDS else json.dumps(body, separators=(",", ":"))
        session.add(Delivery(
            kind=kind, url=url, body=text,
            authorization=self._sealer.seal({"v": authorization}) if authorization else None,
            attempts=0, created_at=at, next_at=at, expires_at=at + self.ttl))
        self.added.set()
        return True

    # -- the sender's side (provider/runtime/deliveries.py) -----------------------------------
    def claim(self, limit: int, hold: float) -> list[dict]:
        """Up to ``limit`` notices that are due and nobody is sending, each now held by this
        caller for ``hold`` seconds (one conditional ``UPDATE`` per notice, so two instances
        never send the same one at once). Notices past their time are dropped first."""
        at = now()
        claimed = []
        with self.db.session_factory() as session:
            expired = session.execute(delete(Delivery).where(Delivery.expires_at <= at))
            if expired.rowcount:
                log.warning("dropped %d notices not delivered in time", expired.rowcount)
            session.commit()
            due = session.execute(
                select(Delivery).where(Delivery.next_at <= at, or_(
                    Delivery.locked_until.is_(None), Delivery.locked_until <= at))
                .order_by(Delivery.next_at).limit(limit)).scalars().all()
            for row in due:
                taken = session.execute(
                    update(Delivery)
                    .where(Delivery.id == row.id, Delivery.attempts == row.attempts)
                    .values(locked_until=at + hold, attempts=row.attempts + 1)
                    .execution_options(synchronize_session=False)).rowcount
                session.commit()
                if taken:
                    opened = self._sealer.open(row.authorization) if row.authorization \
                        else None
                    claimed.append({"id": row.id, "kind": row.kind, "url": row.url,
                                    "body": row.body.encode(),
                                    "authorization": opened.get("v") if opened else None,
                                    "attempts": row.attempts + 1,
                                    "expires_at": row.expires_at})
        return claimed

    def delivered(self, delivery_id: int) -> None:
        with self.db.session_factory() as session:
            session.execute(delete(Delivery).where(Delivery.id == delivery_id))
            session.commit()

    def failed(self, delivery: dict) -> bool:
        """An attempt failed: try again after the backoff, or drop it when that would be past
        its time. True when it will be tried again."""
        next_at = now() + backoff(delivery["attempts"])
        with self.db.session_factory() as session:
            if next_at >= delivery["expires_at"]:
                session.execute(delete(Delivery).where(Delivery.id == delivery["id"]))
                again = False
            else:
                session.execute(update(Delivery).where(Delivery.id == delivery["id"])
                                .values(next_at=next_at, locked_until=None))
                again = True
            session.commit()
        return again

    def waiting(self) -> int:
        with self.db.session_factory() as session:
            return session.scalar(select(func.count()).select_from(Delivery))
