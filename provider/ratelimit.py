"""Rate limits that hold across instances: counters in the database, or in Redis when configured.

A limit is ``count/seconds`` (``QR_OIDC_RATE_*``, or ``off``): a fixed window per key, counted by
one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count``) or
Redis ``INCR``, so several instances share one counter. Over the limit the caller answers 429 with
``Retry-After`` (the seconds left in the window) and ``{"error": "too_many_requests"}``.

What is limited (SPEC.md; RFC 8628 §5.1 for user codes):
- ticket creation, per client and per IP (every creation counts);
- user-code entry, per user and per IP (wrong codes count);
- sign-in, per account and per IP (failed passwords count).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .models import RateCounter

LIMIT_NAMES = {
    "ticket_client": "RATE_TICKET_CLIENT",
    "ticket_ip": "RATE_TICKET_IP",
    "user_code_user": "RATE_USER_CODE_USER",
    "user_code_ip": "RATE_USER_CODE_IP",
    "login_account": "RATE_LOGIN_ACCOUNT",
    "login_ip": "RATE_LOGIN_IP",
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


class TooManyRequests(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, db, settings: dict):
        self.db = db
        self.namespace = settings["ISSUER"]
        self.limits = {kind: parse_limit(name, settings[name]) for kind, name in LIMIT_NAMES.items()}
        self.redis = None
        if settings.get("REDIS_URL"):
            import redis

            self.redis = redis.Redis.from_url(settings["REDIS_URL"], socket_timeout=2)

    def _window(self, limit: Limit, at: float) -> tuple[int, float]:
        index = int(at // limit.window)
        return index, (index + 1) * limit.window

    def _count(self, key: str, ends: float, at: float, add: int) -> int:
        if self.redis is not None:
            if add:
                pipe = self.redis.pipeline()
                pipe.incrby(key, add)
                pipe.expireat(key, math.ceil(ends) + 1)
                return int(pipe.execute()[0])
            return int(self.redis.get(key) or 0)
        with self.db.session_factory() as session:
            if not add:
                row = session.get(RateCounter, key)
                return row.count if row else 0
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
            session.commit()
            return count

    def _key(self, kind: str, subject: str, limit: Limit, at: float) -> tuple[str, float]:
        """The counter's name: a digest, so no address or username is kept in clear, and
        namespaced by issuer, so providers may share one Redis."""
        index, ends = self._window(limit, at)
        name = f"{self.namespace}|{kind}|{subject}|{limit.window}|{index}"
        return "qr-oidc:rl:" + hashlib.sha256(name.encode()).hexdigest(), ends

    def hit(self, kind: str, subject: str | None, refuse: bool = True) -> None:
        """Count one event; with ``refuse``, raise TooManyRequests if it goes over the limit
        (without: a failure is counted and the next ``check`` refuses)."""
        limit = self.limits[kind]
        if limit is None or not subject:
            return
        at = time.time()
        key, ends = self._key(kind, subject[:150], limit, at)
        if self._count(key, ends, at, 1) > limit.count and refuse:
            raise TooManyRequests(max(1, math.ceil(ends - at)))

    def check(self, kind: str, subject: str | None) -> None:
        """Raise TooManyRequests if the limit is used up, without counting (failure counters)."""
        limit = self.limits[kind]
        if limit is None or not subject:
            return
        at = time.time()
        key, ends = self._key(kind, subject[:150], limit, at)
        if self._count(key, ends, at, 0) >= limit.count:
            raise TooManyRequests(max(1, math.ceil(ends - at)))

    def purge(self) -> int:
        """Drop finished windows (database counters; Redis expires its own)."""
        with self.db.session_factory() as session:
            result = session.execute(delete(RateCounter).where(RateCounter.expires_at < time.time()))
            session.commit()
            return result.rowcount or 0
