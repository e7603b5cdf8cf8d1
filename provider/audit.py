"""The audit log: one JSON line per ticket event and per sign-in, for operators to ship elsewhere.

Logger ``qr_oidc.audit``; ``qr-oidc serve`` writes it to standard error as bare JSON lines
(``{"ts": …, "event": "ticket.approved", "ticket": "<internal id>", "client_id": …, "user": <sub>,
"ip": …, "user_agent": …}``). Events: ``ticket.created``, ``ticket.scanned``, ``ticket.approved``,
``ticket.denied``, ``ticket.redeemed``, ``ticket.expired``, ``signin``, ``signin.failed``,
``signin.refused``, ``password.rehashed`` (a sign-in stored the password again with the cost
``PASSWORD_COST`` asks for). A ticket is named by its internal id, never by one of its secrets;
no token or code is ever logged.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

log = logging.getLogger("qr_oidc.audit")

# the peer (ip, user agent) of the request being served: set by the web layer (Flask's
# before_request, provider/web/app.py; the event path around the work it hands to a database
# thread, provider/web/events.py), so that this module knows no web framework
PEER: ContextVar[tuple[str | None, str | None] | None] = ContextVar("qr_oidc_peer",
                                                                   default=None)
# events true only once the request's transaction commits (audit_after_commit)
_AFTER_COMMIT: ContextVar[list | None] = ContextVar("qr_oidc_audit_after_commit", default=None)


def audit(event: str, **fields) -> None:
    """One line for ``event``. ``ip`` and ``user_agent`` are the request's peer unless the
    fields name the person another way (a backend's ``requester_ip``): the peer is then ``via``.
    Written as ASCII JSON, so no user agent can break a line (U+0085, U+2028 and the like are
    escaped)."""
    record = {"ts": round(time.time(), 3), "event": event}
    peer = None
    if PEER.get() is not None:
        peer, agent = PEER.get()
        record["ip"] = peer
        record["user_agent"] = (agent or "")[:200] or None
    record.update(fields)
    if isinstance(record.get("user_agent"), str):
        record["user_agent"] = record["user_agent"][:200]
    if peer is not None and record.get("ip") != peer:
        record["via"] = peer
    log.info(json.dumps({k: v for k, v in record.items() if v is not None},
                        separators=(",", ":"), ensure_ascii=True))


def begin(ip: str | None, user_agent: str | None) -> None:
    """A request starts: its peer, and no event waiting for a commit."""
    PEER.set((ip, user_agent))
    _AFTER_COMMIT.set(None)


def end() -> None:
    """A request ends: what waited for a commit that never came is dropped."""
    PEER.set(None)
    _AFTER_COMMIT.set(None)


def audit_after_commit(event: str, **fields) -> None:
    """Record an event that is true only once the request's transaction commits."""
    waiting = _AFTER_COMMIT.get()
    if waiting is None:
        waiting = []
        _AFTER_COMMIT.set(waiting)
    waiting.append((event, fields))


def flush_after_commit() -> None:
    waiting = _AFTER_COMMIT.get() or []
    _AFTER_COMMIT.set(None)
    for event, fields in waiting:
        audit(event, **fields)


def discard_after_rollback() -> None:
    _AFTER_COMMIT.set(None)
