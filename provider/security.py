"""Secrets: how they are made, stored and compared.

Machine-made secrets carry at least 128 random bits, so SHA-256 is the right digest at rest (a slow
KDF would cap the token poll at a few requests a second); only user passwords use a slow KDF
(scrypt, through Werkzeug). Every comparison of a secret is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets
import string
import threading

# RFC 8628 §6.1: base-20, no vowels, nothing that reads alike.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8


def digest(secret: str) -> str:
    """SHA-256 hex digest of a machine-made secret, the form it is stored and looked up in."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str | None, stored_digest: str) -> bool:
    if not isinstance(secret, str) or not stored_digest:
        return False
    return hmac.compare_digest(digest(secret), stored_digest)


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_id() -> str:
    return secrets.token_hex(16)


def user_code_for(scan_code: str) -> str:
    """The user code of a ticket, derived from its scan code.

    Both let a signed-in user act on the ticket, so deriving one from the other gives nothing away,
    and it lets the scan response show the code for manual entry while only its digest is stored.
    """
    raw = hmac.new(scan_code.encode(), b"qr-oidc user code", hashlib.sha256).digest()
    number = int.from_bytes(raw, "big")
    chars = []
    for _ in range(USER_CODE_LENGTH):
        number, index = divmod(number, len(USER_CODE_ALPHABET))
        chars.append(USER_CODE_ALPHABET[index])
    return "".join(chars[:4]) + "-" + "".join(chars[4:])


def normalize_user_code(value: str) -> str | None:
    """Upper-case, drop dashes and spaces; None when it cannot be a user code."""
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value.upper() if ch not in "- \t")
    if len(cleaned) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in cleaned):
        return None
    return cleaned[:4] + "-" + cleaned[4:]


def binding_code() -> str:
    return f"{secrets.randbelow(100):02d}"


def binding_choices(correct: str, seed: str) -> list[str]:
    """Three distinct two-digit choices, the correct one among them.

    The distractors and the order are fixed per ticket (``seed`` is keyed with a server secret
    from the ticket's id: grants/tickets.py): a user who scans twice must not learn the right
    one by seeing which choice stayed, and nothing a browser holds derives them.
    """
    rng = random.Random(hmac.new(seed.encode(), b"binding", hashlib.sha256).digest())
    choices = {correct}
    while len(choices) < 3:
        choices.add(f"{rng.randrange(100):02d}")
    ordered = sorted(choices)
    rng.shuffle(ordered)
    return ordered


# A password hash (scrypt) takes a core for a sixth of a second and releases the GIL: forty at
# once would take every core for seconds, and a request that holds a database connection for a
# millisecond's work would wait its turn for a core meanwhile, so long that others time out
# waiting for its connection. At most one hash per core runs at once; the rest queue here, where
# they hold nothing.
_HASHING = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


# scrypt's cost (RFC 7914): N=2^PASSWORD_COST (2^15 unless the operator sets another), r=8,
# p=1, a 64-byte key; stored as ``scrypt:N:r:p$<salt>$<hex>``, the format Werkzeug's
# generate_password_hash writes (earlier versions used it), so hashes already stored keep working
# and no web framework is needed here. A hash keeps the cost it was made with.
DEFAULT_PASSWORD_COST = 15
_SCRYPT = (2**DEFAULT_PASSWORD_COST, 8, 1)
_SALT_CHARS = string.ascii_letters + string.digits


def _derive(method: str, salt: str, password: str) -> str | None:
    name, *args = method.split(":")
    try:
        if name == "scrypt":
            n, r, p = (int(a) for a in args) if args else _SCRYPT
            if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
                return None
            return hashlib.scrypt(password.encode(), salt=salt.encode(), n=n, r=r, p=p,
                                  maxmem=132 * n * r * p).hex()
        if name == "pbkdf2" and len(args) == 2:
            iterations = int(args[1])
            if not 1 <= iterations <= 10_000_000:
                return None
            return hashlib.pbkdf2_hmac(args[0], password.encode(), salt.encode(),
                                       iterations).hex()
    except (ValueError, TypeError):
        return None
    return None


def hash_password(password: str, cost: int = DEFAULT_PASSWORD_COST) -> str:
    """A salted scrypt hash of ``password`` with N = 2^``cost`` (settings.password_cost)."""
    salt = "".join(secrets.choice(_SALT_CHARS) for _ in range(16))
    method = f"scrypt:{2**cost}:{_SCRYPT[1]}:{_SCRYPT[2]}"
    with _HASHING:
        return f"{method}${salt}${_derive(method, salt, password)}"


def needs_rehash(password_hash: str, cost: int) -> bool:
    """Whether a stored hash is weaker than ``cost`` asks for: scrypt with a smaller N, or not
    scrypt at all (an older pbkdf2 one). A stronger one is kept as it is."""
    name, *args = password_hash.split("$", 1)[0].split(":")
    if name != "scrypt":
        return True
    try:
        n = int(args[0]) if args else _SCRYPT[0]
    except ValueError:
        return True
    return n < 2**cost


def check_password(password_hash: str, password: str) -> bool:
    try:
        method, salt, expected = password_hash.split("$", 2)
    except (ValueError, AttributeError):
        return False
    with _HASHING:
        derived = _derive(method, salt, password)
    return derived is not None and hmac.compare_digest(derived, expected)


def constant_equals(a: str | None, b: str | None) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return hmac.compare_digest(a.encode(), b.encode())
