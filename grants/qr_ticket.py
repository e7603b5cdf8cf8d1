"""The QR ticket grant: the web client polls the token endpoint with its ticket.

```
 web client                 qr-oidc                              phone app
 (A) POST qr_ticket_endpoint ------> ticket, qr_content, user_code
                                        (B) scan / approve  <----- Bearer qr:approve
 (C) POST token_endpoint
     grant_type=urn:qr-oidc:params:oauth:grant-type:qr-ticket&ticket=...
 (D)   pending/scanned -> authorization_pending (or slow_down if polled too fast)
       denied -> access_denied; expired -> expired_token
 (E)   approved -> PKCE check -> redeemed exactly once -> access token + ID token
```

This class does steps (C)-(E). It is Authlib's device-code shape with what that one lacks: the
interval is enforced by the server and kept with the ticket (so it holds across instances), and
the credential is consumed by a conditional UPDATE committed together with the tokens, so of many
concurrent polls exactly one gets tokens. ``DeviceCodeGrant`` is the same grant under the RFC 8628
name: the device code *is* a ticket.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    OAuth2Error,
    InvalidGrantError,
    InvalidRequestError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin
from sqlalchemy.exc import SQLAlchemyError
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oauth2.rfc8628 import AuthorizationPendingError, ExpiredTokenError, SlowDownError

from provider.models import DEVICE_GRANT_TYPE, QR_GRANT_TYPE, User, now
from provider.security import constant_equals

# Unknown, redeemed and other clients' tickets answer alike: the endpoint reveals nothing.
_INVALID = "The ticket is invalid, used, or was issued to another client."


class QRTicketGrant(BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = QR_GRANT_TYPE
    CREDENTIAL_PARAM = "ticket"
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    tickets = None  # set by the app factory

    def validate_token_request(self):
        secret = self.request.payload.data.get(self.CREDENTIAL_PARAM)
        if not secret:
            raise InvalidRequestError(f"Missing '{self.CREDENTIAL_PARAM}'.")
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(f"The client may not use grant type {self.GRANT_TYPE}.")

        ticket = self.tickets.by_ticket(secret)
        if ticket is None or ticket.client_id != client.client_id or ticket.kind == "authorize":
            raise InvalidGrantError(_INVALID)
        at = now()
        if ticket.status == "redeemed":
            raise InvalidGrantError(_INVALID)
        if ticket.status == "denied":
            raise AccessDeniedError("The user cancelled the login.")
        if ticket.is_expired(at):
            raise ExpiredTokenError("The ticket has expired; create a new one.")
        if ticket.status in ("pending", "scanned"):
            if not self.tickets.note_poll(ticket, at):
                raise SlowDownError("Polled faster than the interval; it grew by 5 seconds.")
            raise AuthorizationPendingError("The user has not approved yet.")

        # approved: check PKCE before anything is used up, so a wrong verifier costs nothing
        if ticket.code_challenge:
            verifier = self.request.payload.data.get("code_verifier")
            if not verifier:
                raise InvalidRequestError("Missing 'code_verifier'.")
            if not verifier_matches(verifier, ticket.code_challenge):
                raise InvalidGrantError("The code_verifier does not match the code_challenge.")

        self.request.client = client
        self.request.user = self.tickets.db.session.get(User, ticket.user_id)
        self.request.credential = ticket

    def create_token_response(self):
        """Sign first, then write: the access token and (through the OpenID extension's
        ``after_create_token_response`` hook) the ID token are made before the transaction that
        uses the ticket up, so that transaction is only the redeem UPDATE, the token row and the
        commit. On SQLite, which has one writer, it also queues for a process-wide lock rather
        than in SQLite's busy handler (docs/performance.md)."""
        ticket = self.request.credential
        client = self.request.client
        token = self.generate_token(
            user=self.request.user,
            scope=ticket.scope,
            include_refresh_token=client.check_grant_type("refresh_token"),
        )
        response = (200, token, self.TOKEN_RESPONSE_HEADER)
        self.execute_hook("after_create_token_response", response)
        db = self.tickets.db
        with db.write_lock():
            # approved -> redeemed and the token row, in one transaction
            if not self.tickets.redeem(ticket, now()):
                db.session.rollback()
                raise InvalidGrantError(_INVALID)
            self.save_token(token)
            try:
                db.session.commit()
            except SQLAlchemyError:
                db.session.rollback()
                raise TokensNotSaved() from None
        return response


def verifier_matches(verifier: str, challenge: str) -> bool:
    """PKCE S256 (RFC 7636 §4.6), compared in constant time; also the fast path's check.

    A verifier is ASCII by definition (§4.1); any other cannot match, and must not reach the
    hash, which encodes it as ASCII (a 500 before this check)."""
    if not verifier.isascii():
        return False
    return constant_equals(create_s256_code_challenge(verifier), challenge)


class TokensNotSaved(OAuth2Error):
    error = "server_error"
    status_code = 500
    description = "The tokens could not be saved; try again."


class DeviceCodeGrant(QRTicketGrant):
    """RFC 8628 §3.4: ``grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code=...``."""

    GRANT_TYPE = DEVICE_GRANT_TYPE
    CREDENTIAL_PARAM = "device_code"
