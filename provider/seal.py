"""Sealed values: authenticated encryption (AES-256-GCM) under a key only the servers hold.

Used for the authorization code: the code *is* the authorization it stands for (client, redirect
URI, scope, nonce, PKCE challenge, user, auth_time, amr, expiry), sealed, so issuing one writes
nothing; the authorization endpoint answers a GET without changing a row. Only its redemption at
the token endpoint (a POST) is recorded, once, by the digest of the code.

Also used for the session-signing secret at rest when a key passphrase is configured
(``seal_with_passphrase``): scrypt derives the key from the passphrase, once at start.
"""

from __future__ import annotations

import base64
import json
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAX_SEALED = 16384
_CANONICAL = re.compile(r"^[A-Za-z0-9_-]+$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Seal and open JSON objects for one purpose (the purpose is bound into key and tag)."""

    def __init__(self, secret: str, purpose: str):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=f"qr-oidc {purpose}".encode()).derive(secret.encode())
        self._aead = AESGCM(key)
        self._purpose = purpose.encode()

    def seal(self, value: dict) -> str:
        nonce = os.urandom(12)
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()
        return _b64(nonce + self._aead.encrypt(nonce, data, self._purpose))

    def open(self, sealed: str) -> dict | None:
        """The value, or None for anything not sealed by this key for this purpose. Only the
        canonical spelling opens (unpadded base64url, no spare bits): a sealed value has exactly
        one form, so its digest names it (a code redeemed once cannot come back as ``code=``
        or with ``+`` for ``-``)."""
        if not isinstance(sealed, str) or not 30 <= len(sealed) <= MAX_SEALED \
                or not _CANONICAL.match(sealed):
            return None
        try:
            raw = _unb64(sealed)
            if _b64(raw) != sealed:
                return None
            value = json.loads(self._aead.decrypt(raw[:12], raw[12:], self._purpose))
        except (ValueError, InvalidTag):
            return None
        return value if isinstance(value, dict) else None


# -- a secret kept in the database, encrypted with the key passphrase ------------------------------
PREFIX = "sealed:v1:"


def _passphrase_key(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())


def seal_with_passphrase(value: str, passphrase: str) -> str:
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_passphrase_key(passphrase, salt)).encrypt(nonce, value.encode(),
                                                               PREFIX.encode())
    return PREFIX + _b64(salt + nonce + sealed)


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def open_with_passphrase(stored: str, passphrase: str) -> str | None:
    """The value, or None when the passphrase is not the one it was sealed with."""
    raw = _unb64(stored[len(PREFIX):])
    try:
        return AESGCM(_passphrase_key(passphrase, raw[:16])).decrypt(
            raw[16:28], raw[28:], PREFIX.encode()).decode()
    except InvalidTag:
        return None
