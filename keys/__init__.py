"""Signing keys: the key set, the JWKS and rotation."""

from qr_oidc.keys.keyset import ALGORITHMS, KeyError_, KeyStore

__all__ = ["ALGORITHMS", "KeyError_", "KeyStore"]
