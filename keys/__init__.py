"""Signing keys: the key set, the JWKS and rotation."""

from .keyset import ALGORITHMS, KeyError_, KeyStore

__all__ = ["ALGORITHMS", "KeyError_", "KeyStore"]
