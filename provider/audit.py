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

from flask import g, has_request_context, request

log = logging.getLogger("qr_oidc.audit")


def audit(event: str, **fields) -> None:
    record = {"ts": round(time.time(), 3), "event": event}
    if has_request_context():
        record["ip"] = request.remote_addr
        record["user_agent"] = (request.headers.get("User-Agent") or "")[:200] or None
    record.update(fields)
    log.info(json.dumps({k: v for k, v in record.items() if v is not None},
                        separators=(",", ":"), ensure_ascii=False))


def audit_after_commit(event: str, **fields) -> None:
    """Record an event that is true only once the request's transaction commits."""
    g.setdefault("qr_oidc_audit", []).append((event, fields))


def flush_after_commit() -> None:
    for event, fields in g.pop("qr_oidc_audit", []):
        audit(event, **fields)


def discard_after_rollback() -> None:
    g.pop("qr_oidc_audit", None)
