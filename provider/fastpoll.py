"""The hot path: an on-time token poll of a waiting ticket, answered before Flask.

Every browser waiting for a QR login polls ``POST /token`` every interval, and almost every such
poll answers ``authorization_pending``. Through Flask, Authlib and the ORM that answer costs a
cookie session, three ORM statements in a transaction (client, ticket, conditional update) and
the framework's request and response objects: about a sixth of what the bare server can answer
(docs/performance.md). This WSGI middleware answers exactly that case with one statement and
hands everything else, untouched, to the full path.

It answers only when all of this holds, and then the full path would have answered the same:

- ``POST /token`` with a small ``application/x-www-form-urlencoded`` body, no ``Origin`` (CORS
  answers go through Flask), each parameter once, valid UTF-8 (``provider/body.py``'s rules);
- ``grant_type`` is the QR ticket or the device grant, with its credential parameter;
- the client authenticates in one of the three unambiguous shapes Authlib would accept the same
  way: Basic header and no ``client_secret`` in the body (confidential), ``client_id`` and
  ``client_secret`` in the body and no header (confidential), ``client_id`` alone (public); and
  the client may use the grant;
- ``Tickets.poll_on_time`` changes one row: the ticket is this client's, waiting (pending or
  scanned), not expired, and polled no earlier than the interval allows. That conditional
  ``UPDATE`` is the same check and the same bookkeeping as ``Tickets.note_poll``.

Anything else (too early, approved, denied, expired, unknown, a wrong secret, a database error)
goes on to Flask with the body restored, where the same rules give ``slow_down``, tokens or the
error. The answer is the bytes and headers Flask gives for ``authorization_pending``
(tests/test_token_poll.py compares them), and the access log gets its line.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import threading
import time
from urllib.parse import unquote

from authlib.oauth2.rfc6749 import InvalidRequestError

from grants.tickets import Tickets

from .body import _form
from .models import DEVICE_GRANT_TYPE, QR_GRANT_TYPE
from .security import digest, secret_matches

access_log = logging.getLogger("qr_oidc.access")
log = logging.getLogger("qr_oidc.fastpoll")

CREDENTIAL = {QR_GRANT_TYPE: "ticket", DEVICE_GRANT_TYPE: "device_code"}
MAX_FAST_BODY = 4096
PENDING = {"error": "authorization_pending", "error_description": "The user has not approved yet."}


class ClientCache:
    """What client authentication needs of a client row, kept per process for ``ttl`` seconds.

    Clients are only ever added (``qr-oidc clients create``), so a cached row cannot go stale
    in a way that matters; an unknown id is never cached (the full path answers it).
    """

    def __init__(self, tickets: Tickets, ttl: float = 5.0):
        self.tickets, self.ttl = tickets, ttl
        self._rows: dict[str, tuple[float, tuple]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: str):
        hit = self._rows.get(client_id)
        at = time.monotonic()
        if hit is not None and hit[0] > at:
            return hit[1]
        row = self.tickets.client_for_poll(client_id)
        if row is not None:
            with self._lock:
                if len(self._rows) > 10_000:
                    self._rows.clear()
                self._rows[client_id] = (at + self.ttl, row)
        return row


class FastPoll:
    def __init__(self, app, tickets: Tickets, secure: bool):
        self.app = app
        self.tickets = tickets
        self.clients = ClientCache(tickets)
        self._warned = 0.0
        body = json.dumps(PENDING).encode()
        self.body = body
        self.headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Pragma", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
            ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
        ]
        if secure:
            self.headers.append(("Strict-Transport-Security", "max-age=31536000"))

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
            answered = self._pending(raw, environ.get("HTTP_AUTHORIZATION"))
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
        start_response("400 BAD REQUEST", list(self.headers))
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s %.1fms", "POST", "/token", 400,
                            (time.perf_counter() - started) * 1000)
        return [self.body]

    def _pending(self, raw: bytes, authorization: str | None) -> bool:
        """True when this poll was on time for a waiting ticket (and is now recorded)."""
        params = _form(raw)
        grant_type = params.get("grant_type")
        name = CREDENTIAL.get(grant_type)
        if name is None:  # another grant: not a poll
            return False
        credential = params.get(name) or ""
        if not credential or len(credential) > 200:
            return False
        client_id = self._client(params, authorization, grant_type)
        if client_id is None:
            return False
        return self.tickets.poll_on_time(digest(credential), client_id, time.time())

    def _client(self, params, authorization, grant_type) -> str | None:
        """The authenticated client's id, in the shapes described above; None otherwise."""
        secret = params.get("client_secret")
        if authorization is not None:
            if secret is not None or "client_id" in params:
                return None
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                return None
            client_id, colon, secret = decoded.partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
            if not colon or not client_id or not secret:
                return None
        else:
            client_id = params.get("client_id")
        if not client_id or len(client_id) > 64 or "\x00" in client_id:
            return None
        row = self.clients.get(client_id)
        if row is None:
            return None
        secret_hash, public, grant_types = row
        if grant_type not in grant_types:
            return None
        if public:
            return client_id if secret is None and authorization is None else None
        if not secret or not secret_hash:
            return None
        return client_id if secret_matches(secret, secret_hash) else None
