"""Settings: defaults, then ``QR_OIDC_*`` environment variables, then overrides; parsed and
checked once, at start, into a frozen ``Settings``.

Every setting has one name; the environment variable is that name with the ``QR_OIDC_`` prefix
(``ISSUER`` <- ``QR_OIDC_ISSUER``) and the attribute is the name in lower case
(``settings.issuer``). A value is parsed by its field's type; every bad variable gets a line of
its own in the one ``ConfigError`` that stops the start, so an operator fixes them all at once.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PREFIX = "QR_OIDC_"


class ConfigError(ValueError):
    """Configuration values that cannot be used; one line per variable, each naming it."""


@dataclass(frozen=True)
class Settings:
    # Where the provider is reached; the issuer names itself in tokens and discovery.
    host: str = "127.0.0.1"
    port: int = 8000
    issuer: str = ""  # empty: http://HOST:PORT
    database_url: str = "sqlite:///qr-oidc.db"
    # Flask session signing key; empty: made once and kept in the database for every instance
    # (sealed with KEY_PASSPHRASE when one is set)
    secret_key: str = ""
    # Browser sessions at the provider (provider/web/sessions.py): ended after this long without
    # a request, and this long after sign-in whatever happens
    session_idle: int = 1800
    session_lifetime: int = 36000
    # Tickets
    ticket_ttl: int = 300  # seconds a ticket lives
    poll_interval: int = 2  # seconds between token polls, RFC 8628 §3.2 "interval"
    max_poll_interval: int = 60  # slow_down never grows the interval past this
    long_poll_max: float = 25.0  # longest wait the status endpoint holds a request
    # a waiting long poll re-reads the database at least this often (notices wake it anyway; the
    # default is past LONG_POLL_MAX: 10,000 held long polls re-reading every 10 s would be 1,000
    # reads a second for nothing)
    long_poll_recheck: float = 30.0
    long_polls_per_ticket: int = 4  # long polls held at once per ticket; more answer at once
    long_poll_limit: int = 20000  # long polls held at once per process; more answer at once
    expired_retention: int = 900  # expired tickets answer "expired" this long before purge
    # Push login (CIBA, grants/ciba.py): a request lives PUSH_TTL seconds unless the client asks
    # for less (requested_expiry, up to PUSH_MAX_TTL); a user has at most PUSH_MAX_OUTSTANDING
    # undecided requests at once (more: 429), so nobody can flood a phone with prompts
    push_ttl: int = 120
    push_max_ttl: int = 600
    push_max_outstanding: int = 3
    # the operator's push gateway (FCM, APNs...): told when a user has a new push request, never
    # a token; the body is signed with HMAC-SHA256 under PUSH_WEBHOOK_SECRET
    # (X-QR-OIDC-Signature). Deliveries (these, and CIBA pings) are retried with backoff for
    # DELIVERY_TTL seconds, at most DELIVERY_QUEUE_MAX waiting (provider/runtime/deliveries.py)
    push_webhook: str = ""
    push_webhook_secret: str = ""
    delivery_ttl: int = 300
    delivery_queue_max: int = 10000
    delivery_timeout: float = 5.0
    # DPoP (RFC 9449, grants/dpop.py): proofs must carry a server nonce (DPoP-Nonce)
    dpop_nonces: bool = False
    # Tokens
    access_token_ttl: int = 3600
    id_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    auth_code_ttl: int = 60
    # Keys
    signing_alg: str = "RS256"
    key_passphrase: str = ""
    jwks_max_age: int = 300  # Cache-Control max-age of the JWKS
    key_refresh: float = 5.0  # seconds between an instance's re-reads of the key table
    key_rotation_period: int = 0  # seconds an active key signs before automatic rotation; 0: off
    maintenance_interval: int = 30  # seconds between background purges and rotation checks
    # Passwords: scrypt with N = 2^PASSWORD_COST (12 to 20; 15 takes about a sixth of a second of
    # a core per hash here, each step up doubles it). A hash keeps the cost it was made with; a
    # sign-in re-hashes a password stored with less. Below 15 only for tests and development.
    password_cost: int = 15
    # Server
    workers: int = 1
    threads: int = 64  # threads per worker for what Flask serves (pages, discovery, tickets)
    db_pool_size: int = 10  # database connections kept per process
    db_max_overflow: int = 20  # extra connections a process may open under load
    # threads of the event path's database work per process, and its kept connections
    db_fast_pool_size: int = 8
    # seconds a request waits for a free connection before it answers 503 temporarily_unavailable
    db_pool_timeout: float = 10.0
    log_level: str = "info"
    # GET /metrics (Prometheus) answers only Authorization: Bearer <this>; empty: metrics off
    metrics_token: str = ""
    # Rate limits, COUNT/SECONDS or off (provider/storage/ratelimit.py); REDIS_URL moves the
    # counters to Redis. RATE_TICKET_CLIENT is per client unless the client has its own
    # (clients create --ticket-rate); RATE_TICKET_IP counts the requester's address
    # (requester_ip from a backend, else the peer)
    rate_ticket_client: str = "1200/60"
    rate_ticket_ip: str = "30/60"
    rate_user_code_user: str = "10/600"
    rate_user_code_ip: str = "20/600"
    rate_login_account: str = "10/900"
    rate_login_ip: str = "30/900"
    rate_push_client: str = "600/60"  # push login requests per client (prompt bombing)
    redis_url: str = ""
    # proxies in front whose X-Forwarded-For / -Proto to trust (0: none; the peer is the client)
    trusted_proxies: int = 0
    # ``qr-oidc demo``: the demo's pages are served (never from the environment)
    demo: bool = field(default=False, metadata={"internal": True})

    @property
    def secure(self) -> bool:
        """Served over https: Secure cookies with the __Host- prefix, HSTS."""
        return self.issuer.startswith("https://")

    def rate(self, name: str) -> str:
        """A rate limit by its variable's name (``RATE_TICKET_IP``)."""
        return getattr(self, name.lower())

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name.upper(): f for f in dataclasses.fields(Settings)}
# every name with its default, as operators and tests read them (docs/deploy.md lists them)
DEFAULTS: dict[str, object] = {name: f.default for name, f in FIELDS.items()
                               if not f.metadata.get("internal")}


