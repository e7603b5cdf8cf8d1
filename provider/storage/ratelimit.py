"""Rate limits that hold across instances: counters in the database, or in Redis when configured.

A limit is ``count/seconds`` (``QR_OIDC_RATE_*``, or ``off``): a fixed window per key, counted by
one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count``) or
Redis ``INCR``, so several instances share one counter. Over the limit the caller answers 429 with
``Retry-After`` (the seconds left in the window) and ``{"error": "too_many_requests"}``.

Counting comes first: ``hit`` increments and compares in one step, before the work it limits
(the password check, the user-code lookup), so parallel attempts cannot all pass a limit that one
would; a success gives its count back (``give_back``). The counters use the request's own
database session (a request never needs a second connection) and are committed at once.

What is limited (SPEC.md; RFC 8628 §5.1 for user codes):
- ticket creation, per client (at the client's own ``--ticket-rate`` if it has one) and per
  requester address (``requester_ip`` from a confidential client's backend, else the peer; a
  confidential client that passes none is limited per client only);
- user-code entry, per user and per IP (only wrong codes stay counted);
- sign-in, per account and per IP (only failed passwords stay counted);
- push login requests (CIBA), per client.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qr_oidc.provider.metrics import metrics
from qr_oidc.provider.settings import Settings
from qr_oidc.provider.storage.models import RateCounter

LIMIT_NAMES = {
    "ticket_client": "RATE_TICKET_CLIENT",
    "ticket_ip": "RATE_TICKET_IP",
    "user_code_user": "RATE_USER_CODE_USER",
    "user_code_ip": "RATE_USER_CODE_IP",
    "login_account": "RATE_LOGIN_ACCOUNT",
    "login_ip": "RATE_LOGIN_IP",
    "push_client": "RATE_PUSH_CLIENT",
}


@dataclass(frozen=True)
class Limit:
    count: int
    window: int


def parse_limit(name: str, raw: str) -> Limit | None:
    """``"30/60"`` -> 30 per 60 s; ``"off"`` -> None."""
    if str(raw).strip().lower() == "off":
        return None
    try:
        count, window = (int(part) for part in str(raw).split("/"))
    except ValueError:
        raise ValueError(f"QR_OIDC_{name} must be COUNT/SECONDS or off, not {raw!r}") from None
    if count < 1 or window < 1:
        raise ValueError(f"QR_OIDC_{name} must be COUNT/SECONDS with both at least 1")
    return Limit(count, window)


CONFIGURED: Limit = Limit(0, 0)  # hit()'s default: the limit the settings give that kind

# Redis: take one back from a counter that still exists, never below zero
_GIVE_BACK = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


class TooManyRequests(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, db, settings: Settings):
        self.db = db
        self.namespace = settings.issuer
        self.limits = {kind: parse_limit(name, settings.rate(name))
                       for kind, name in LIMIT_NAMES.items()}
        self.redis = None
        if settings.redis_url:
            import redis

            self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=2)

    def _window(self, limit: Limit, at: float) -> tuple[int, float]:
        index = int(at // limit.window)
        return index, (index + 1) * limit.window

    def _count(self, key: str, ends: float, add: int) -> int:
        """Add ``add`` (1 or -1) to a window's counter; returns the count after it."""
        if self.redis is not None:
            if add > 0:
                pipe = self.redis.pipeline()
                pipe.incrby(key, add)
                pipe.expireat(key, math.ceil(ends) + 1)
                return int(pipe.execute()[0])
            return int(self.redis.eval(_GIVE_BACK, 1, key))
        session = self.db.session
        if add < 0:
            session.execute(update(RateCounter).where(RateCounter.key == key,
                                                      RateCounter.count > 0)
                            .values(count=RateCounter.count - 1)
                            .execution_options(synchronize_session=False))
            count = 0
        else:
            dialect = session.get_bind().dialect.name
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            statement = (
                insert(RateCounter)
                .values(key=key, count=add, expires_at=ends)
                .on_conflict_do_update(index_elements=[RateCounter.key],
                                       set_={"count": RateCounter.count + add})
                .returning(RateCounter.count)
            )
            count = session.execute(statement).scalar_one()
        session.commit()  # at once: the window is shared with every other request
        return count

    def _key(self, kind: str, subject: str, limit: Limit, at: float) -> tuple[str, float]:
        """The counter's name: a digest, so no address or username is kept in clear, and
        namespaced by issuer, so providers may share one Redis."""
        index, ends = self._window(limit, at)
        name = f"{self.namespace}|{kind}|{subject}|{limit.window}|{index}"
        return "qr-oidc:rl:" + hashlib.sha256(name.encode()).hexdigest(), ends

    def hit(self, kind: str, subject: str | None, limit: Limit | None = CONFIGURED):
        """Count one attempt, then refuse it (TooManyRequests) if that went over the limit: one
        atomic increment-and-compare, so parallel attempts cannot all pass. ``limit`` replaces
        the configured one (a client's own rate; None: unlimited). Returns what ``give_back``
        needs to take this very count back (None when nothing was counted)."""
        limit = self.limits[kind] if limit is CONFIGURED else limit
        if limit is None or not subject:
            return None
        at = time.time()
        key, ends = self._key(kind, subject[:150], limit, at)
        if self._count(key, ends, 1) > limit.count:
            metrics.limited(kind)
            raise TooManyRequests(max(1, math.ceil(ends - at)))
        return key, ends

    def first_use(self, value: str, until: float) -> bool:
        """True the first time ``value`` is seen before ``until`` (a DPoP proof's key and jti,
        grants/dpop.py), False every later time: one atomic increment of a counter that lives
        until then, in the database or Redis, so a replay is caught on any instance."""
        name = f"{self.namespace}|once|{value}"
        key = "qr-oidc:once:" + hashlib.sha256(name.encode()).hexdigest()
        return self._count(key, until, 1) == 1

    def client_limit(self, client) -> Limit | None:
        """A client's ticket creation limit: its own (``clients create --ticket-rate``), else
        QR_OIDC_RATE_TICKET_CLIENT."""
        if client.ticket_rate:
            return parse_limit("ticket_rate", client.ticket_rate)
        return self.limits["ticket_client"]

    def give_back(self, counted) -> None:
        """Undo a ``hit`` (what it returned) whose attempt succeeded (a right password, a known
        user code): only failures stay counted. In the window it was counted in; never below
        zero."""
        if counted is not None:
            self._count(*counted, -1)

    def purge(self) -> int:
        """Drop finished windows (database counters; Redis expires its own)."""
        with self.db.session_factory() as session:
            result = session.execute(
                delete(RateCounter).where(RateCounter.expires_at < time.time()))
            session.commit()
            return result.rowcount or 0
