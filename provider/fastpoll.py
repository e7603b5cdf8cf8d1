"""The hot path: the QR and device grants' token poll, answered before Flask.

Every browser waiting for a QR login polls ``POST /token`` every interval, and almost every such
poll answers ``authorization_pending``; the last one gets the tokens. Through Flask, Authlib and
the ORM the first costs a cookie session, three ORM statements in a transaction (client, ticket,
conditional update) and the framework's request and response objects: about a sixth of what the
bare server can answer; the second about eight times a no-op request, against two signatures
(docs/performance.md). This WSGI middleware answers exactly those two cases with one statement
(and, for tokens, a second one that writes) and hands everything else, untouched, to the full
path.

It answers only when all of this holds, and then the full path would have answered the same:

- ``POST /token`` with a small ``application/x-www-form-urlencoded`` body, no ``Origin`` (CORS
  answers go through Flask), each parameter once, valid UTF-8 (``provider/body.py``'s rules);
- ``grant_type`` is the QR ticket or the device grant, with its credential parameter;
- the client authenticates by ``provider/clientauth.authenticate``, the function the full path
  calls too (the client's registered method, one method per request), against a copy of the
  client's row at most half a second old (a changed secret or setting is seen within a second
  by every process); and the client may use the grant;
- ``Tickets.fast_poll`` finds the ticket this client's and unexpired, and either
  - waiting (pending or scanned) and polled no earlier than the interval allows: it records the
    poll (the same check and bookkeeping as ``Tickets.note_poll``) and the answer is
    ``authorization_pending``; or
  - approved, with the PKCE verifier that matches its challenge if it has one, and no
    ``resource`` asked for: the tokens are made by the builders every grant uses
    (``oauth.new_access_token``, ``openid.id_token``, ``oauth.token_row``), signed before
    anything is written, and ``Tickets.redeem_with_token`` redeems the ticket and writes the
    token row in one transaction, as ``QRTicketGrant.create_token_response`` does. The audit
    log gets its ``ticket.redeemed`` line.

Anything else (too early, denied, expired, unknown, a wrong secret or verifier, a ticket
another request redeemed first, a database error) goes on to Flask with the body restored, where
the same rules give ``slow_down``, tokens or the error. The answers are the bytes and headers
Flask gives (tests/test_token_poll.py compares both paths: the pending answer byte for byte, the
token response member by member and claim by claim), and the access log gets its line, marked
``fast``.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oidc.core.grants.util import is_openid_scope

from grants.openid import id_token
from grants.qr_ticket import verifier_matches
from grants.tickets import Tickets

from . import clientauth
from .audit import audit
from .body import _form
from .headers import security_headers
from .models import DEVICE_GRANT_TYPE, QR_GRANT_TYPE
from .oauth import new_access_token, token_row
from .security import digest

access_log = logging.getLogger("qr_oidc.access")
log = logging.getLogger("qr_oidc.fastpoll")

CREDENTIAL = {QR_GRANT_TYPE: "ticket", DEVICE_GRANT_TYPE: "device_code"}
MAX_FAST_BODY = 4096
PENDING = {"error": "authorization_pending", "error_description": "The user has not approved yet."}


@dataclass(frozen=True)
class ClientRecord:
    """What client authentication and issuance need of a client row."""

    client_id: str
    secret_hash: str | None
    public: bool
    grant_types: frozenset
    id_token_alg: str | None
    auth_method: str


class ClientCache:
    """Client rows, kept per process for ``ttl`` seconds: a secret or setting changed by the
    operator is seen by every process within a second. An unknown id is never cached (the full
    path answers it)."""

    def __init__(self, tickets: Tickets, ttl: float = 0.5):
        self.tickets, self.ttl = tickets, ttl
        self._rows: dict[str, tuple[float, ClientRecord]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: str) -> ClientRecord | None:
        hit = self._rows.get(client_id)
        at = time.monotonic()
        if hit is not None and hit[0] > at:
            return hit[1]
        row = self.tickets.client_for_poll(client_id)
        if row is None:
            return None
        secret_hash, public, grant_types, id_token_alg, auth_method = row
        record = ClientRecord(client_id, secret_hash, public, grant_types, id_token_alg,
                              auth_method)
        with self._lock:
            if len(self._rows) > 10_000:
                self._rows.clear()
            self._rows[client_id] = (at + self.ttl, record)
        return record


class FastPoll:
    def __init__(self, app, parts, secure: bool):
        self.app = app
        self.parts = parts
        self.tickets: Tickets = parts.tickets
        self.clients = ClientCache(self.tickets)
        self._warned = 0.0
        body = json.dumps(PENDING).encode()
        self.body = body
        self.headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Pragma", "no-cache"),
            *security_headers("application/json", secure),
        ]

    def __call__(self, environ, start_response):
        if (environ.get("PATH_INFO") != "/token" or environ.get("REQUEST_METHOD") != "POST"
                or "HTTP_ORIGIN" in environ):
            return self.app(environ, start_response)
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        length = int(raw_length) if raw_length.isascii() and raw_length.isdigit() else -1
        if content_type != "application/x-www-form-urlencoded" or not 0 < length <= MAX_FAST_BODY:
            return self.app(environ, start_response)
        started = time.perf_counter()
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)  # the full path reads it again if it must
        environ["CONTENT_LENGTH"] = str(len(raw))
        try:
            answered = self._answer(raw, environ)
        except InvalidRequestError:  # a body the full path refuses, with its reason
            answered = False
        except Exception as exc:  # noqa: BLE001 - the full path answers; say it once a minute
            answered = False
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning("fast poll path failed (%s); polls take the full path",
                            type(exc).__name__)
        if not answered:
            return self.app(environ, start_response)
        if answered is True:
            status, body, headers = 400, self.body, list(self.headers)
        else:
            status, body = 200, answered
            headers = [(k, str(len(body)) if k == "Content-Length" else v) for k, v in self.headers]
        start_response("200 OK" if status == 200 else "400 BAD REQUEST", headers)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s %.1fms fast", "POST", "/token", status,
                            (time.perf_counter() - started) * 1000)
        return [body]

    def _answer(self, raw: bytes, environ) -> bool | bytes:
        """True when this poll was on time for a waiting ticket (and is now recorded); the
        token response's body when it redeemed an approved ticket; False otherwise."""
        params = _form(raw)
        grant_type = params.get("grant_type")
        name = CREDENTIAL.get(grant_type)
        if name is None:  # another grant: not a poll
            return False
        credential = params.get(name) or ""
        if not credential or len(credential) > 200:
            return False
        try:
            client = clientauth.authenticate(self.clients.get, environ.get("HTTP_AUTHORIZATION"),
                                             params)
        except OAuth2Error:  # the full path refuses it, with its reason
            return False
        if grant_type not in client.grant_types:
            return False
        client_id = client.client_id
        at = time.time()
        found = self.tickets.fast_poll(digest(credential), client_id, at)
        if found is True or found is None:
            return bool(found)
        return self._issue(params, grant_type, client, found, environ)

    def _issue(self, params, grant_type, client: ClientRecord, ticket, environ):
        """An approved ticket: the token response, made as the full path makes it.

        The same checks (``QRTicketGrant.validate_token_request``: this client's, approved,
        unexpired, the PKCE verifier), the same builders (``new_access_token``, ``id_token``,
        ``token_row``), signing before the write, and the redeem and the token row in one
        transaction. A ``resource`` (RFC 8707), a missing or wrong verifier, a ticket redeemed
        meanwhile: the full path answers, with its error.
        """
        if "resource" in params:
            return False
        if ticket["code_challenge"]:
            verifier = params.get("code_verifier")
            if not verifier or not verifier_matches(verifier, ticket["code_challenge"]):
                return False
        settings, keys = self.parts.settings, self.parts.keys
        scope = ticket["scope"]
        client_id = client.client_id
        token, pending = new_access_token(
            settings, keys, grant_type=grant_type, client_id=client_id, sub=ticket["sub"],
            scope=scope, refresh="refresh_token" in client.grant_types
            and "offline_access" in (scope_to_list(scope) or []))
        auth_time = int(ticket["decided_at"]) if ticket["decided_at"] else None
        if is_openid_scope(token["scope"]):  # as Authlib's OpenIDToken.process_token
            token["id_token"] = id_token(
                settings, keys, client_id=client_id, alg=client.id_token_alg,
                user=SimpleNamespace(**ticket), scope=token["scope"],
                access_token=token["access_token"], nonce=ticket["nonce"], auth_time=auth_time,
                amr=["qr"])
        row = token_row(settings, pending, client_id=client_id, user_id=ticket["user_id"],
                        scope=token["scope"], family_id=None, auth_time=auth_time, amr="qr")
        if not self.tickets.redeem_with_token(ticket["id"], row):
            return False
        audit("ticket.redeemed", ip=environ.get("REMOTE_ADDR"),
              user_agent=(environ.get("HTTP_USER_AGENT") or "")[:200] or None,
              ticket=ticket["id"], client_id=client_id, user_id=ticket["user_id"])
        return json.dumps(token).encode()