def _parse(name: str, raw: object, kind: str) -> object:
    """``raw`` (a string from the environment, or a value given in code) as the field's type."""
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        lowered = str(raw).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{PREFIX}{name} must be true or false, not {raw!r}")
    if kind in ("int", "float"):
        if isinstance(raw, bool):
            raise ConfigError(f"{PREFIX}{name} must be a number, not {raw!r}")
        try:
            value = int(str(raw).strip()) if kind == "int" else float(str(raw).strip())
        except ValueError:
            what = "a whole number" if kind == "int" else "a number"
            raise ConfigError(f"{PREFIX}{name} must be {what}, not {raw!r}") from None
        if value < 0 or value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{PREFIX}{name} must not be negative, not {raw!r}")
        return value
    return str(raw)


def _check_issuer(issuer: str) -> str | None:
    """https, or http on loopback only: the issuer is in every QR code and every token."""
    try:
        parts = urlsplit(issuer)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        return f"{PREFIX}ISSUER {issuer!r} is not a URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and (host == "localhost" or _is_loopback(host)):
        return None
    return (f"{PREFIX}ISSUER must be an https URL (http only on loopback), not {issuer!r}: "
            f"set {PREFIX}ISSUER to the public https address")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rules(values: dict) -> dict[str, str]:
    """What the values break beyond their types: name -> message."""
    bad: dict[str, str] = {}
    issuer_error = _check_issuer(values["issuer"])
    if issuer_error:
        bad["ISSUER"] = issuer_error
    if values["expired_retention"] < 600:
        bad["EXPIRED_RETENTION"] = (f"{PREFIX}EXPIRED_RETENTION must be at least 600 seconds "
                                    "(SPEC: expired tickets answer 'expired' for at least ten "
                                    "minutes)")
    for name in [n for n in FIELDS if n.startswith("RATE_")]:
        raw = values[name.lower()].strip().lower()
        if raw != "off" and not re.fullmatch(r"[1-9][0-9]*/[1-9][0-9]*", raw):
            bad[name] = (f"{PREFIX}{name} must be COUNT/SECONDS (e.g. 30/60) or off, "
                         f"not {values[name.lower()]!r}")
    url = values["database_url"]
    if url.startswith("sqlite") and url.split("?", 1)[0].rstrip("/") in (
            "sqlite:", "sqlite:/", "sqlite://", "sqlite:///:memory:") or ":memory:" in url:
        # every connection of an in-memory database is a database of its own
        bad["DATABASE_URL"] = (f"{PREFIX}DATABASE_URL: an in-memory SQLite database cannot be "
                               "shared by the server's connections; use a file "
                               "(sqlite:///path/qr-oidc.db)")
    webhook = values["push_webhook"]
    if webhook:
        try:
            scheme = urlsplit(webhook).scheme
        except ValueError:
            scheme = ""
        if scheme not in ("http", "https") or not urlsplit(webhook).netloc:
            bad["PUSH_WEBHOOK"] = f"{PREFIX}PUSH_WEBHOOK must be an http(s) URL, not {webhook!r}"
        elif len(values["push_webhook_secret"]) < 16:
            bad["PUSH_WEBHOOK_SECRET"] = (f"{PREFIX}PUSH_WEBHOOK_SECRET must be set (at least 16 "
                                          f"characters) when {PREFIX}PUSH_WEBHOOK is")
    if values["metrics_token"] and len(values["metrics_token"]) < 16:
        bad["METRICS_TOKEN"] = f"{PREFIX}METRICS_TOKEN must be at least 16 characters"
    if not 12 <= values["password_cost"] <= 20:
        bad["PASSWORD_COST"] = (f"{PREFIX}PASSWORD_COST must be 12 to 20 (scrypt's N is 2 to "
                                f"that power; 15 is the default), not {values['password_cost']}")
    if values["push_max_ttl"] < values["push_ttl"]:
        bad["PUSH_MAX_TTL"] = f"{PREFIX}PUSH_MAX_TTL must be at least {PREFIX}PUSH_TTL"
    for name in ("POLL_INTERVAL", "TICKET_TTL", "SESSION_IDLE", "SESSION_LIFETIME",
                 "DB_POOL_TIMEOUT", "PUSH_TTL", "PUSH_MAX_OUTSTANDING", "DELIVERY_TTL",
                 "DELIVERY_QUEUE_MAX", "DELIVERY_TIMEOUT"):
        if values[name.lower()] < 1:
            bad[name] = f"{PREFIX}{name} must be at least 1 second"
    return bad


