"""The token endpoint and what a token is presented to: revocation (RFC 7009), introspection
(RFC 7662) and userinfo (routes of the ``api`` blueprint, provider/web/api.py).

The token endpoint is Authlib's server (provider/web/oauth.py) with our grants; ``qr-oidc
serve`` answers its QR ticket and device code polls on the event loop instead
(provider/web/token_poll.py), with the same token core.
"""

from __future__ import annotations

import time

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.util import scope_to_list
from flask import g, request
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from qr_oidc.grants import dpop
from qr_oidc.grants.access_tokens import (
    ACCESS_TOKEN_ALGS,
    BearerError,
    authenticate_bearer,
)
from qr_oidc.grants.dpop import DPoPError, one_proof, values_of
from qr_oidc.grants.openid import user_claims
from qr_oidc.grants.refresh_token import revoke_family
from qr_oidc.provider.audit import discard_after_rollback, flush_after_commit
from qr_oidc.provider.security import digest
from qr_oidc.provider.storage.models import Token, User
from qr_oidc.provider.web.api import bp
from qr_oidc.provider.web.oauth import BodyRequest, authenticated_client
from qr_oidc.provider.web.responses import (
    bearer_error,
    error,
    json_response,
    oauth_error,
    parts,
    proof,
    url,
)


def token_proof(p) -> str | None:
    """The key (thumbprint) a token request's DPoP proof shows, None without a proof; raises
    DPoPError. RFC 9449 §4.3 for ``POST`` to the token endpoint as the client addressed it."""
    header = one_proof(values_of(request.headers.get("DPoP")))
    if header is None:
        return None
    return p.dpop.check(header, "POST", url("/token"))


@bp.post("/token")
def token():
    p = parts()
    try:
        g.dpop_jkt = token_proof(p)
    except DPoPError as exc:
        return oauth_error(dpop.oauth_error(exc))
    try:
        response = p.server.create_token_response()
    except OAuth2Error as exc:  # e.g. a body that is not a form
        response = oauth_error(exc)
    if response.status_code == 200:
        try:
            p.db.session.commit()  # the credential is used up together with the tokens saved
        except SQLAlchemyError:
            p.db.session.rollback()
            discard_after_rollback()
            return error("server_error", 500, "The tokens could not be saved; try again.")
        flush_after_commit()
    else:
        p.db.session.rollback()
        discard_after_rollback()
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo():
    try:
        _claims, row, user = authenticate_bearer(parts(), request.headers.get("Authorization"),
                                                 required_scope="openid", proof=proof())
    except BearerError as exc:
        return bearer_error(exc)
    if user is None:
        return bearer_error(BearerError("invalid_token", 401, "The token names no user."))
    return json_response(user_claims(user, row.scope))


def _find_token(value: str | None, hint: str | None):
    """The token row a presented access token (JWT, by ``jti``) or refresh token (by digest) is."""
    if not isinstance(value, str) or not value or len(value) > 8192:
        return None, None
    session = parts().db.session
    kinds = ["refresh_token", "access_token"]
    if hint == "access_token":
        kinds.reverse()
    for kind in kinds:
        if kind == "refresh_token":
            row = session.scalar(select(Token).where(Token.refresh_token_hash == digest(value)))
        else:
            row = _access_token_row(value)
        if row is not None:
            return row, kind
    return None, None


def _access_token_row(value: str):
    try:
        decoded = jose_jwt.decode(value, parts().keys.public_set(), algorithms=ACCESS_TOKEN_ALGS)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    jti = decoded.claims.get("jti")
    if not isinstance(jti, str):
        return None
    return parts().db.session.query(Token).filter_by(jti=jti).one_or_none()


@bp.post("/revoke")
def revoke():
    """RFC 7009: always 200 for a token that is unknown or not the client's. Revoking an access
    token revokes it alone (its refresh token keeps working); revoking a refresh token revokes
    its grant: every access and refresh token of its family (SPEC.md)."""
    p = parts()
    try:
        client, data = authenticated_client("revocation")
    except OAuth2Error as exc:
        return oauth_error(exc)
    value = data.get("token")
    if not value:
        return error("invalid_request", 400, "Missing 'token'.")
    row, kind = _find_token(value, data.get("token_type_hint"))
    if row is not None and row.client_id == client.client_id:
        if kind == "refresh_token":
            revoke_family(p.db.session, row.family_id)
        else:
            row.revoked = True
        p.db.session.commit()
    return json_response({})


@bp.post("/introspect")
def introspect():
    """RFC 7662, for confidential clients. Who may introspect what (§4: the server decides):

    - a client, the tokens issued to it;
    - a first-party confidential client (the operator's own resource servers, gateways), any
      token;
    - anything else is ``{"active": false}``, as for an unknown token, so the endpoint tells a
      client nothing about other clients' tokens.

    An active token's answer says only what its scope lets its holder read at userinfo: ``sub``
    always, ``username`` only with ``profile``."""
    p = parts()
    try:
        oauth_request = BodyRequest(request)
        client = p.server.authenticate_client(
            oauth_request, ["client_secret_basic", "client_secret_post"], "introspection")
    except OAuth2Error as exc:
        return oauth_error(exc)
    data = oauth_request.payload.data
    value = data.get("token")
    if not value:
        return error("invalid_request", 400, "Missing 'token'.")
    row, kind = _find_token(value, data.get("token_type_hint"))
    at = time.time()
    if row is None or not (row.client_id == client.client_id or client.first_party):
        return json_response({"active": False})
    if kind == "refresh_token":
        active, expires = row.refresh_status == "active", row.refresh_expires_at
    else:
        active, expires = not row.revoked, row.expires_at
    if not active or (expires is not None and expires <= at):
        return json_response({"active": False})
    user = p.db.session.get(User, row.user_id) if row.user_id else None
    body = {
        "active": True,
        "scope": row.scope,
        "client_id": row.client_id,
        "token_type": ("DPoP" if row.dpop_jkt else "Bearer") if kind == "access_token"
        else "refresh_token",
        "exp": int(expires) if expires else None,
        "iat": int(row.issued_at),
        "iss": p.settings.issuer,
        "jti": row.jti if kind == "access_token" else None,
    }
    if row.dpop_jkt and kind == "access_token":
        body["cnf"] = {"jkt": row.dpop_jkt}  # RFC 9449 §6.2: the key it is bound to
    if user is not None:
        body["sub"] = user.sub
        if "profile" in (scope_to_list(row.scope) or []):
            body["username"] = user.username
    return json_response({k: v for k, v in body.items() if v is not None})
