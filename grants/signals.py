"""Signals for the confirmation screen (SPEC.md: "Scan response fields"): what the phone shows
beside the request so the user can tell their own sign-in from someone else's.

- ``browser_label``: the requester's browser in words ("Firefox 140 on macOS"), parsed from its
  user agent with ua-parser (never a regex of ours), cached;
- ``same_network``: whether the phone and the requester share a /24 (IPv4) or a /64 (IPv6);
- ``Signals.risk``: ``first_time`` (this user never approved a request from this address and
  browser) and ``recent_denials`` (this user's denials in the last 24 hours), from the
  ``user_signals`` table that ``record_approval`` and ``record_denial`` keep.

They are hints, shown neutrally: nothing here refuses a request.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache

from sqlalchemy import and_, case, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from ua_parser import parse

from qr_oidc.provider.security import digest
from qr_oidc.provider.storage.models import UserSignal

log = logging.getLogger("qr_oidc.signals")

DAY = 86400
MAX_LABEL = 100
_UA_PARSED = 512  # a ticket keeps at most 512 characters of a user agent; parse no more
# ua-parser's names, as people know them
_OS_NAMES = {"Mac OS X": "macOS"}


def _clean(text: str | None, limit: int = 40) -> str:
    """A part of a label: printable characters only, no surrounding space, bounded."""
    if not text:
        return ""
    return "".join(ch for ch in str(text) if ch.isprintable()).strip()[:limit].strip()


@lru_cache(maxsize=2048)
def _label(user_agent: str) -> str | None:
    try:
        result = parse(user_agent)
    except Exception:  # ua-parser's regexes on any string: a failure is "unknown", not an error
        return None
    agent = result.user_agent
    family = _clean(agent.family) if agent is not None else ""
    if not family or family == "Other":
        return None
    label = family
    major = _clean(agent.major, 12)
    if major:
        label += f" {major}"
    system = result.os
    os_family = _clean(system.family) if system is not None else ""
    if os_family and os_family != "Other":
        label += f" on {_OS_NAMES.get(os_family, os_family)}"
    return label[:MAX_LABEL]


def browser_label(user_agent: str | None) -> str | None:
    """"Firefox 140 on macOS", "Chrome 131 on Windows", "Mobile Safari 17 on iOS", "curl 8";
    None for an empty user agent or one ua-parser does not know. Never raises."""
    if not isinstance(user_agent, str):
        return None
    user_agent = user_agent[:_UA_PARSED]
    if not user_agent.strip():
        return None
    return _label(user_agent)


def _address(value: str | None):
    if not isinstance(value, str) or not value or len(value) > 100:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def same_network(a: str | None, b: str | None) -> bool:
    """Whether two addresses share a /24 (IPv4) or a /64 (IPv6); an IPv4-mapped IPv6 address
    counts as its IPv4 address. False when either is missing or not an address."""
    first, second = _address(a), _address(b)
    if first is None or second is None or first.version != second.version:
        return False
    prefix = 24 if first.version == 4 else 64
    network = ipaddress.ip_network(f"{first}/{prefix}", strict=False)
    return second in network


def requester_key(ip: str | None, user_agent: str | None) -> str:
    """The key of an approval from a requester: its address and browser (the label, so a
    minor update or a changed build string is the same browser; the raw user agent when it has
    none), digested: no address is kept in clear."""
    return digest(f"{ip or ''}|{browser_label(user_agent) or user_agent or ''}")


class Signals:
    """The ``user_signals`` rows of ``db`` (provider/storage/db.Database): written in the
    request's session (``db.session``) and committed at once, read in it; purged in a session
    of its own."""

    def __init__(self, db):
        self.db = db

    def _upsert(self, session, user_id: int, kind: str, key: str, at: float) -> None:
        dialect = session.get_bind().dialect.name
        if dialect in ("postgresql", "sqlite"):
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            statement = insert(UserSignal).values(user_id=user_id, kind=kind, key=key, at=at)
            session.execute(statement.on_conflict_do_update(
                index_elements=[UserSignal.user_id, UserSignal.kind, UserSignal.key],
                set_={"at": statement.excluded.at}))
        else:  # another database: read and write (a race loses one time stamp, nothing more)
            session.merge(UserSignal(user_id=user_id, kind=kind, key=key, at=at))
        session.commit()

    def record_approval(self, user_id: int, ip: str | None, user_agent: str | None,
                        at: float) -> None:
        """``user_id`` approved a request from this address and browser at ``at``: one row per
        requester, its latest time."""
        self._upsert(self.db.session, user_id, "approved", requester_key(ip, user_agent), at)

    def record_denial(self, user_id: int, ticket_id: str, at: float) -> None:
        """``user_id`` denied ticket ``ticket_id`` at ``at``."""
        self._upsert(self.db.session, user_id, "denied", ticket_id, at)

    def risk(self, user_id: int, phone_ip: str | None, requester_ip: str | None,
             requester_ua: str | None, at: float) -> dict:
        """The hints for a confirmation screen, in one statement: ``same_network``,
        ``first_time`` and ``recent_denials`` (the last 24 hours before ``at``)."""
        key = requester_key(requester_ip, requester_ua)
        recent = at - DAY
        approved = and_(UserSignal.kind == "approved", UserSignal.key == key)
        denied = and_(UserSignal.kind == "denied", UserSignal.at >= recent)
        known, denials = self.db.session.execute(
            select(func.coalesce(func.sum(case((approved, 1), else_=0)), 0),
                   func.coalesce(func.sum(case((denied, 1), else_=0)), 0))
            .where(UserSignal.user_id == user_id, or_(approved, denied))
        ).one()
        return {
            "same_network": same_network(phone_ip, requester_ip),
            "first_time": not known,
            "recent_denials": int(denials),
        }

    def purge(self, cutoff: float) -> int:
        """Delete the denials made before ``cutoff`` (the maintenance thread passes a day ago:
        ``risk`` counts no older one); approvals stay, they are what makes a browser known. How
        many rows went."""
        with self.db.session_factory() as session:
            result = session.execute(delete(UserSignal).where(
                UserSignal.kind == "denied", UserSignal.at < cutoff))
            session.commit()
            return result.rowcount or 0
