"""Browser sessions at the provider: a record on the server for every sign-in.

The cookie (Flask's signed session, ``__Host-``-prefixed on https) carries a random session id
(256 bits), the CSRF token and the time of the last request; the server keeps the id's SHA-256
digest with the user, ``auth_time``, ``amr`` and an absolute expiry (``browser_sessions``). A
session is valid while its record exists, has not ended and has not expired, and while the
browser came back within the idle time. So:

- signing out ends the record: a copied cookie stops working at once, on every instance;
- a password change (``qr-oidc users set-password``) ends every session of that user;
- ``QR_OIDC_SESSION_IDLE`` and ``QR_OIDC_SESSION_LIFETIME`` bound a session's life.

Only a sign-in (a POST) writes a record. Reading one writes nothing (no GET changes a row): the
idle clock lives in the signed cookie, refreshed at most once a minute.

A QR approval on the hosted login page does **not** start a session: it is consent for that one
authorization request, which it answers with a code (``provider/web/pages.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app, g, session
from sqlalchemy import delete, update

from qr_oidc.provider.security import digest, new_id, new_secret
from qr_oidc.provider.storage.models import BrowserSession, User

SEEN_REFRESH = 60  # at most, seconds between refreshes of the cookie's last-request time


@dataclass
class SignedIn:
    user: User
    record: BrowserSession


def _settings():
    return current_app.extensions["qr_oidc"].settings


def _db():
    return current_app.extensions["qr_oidc"].db


def start(user_id: int, amr: str, auth_time: float | None = None) -> None:
    """A new session for ``user_id`` (a new id: no fixation), recorded on the server; the one
    this browser had before ends (a copy of its cookie must not outlive the new sign-in)."""
    settings = _settings()
    at = time.time()
    database = _db()
    previous = session.get("sid")
    if isinstance(previous, str):
        _end_record(database.session, previous, at)
    sid = new_secret()
    database.session.add(BrowserSession(
        id=digest(sid), sid=new_id(), user_id=user_id, amr=amr, auth_time=auth_time or at,
        created_at=at,
        expires_at=at + settings.session_lifetime))
    database.session.commit()
    session.clear()
    session["sid"] = sid
    session["seen"] = int(at)
    g.pop("qr_oidc_signed_in", None)


def current() -> SignedIn | None:
    """The signed-in user of this browser and their session record, or None."""
    if "qr_oidc_signed_in" in g:
        return g.qr_oidc_signed_in
    found = _lookup()
    g.qr_oidc_signed_in = found
    return found


def _lookup() -> SignedIn | None:
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    at = time.time()
    seen = session.get("seen")
    idle = _settings().session_idle
    record = None
    if isinstance(seen, int) and at - seen <= idle:
        record = _db().session.get(BrowserSession, digest(sid))
    user = None
    if record is not None and record.ended_at is None and record.expires_at > at:
        user = _db().session.get(User, record.user_id)
    if user is None:
        forget()
        return None
    if at - seen >= min(SEEN_REFRESH, idle / 4):
        session["seen"] = int(at)
    return SignedIn(user, record)


def forget() -> None:
    """Drop this browser's sign-in from its cookie (the record, if any, is left as it is)."""
    session.pop("sid", None)
    session.pop("seen", None)
    g.pop("qr_oidc_signed_in", None)


def end() -> None:
    """Sign this browser out: end its record on the server, then forget it."""
    sid = session.get("sid")
    if isinstance(sid, str):
        database = _db()
        _end_record(database.session, sid, time.time())
        database.session.commit()
    session.clear()
    g.pop("qr_oidc_signed_in", None)


def _end_record(db_session, sid: str, at: float) -> None:
    db_session.execute(
        update(BrowserSession).where(BrowserSession.id == digest(sid),
                                     BrowserSession.ended_at.is_(None))
        .values(ended_at=at).execution_options(synchronize_session=False))


def end_all(db_session, user_id: int) -> int:
    """End every session of a user (a password change); returns how many. Not committed."""
    return db_session.execute(
        update(BrowserSession).where(BrowserSession.user_id == user_id,
                                     BrowserSession.ended_at.is_(None))
        .values(ended_at=time.time()).execution_options(synchronize_session=False)).rowcount or 0


def purge(db, keep: float = 86400.0) -> int:
    """Delete records that ended or expired more than ``keep`` seconds ago (maintenance)."""
    cutoff = time.time() - keep
    with db.session_factory() as db_session:
        gone = db_session.execute(delete(BrowserSession).where(
            (BrowserSession.expires_at < cutoff) | (BrowserSession.ended_at < cutoff))).rowcount
        db_session.commit()
    return gone or 0
