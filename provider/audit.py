"""The audit log: one JSON line per ticket event and per sign-in, for operators to ship elsewhere.

Logger ``qr_oidc.audit``; ``qr-oidc serve`` writes it to standard error as bare JSON lines
(``{"ts": …, "event": "ticket.approved", "ticket": "<internal id>", "client_id": …, "user": <sub>,
"ip": …, "user_agent": …}``). Events: ``ticket.created``, ``ticket.scanned``, ``ticket.approved``,
``ticket.denied``, ``ticket.redeemed``, ``ticket.expired``, ``signin``, ``signin.failed``,
``signin.refused``. A ticket is named by its internal id, never by one of its secrets; no token or
code is ever logged.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

from flask import g, has_request_context, request

log = logging.getLogger("qr_oidc.audit")

# the peer (ip, user agent) of a request the event path (provider/events.py) serves, which has
# no Flask request: set around the work it hands to a database thread
PEER: ContextVar[tuple[str | None, str | None] | None] = ContextVar("qr_oidc_peer",
                                                                   default=None)


def audit(event: str, **fields) -> None:
    """One line for ``event``. ``ip`` and ``user_agent`` are the request's peer unless the
    fields name the person another way (a backend's ``requester_ip``): the peer is then ``via``.
    Written as ASCII JSON, so no user agent can break a line (U+0085, U+2028 and the like are
    escaped)."""
    record = {"ts": round(time.time(), 3), "event": event}
    peer = None
    if has_request_context():
        peer = record["ip"] = request.remote_addr
        record["user_agent"] = (request.headers.get("User-Agent") or "")[:200] or None
    elif PEER.get() is not None:
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


def audit_after_commit(event: str, **fields) -> None:
    """Record an event that is true only once the request's transaction commits."""
    g.setdefault("qr_oidc_audit", []).append((event, fields))


def flush_after_commit() -> None:
    for event, fields in g.pop("qr_oidc_audit", []):
        audit(event, **fields)


def discard_after_rollback() -> None:
    g.pop("qr_oidc_audit", None)
