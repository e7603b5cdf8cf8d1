"""The token core: every rule of a ticket poll, and the issuance of its tokens, in one place.

A web client (QR ticket grant), a device (RFC 8628 device code grant) or a relying party's
backend (OpenID CIBA grant, ``auth_req_id``: a push request is a ticket too, grants/ciba.py)
polls the token endpoint with its ticket. A grant redeems only its own kind of ticket: QR and
device tickets for the first two, push requests for CIBA (``amr`` ``["push"]``). Two callers
ask this module what to answer, and neither has a rule of its own:

- the event-driven hot path (``provider/web/events.py``), which serves ``POST /token`` for these two
  grants on the event loop, calling ``TokenCore.poll`` in a database thread;
- Authlib's grant classes (``grants/qr_ticket.py``), which serve the same grants when Flask gets
  the request (the in-process app, and any caller that is not the event-driven server).

``TokenCore.poll`` takes the body's parameters, a function that authenticates the client (both
callers pass ``grants/client_auth.authenticate`` with their own client lookup) and the peer, and
either returns the token response's body or raises the ``OAuth2Error`` to answer:

1. the credential (``ticket`` / ``device_code``) is present (``invalid_request``);
2. the client authenticates (``invalid_client``) and may use the grant (``unauthorized_client``);
   a ``resource`` (RFC 8707) is an absolute URI without a fragment (``invalid_target``);
3. a poll of a waiting (pending or scanned) ticket of this client, unexpired, on time: recorded,
   ``authorization_pending``. This is one conditional ``UPDATE`` (``Tickets.record_poll``): the
   common case costs one statement. Otherwise the ticket is read once and
4. unknown, another client's, a hosted-page ticket or redeemed: ``invalid_grant`` (alike, so the
   answer tells nothing); denied: ``access_denied``; expired: ``expired_token``;
5. waiting but polled too early (within 80% of the interval): the interval grows by 5 s (at most
   ``MAX_POLL_INTERVAL``) and the poll counts, ``slow_down``;
6. approved: PKCE S256 when the ticket has a challenge (``invalid_request`` without a verifier,
   ``invalid_grant`` for a wrong one; nothing is used up), then the tokens are signed *before*
   anything is written, and ``Tickets.redeem_with_token`` redeems the ticket and writes the token
   row in one transaction: of concurrent polls exactly one gets tokens, the others
   ``invalid_grant``. The audit log gets ``ticket.redeemed``.

The tokens are built by the functions every grant uses (``grants/access_tokens.new_access_token``,
``grants/openid.id_token``, ``grants/access_tokens.token_row``).

The statements behind ``Tickets.record_poll``, ``load_for_poll``, ``slow_down`` and
``redeem_with_token`` are the ticket store's (``provider/storage/tickets.py``): each one is a
single statement (the redeem and its token row one transaction) on a raw DB-API cursor of the
autocommit engine, since every pending poll runs at least one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oauth2.rfc8628 import (
    AuthorizationPendingError,
    ExpiredTokenError,
    SlowDownError,
)
from authlib.oidc.core.grants.util import is_openid_scope

from qr_oidc.grants.access_tokens import new_access_token, token_row
from qr_oidc.grants.dpop import InvalidDPoPProofError, require_binding
from qr_oidc.grants.openid import id_token
from qr_oidc.provider.audit import audit
from qr_oidc.provider.security import constant_equals, digest
from qr_oidc.provider.storage.models import (
    CIBA_GRANT_TYPE,
    DEVICE_GRANT_TYPE,
    QR_GRANT_TYPE,
    now,
)

log = logging.getLogger("qr_oidc.token")

# the parameter that carries the ticket, per grant
CREDENTIAL = {QR_GRANT_TYPE: "ticket", DEVICE_GRANT_TYPE: "device_code",
              CIBA_GRANT_TYPE: "auth_req_id"}
# how the user approved, per kind of ticket (the ``amr`` of the ID token and the token row)
AMR = {"qr": "qr", "device": "qr", "push": "push"}

# Unknown, redeemed and other clients' tickets answer alike: the endpoint reveals nothing.
INVALID = "The ticket is invalid, used, or was issued to another client."
PENDING = "The user has not approved yet."


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not a usable URI."""

    error = "invalid_target"


class TokensNotSaved(OAuth2Error):
    error = "server_error"
    status_code = 500
    description = "The tokens could not be saved; try again."


