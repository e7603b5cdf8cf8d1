"""A DPoP client's key and proofs (RFC 9449 §4), made with joserfc as a client library would,
and ways to make them wrong, for the tests."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

KEYS = {"ES256": lambda: ECKey.generate_key("P-256"),
        "RS256": lambda: RSAKey.generate_key(2048),
        "PS256": lambda: RSAKey.generate_key(2048),
        "EdDSA": lambda: OKPKey.generate_key("Ed25519"),
        "Ed25519": lambda: OKPKey.generate_key("Ed25519")}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(access_token: str) -> str:
    return b64(hashlib.sha256(access_token.encode()).digest())


class DPoPKey:
    def __init__(self, alg: str = "ES256"):
        self.alg = alg
        self.key = KEYS[alg]()
        self.jkt = self.key.thumbprint()

    def public(self) -> dict:
        return self.key.as_dict(private=False)

    def proof(self, method: str, url: str, access_token: str | None = None,
              nonce: str | None = None, header: dict | None = None, **claims) -> str:
        """A fresh proof for ``method`` ``url``; ``header`` and ``claims`` override what a
        correct one carries (None removes a member)."""
        protected = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public(), **(header or {})}
        body = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url,
                "iat": int(time.time())}
        if access_token is not None:
            body["ath"] = ath(access_token)
        if nonce is not None:
            body["nonce"] = nonce
        body.update(claims)
        protected = {k: v for k, v in protected.items() if v is not None}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(protected, body, self.key, algorithms=[protected.get("alg",
                                                                              self.alg)])


def unsigned(header: dict, claims: dict, signature: str = "") -> str:
    """A JWS-shaped string with any header and claims (for ``none`` and broken proofs)."""
    def part(value: dict) -> str:
        return b64(json.dumps(value).encode())
    return f"{part(header)}.{part(claims)}.{signature}"
