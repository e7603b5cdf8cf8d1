"""Push login without a QR: OpenID Client-Initiated Backchannel Authentication (CIBA Core 1.0).

```
 relying party's backend          qr-oidc                                the user's phone app
 (A) POST backchannel_authentication_endpoint
     scope=openid&login_hint=alice&binding_message=...  ---> auth_req_id, expires_in, interval
                                    push request = a ticket made for alice, already "scanned"
                                    by her; the push gateway is told (QR_OIDC_PUSH_WEBHOOK)
                                        (B) qr_inbox_endpoint (long poll) <--- Bearer qr:approve
                                        (C) qr_approve_endpoint / qr_deny_endpoint
 (D) ping mode: POST {"auth_req_id"} to the client's notification endpoint (retried)
 (E) POST token_endpoint grant_type=urn:openid:params:grant-type:ciba&auth_req_id=...
     pending / slow_down / expired_token / access_denied, then tokens once (amr ["push"])
```

This module is step (A)'s rules, framework-free: which user the hint names, what the request may
carry, and the CIBA §13 error for each thing wrong with it. The ticket is the state machine's
(``Tickets.create_push``: at most ``PUSH_MAX_OUTSTANDING`` undecided per user, so nobody can
flood a phone with prompts); step (E) is the token core's (grants/token_core.py), the same rules
as a QR ticket's poll. Delivery modes ``poll`` and ``ping``; CIBA's ``push`` mode (tokens sent to
the client) is not offered, nor ``user_code`` or signed request objects.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import func, or_, select

from qr_oidc.grants.tickets import NewTicket, Tickets
from qr_oidc.provider.storage.models import CIBA_GRANT_TYPE, SCOPE_TOKEN, Client, User

DELIVERY_MODES = ("poll", "ping")
BINDING_MESSAGE_MAX = 64
# RFC 6750 §2.1 b64token, as CIBA §7.1 asks of client_notification_token (at most 1024)
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
# not shown to a person as they are: C0 and C1 controls, DEL, line and paragraph separators, and
# the bidi controls that could make a message read as something else on the phone
NOT_FOR_A_SCREEN = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
ID_TOKEN_ALGS = ["RS256", "ES256", "EdDSA"]


class UnknownUserIdError(OAuth2Error):
    """CIBA §13: the hint names no user the provider knows."""

    error = "unknown_user_id"


class InvalidBindingMessageError(OAuth2Error):
    """CIBA §13: the binding message is too long or cannot be shown."""

    error = "invalid_binding_message"


class PushLogins:
    """Step (A) of push login; one per app (``parts.push``)."""

    def __init__(self, settings, keys, tickets: Tickets, db):
        self.settings, self.keys, self.tickets, self.db = settings, keys, tickets, db

    def start(self, client: Client, params: Mapping[str, str], requester_ip: str | None,
              requester_ua: str | None) -> NewTicket:
        """Check a backchannel authentication request of an authenticated ``client`` and make
        its push request; raises the ``OAuth2Error`` to answer (CIBA §13), or the state
        machine's ``TooManyOutstanding`` (429)."""
        if not client.check_grant_type(CIBA_GRANT_TYPE) or client.public:
            raise UnauthorizedClientError("The client is not registered for push login (CIBA).")
        mode = client.backchannel_token_delivery_mode or "poll"
        for unsupported in ("request", "request_uri", "login_hint_token", "user_code"):
            if params.get(unsupported):
                raise InvalidRequestError(f"'{unsupported}' is not supported.")
        scope = self._scope(client, params.get("scope"))
        hints = [name for name in ("login_hint", "id_token_hint") if params.get(name)]
        if len(hints) != 1:
            raise InvalidRequestError("Send exactly one of login_hint and id_token_hint.")
        message = self._binding_message(params.get("binding_message"))
        ttl = self._expiry(params.get("requested_expiry"))
        token = params.get("client_notification_token")
        if mode == "ping":
            if not token:
                raise InvalidRequestError("Ping mode: send client_notification_token.")
            if len(token) > 1024 or not _B64TOKEN.match(token):
                raise InvalidRequestError("client_notification_token must be a bearer token "
                                          "(RFC 6750 characters, at most 1024).")
        else:
            token = None  # (poll mode: nothing is sent to the client)
        nonce = params.get("nonce") or None
        if nonce is not None and len(nonce) > 512:
            raise InvalidRequestError("nonce is too long (512 characters at most).")
        if hints[0] == "login_hint":
            user = self._by_login_hint(params["login_hint"])
        else:
            user = self._by_id_token_hint(client, params["id_token_hint"])
        return self.tickets.create_push(
            client, scope, user, ttl=ttl, nonce=nonce, binding_message=message,
            notification_token=token, requester_ip=requester_ip, requester_ua=requester_ua)

    @staticmethod
    def _scope(client: Client, raw: str | None) -> str:
        scopes = scope_to_list(raw or "") or []
        if not all(SCOPE_TOKEN.match(s) for s in scopes):
            raise InvalidScopeError("The scope is malformed.")
        if "openid" not in scopes:
            raise InvalidRequestError("Push login (CIBA) requests must include the openid scope.")
        if not set(scopes) <= set(client.scopes):
            raise InvalidScopeError("The client may not ask for: "
                                    + " ".join(sorted(set(scopes) - set(client.scopes))))
        return " ".join(dict.fromkeys(scopes))

    @staticmethod
    def _binding_message(value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if len(value) > BINDING_MESSAGE_MAX or NOT_FOR_A_SCREEN.search(value) \
                or not value.strip():
            raise InvalidBindingMessageError(
                f"binding_message must be 1 to {BINDING_MESSAGE_MAX} characters a screen can "
                "show (no control characters).")
        return value

    def _expiry(self, value: str | None) -> int:
        """The request's lifetime: ``requested_expiry`` seconds (CIBA §7.1), at most
        ``PUSH_MAX_TTL``; ``PUSH_TTL`` when not asked."""
        settings = self.settings
        if value is None or value == "":
            return settings.push_ttl
        if not isinstance(value, str) or not value.isascii() or not value.isdigit() \
                or len(value) > 9 or int(value) < 1:
            raise InvalidRequestError("requested_expiry must be a positive number of seconds.")
        return min(int(value), settings.push_max_ttl)

    def _by_login_hint(self, hint: str) -> User:
        """The user a ``login_hint`` names: a username, or an email address (case aside)."""
        if len(hint) > 320 or NOT_FOR_A_SCREEN.search(hint):
            raise UnknownUserIdError("No user matches the login_hint.")
        session = self.db.session
        users = session.scalars(
            select(User).where(or_(User.username == hint,
                                   func.lower(User.email) == hint.lower())).limit(2)).all()
        exact = [user for user in users if user.username == hint]
        if exact:
            return exact[0]
        if len(users) != 1:  # none, or an address two users share: nobody is named
            raise UnknownUserIdError("No user matches the login_hint.")
        return users[0]

    def _by_id_token_hint(self, client: Client, hint: str) -> User:
        """The user of an ID token this provider issued to this client (its signature, issuer
        and audience are checked; an expired one still names its user, CIBA §7.1)."""
        if len(hint) > 8192:
            raise InvalidRequestError("id_token_hint is not an ID token of this provider.")
        try:
            decoded = jwt.decode(hint, self.keys.public_set(), algorithms=ID_TOKEN_ALGS)
        except (JoseError, ValueError, TypeError, KeyError):
            raise InvalidRequestError(
                "id_token_hint is not an ID token of this provider.") from None
        claims = decoded.claims
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if (claims.get("iss") != self.settings.issuer or client.client_id not in audiences
                or decoded.header.get("typ") == "at+jwt"):
            raise InvalidRequestError("id_token_hint is not an ID token issued to this client.")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp < time.time() - 30 * 24 * 3600:
            raise InvalidRequestError("id_token_hint is too old.")
        sub = claims.get("sub")
        user = self.db.session.scalar(select(User).where(User.sub == sub)) \
            if isinstance(sub, str) else None
        if user is None:
            raise UnknownUserIdError("The user of the id_token_hint is not known any more.")
        return user