def check_resource(value: str | None) -> str | None:
    """The ``resource`` of a token request (RFC 8707), which becomes the access token's ``aud``;
    InvalidTargetError unless it is an absolute URI without a fragment."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc or parts.fragment \
            or len(value) > 2000:
        raise InvalidTargetError("resource must be an absolute URI without a fragment.")
    return value


def verifier_matches(verifier: str, challenge: str) -> bool:
    """PKCE S256 (RFC 7636 §4.6), compared in constant time.

    A verifier is ASCII by definition (§4.1); any other cannot match, and must not reach the
    hash, which encodes it as ASCII."""
    if not verifier.isascii():
        return False
    return constant_equals(create_s256_code_challenge(verifier), challenge)


class TokenCore:
    """The rules of a ticket poll and its issuance; one per app (``parts.core``)."""

    def __init__(self, settings, keys, tickets):
        self.settings, self.keys, self.tickets = settings, keys, tickets

    def poll(self, grant_type: str, params: Mapping[str, str],
             authenticate: Callable[[], object], dpop_jkt: str | None = None) -> dict:
        """Answer one token request of the QR or device grant: the token response's body, or
        an ``OAuth2Error`` raised. Runs in a thread of its own (it waits for the database).
        ``authenticate()`` returns the authenticated client (with ``client_id``,
        ``check_grant_type`` and ``id_token_signed_response_alg``) or raises. ``dpop_jkt`` is the
        thumbprint of the key the request's DPoP proof showed (checked already, grants/dpop.py):
        the tokens are bound to it, and a ticket bound to a key answers only polls that prove
        it."""
        name = CREDENTIAL[grant_type]
        secret = params.get(name)
        if not secret:
            raise InvalidRequestError(f"Missing '{name}'.")
        client = authenticate()
        if not client.check_grant_type(grant_type):
            raise UnauthorizedClientError(f"The client may not use grant type {grant_type}.")
        if dpop_jkt is None:
            require_binding(client, dpop_jkt)
        # (a werkzeug MultiDict's miss raises and catches a BadRequestKeyError: about 1 us)
        resource = check_resource(params.get("resource") if "resource" in params else None)
        if len(secret) > 200:
            raise InvalidGrantError(INVALID)
        secret_hash, at = digest(secret), now()
        tickets = self.tickets
        push = grant_type == CIBA_GRANT_TYPE
        if tickets.record_poll(secret_hash, client.client_id, at, push, dpop_jkt):
            # (the description set after: Authlib checks a given one's characters, about 10 us
            # a pending poll, and this constant's are valid)
            pending = AuthorizationPendingError()
            pending.description = PENDING
            raise pending
        ticket = tickets.load_for_poll(secret_hash)
        if (ticket is None or ticket["client_id"] != client.client_id
                or (ticket["kind"] == "push") != push or ticket["kind"] not in AMR
                or ticket["status"] == "redeemed"):
            raise InvalidGrantError(INVALID)
        if ticket["dpop_jkt"] and ticket["dpop_jkt"] != dpop_jkt:
            raise InvalidDPoPProofError("The ticket is bound to a DPoP key this request did not "
                                        "prove.")
        if ticket["status"] == "denied":
            raise AccessDeniedError("The user cancelled the login.")
        if at >= ticket["expires_at"]:
            raise ExpiredTokenError("The ticket has expired; create a new one.")
        if ticket["status"] in ("pending", "scanned"):
            # not recorded above, so too early (or another poll of it came in meanwhile)
            tickets.slow_down(ticket["id"], at)
            raise SlowDownError("Polled faster than the interval; it grew by 5 seconds.")
        # approved: check PKCE before anything is used up, so a wrong verifier costs nothing
        if ticket["code_challenge"]:
            verifier = params.get("code_verifier")
            if not verifier:
                raise InvalidRequestError("Missing 'code_verifier'.")
            if not verifier_matches(verifier, ticket["code_challenge"]):
                raise InvalidGrantError("The code_verifier does not match the code_challenge.")
        return self._issue(grant_type, client, ticket, resource, dpop_jkt)

    def _issue(self, grant_type, client, ticket: dict, resource, jkt: str | None) -> dict:
        """Sign, then write: the access token and the ID token are made before the transaction
        that uses the ticket up, so that transaction is only the redeem, the token row and the
        commit."""
        settings, keys = self.settings, self.keys
        client_id, scope = client.client_id, ticket["scope"]
        amr = AMR[ticket["kind"]]
        token, pending = new_access_token(
            settings, keys, grant_type=grant_type, client_id=client_id, sub=ticket["sub"],
            scope=scope, aud=resource,
            refresh=client.check_grant_type("refresh_token")
            and "offline_access" in (scope_to_list(scope) or []), jkt=jkt)
        auth_time = int(ticket["decided_at"]) if ticket["decided_at"] else None
        if is_openid_scope(token["scope"]):
            token["id_token"] = id_token(
                settings, keys, client_id=client_id, alg=client.id_token_signed_response_alg,
                user=SimpleNamespace(**ticket), scope=token["scope"],
                access_token=token["access_token"], nonce=ticket["nonce"], auth_time=auth_time,
                amr=[amr], sid=ticket["id"])
        row = token_row(settings, pending, client_id=client_id, user_id=ticket["user_id"],
                        scope=token["scope"], family_id=None, auth_time=auth_time, amr=amr,
                        sid=ticket["id"])
        try:
            redeemed = self.tickets.redeem_with_token(ticket["id"], row)
        except Exception as exc:  # the database failed: nothing was issued
            log.warning("tokens could not be saved (%s)", type(exc).__name__)
            raise TokensNotSaved() from None
        if not redeemed:  # another poll redeemed it first (or it expired meanwhile)
            raise InvalidGrantError(INVALID)
        # (the audit log names the peer of the request: provider/audit.py)
        audit("ticket.redeemed", ticket=ticket["id"], client_id=client_id,
              user_id=ticket["user_id"])
        self.tickets.redeemed(client_id, ticket["kind"], now() - ticket["created_at"])
        return token