def load(overrides: dict | None = None, environ: dict | None = None) -> Settings:
    """The settings: defaults, then the environment, then ``overrides`` (by name, any case).

    Raises ConfigError naming every bad variable, one per line."""
    environ = os.environ if environ is None else environ
    values = {f.name: f.default for f in FIELDS.values()}
    bad: dict[str, str] = {}

    def take(name: str, raw: object) -> None:
        f = FIELDS[name]
        try:
            values[f.name] = _parse(name, raw, f.type)
        except ConfigError as exc:
            bad[name] = str(exc)

    for name, f in FIELDS.items():
        if f.metadata.get("internal"):
            continue
        raw = environ.get(PREFIX + name)
        if raw is not None:
            take(name, raw)
    for name, value in (overrides or {}).items():
        name = name.upper().removeprefix(PREFIX)
        if name not in FIELDS:
            bad[name] = f"{PREFIX}{name} is not a setting"
        elif value is not None:
            take(name, value)
    if not values["issuer"]:
        values["issuer"] = f"http://{values['host']}:{values['port']}"
    values["issuer"] = values["issuer"].rstrip("/")
    for name, message in _rules(values).items():  # (a value that did not parse is its default)
        bad.setdefault(name, message)
    if bad:
        raise ConfigError("\n".join(bad[name] for name in sorted(bad)))
    return Settings(**values)
