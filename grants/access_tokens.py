"""Access tokens: made, kept and checked, for every grant and every protected endpoint.

- ``new_access_token``: an RFC 9068 JWT signed with the active RS256 key, as the token
  response's first members, and what its row needs;
- ``token_row``: the columns of the ``tokens`` row (its ``jti`` for revocation, the SHA-256
  digest of its refresh token);
- ``authenticate_bearer``: the one check of ``Authorization: Bearer`` that userinfo and the
  phone's endpoints call.

No web framework here: the token core (grants/token_core.py), Authlib's server glue
(provider/web/oauth.py) and the event path all call these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from authlib.oauth2.rfc6749.util import scope_to_list
from joserfc import jwt
from joserfc.errors import JoseError

from qr_oidc.grants.dpop import DPoPError, one_proof
from qr_oidc.keys.jws import sign_compact
from qr_oidc.provider.security import digest, new_id, new_secret
from qr_oidc.provider.storage.models import Token, User, now

ACCESS_TOKEN_ALGS = ["RS256", "ES256", "EdDSA"]


def new_access_token(settings, keys, *, grant_type: str, client_id: str, sub: str,
                     scope: str | None, aud: str | None = None, lifetime: int | None = None,
                     refresh: bool = False, jkt: str | None = None) -> tuple[dict, dict]:
    """A signed RFC 9068 access token, as the token response's first four members (plus
    ``refresh_token`` when ``refresh``), and what its row needs (``token_row``'s ``pending``).
    With ``jkt`` (the thumbprint of the key a DPoP proof showed) the token is bound to that key:
    ``cnf.jkt`` and ``token_type: DPoP`` (RFC 9449 §6)."""
    issued = int(time.time())
    lifetime = lifetime or settings.access_token_ttl
    jti = new_id()
    claims = {
        "iss": settings.issuer,
        "sub": sub,
        "aud": aud or settings.issuer,
        "client_id": client_id,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": jti,
        "scope": scope or "",
    }
    if jkt:
        claims["cnf"] = {"jkt": jkt}
    key = keys.signing_key("RS256")
    token = {
        "access_token": sign_compact(key, {"alg": "RS256", "typ": "at+jwt", "kid": key.kid},
                                     claims),
        "token_type": "DPoP" if jkt else "Bearer",
        "expires_in": lifetime,
        "scope": scope or "",
    }
    secret = new_secret() if refresh else None
    if secret:
        token["refresh_token"] = secret
    return token, {"jti": jti, "refresh": secret, "exp": issued + lifetime,
                   "grant_type": grant_type, "jkt": jkt}


def token_row(settings, pending: dict, *, client_id: str, user_id: int | None, scope: str,
              family_id: str | None, auth_time, amr, sid: str | None = None) -> dict:
    """The columns of the ``tokens`` row kept for an access token (and its refresh token's
    digest): ``Token(**token_row(...))``, or the token core's ``INSERT``."""
    at = now()
    return {
        "jti": pending["jti"],
        "client_id": client_id,
        "user_id": user_id,
        "grant_type": pending["grant_type"],
        "scope": scope,
        "issued_at": at,
        "expires_at": pending["exp"],
        "revoked": False,
        "refresh_token_hash": digest(pending["refresh"]) if pending["refresh"] else None,
        "refresh_expires_at": at + settings.refresh_token_ttl
        if pending["refresh"] else None,
        "refresh_status": "active" if pending["refresh"] else None,
        "family_id": family_id or new_id(),
        "auth_time": auth_time,
        "amr": amr,
        "dpop_jkt": pending.get("jkt"),
        "sid": sid,
    }


class BearerError(Exception):
    """A refusal of a presented access token: ``scheme`` is the challenge's (``DPoP`` for a
    DPoP-bound token or a DPoP proof's fault), ``nonce`` a DPoP nonce to send back."""

    def __init__(self, error: str, status: int, description: str, scheme: str = "Bearer",
                 nonce: str | None = None):
        super().__init__(description)
        self.error, self.status, self.description = error, status, description
        self.scheme, self.nonce = scheme, nonce


@dataclass(frozen=True)
class Proof:
    """What a resource request offers to prove possession with (RFC 9449 §7): its ``DPoP``
    headers, its method and its URL as the client addressed it (the issuer's, plus the path)."""

    values: list
    method: str
    url: str


def authenticate_bearer(parts, header: str | None, required_scope: str | None = None,
                        proof: Proof | None = None) -> tuple[dict, Token, User | None]:
    """Check ``Authorization: Bearer <JWT access token>`` for the provider's own protected
    endpoints (userinfo, the phone's): signature, ``typ``, issuer, audience (RFC 9068 §4: ``aud``
    must name this provider, so a token minted for another resource is refused), expiry, not
    revoked. The one check they all call.

    ``header`` is the request's ``Authorization`` header. Raises BearerError: 401
    ``invalid_token`` or 403 ``insufficient_scope`` (RFC 6750 §3.1).
    """
    scheme, _, value = (header or "").partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop") or not value.strip():
        raise BearerError("invalid_token", 401, "Send an access token: Authorization: Bearer ...")
    value = value.strip()
    if len(value) > 8192:
        raise BearerError("invalid_token", 401, "The access token is not valid.")
    try:
        decoded = jwt.decode(value, parts.keys.public_set(), algorithms=ACCESS_TOKEN_ALGS)
    except (JoseError, ValueError, TypeError, KeyError):
        raise BearerError("invalid_token", 401, "The access token is not valid.") from None
    claims = decoded.claims
    if decoded.header.get("typ") != "at+jwt" or claims.get("iss") != parts.settings.issuer:
        raise BearerError("invalid_token", 401, "The access token is not valid.")
    audience = claims.get("aud")
    if parts.settings.issuer not in (audience if isinstance(audience, list) else [audience]):
        raise BearerError("invalid_token", 401, "The access token is for another resource.")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp <= time.time():
        raise BearerError("invalid_token", 401, "The access token has expired.")
    _check_binding(parts, claims, scheme, value, proof)
    challenge = "DPoP" if scheme == "dpop" else "Bearer"  # (the scheme the token came with)
    jti = claims.get("jti")
    row = (parts.db.session.query(Token).filter_by(jti=jti).one_or_none()
           if isinstance(jti, str) else None)
    if row is None or row.revoked:
        raise BearerError("invalid_token", 401, "The access token has been revoked.",
                          scheme=challenge)
    if required_scope and required_scope not in (scope_to_list(row.scope) or []):
        raise BearerError("insufficient_scope", 403,
                          f"The access token lacks scope {required_scope}.", scheme=challenge)
    user = parts.db.session.get(User, row.user_id) if row.user_id else None
    return claims, row, user


def _check_binding(parts, claims: dict, scheme: str, value: str, proof: Proof | None) -> None:
    """RFC 9449 §7: a DPoP-bound token (``cnf.jkt``) only with ``Authorization: DPoP`` and a
    fresh proof by its key for this request and this token (``ath``); an unbound one only as
    Bearer."""
    cnf = claims.get("cnf")
    bound = cnf.get("jkt") if isinstance(cnf, dict) else None
    if scheme == "bearer":
        if bound is not None:
            raise BearerError("invalid_token", 401, "This access token is DPoP-bound: send it "
                              "as Authorization: DPoP with a proof.", scheme="DPoP")
        return
    if bound is None:
        raise BearerError("invalid_token", 401,
                          "This access token is not DPoP-bound: send it as Bearer.")
    try:
        header = one_proof(proof.values) if proof is not None else None
        if header is None:
            raise DPoPError("Send a DPoP proof with a DPoP-bound access token.")
        jkt = parts.dpop.check(header, proof.method, proof.url, access_token=value)
    except DPoPError as exc:
        raise BearerError(exc.error, 401, exc.description, scheme="DPoP",
                          nonce=exc.nonce) from None
    if jkt != bound:
        # (the token may well be fine: it is the proof that does not show its key)
        raise BearerError("invalid_dpop_proof", 401, "The DPoP proof is not by the access token's "
                          "key.", scheme="DPoP")
