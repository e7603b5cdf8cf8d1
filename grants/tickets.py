"""Login tickets: the state machine. Its rules and transitions are here; its rows are kept by
``TicketStore`` (``provider/storage/tickets.py``), which it asks for what each step needs.

```
pending --scan--> scanned --approve--> approved --token poll--> redeemed
   |                 |--deny-------> denied
   +------ any state before redeemed passes expires_at ------> expired
```

Every transition is a single conditional ``UPDATE tickets SET ... WHERE id = ? AND status = ?
AND expires_at > now``; a row count of 0 means another request (maybe on another instance) got
there first, and the caller reloads to say why. Nothing is read-then-written.

The three secrets of a ticket are stored only as SHA-256 digests: ``ticket`` (the poll secret,
held by the web client), ``scan_code`` (what the QR encodes) and ``user_code`` (typed by hand,
derived from the scan code so the scan response can show it).

The token poll's statements (``record_poll``, ``load_for_poll``, ``slow_down``,
``redeem_with_token``; the rules that order them are ``grants/token_core.py``'s) and the status
endpoint's (``status_row``, ``client_for_poll``) are the store's, run on a raw DB-API cursor of
the autocommit engine for speed: ``provider/storage/tickets.py`` says why.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from qr_oidc.grants.signals import Signals, browser_label
from qr_oidc.provider.audit import audit, audit_after_commit
from qr_oidc.provider.metrics import metrics
from qr_oidc.provider.seal import Sealer
from qr_oidc.provider.security import (
    binding_choices,
    binding_code,
    digest,
    new_id,
    new_secret,
    normalize_user_code,
    user_code_for,
)
from qr_oidc.provider.settings import Settings
from qr_oidc.provider.storage.models import Client, Ticket, User, now
from qr_oidc.provider.storage.notify import notify_in_transaction
from qr_oidc.provider.storage.tickets import TicketStore

log = logging.getLogger("qr_oidc.tickets")


def inbox_key(user_id: int) -> str:
    """What a user's inbox long polls wait on (the notifier's key, provider/storage/notify.py)."""
    return f"inbox:{user_id}"


class TooManyOutstanding(Exception):
    """The user has as many undecided push requests as allowed: 429, ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__("too many outstanding push requests")
        self.retry_after = retry_after


class TicketError(Exception):
    """A mobile-side refusal: ``error`` code and HTTP status, as SPEC.md lists them."""

    def __init__(self, error: str, status: int, description: str):
        super().__init__(description)
        self.error = error
        self.status = status
        self.description = description


@dataclass
class NewTicket:
    row: Ticket
    ticket: str
    scan_code: str
    user_code: str


