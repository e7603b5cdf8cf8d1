"""The authorization code grant with PKCE (S256 only), for the hosted login page.

```
 browser            qr-oidc /authorize                         client backend
 (A) GET /authorize ---> sign-in (password or the page's QR), consent
 (B) 302 redirect_uri?code=<sealed>&state  ------------------>
                                      (C) POST /token code + code_verifier (+ client auth)
                                      (D) redeemed once -> access token + ID token
```

Authlib runs the protocol. The code is *sealed*, not stored: AES-GCM under a key derived from the
server's secret (``provider/seal.py``) over everything the code stands for (client, redirect URI,
scope, nonce, PKCE challenge, user, ``auth_time``, ``amr``, token family, expiry). Issuing one
writes nothing, so the authorization endpoint answers a GET without changing a row, and what
the token endpoint issues is exactly what was authorized, never something the browser carried
back. Redemption inserts the code's digest into ``redeemed_codes`` in the transaction that saves
the tokens, once (an insert that conflicts changes nothing); a code presented again revokes the
token family it started (RFC 6749 §4.1.2) and fails with ``invalid_grant``.

Public clients must use PKCE; the ``amr`` of the code says how the user signed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, grants
from authlib.oauth2.rfc7636 import CodeChallenge as _CodeChallenge
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qr_oidc.grants.dpop import require_binding
from qr_oidc.grants.refresh_token import revoke_family
from qr_oidc.provider.security import digest, new_id
from qr_oidc.provider.storage.models import RedeemedCode, User, now

log = logging.getLogger("qr_oidc.audit")


class CodeChallenge(_CodeChallenge):
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        payload = grant.request.payload
        if grant.request.client.public and not payload.data.get("code_challenge"):
            raise InvalidRequestError("Public clients must send code_challenge (PKCE, S256).")
        if payload.data.get("code_challenge") and not payload.data.get("code_challenge_method"):
            raise InvalidRequestError("code_challenge_method must be S256.")
        return super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code):
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code):
        return authorization_code.code_challenge_method


@dataclass(frozen=True)
class SealedCode:
    """An authorization code, opened: Authlib's AuthorizationCodeMixin and what we add."""

    code_hash: str
    client_id: str
    user_id: int
    redirect_uri: str | None
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: float
    amr: str
    family_id: str
    expires_at: float
    sid: str | None = None  # the sign-in it was granted in (the ID token's sid)

    @classmethod
    def from_sealed(cls, code: str, value: dict):
        try:
            return cls(code_hash=digest(code), client_id=value["c"], user_id=int(value["u"]),
                       redirect_uri=value.get("r"), scope=value.get("s") or "",
                       nonce=value.get("n"), code_challenge=value.get("cc"),
                       code_challenge_method=value.get("cm"), auth_time=float(value["t"]),
                       amr=value.get("a") or "pwd", family_id=value["f"],
                       expires_at=float(value["x"]), sid=value.get("i"))
        except (KeyError, TypeError, ValueError):
            return None

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return int(self.auth_time)

    def get_acr(self):
        return None

    def get_amr(self):
        return [self.amr]

    def is_expired(self):
        return now() >= self.expires_at


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    parts = None  # set by the app factory

    @staticmethod
    def validate_authorization_redirect_uri(request, client):
        """Authlib's check, without quoting the URI into ``error_description`` (which must be
        printable ASCII without a quote or a backslash: a URI with those answered 500)."""
        redirect_uri = request.payload.redirect_uri
        if redirect_uri:
            if not isinstance(redirect_uri, str) or not client.check_redirect_uri(redirect_uri):
                raise InvalidRequestError("The redirect_uri is not one registered for this "
                                          "client.", state=request.payload.state)
            return redirect_uri
        redirect_uri = client.get_default_redirect_uri()
        if not redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.",
                                      state=request.payload.state)
        return redirect_uri

    def validate_token_request(self):
        super().validate_token_request()
        require_binding(self.request.client, getattr(self.request, "dpop_jkt", None))

    # -- (B) the code ---------------------------------------------------------------------------
    def generate_authorization_code(self):
        """The sealed code for this request, granted by ``request.user``. The caller (the page
        that granted it) sets ``request.auth_time`` and ``request.amr``: when and how the user
        authenticated (a password sign-in's session, or the phone's approval)."""
        request = self.request
        payload = request.payload.data
        client = request.client
        request.code_issued = True  # (the page that granted it asks)
        return self.parts.codes.seal({
            "c": client.client_id,
            "u": request.user.id,
            "r": request.payload.redirect_uri,
            # what the client may have of what it asked for (Authlib's request.scope): what the
            # consent page or the phone showed
            "s": request.scope or "",
            "n": payload.get("nonce"),
            "cc": payload.get("code_challenge"),
            "cm": payload.get("code_challenge_method"),
            "t": getattr(request, "auth_time", None) or now(),
            "a": getattr(request, "amr", None) or "pwd",
            "f": new_id(),
            "x": now() + self.parts.settings.auth_code_ttl,
            "i": getattr(request, "sid", None),
        })

    def save_authorization_code(self, code, request):
        """Nothing to save: the code carries what it stands for."""

    # -- (C)-(D) the token request ----------------------------------------------------------------
    def query_authorization_code(self, code, client):
        value = self.parts.codes.open(code) if isinstance(code, str) else None
        sealed = SealedCode.from_sealed(code, value) if value is not None else None
        if sealed is None:
            return None
        if sealed.client_id != client.client_id:
            return None  # (another client's code: it may not even learn it was used)
        session = self.parts.db.session
        redeemed = session.scalar(
            select(RedeemedCode.family_id).where(RedeemedCode.code_hash == sealed.code_hash))
        if redeemed is not None:
            # RFC 6749 §4.1.2: a code used twice revokes what it issued
            revoke_family(session, redeemed)
            session.commit()  # kept even though this request fails
            log.warning("authorization code replayed: its tokens are revoked client=%s",
                        sealed.client_id)
            return None
        return None if sealed.is_expired() else sealed

    def delete_authorization_code(self, authorization_code):
        """Record the redemption, in the transaction that saves the tokens; a concurrent
        redemption of the same code finds the row there and changes nothing."""
        session = self.parts.db.session
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        done = session.execute(  # (RETURNING: an INSERT's rowcount is not kept on every driver)
            insert(RedeemedCode).values(
                code_hash=authorization_code.code_hash, client_id=authorization_code.client_id,
                family_id=authorization_code.family_id, redeemed_at=now(),
                expires_at=authorization_code.expires_at)
            .on_conflict_do_nothing(index_elements=[RedeemedCode.code_hash])
            .returning(RedeemedCode.code_hash)
        ).first()
        if done is None:
            raise InvalidGrantError("Invalid 'code' in request.")

    def authenticate_user(self, authorization_code):
        return self.parts.db.session.get(User, authorization_code.user_id)


REDEEMED_KEPT = 300  # seconds a redemption is kept after its code expired (clock skew)


def purge_redeemed(db) -> int:
    """Forget redemptions of codes that have expired anyway (the maintenance thread), with a
    margin for instances whose clocks run behind."""
    with db.session_factory() as session:
        gone = session.execute(delete(RedeemedCode).where(
            RedeemedCode.expires_at < now() - REDEEMED_KEPT)).rowcount
        session.commit()
    return gone or 0
