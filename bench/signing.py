"""The physical ceiling of token issuance: the two signatures one issuance makes (the RS256 JWT
access token and the RS256 ID token), in a tight single-threaded loop, with the provider's own
active key (read from its database), so on one core.

``raw``: ``cryptography``'s RSA-PKCS#1 v1.5 SHA-256 signature of the same signing inputs, nothing
else: the ceiling. ``joserfc``: ``joserfc.jwt.encode`` of the same headers and claims, as the
provider calls it: the ceiling once JSON and base64 are added (shown for information).
"""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import select

from qr_oidc.provider.storage.models import SigningKey


def active_key_pem(engine, alg: str = "RS256") -> tuple[str, str]:
    with engine.connect() as conn:
        row = conn.execute(select(SigningKey.kid, SigningKey.private_pem).where(
            SigningKey.alg == alg, SigningKey.status == "active")).first()
    return row.kid, row.private_pem


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _tokens(kid: str) -> list[tuple[dict, dict]]:
    """Headers and claims shaped like the provider's access token and ID token."""
    at = int(time.time())
    issuer = "http://127.0.0.1:8000"
    access = ({"alg": "RS256", "typ": "at+jwt", "kid": kid}, {
        "iss": issuer, "sub": "0" * 32, "aud": issuer, "client_id": "c" * 32, "iat": at,
        "exp": at + 3600, "jti": "j" * 32, "scope": "openid profile"})
    id_token = ({"alg": "RS256", "kid": kid, "typ": "JWT"}, {
        "iss": issuer, "aud": "c" * 32, "iat": at, "exp": at + 3600, "auth_time": at,
        "amr": ["qr"], "at_hash": "h" * 22, "sub": "0" * 32, "name": "Bench User",
        "preferred_username": "bench", "picture": "https://pics.example/bench.png"})
    return [access, id_token]


def raw_rate(pem: str, kid: str, seconds: float) -> float:
    """Issuances (two signatures each) per second, signing only."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    inputs = [
        _b64(json.dumps(h, separators=(",", ":")).encode()) + b"."
        + _b64(json.dumps(c, separators=(",", ":")).encode())
        for h, c in _tokens(kid)
    ]
    pad, digest = padding.PKCS1v15(), hashes.SHA256()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for data in inputs:
            key.sign(data, pad, digest)
        count += 1
        if count % 16 == 0 and time.perf_counter() >= deadline:
            break
    return count / (time.perf_counter() - start)


def joserfc_rate(pem: str, kid: str, seconds: float) -> float:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = RSAKey.import_key(pem, {"kid": kid, "alg": "RS256", "use": "sig"})
    tokens = _tokens(kid)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for header, claims in tokens:
            jwt.encode(header, claims, key, ["RS256"])
        count += 1
        if count % 16 == 0 and time.perf_counter() >= deadline:
            break
    return count / (time.perf_counter() - start)
