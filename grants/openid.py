"""The OpenID Connect extension shared by every grant: it adds the ID token to a token response.

Authlib's ``OpenIDToken`` reads ``nonce`` and ``auth_time`` only from an authorization code; here
the credential may also be a ticket (QR grant, device flow) or the token a refresh token renews.
All three answer ``get_nonce()``, ``get_auth_time()`` and ``get_amr()``. The ID token is signed
with the active key of the client's algorithm, its ``kid`` pinned in the header.
"""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oidc.core.grants import OpenIDCode as _OpenIDCode
from authlib.oidc.core.grants import OpenIDToken as _OpenIDToken
from authlib.oidc.core.util import create_half_hash

from qr_oidc.keys.jws import sign_compact


def user_claims(user, scope: str) -> dict:
    """The claims the scopes grant (OIDC Core §5.4), for the ID token and userinfo."""
    scopes = set(scope_to_list(scope) or [])
    claims = {"sub": user.sub}
    if "profile" in scopes:
        claims["name"] = user.name or user.username
        claims["preferred_username"] = user.username
        if user.picture:
            claims["picture"] = user.picture
    if "email" in scopes and user.email:
        claims["email"] = user.email
        claims["email_verified"] = False
    return claims


class _IDTokenMixin:
    parts = None  # set by the app factory: settings, keys

    def generate_user_info(self, user, scope):
        return user_claims(user, scope)

    def encode_id_token(self, token, request):
        client = request.client
        credential = (
            getattr(request, "credential", None)
            or getattr(request, "authorization_code", None)
            or getattr(request, "refresh_token", None)
        )
        return id_token(
            self.parts.settings, self.parts.keys, client_id=client.client_id,
            alg=client.id_token_signed_response_alg, user=request.user, scope=token["scope"],
            access_token=token["access_token"],
            nonce=credential.get_nonce() if credential is not None else None,
            auth_time=credential.get_auth_time() if credential is not None else None,
            amr=credential.get_amr() if credential is not None else None,
            sid=getattr(credential, "sid", None),
        )


def id_token(settings, keys, *, client_id: str, alg: str | None, user, scope: str,
             access_token: str, nonce=None, auth_time=None, amr=None, sid=None) -> str:
    """The signed ID token for ``user``: shared by every grant and the token core.
    ``alg`` is the client's ``id_token_signed_response_alg`` (None: the server's default)."""
    alg = alg or settings.signing_alg
    key = keys.signing_key(alg)
    issued = int(time.time())
    claims = {
        "iss": settings.issuer,
        "aud": client_id,
        "iat": issued,
        "exp": issued + settings.id_token_ttl,
    }
    if nonce:
        claims["nonce"] = nonce
    if auth_time:
        claims["auth_time"] = auth_time
    if amr:
        claims["amr"] = amr
    if sid:  # Back-Channel Logout 1.0 §2.1: the sign-in this token belongs to
        claims["sid"] = sid
    at_hash = create_half_hash(access_token, alg)
    if at_hash is not None:
        claims["at_hash"] = at_hash.decode()
    claims.update(user_claims(user, scope))
    return sign_compact(key, {"alg": alg, "kid": key.kid, "typ": "JWT"}, claims)


class OpenIDToken(_IDTokenMixin, _OpenIDToken):
    """For grants without an authorization request: QR ticket, device code, refresh token."""


class OpenIDCode(_IDTokenMixin, _OpenIDCode):
    """For the authorization code grant: also checks ``nonce`` and ``prompt`` at /authorize."""

    def exists_nonce(self, nonce, request):
        """No nonce is refused for having been seen: codes are sealed, not stored, and a nonce
        protects the relying party, which checks the one it sent (OIDC Core §3.1.3.7)."""
        return False
