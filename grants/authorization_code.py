"""The authorization code grant with PKCE (S256 only), for the hosted login page.

Authlib runs the protocol; this module stores codes as digests and consumes them exactly once:
``delete_authorization_code`` is a conditional UPDATE (``used = false -> true``) in the same
transaction as the tokens, so a replayed code loses the race and gets ``invalid_grant``.
Public clients must use PKCE; the ``amr`` of the code says how the user signed in.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, grants
from authlib.oauth2.rfc7636 import CodeChallenge as _CodeChallenge
from flask import session as web_session
from sqlalchemy import select, update

from provider.models import AuthorizationCode, User, now
from provider.security import digest


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


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    AUTHORIZATION_CODE_LENGTH = 43
    parts = None  # set by the app factory

    def save_authorization_code(self, code, request):
        payload = request.payload.data
        settings = self.parts.settings
        row = AuthorizationCode(
            code_hash=digest(code),
            client_id=request.client.client_id,
            user_id=request.user.id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope or "",
            nonce=payload.get("nonce"),
            code_challenge=payload.get("code_challenge"),
            code_challenge_method=payload.get("code_challenge_method"),
            auth_time=web_session.get("auth_time") or now(),
            amr=getattr(request, "amr", None) or web_session.get("amr") or "pwd",
            expires_at=now() + int(settings["AUTH_CODE_TTL"]),
        )
        session = self.parts.db.session
        session.add(row)
        session.commit()

    def query_authorization_code(self, code, client):
        if not isinstance(code, str) or len(code) > 200:
            return None
        row = self.parts.db.session.scalar(
            select(AuthorizationCode).where(AuthorizationCode.code_hash == digest(code))
        )
        if row is None or row.used or row.client_id != client.client_id or row.is_expired():
            return None
        return row

    def delete_authorization_code(self, authorization_code):
        used = self.parts.db.session.execute(
            update(AuthorizationCode)
            .where(
                AuthorizationCode.code_hash == authorization_code.code_hash,
                AuthorizationCode.used.is_(False),
            )
            .values(used=True)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not used:
            raise InvalidGrantError("Invalid 'code' in request.")

    def authenticate_user(self, authorization_code):
        return self.parts.db.session.get(User, authorization_code.user_id)
