"""What the ticket endpoints do, free of any web framework: the status read, the phone's
scan, approve and deny, and the phone's inbox of push requests.

Two front ends call these functions and add only HTTP: the event-driven hot path
(``provider/web/events.py`` and ``longpoll.py``, which ``qr-oidc serve`` runs) and Flask's routes
(``provider/web/tickets.py`` and ``mobile.py``, the same app in process). Each function runs
in a thread that may wait for the database and uses that thread's session
(``parts.db.session``); the caller ends the session afterwards. An answer is an ``Answer``:
status, JSON body and extra headers; errors carry ``{"error", "error_description"}`` as SPEC.md
lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from authlib.oauth2 import OAuth2Error

from qr_oidc.grants.access_tokens import BearerError, Proof, authenticate_bearer
from qr_oidc.grants.dpop import ALGORITHMS as DPOP_ALGORITHMS
from qr_oidc.grants.tickets import TicketError
from qr_oidc.provider.security import digest, normalize_user_code
from qr_oidc.provider.storage.models import Client, User
from qr_oidc.provider.storage.ratelimit import TooManyRequests

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    # an OAuth2Error from Authlib's family, rendered as Authlib renders it (provider/web/oauth.py)
    oauth_error: OAuth2Error | None = None
    cors: list = field(default_factory=list)  # (name, value) pairs, provider/web/cors.py


def error(code: str, status: int, description: str, headers: dict | None = None) -> Answer:
    return Answer(status, {"error": code, "error_description": description},
                  {**NO_STORE, **(headers or {})})


def ok(body: dict, status: int = 200) -> Answer:
    return Answer(status, body, dict(NO_STORE))


def too_many(exc: TooManyRequests) -> Answer:
    return error("too_many_requests", 429, "Too many requests; try again later.",
                 {"Retry-After": str(exc.retry_after)})


def bearer_error(exc: BearerError) -> Answer:
    """RFC 6750 §3's challenge, or RFC 9449 §7.1's (``DPoP``, with the algorithms a proof may
    use, and ``DPoP-Nonce`` when the proof must carry the server's nonce)."""
    challenge = f'{exc.scheme} error="{exc.error}", error_description="{exc.description}"'
    if exc.error == "insufficient_scope":
        challenge += ', scope="qr:approve"' if "qr:approve" in exc.description else ""
    headers = {"WWW-Authenticate": challenge}
    if exc.scheme == "DPoP":
        headers["WWW-Authenticate"] += f', algs="{" ".join(DPOP_ALGORITHMS)}"'
        if exc.nonce:
            headers["DPoP-Nonce"] = exc.nonce
    return error(exc.error, exc.status, exc.description, headers)


def oauth_refusal(exc: OAuth2Error) -> Answer:
    return Answer(exc.status_code or 400, {}, {}, oauth_error=exc)


# -- status ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusRequest:
    ticket: str
    wait: float  # seconds, already bounded by LONG_POLL_MAX
    known: str | None  # the status the page has (last_status)


def wait_of(data: Mapping[str, str]) -> float | Answer:
    """A long poll's ``wait``: seconds (0 when absent), or the refusal of one that is not."""
    try:
        wait = float(data.get("wait") or 0)
    except ValueError:
        wait = -1.0
    if not 0 <= wait < 1e6:  # (also NaN)
        return error("invalid_request", 400, "'wait' must be a number of seconds.")
    return wait


def status_request(data: Mapping[str, str], long_poll_max: float) -> StatusRequest | Answer:
    """The parameters of a status request, or the refusal to answer."""
    secret = data.get("ticket")
    if not secret:
        return error("invalid_request", 400, "Missing 'ticket'.")
    wait = wait_of(data)
    if isinstance(wait, Answer):
        return wait
    return StatusRequest(secret, min(wait, float(long_poll_max)), data.get("last_status"))


@dataclass(frozen=True)
class TicketState:
    """What the status endpoint says of a ticket, read at one moment."""

    id: str
    ticket_hash: str
    status: str  # as stored: expiry is a time, see ``public``
    expires_at: float
    user: dict | None  # {"name", "picture"} once someone scanned it

    def public(self, at: float) -> str:
        if self.status in ("redeemed", "denied"):
            return self.status
        return "expired" if at >= self.expires_at else self.status

    def body(self, at: float) -> dict:
        status = self.public(at)
        body = {"status": status, "expires_in": max(0, int(self.expires_at - at))}
        if self.user is not None and status != "expired":
            body["user"] = self.user
        return body


def read_status(parts, secret: str) -> TicketState | None:
    """The ticket whose poll secret is ``secret``, as the status endpoint shows it; None for
    none. One statement (``Tickets.status_row``): nothing is held afterwards."""
    if not isinstance(secret, str) or not secret or len(secret) > 200:
        return None
    key = digest(secret)
    row = parts.tickets.status_row(key)
    if row is None:
        return None
    user = None
    if row["user_id"] is not None and row["username"] is not None:
        user = {"name": row["name"] or row["username"], "picture": row["picture"]}
    return TicketState(row["id"], key, row["status"], row["expires_at"], user)


def status_answer(state: TicketState | None, at: float | None = None) -> Answer:
    if state is None:
        return error("unknown_ticket", 404, "No such ticket.")
    return ok(state.body(time.time() if at is None else at))


def status_key(secret: str) -> str:
    """What long polls on one ticket share (its secret's digest, as stored)."""
    return digest(secret)


# -- the phone's side --------------------------------------------------------------------------
def phone_user(parts, authorization: str | None, params: Callable[[], Mapping[str, str]],
               proof: Proof | None):
    """The phone app's user, its token's row and the body's parameters, for every endpoint of
    the phone (Bearer or DPoP, scope ``qr:approve``); or the refusal to answer."""
    try:
        _claims, row, user = authenticate_bearer(parts, authorization,
                                                 required_scope="qr:approve", proof=proof)
    except BearerError as exc:
        return bearer_error(exc)
    if user is None:
        return bearer_error(BearerError("invalid_token", 401, "The token names no user."))
    try:
        data = params()
    except OAuth2Error as exc:
        return oauth_refusal(exc)
    return row, user, data


def mobile(parts, action: str, authorization: str | None,
           params: Callable[[], Mapping[str, str]], remote_addr: str | None,
           proof: Proof | None = None) -> Answer:
    """``scan``, ``approve`` or ``deny`` for the signed-in phone app (Bearer ``qr:approve``).
    ``params()`` reads the body (raising ``OAuth2Error`` for one that is not a body)."""
    signed_in = phone_user(parts, authorization, params, proof)
    if isinstance(signed_in, Answer):
        return signed_in
    _row, user, data = signed_in
    scan_code, user_code = data.get("scan_code"), data.get("user_code")
    if not scan_code and not user_code:
        return error("invalid_request", 400, "Send scan_code (from the QR) or user_code.")
    if scan_code:
        row, code = parts.tickets.by_code(scan_code, None)
    else:
        try:
            row, code = find_by_user_code(parts, user_code, user, remote_addr)
        except TooManyRequests as exc:
            return too_many(exc)
    tickets = parts.tickets
    try:
        if action == "scan":
            row = tickets.scan(row, user)
            client = parts.db.session.get(Client, row.client_id)
            return ok(tickets.scan_view(row, code, client, phone_ip=remote_addr))
        if action == "approve":
            row = tickets.approve(row, user, data.get("binding_code"))
        else:
            row = tickets.deny(row, user)
        return ok({"status": row.public_status()})
    except TicketError as exc:
        parts.db.session.rollback()
        return error(exc.error, exc.status, exc.description)


def find_by_user_code(parts, typed: str, user, remote_addr: str | None):
    """A ticket by typed user code, counting wrong codes per user and per IP (RFC 8628 §5.1):
    a guesser is stopped after RATE_USER_CODE_USER wrong tries. Every try is counted before
    the lookup (so parallel guesses cannot pass the limit together); a right one is given
    back."""
    limiter = parts.limiter
    counted = [limiter.hit("user_code_user", user.sub),
               limiter.hit("user_code_ip", remote_addr)]
    row, code = parts.tickets.by_code(None, typed) if normalize_user_code(typed) else (None, None)
    if row is not None:
        for count in counted:
            limiter.give_back(count)
    return row, code


# -- the phone's inbox of push requests ----------------------------------------------------------
@dataclass
class Inbox:
    """A user's pending push requests as the inbox shows them, read at one moment."""

    user_id: int
    requests: list  # the entries (Tickets.inbox)
    wait: float  # seconds the caller may hold the answer (0: answer now)
    known: str | None  # the cursor the phone has

    @property
    def cursor(self) -> str:
        """Names the set of requests (and how each stands), so a phone asks for changes."""
        seen = "|".join(f"{e['scan_code']}:{e['status']}" for e in self.requests)
        return digest("inbox " + seen)[:16]

    @property
    def wake_at(self) -> float | None:
        """When the first of the requests expires (and leaves the inbox)."""
        return min((e["expires_at"] for e in self.requests), default=None)

    def answer(self) -> Answer:
        return ok({"requests": self.requests, "cursor": self.cursor})


def inbox(parts, authorization: str | None, params: Callable[[], Mapping[str, str]],
          remote_addr: str | None, long_poll_max: float,
          proof: Proof | None = None) -> Inbox | Answer:
    """The signed-in user's (Bearer ``qr:approve``) undecided push requests; with ``wait`` (and
    the ``cursor`` of the last answer) the caller may hold the answer until they change."""
    signed_in = phone_user(parts, authorization, params, proof)
    if isinstance(signed_in, Answer):
        return signed_in
    _row, user, data = signed_in
    wait = wait_of(data)
    if isinstance(wait, Answer):
        return wait
    known = data.get("cursor") or None
    if known is not None and len(known) > 64:
        return error("invalid_request", 400, "'cursor' is not one this endpoint gave.")
    return Inbox(user.id, parts.tickets.inbox(user, phone_ip=remote_addr),
                 min(wait, float(long_poll_max)), known)


def inbox_again(parts, user_id: int, remote_addr: str | None, wait: float,
                known: str | None) -> Inbox | None:
    """The inbox read again for a held long poll (the user, not the token, is known now); None
    if the user is gone."""
    user = parts.db.session.get(User, user_id)
    if user is None:
        return None
    return Inbox(user_id, parts.tickets.inbox(user, phone_ip=remote_addr), wait, known)


# -- the phone's list of sign-ins ------------------------------------------------------------------
def phone_sessions(parts, authorization: str | None, params: Callable[[], Mapping[str, str]],
                   proof: Proof | None = None, end: bool = False) -> Answer:
    """The signed-in user's sign-ins (``qr_sessions_endpoint``), or with ``end`` the one named by
    ``sid`` ended (``qr_end_session_endpoint``): its tokens revoked, its clients told by
    back-channel logout (grants/logout.py). The sign-in the app itself uses is marked
    ``current`` and is not ended here: the app signs out for that."""
    signed_in = phone_user(parts, authorization, params, proof)
    if isinstance(signed_in, Answer):
        return signed_in
    row, user, data = signed_in
    logouts = parts.logouts
    if not end:
        listed = logouts.sessions(user.id)
        for entry in listed:
            if entry["sid"] == row.sid:
                entry["current"] = True
        return ok({"sessions": listed})
    sid = data.get("sid")
    if not sid or len(sid) > 32:
        return error("invalid_request", 400, "Send the sid of one of your sessions.")
    if sid == row.sid:
        return error("invalid_request", 400, "This is the session this app signed in with: "
                     "sign out of the app to end it.")
    if not any(entry["sid"] == sid for entry in logouts.sessions(user.id)):
        return error("unknown_session", 404, "You have no such session (or it has ended).")
    told = logouts.end(user.id, sid, "ended-on-phone")
    return ok({"ended": sid, "clients_notified": len(told)})
