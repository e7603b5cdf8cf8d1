"""DPoP (RFC 9449): proofs of possession, checked once for every grant and resource.

A client that holds a key pair sends, with each request, a ``DPoP`` header: a JWT it signed with
the private key, carrying the public key (``jwk``), the request's method and URL (``htm``,
``htu``), when it was made (``iat``), a unique id (``jti``) and, at a resource, the hash of the
access token it presents (``ath``). Tokens issued with a proof are bound to the key's RFC 7638
thumbprint (``cnf.jkt``): whoever copies them from a page, a log or a proxy cannot use them
without the private key. The checks are RFC 9449 §4.3's, in its order:

1. one ``DPoP`` header, a well-formed JWS of at most ``MAX_PROOF`` bytes (ASCII);
2. ``typ`` is ``dpop+jwt``; ``alg`` one of ``ALGORITHMS`` (never ``none`` or a MAC);
3. ``jwk`` a public key of a matching type (a private member is refused, not ignored);
4. the signature verifies with that key (joserfc does the JWS);
5. ``htm`` is the method and ``htu`` the URL (scheme and host compared without case, the
   default port implied; the request's query and fragment are not part of it);
6. ``iat`` within ``IAT_WINDOW`` seconds of now (a little future allowed for clock skew), and,
   with ``QR_OIDC_DPOP_NONCES``, a ``nonce`` this provider made in the last two nonce windows;
7. at a resource, ``ath`` is the hash of the presented token, and the key is the one the token
   is bound to;
8. ``jti`` never seen before (within the window): the replay cache is the rate limiter's store,
   the database or Redis, so it holds across instances.

A failure raises ``DPoPError`` (``invalid_dpop_proof``, or ``use_dpop_nonce`` with a fresh
``DPoP-Nonce``); the web layer renders it as the endpoint's protocol wants (400 at the token
endpoint, 401 with ``WWW-Authenticate: DPoP`` at a resource).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import time
from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry

# dpop_signing_alg_values_supported; Ed25519 is RFC 9864's name for EdDSA with that curve, which
# newer clients (openid-client 6.9) use
ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA", "Ed25519"]
KEY_TYPES = {"ES256": "EC", "RS256": "RSA", "PS256": "RSA", "EdDSA": "OKP", "Ed25519": "OKP"}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
MAX_PROOF = 8192
IAT_WINDOW = 300  # seconds a proof is good for after its iat (and the replay cache keeps jti)
IAT_FUTURE = 5  # seconds of clock skew a proof may be ahead
NONCE_WINDOW = 300
_COMPACT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


# joserfc warns at each use of "EdDSA" (RFC 9864 deprecates the name for "Ed25519"); proofs are
# accepted by both names on purpose (RFC 9449's clients send "EdDSA"), so ours is its EdDSA
# without the warning, which would otherwise go to the server's log
_EDDSA = copy.copy(JWSRegistry.algorithms["EdDSA"])
_EDDSA.security_warning = None


def _registry(algorithms: list[str]) -> JWSRegistry:
    """joserfc's JWS rules for proof algorithms, with room for an RSA key in the header (its
    default 512 bytes hold only the smaller keys)."""
    registry = JWSRegistry(algorithms=algorithms)
    registry.max_header_length = 4096
    registry.algorithms = {**JWSRegistry.algorithms, "EdDSA": _EDDSA}
    return registry


_ANY = _registry(ALGORITHMS)
_REGISTRIES = {alg: _registry([alg]) for alg in ALGORITHMS}


class DPoPError(Exception):
    """A proof that cannot be accepted: ``error`` (``invalid_dpop_proof`` or
    ``use_dpop_nonce``), a description, and for the latter the nonce to use."""

    def __init__(self, description: str, error: str = "invalid_dpop_proof",
                 nonce: str | None = None):
        super().__init__(description)
        self.error, self.description, self.nonce = error, description, nonce


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token_hash(access_token: str) -> str:
    """``ath``: base64url(SHA-256(the access token's ASCII))."""
    return _b64(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def normalized_url(url: str) -> str | None:
    """``scheme://host[:port]/path`` as RFC 9449 §4.3 compares ``htu`` (RFC 3986 §6.2.2 and
    §6.2.3: scheme and host without case, the default port left out, no query or fragment);
    None for what is not an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        netloc = f"[{host}]" if ":" in host else host
    else:
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


class Nonces:
    """Server nonces (``QR_OIDC_DPOP_NONCES``), made without state: an HMAC of the current time
    window under the server's secret, so every instance makes and accepts the same ones; a nonce
    is good in its window and the next."""

    def __init__(self, secret: str, window: int = NONCE_WINDOW):
        self._key = hmac.new(secret.encode(), b"qr-oidc dpop nonce", hashlib.sha256).digest()
        self.window = window

    def _for(self, index: int) -> str:
        return _b64(hmac.new(self._key, str(index).encode(), hashlib.sha256).digest()[:18])

    def current(self, at: float | None = None) -> str:
        return self._for(int((time.time() if at is None else at) // self.window))

    def valid(self, nonce: object, at: float | None = None) -> bool:
        if not isinstance(nonce, str) or len(nonce) > 64:
            return False
        index = int((time.time() if at is None else at) // self.window)
        return any(hmac.compare_digest(nonce, self._for(i)) for i in (index, index - 1))


class DPoP:
    """The proof checks of one app (``parts.dpop``). ``first_use(jti_key, until)`` is the replay
    cache (``RateLimiter.first_use``); ``nonces`` is None unless server nonces are on."""

    def __init__(self, first_use, nonces: Nonces | None = None):
        self.first_use, self.nonces = first_use, nonces

    def check(self, header: str | None, method: str, url: str,
              access_token: str | None = None) -> str:
        """The thumbprint (``jkt``) of the key that signed the proof in ``header`` for this
        request; raises DPoPError."""
        if not isinstance(header, str) or not header or len(header) > MAX_PROOF \
                or not header.isascii() or not _COMPACT.match(header):
            raise DPoPError("The DPoP proof is not a compact JWS.")
        try:
            extracted = jws.extract_compact(header.encode("ascii"),
                                            registry=_ANY)
            protected = extracted.protected
            claims = json.loads(extracted.payload)
        except (JoseError, ValueError, TypeError, KeyError):
            raise DPoPError("The DPoP proof is not a JWT.") from None
        if not isinstance(protected, dict) or not isinstance(claims, dict):
            raise DPoPError("The DPoP proof is not a JWT.")
        if protected.get("typ") != "dpop+jwt":
            raise DPoPError("The DPoP proof's typ must be dpop+jwt.")
        alg = protected.get("alg")
        if alg not in ALGORITHMS:
            raise DPoPError("The DPoP proof's alg is not one of "
                            + " ".join(ALGORITHMS) + ".")
        jwk = protected.get("jwk")
        if not isinstance(jwk, dict) or PRIVATE_MEMBERS & set(jwk) \
                or jwk.get("kty") != KEY_TYPES[alg]:
            raise DPoPError("The DPoP proof's jwk must be the public key for its alg.")
        try:
            key = JWKRegistry.import_key(jwk)
            jws.deserialize_compact(header.encode("ascii"), key, registry=_REGISTRIES[alg])
            jkt = key.thumbprint()
        except (JoseError, ValueError, TypeError, KeyError):
            raise DPoPError("The DPoP proof's signature does not verify.") from None
        if claims.get("htm") != method:
            raise DPoPError("The DPoP proof was made for another method (htm).")
        htu = claims.get("htu")
        if not isinstance(htu, str) or len(htu) > 2000 or urlsplit(htu).query \
                or urlsplit(htu).fragment or normalized_url(htu) != normalized_url(url):
            raise DPoPError("The DPoP proof was made for another URL (htu).")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 8 <= len(jti) <= 256:
            raise DPoPError("The DPoP proof needs a jti of 8 to 256 characters.")
        iat, now = claims.get("iat"), time.time()
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) \
                or not now - IAT_WINDOW <= iat <= now + IAT_FUTURE:
            raise DPoPError("The DPoP proof is too old, or from the future (iat).")
        if self.nonces is not None and not self.nonces.valid(claims.get("nonce"), now):
            raise DPoPError("Use the server's DPoP nonce.", "use_dpop_nonce",
                            self.nonces.current(now))
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(ath, token_hash(access_token)):
                raise DPoPError("The DPoP proof was made for another access token (ath).")
        # last, so that a proof refused for anything else does not use its jti up
        if not self.first_use(f"{jkt}|{jti}", iat + IAT_WINDOW + IAT_FUTURE):
            raise DPoPError("The DPoP proof was used before (jti).")
        return jkt


class InvalidDPoPProofError(OAuth2Error):
    """RFC 9449 §5: the token endpoint's refusal of a proof (400)."""

    error = "invalid_dpop_proof"


class UseDPoPNonceError(OAuth2Error):
    """RFC 9449 §8: the proof must carry the server's nonce; ``DPoP-Nonce`` names it (400)."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str):
        super().__init__(description)
        self.nonce = nonce

    def get_headers(self):
        return [*super().get_headers(), ("DPoP-Nonce", self.nonce)]


def oauth_error(exc: DPoPError) -> OAuth2Error:
    """A proof's refusal as the token endpoint answers it."""
    if exc.error == "use_dpop_nonce":
        return UseDPoPNonceError(exc.description, exc.nonce)
    return InvalidDPoPProofError(exc.description)


def one_proof(values: list[str]) -> str | None:
    """The request's one ``DPoP`` header, None without one; two are refused (RFC 9449 §4.3)."""
    if not values:
        return None
    if len(values) > 1:
        raise DPoPError("Send one DPoP header.")
    return values[0]


def values_of(header: str | None) -> list[str]:
    """The ``DPoP`` header values of a request whose server joined repeated headers with commas
    (WSGI, and the event path alike); a proof itself has no comma. A header sent empty is a
    value (an empty proof, refused), not the absence of one."""
    return [] if header is None else [part.strip() for part in header.split(",")]


def require_binding(client, jkt: str | None) -> None:
    """A client registered with ``--require-dpop`` (``dpop_bound_access_tokens``) gets no token
    without a proof (RFC 9449 §5.2)."""
    if getattr(client, "require_dpop", False) and not jkt:
        raise InvalidDPoPProofError("This client's tokens must be DPoP-bound: send a DPoP proof.")