class Tickets:
    """The ticket state machine; one instance per app, its rows in ``store`` (a
    ``TicketStore`` on ``db``)."""

    def __init__(self, db, settings: Settings, notifier, secret: str, outbox=None):
        self.db = db
        self.store = TicketStore(db)
        # keys the number-matching choices of a ticket: nothing a browser holds derives them
        self._binding_key = hmac.new(secret.encode(), b"qr-oidc binding choices",
                                     hashlib.sha256).digest()
        # a push request's scan code is derived from its id under this key (the inbox must show
        # it, and only its digest is stored); its ping's token and auth_req_id are sealed
        self._push_key = hmac.new(secret.encode(), b"qr-oidc push scan code",
                                  hashlib.sha256).digest()
        self._ping_sealer = Sealer(secret, "qr-oidc ciba ping")
        self.outbox = outbox  # notices owed: CIBA pings, the push gateway's (storage/deliveries)
        self.settings = settings
        self.ttl = settings.ticket_ttl
        self.interval = settings.poll_interval
        self.max_interval = settings.max_poll_interval
        self.retention = settings.expired_retention
        self.notifier = notifier
        self.signals = Signals(db)  # the confirmation screen's hints (grants/signals.py)

    # -- creation ----------------------------------------------------------------------------
    def create(
        self,
        client: Client,
        scope: str,
        *,
        kind: str = "qr",
        nonce: str | None = None,
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
        requester_ip: str | None = None,
        requester_ua: str | None = None,
        auth_request: dict | None = None,
        dpop_jkt: str | None = None,
    ) -> NewTicket:
        for _attempt in range(5):
            ticket, scan_code = new_secret(), secrets.token_urlsafe(22)
            user_code = user_code_for(scan_code)
            created = now()
            row = Ticket(
                id=new_id(),
                ticket_hash=digest(ticket),
                scan_code_hash=digest(scan_code),
                user_code_hash=digest(user_code),
                kind=kind,
                client_id=client.client_id,
                scope=scope,
                nonce=nonce,
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
                binding_code=binding_code() if client.number_matching else None,
                status="pending",
                requester_ip=requester_ip,
                requester_ua=(requester_ua or "")[:512] or None,
                created_at=created,
                expires_at=created + self.ttl,
                poll_interval=self.interval,
                auth_request=auth_request,
                dpop_jkt=dpop_jkt,
            )
            if not self.store.add(row):
                continue  # a user code (34 bits) met a live one: draw new codes
            audit("ticket.created", ticket=row.id, kind=kind, client_id=client.client_id,
                  scope=scope, ip=requester_ip, user_agent=row.requester_ua)
            metrics.ticket(client.client_id, kind, "created")
            return NewTicket(row, ticket, scan_code, user_code)
        raise RuntimeError("could not draw a unique user code")

    # -- push requests (CIBA, grants/ciba.py) ---------------------------------------------------
    def push_scan_code(self, ticket_id: str) -> str:
        """The scan code of a push request: derived from its id under the server's key, so the
        inbox can show it while only its digest is stored."""
        mac = hmac.new(self._push_key, ticket_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:22]).rstrip(b"=").decode()

    def create_push(self, client: Client, scope: str, user: User, *, ttl: int,
                    nonce: str | None = None, binding_message: str | None = None,
                    notification_token: str | None = None, requester_ip: str | None = None,
                    requester_ua: str | None = None) -> NewTicket:
        """A push request: a ticket made for ``user`` (already ``scanned`` by them, so it waits
        for their decision in their inbox), with the push gateway told in the same transaction.
        Raises TooManyOutstanding when the user has ``PUSH_MAX_OUTSTANDING`` undecided."""
        settings = self.settings
        for _attempt in range(5):
            ticket_id, ticket = new_id(), new_secret()
            scan_code = self.push_scan_code(ticket_id)
            user_code = user_code_for(scan_code)
            created = now()
            row = Ticket(
                id=ticket_id, ticket_hash=digest(ticket), scan_code_hash=digest(scan_code),
                user_code_hash=digest(user_code), kind="push", client_id=client.client_id,
                scope=scope, nonce=nonce,
                binding_code=binding_code() if client.number_matching else None,
                status="scanned", user_id=user.id, scanned_at=created,  # (delivered to them)
                requester_ip=requester_ip,
                requester_ua=(requester_ua or "")[:512] or None, created_at=created,
                expires_at=created + ttl, poll_interval=self.interval,
                binding_message=binding_message,
                notification_token=self._ping_sealer.seal(
                    {"token": notification_token, "auth_req_id": ticket})
                if notification_token else None)

            def also(session, row=row):
                notify_in_transaction(session, inbox_key(user.id))
                if settings.push_webhook and self.outbox is not None:
                    self.outbox.add(session, "push", settings.push_webhook, {
                        "event": "push_request", "id": new_id(), "user": user.sub,
                        "request": row.id, "client": client.name,
                        "created_at": int(row.created_at), "expires_at": int(row.expires_at)})

            try:
                refused = self.store.add_push(row, settings.push_max_outstanding, also)
            except IntegrityError:
                self.db.session.rollback()
                continue  # a user code met a live one: draw again
            if refused is not None:
                audit("push.refused", client_id=client.client_id, user_id=user.id,
                      reason="too_many_outstanding")
                metrics.limited("push_outstanding")
                raise TooManyOutstanding(int(refused) + 1)
            self.notifier.publish(inbox_key(user.id))
            audit("ticket.created", ticket=row.id, kind="push", client_id=client.client_id,
                  scope=scope, user_id=user.id, ip=requester_ip, user_agent=row.requester_ua)
            metrics.ticket(client.client_id, "push", "created")
            return NewTicket(row, ticket, scan_code, user_code)
        raise RuntimeError("could not draw a unique user code")

    def _push_decided(self, row: Ticket, status: str):
        """What a push request's decision owes, in its transaction: the inbox's wake-up, and in
        ping mode the client's ping (CIBA §10.2: ``{"auth_req_id"}``, with its token)."""
        sealed = row.notification_token
        client = self.db.session.get(Client, row.client_id) if sealed else None

        def also(session):
            notify_in_transaction(session, inbox_key(row.user_id))
            if status not in ("approved", "denied") or client is None or self.outbox is None:
                return
            endpoint = client.backchannel_client_notification_endpoint
            opened = self._ping_sealer.open(sealed)
            if client.backchannel_token_delivery_mode == "ping" and endpoint and opened:
                self.outbox.add(session, "ping", endpoint,
                                {"auth_req_id": opened["auth_req_id"]}, opened["token"])

        return also

    def inbox(self, user: User, phone_ip: str | None = None) -> list[dict]:
        """The push requests waiting for ``user``'s decision, as the inbox shows them: each the
        scan response's fields, with its ``scan_code``, ``binding_message`` and
        ``kind: "push"``, oldest first."""
        rows = self.store.inbox(user.id, now())
        clients = {}
        entries = []
        for row in rows:
            client = clients.get(row.client_id)
            if client is None:
                client = clients[row.client_id] = self.db.session.get(Client, row.client_id)
            scan_code = self.push_scan_code(row.id)
            entry = self.scan_view(row, user_code_for(scan_code), client, phone_ip=phone_ip)
            entry.update(scan_code=scan_code, binding_message=row.binding_message, kind="push")
            entries.append(entry)
        return entries

    # -- lookups -----------------------------------------------------------------------------
    def by_ticket(self, ticket: str) -> Ticket | None:
        if not isinstance(ticket, str) or not ticket or len(ticket) > 200:
            return None
        return self.store.by_ticket_hash(digest(ticket))

    def by_code(self, scan_code: str | None,
                user_code: str | None) -> tuple[Ticket | None, str | None]:
        """The ticket a phone means, and its user code (to show); by scan code or typed user
        code."""
        if isinstance(scan_code, str) and scan_code:
            if len(scan_code) > 200:
                return None, None
            row = self.store.by_scan_code_hash(digest(scan_code))
            return row, user_code_for(scan_code) if row else None
        code = normalize_user_code(user_code) if user_code else None
        if code is None:
            return None, None
        return self.store.by_user_code_hash(digest(code)), code

    def reload(self, row: Ticket) -> Ticket:
        return self.store.reload(row)

    # -- the web client's side: the token core's statements (grants/token_core.py) ------------
    # Single statements on the autocommit engine's pooled DB-API connections: no ORM, no
    # transaction of their own but the statement (one round trip on PostgreSQL). The store
    # runs them; these name what each one means to the token core.
    def record_poll(self, ticket_hash: str, client_id: str, at: float,
                    push: bool = False, jkt: str | None = None) -> bool:
        """Record a token poll of a waiting ticket that came on time; False (and nothing
        changed) when the ticket is not ``client_id``'s, not waiting (pending or scanned),
        expired, or polled too early. One conditional ``UPDATE``, so the interval holds across
        instances: a poll up to 20% early (network jitter) is on time, the first always is.
        ``push``: the poll is the CIBA grant's, of a push request (else of a QR or device
        ticket). A ticket bound to a DPoP key counts only polls that proved it (``jkt``)."""
        return self.store.record_poll(ticket_hash, client_id, at, push, jkt)

    def load_for_poll(self, ticket_hash: str) -> dict | None:
        """The ticket a poll names, with its user's claims once a user scanned it; None if
        there is none."""
        return self.store.load_for_poll(ticket_hash)

    def status_row(self, ticket_hash: str) -> dict | None:
        """What the status endpoint shows of a ticket (and its user's name and picture), in
        one statement on the autocommit engine: ten thousand pages asking at once cost ten
        thousand single SELECTs, no ORM and no transaction."""
        return self.store.status_row(ticket_hash)

    def slow_down(self, ticket_id: str, at: float) -> None:
        """A poll came too early: it counts as a poll, and the interval grows by 5 s, never
        past the maximum (RFC 8628 §3.5)."""
        self.store.slow_down(ticket_id, at, self.max_interval)

    def client_for_poll(self, client_id: str):
        """(secret_hash, public, grant_types, id_token_alg, token_endpoint_auth_method,
        redirect_uris) of a client, or None: what the event path's client authentication,
        issuance and CORS need."""
        return self.store.client_for_poll(client_id)

    def redeem_with_token(self, ticket_id: str, token: dict) -> bool:
        """Issuance's write: approved -> redeemed and the token row, in one transaction. False
        when another request redeemed it first (or it expired meanwhile): nothing is written.
        The time is read when the transaction starts (after the signatures, and on SQLite after
        the process's write lock: its threads queue there, not in SQLite's busy handler)."""
        return self.store.redeem_with_token(ticket_id, token)

    def redeem(self, row: Ticket, at: float) -> bool:
        """approved -> redeemed, once. Not committed here: the caller commits it with the
        tokens."""
        done = self.store.redeem(row.id, at)
        if done:
            audit_after_commit("ticket.redeemed", ticket=row.id, client_id=row.client_id,
                               user_id=row.user_id)
            self.redeemed(row.client_id, row.kind, at - row.created_at)
        return done

    # -- the phone's side --------------------------------------------------------------------
    def _transition(self, row: Ticket, expected: str, at: float, by_user: int | None = None,
                    **values) -> bool:
        """``expected`` -> ``values["status"]`` if the ticket is still ``expected`` and
        unexpired (and, from scanned, scanned by ``by_user``); committed, ``row`` reloaded and,
        when it changed, the long polls woken and the change audited."""
        also = self._push_decided(row, values["status"]) if row.kind == "push" else None
        done = self.store.transition(row.id, expected, at, values, by_user=by_user, also=also)
        self.reload(row)
        if done:
            self.notifier.publish(row.id)
            audit(f"ticket.{values['status']}", ticket=row.id, client_id=row.client_id,
                  user_id=row.user_id)
            status = values["status"]
            metrics.ticket(row.client_id, row.kind, status)
            metrics.step(row.kind, "scan" if status == "scanned" else "decision",
                         at - row.created_at)
            if values["status"] in ("approved", "denied"):
                self._record_decision(row, values["status"], at)
        return done

    def _record_decision(self, row: Ticket, status: str, at: float) -> None:
        """Keep what the next confirmation screens' hints need (grants/signals.py), in a commit
        of its own after the transition's: a failure here is logged and the decision stands."""
        try:
            if status == "approved":
                self.signals.record_approval(row.user_id, row.requester_ip, row.requester_ua, at)
            else:
                self.signals.record_denial(row.user_id, row.id, at)
        except Exception:
            log.warning("could not record the %s of ticket %s for the risk hints", status,
                        row.id, exc_info=True)
            try:
                self.db.session.rollback()
            except Exception:
                log.warning("rollback after a failed signal write failed", exc_info=True)

    @staticmethod
    def _refuse_unless_live(row: Ticket | None, at: float) -> Ticket:
        if row is None:
            raise TicketError("unknown_code", 404, "No ticket has this code.")
        if row.status in ("denied", "redeemed"):
            raise TicketError("invalid_state", 409, f"The ticket is already {row.status}.")
        if row.is_expired(at):
            raise TicketError("expired", 410, "The ticket has expired.")
        if row.status == "approved":
            raise TicketError("invalid_state", 409, "The ticket is already approved.")
        return row

    def scan(self, row: Ticket | None, user: User) -> Ticket:
        at = now()
        row = self._refuse_unless_live(row, at)
        if row.status == "pending":
            if self._transition(row, "pending", at, status="scanned", user_id=user.id,
                                scanned_at=at):
                return row
            row = self._refuse_unless_live(row, now())
        if row.user_id != user.id:
            raise TicketError("already_scanned", 409, "Another user has scanned this ticket.")
        return row  # the same user scanning again (an app retry) sees the same screen

    def _refuse_unless_scanned_by(self, row: Ticket | None, user: User, at: float) -> Ticket:
        row = self._refuse_unless_live(row, at)
        if row.status == "pending":
            raise TicketError("invalid_state", 409, "Scan the ticket before deciding.")
        if row.user_id != user.id:
            raise TicketError("access_denied", 403, "Another user scanned this ticket.")
        return row

    def approve(self, row: Ticket | None, user: User, binding: str | None) -> Ticket:
        at = now()
        row = self._refuse_unless_scanned_by(row, user, at)
        if row.binding_code is not None:
            if not isinstance(binding, str) or not binding:
                raise TicketError("invalid_request", 400, "Number matching: send binding_code.")
            if not secrets.compare_digest(binding.encode(), row.binding_code.encode()):
                self._transition(row, "scanned", at, by_user=user.id, status="denied",
                                 decided_at=at)
                audit("ticket.binding_mismatch", ticket=row.id, client_id=row.client_id,
                      user_id=user.id)
                raise TicketError(
                    "binding_mismatch", 403, "The number does not match; the login was cancelled."
                )
        if not self._transition(row, "scanned", at, by_user=user.id, status="approved",
                                decided_at=at):
            self._refuse_unless_scanned_by(row, user, now())
            raise TicketError("invalid_state", 409, "The ticket changed meanwhile.")
        return row

    def deny(self, row: Ticket | None, user: User) -> Ticket:
        at = now()
        row = self._refuse_unless_scanned_by(row, user, at)
        if not self._transition(row, "scanned", at, by_user=user.id, status="denied",
                                decided_at=at):
            self._refuse_unless_scanned_by(row, user, now())
            raise TicketError("invalid_state", 409, "The ticket changed meanwhile.")
        return row

    def scan_view(self, row: Ticket, user_code: str, client: Client, *,
                  phone_ip: str | None = None) -> dict:
        """What the phone shows before the user decides (SPEC.md: scan response fields): with
        the requester's browser in words and the risk hints (grants/signals.py); ``phone_ip`` is
        the address the phone (or the confirming browser) came from."""
        view = {
            "client": {
                "client_id": client.client_id,
                "name": client.name,
                "logo_uri": client.logo_uri,
            },
            "scopes": row.scope.split() if row.scope else [],
            "requester": {"ip": row.requester_ip, "user_agent": row.requester_ua,
                          "browser": browser_label(row.requester_ua)},
            "created_at": int(row.created_at),
            "expires_at": int(row.expires_at),
            "user_code": user_code,
            "status": row.public_status(),
        }
        if row.binding_code is not None:
            seed = hmac.new(self._binding_key, row.id.encode(), hashlib.sha256).hexdigest()
            view["binding_choices"] = binding_choices(row.binding_code, seed)
        view["risk"] = self.signals.risk(row.user_id, phone_ip, row.requester_ip,
                                         row.requester_ua, now())
        return view

    @staticmethod
    def redeemed(client_id: str, kind: str, seconds: float) -> None:
        """A ticket was redeemed (by a token poll, or the hosted page's code): the funnel's
        last step."""
        metrics.ticket(client_id, kind, "redeemed")
        metrics.step(kind, "redemption", seconds)

    # -- upkeep ------------------------------------------------------------------------------
    def purge(self) -> int:
        """Delete tickets that expired more than the retention time ago (redeemed ones included):
        until then an expired ticket keeps answering ``expired`` / ``expired_token``. Run by the
        background maintenance thread with a session of its own."""
        gone, count = self.store.purge(now() - self.retention)
        for ticket_id, client_id, status in gone:
            if status not in ("redeemed", "denied", "expired"):  # (not marked: a race)
                audit("ticket.expired", ticket=ticket_id, client_id=client_id, status=status)
        return count

    def mark_expired(self) -> int:
        """Make the tickets whose time ran out ``expired`` (the background upkeep, every round):
        audited and counted once each, whichever instance marks them."""
        marked = self.store.mark_expired(now())
        for ticket_id, client_id, kind in marked:
            audit("ticket.expired", ticket=ticket_id, client_id=client_id, kind=kind)
            metrics.ticket(client_id, kind, "expired")
        return len(marked)
