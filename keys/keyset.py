"""The signing key set: made with ``cryptography`` (through joserfc), kept in the database,
loaded once.

Parsing a private PEM costs tens of milliseconds, a hundred times a signature, so each key is
parsed once per process and kept by ``kid``. The set re-reads the cheap key table (kid, status) at
most every ``refresh_seconds`` so that a rotation made by another instance is picked up without a
restart; only keys it has not seen before are parsed. In a serving process a background thread
does that (``start_refresher``), parsing the active and next keys before they are needed, so a
request never opens a database connection for keys (a request holds at most one connection, its
own) and never waits for a parse.

Lifecycle per algorithm: ``next`` (published, not signing) -> ``active`` (signing) -> ``retired``
(published until the tokens it signed have expired) -> removed. ``kid`` is the RFC 7638 thumbprint.
"""

from __future__ import annotations

import logging
import threading
import time

from cryptography.hazmat.primitives import serialization
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from sqlalchemy import select

from qr_oidc.provider.storage.models import SigningKey

ALGORITHMS = ("RS256", "ES256", "EdDSA")
log = logging.getLogger("qr_oidc.keys")


class KeyError_(RuntimeError):
    """The key table cannot be used (e.g. encrypted keys and no passphrase)."""


def generate(alg: str):
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", private=True)
    raise ValueError(f"unsupported algorithm {alg!r}")


def _key_class(alg: str):
    return {"RS256": RSAKey, "ES256": ECKey, "EdDSA": OKPKey}[alg]


def to_row(key, alg: str, status: str, passphrase: str = "") -> SigningKey:
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase.encode())
    else:
        encryption = serialization.NoEncryption()
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()
    kid = key.thumbprint()
    public = dict(key.as_dict(private=False), kid=kid, alg=alg, use="sig")
    at = time.time()
    return SigningKey(
        kid=kid,
        alg=alg,
        status=status,
        private_pem=pem,
        encrypted=bool(passphrase),
        public_jwk=public,
        created_at=at,
        activated_at=at if status == "active" else None,
    )


def load_private(row: SigningKey, passphrase: str):
    if row.encrypted and not passphrase:
        raise KeyError_(
            "the signing keys are encrypted: set QR_OIDC_KEY_PASSPHRASE to the passphrase they "
            "were made with"
        )
    password = passphrase.encode() if row.encrypted else None
    try:
        private = serialization.load_pem_private_key(row.private_pem.encode(), password=password)
    except (ValueError, TypeError):
        raise KeyError_(
            f"signing key {row.kid} cannot be opened: wrong QR_OIDC_KEY_PASSPHRASE?"
        ) from None
    return _key_class(row.alg).import_key(private, {"kid": row.kid, "alg": row.alg, "use": "sig"})


class KeyStore:
    """Per process: the parsed keys, which one signs for each algorithm, and the public JWKS."""

    def __init__(self, database, passphrase: str = "", refresh_seconds: float = 5.0):
        self.db = database
        self.passphrase = passphrase
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._parsed: dict[str, object] = {}
        self._active: dict[str, str] = {}
        self._jwks: dict = {"keys": []}
        self._public_set: KeySet | None = None
        self._loaded_at = 0.0
        self._background = False

    # -- set up ----------------------------------------------------------------------------
    def ensure(self, algorithms=ALGORITHMS) -> None:
        """Make an active and a next key for each algorithm that has none (first start)."""
        with self.db.engine.begin() as conn:
            rows = conn.execute(select(SigningKey.alg, SigningKey.status)).all()
        have = {(alg, status) for alg, status in rows}
        new = []
        for alg in algorithms:
            for status in ("active", "next"):
                if (alg, status) not in have:
                    new.append(to_row(generate(alg), alg, status, self.passphrase))
        if new:
            session = self.db.session_factory()
            try:
                session.add_all(new)
                session.commit()
            finally:
                session.close()
        self.refresh(force=True)

    # -- reading ---------------------------------------------------------------------------
    def start_refresher(self) -> threading.Thread:
        """Re-read the key table every ``refresh_seconds`` in a thread of its own (a serving
        process, after the fork); requests then only read what it loaded."""
        self._background = True

        def loop():
            while True:
                time.sleep(self.refresh_seconds)
                try:
                    self.refresh(force=True)
                except Exception:  # the database restarting: the keys loaded keep signing
                    log.warning("the key table could not be re-read; trying again")

        thread = threading.Thread(target=loop, name="qr-oidc-keys", daemon=True)
        thread.start()
        return thread

    def refresh(self, force: bool = False) -> None:
        if not force and (self._background
                          or time.monotonic() - self._loaded_at < self.refresh_seconds):
            return
        with self._lock:
            if not force and time.monotonic() - self._loaded_at < self.refresh_seconds:
                return
            with self.db.engine.connect() as conn:
                rows = conn.execute(
                    select(SigningKey.kid, SigningKey.alg, SigningKey.status,
                           SigningKey.activated_at, SigningKey.public_jwk)
                ).all()
            active: dict[str, tuple[float, str]] = {}
            published = []
            for kid, alg, status, activated_at, public_jwk in rows:
                if status not in ("next", "active", "retired"):
                    continue
                published.append(public_jwk)
                if status == "active":
                    # if two were ever active at once, the newest signs, the same on every instance
                    rank = (activated_at or 0.0, kid)
                    if alg not in active or rank > active[alg]:
                        active[alg] = rank
                if self._background and status in ("active", "next"):
                    self._private(kid)  # parsed here, before any request needs it
            self._active = {alg: rank[1] for alg, rank in active.items()}
            published.sort(key=lambda jwk: (jwk["alg"], jwk["kid"]))
            self._jwks = {"keys": published}
            self._public_set = KeySet.import_key_set({"keys": published}) if published else None
            self._loaded_at = time.monotonic()

    def _private(self, kid: str):
        key = self._parsed.get(kid)
        if key is None:
            session = self.db.session_factory()
            try:
                row = session.get(SigningKey, kid)
                if row is None:
                    raise KeyError_(f"signing key {kid} is gone")
                key = load_private(row, self.passphrase)
            finally:
                session.close()
            self._parsed[kid] = key
        return key

    def signing_key(self, alg: str = "RS256"):
        """The key that signs for ``alg`` now, its ``kid`` pinned in the header by the caller."""
        self.refresh()
        kid = self._active.get(alg)
        if kid is None:
            raise KeyError_(f"no active key for {alg}")
        return self._private(kid)

    def jwks(self) -> dict:
        self.refresh()
        return self._jwks

    def public_set(self) -> KeySet:
        self.refresh()
        if self._public_set is None:
            raise KeyError_("no published keys")
        return self._public_set

    def algorithms(self) -> list[str]:
        self.refresh()
        return sorted(self._active)

    def check_startup(self) -> None:
        """Open every active key now, so a wrong or missing passphrase stops the server at start."""
        self.refresh(force=True)
        for kid in self._active.values():
            self._private(kid)
