"""The refresh token grant: rotated on every use, reuse revokes the whole family.

RFC 9700 §4.14.2: a refresh token is used once; the response carries a new one. Presenting a
refresh token that was already rotated means it leaked: every token descended from the same
original grant (the *family*) is revoked at once, the legitimate client's included, and the
audit log says so. A refresh token that was revoked (RFC 7009, or with its family) is simply
invalid: no alarm, since nothing leaked. Revoking an access token leaves its refresh token alone.
Rotation is a conditional UPDATE (``refresh_status`` ``active -> rotated``) in the transaction
that saves the new token, so two concurrent refreshes cannot both succeed.
"""

from __future__ import annotations

import logging

from authlib.oauth2.rfc6749 import InvalidGrantError, grants
from sqlalchemy import case, select, update

from qr_oidc.grants.dpop import require_binding
from qr_oidc.provider.security import digest
from qr_oidc.provider.storage.models import Token, User, now

log = logging.getLogger("qr_oidc.audit")


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True
    parts = None  # set by the app factory

    def validate_token_request(self):
        """Authlib's checks, then DPoP's (RFC 9449 §5.0): a client that requires DPoP sends a
        proof, and a public client's refresh token, bound to the key its tokens were bound to,
        is used only with a proof by that key."""
        super().validate_token_request()
        jkt = getattr(self.request, "dpop_jkt", None)
        client, row = self.request.client, self.request.refresh_token
        require_binding(client, jkt)
        if row.dpop_jkt and client.public and row.dpop_jkt != jkt:
            raise InvalidGrantError("The refresh token is bound to another DPoP key.")

    def authenticate_refresh_token(self, refresh_token):
        if not isinstance(refresh_token, str) or len(refresh_token) > 200:
            return None
        session = self.parts.db.session
        row = session.scalar(select(Token).where(Token.refresh_token_hash == digest(refresh_token)))
        if row is None or row.refresh_status == "revoked":
            return None
        if row.refresh_status == "rotated":
            revoke_family(session, row.family_id)
            session.commit()  # kept even though this request fails
            log.warning("refresh token reuse: family revoked client=%s", row.client_id)
            return None
        if row.refresh_expires_at is not None and row.refresh_expires_at <= now():
            return None
        return row

    def authenticate_user(self, refresh_token):
        if not refresh_token.user_id:
            return None
        return self.parts.db.session.get(User, refresh_token.user_id)

    def revoke_old_credential(self, refresh_token):
        rotated = self.parts.db.session.execute(
            update(Token)
            .where(Token.id == refresh_token.id, Token.refresh_status == "active")
            .values(refresh_status="rotated")
            .execution_options(synchronize_session=False)
        ).rowcount
        if not rotated:
            raise InvalidGrantError("The refresh token was used already.")


def revoke_family(session, family_id: str | None) -> None:
    """Revoke every access and refresh token of a family (not committed)."""
    if family_id:
        session.execute(
            update(Token).where(Token.family_id == family_id)
            .values(revoked=True, refresh_status=case(
                (Token.refresh_status.is_(None), None), else_="revoked"))
            .execution_options(synchronize_session=False)
        )
