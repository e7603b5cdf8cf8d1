"""Compact JWS signing (RFC 7515 §7.1) with a loaded key, for the tokens the provider issues.

``joserfc.jwt.encode`` does the same with checks and conversions the provider's own claims never
need (its Python costs about a fifth of an RS256 signature per token, docs/performance.md); this
is the signing input, the signature and base64url, nothing else. Verification stays joserfc's
(``provider/web/oauth.py``), and the tests verify every kind of token with PyJWT, joserfc and Node's
openid-client.
"""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_PKCS1, _SHA256 = padding.PKCS1v15(), hashes.SHA256()
_ECDSA = ec.ECDSA(_SHA256)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sign_compact(key, header: dict, claims: dict) -> str:
    """``header.claims.signature``, signed with ``key`` (a joserfc key of the provider's key set)
    by ``header["alg"]``: RS256, ES256 or EdDSA (Ed25519)."""
    alg = header["alg"]
    signing_input = _b64(_json(header)) + b"." + _b64(_json(claims))
    private = key.private_key
    if alg == "RS256":
        signature = private.sign(signing_input, _PKCS1, _SHA256)
    elif alg == "ES256":  # JWS wants r || s, 32 bytes each, not DER (RFC 7518 §3.4)
        r, s = decode_dss_signature(private.sign(signing_input, _ECDSA))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "EdDSA":
        signature = private.sign(signing_input)
    else:
        raise ValueError(f"unsupported algorithm {alg!r}")
    return (signing_input + b"." + _b64(signature)).decode("ascii")
