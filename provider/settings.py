"""Configuration: defaults, then ``QR_OIDC_*`` environment variables, then a test mapping.

Every setting has one name; the environment variable is that name with the ``QR_OIDC_`` prefix
(``ISSUER`` <- ``QR_OIDC_ISSUER``). Values from the environment are parsed by the type of the
default, so a bad value fails at start-up with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit

PREFIX = "QR_OIDC_"

DEFAULTS: dict[str, object] = {
    # Where the provider is reached; the issuer names itself in tokens and discovery.
    "HOST": "127.0.0.1",
    "PORT": 8000,
    "ISSUER": "",  # empty: http://HOST:PORT
    "DATABASE_URL": "sqlite:///qr-oidc.db",
    # Flask session signing key; empty: made once and kept in the database for every instance
    # (sealed with KEY_PASSPHRASE when one is set)
    "SECRET_KEY": "",
    # Browser sessions at the provider (provider/web/sessions.py): ended after this long without a
    # request, and this long after sign-in whatever happens
    "SESSION_IDLE": 1800,
    "SESSION_LIFETIME": 36000,
    # Tickets
    "TICKET_TTL": 300,  # seconds a ticket lives
    "POLL_INTERVAL": 2,  # seconds between token polls, RFC 8628 §3.2 "interval"
    "MAX_POLL_INTERVAL": 60,  # slow_down never grows the interval past this
    "LONG_POLL_MAX": 25,  # longest wait the status endpoint holds a request
    # a waiting long poll re-reads the database at least this often (notices wake it anyway; the
    # default is past LONG_POLL_MAX: 10,000 held long polls re-reading every 10 s would be 1,000
    # reads a second for nothing)
    "LONG_POLL_RECHECK": 30,
    "LONG_POLLS_PER_TICKET": 4,  # long polls held at once per ticket; more answer at once
    "LONG_POLL_LIMIT": 20000,  # long polls held at once per process; more answer at once
    "EXPIRED_RETENTION": 900,  # expired tickets answer "expired" this long before purge
    # Tokens
    "ACCESS_TOKEN_TTL": 3600,
    "ID_TOKEN_TTL": 3600,
    "REFRESH_TOKEN_TTL": 30 * 24 * 3600,
    "AUTH_CODE_TTL": 60,
    # Keys
    "SIGNING_ALG": "RS256",
    "KEY_PASSPHRASE": "",
    "JWKS_MAX_AGE": 300,  # Cache-Control max-age of the JWKS
    "KEY_REFRESH": 5,  # seconds between an instance's re-reads of the key table
    "KEY_ROTATION_PERIOD": 0,  # seconds an active key signs before automatic rotation; 0: off
    "MAINTENANCE_INTERVAL": 30,  # seconds between background purges and rotation checks
    # Server
    "WORKERS": 1,
    "THREADS": 64,  # threads per worker for what Flask serves (pages, discovery, tickets)
    "DB_POOL_SIZE": 10,  # database connections kept per process
    "DB_MAX_OVERFLOW": 20,  # extra connections a process may open under load
    # threads of the event path's database work per process, and its kept connections
    "DB_FAST_POOL_SIZE": 8,
    # seconds a request waits for a free connection before it answers 503 temporarily_unavailable
    "DB_POOL_TIMEOUT": 10,
    "LOG_LEVEL": "info",
    # Rate limits, COUNT/SECONDS or off (provider/storage/ratelimit.py); REDIS_URL moves the counters to Redis.
    # RATE_TICKET_CLIENT is per client unless the client has its own (clients create --ticket-rate);
    # RATE_TICKET_IP counts the requester's address (requester_ip from a backend, else the peer)
    "RATE_TICKET_CLIENT": "1200/60",
    "RATE_TICKET_IP": "30/60",
    "RATE_USER_CODE_USER": "10/600",
    "RATE_USER_CODE_IP": "20/600",
    "RATE_LOGIN_ACCOUNT": "10/900",
    "RATE_LOGIN_IP": "30/900",
    "REDIS_URL": "",
    # proxies in front whose X-Forwarded-For / -Proto to trust (0: none; the peer is the client)
    "TRUSTED_PROXIES": 0,
}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


def _parse(name: str, raw: str, default: object) -> object:
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{PREFIX}{name} must be true or false, not {raw!r}")
    if isinstance(default, int):
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name} must be a whole number, not {raw!r}") from None
        if value < 0:
            raise ConfigError(f"{PREFIX}{name} must not be negative")
        return value
    return raw


def _check_issuer(issuer: str) -> None:
    """https, or http on loopback only: the issuer is in every QR code and every token."""
    try:
        parts = urlsplit(issuer)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ConfigError(f"{PREFIX}ISSUER {issuer!r} is not a URL") from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and (host == "localhost" or _is_loopback(host)):
        return
    raise ConfigError(
        f"{PREFIX}ISSUER must be an https URL (http only on loopback), not {issuer!r}: "
        f"set {PREFIX}ISSUER to the public https address"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load(overrides: dict | None = None, environ: dict | None = None) -> dict:
    """Return the settings: defaults, then the environment, then ``overrides``."""
    environ = os.environ if environ is None else environ
    settings = dict(DEFAULTS)
    for name, default in DEFAULTS.items():
        raw = environ.get(PREFIX + name)
        if raw is not None:
            settings[name] = _parse(name, raw, default)
    if overrides:
        for name, value in overrides.items():
            settings[name.upper()] = value
    if not settings["ISSUER"]:
        settings["ISSUER"] = f"http://{settings['HOST']}:{settings['PORT']}"
    settings["ISSUER"] = str(settings["ISSUER"]).rstrip("/")
    _check_issuer(settings["ISSUER"])
    if int(settings["EXPIRED_RETENTION"]) < 600:
        raise ConfigError(f"{PREFIX}EXPIRED_RETENTION must be at least 600 seconds (SPEC: expired "
                          "tickets answer 'expired' for at least ten minutes)")
    for name in [n for n in settings if n.startswith("RATE_")]:
        raw = str(settings[name]).strip().lower()
        if raw != "off" and not re.fullmatch(r"[1-9][0-9]*/[1-9][0-9]*", raw):
            raise ConfigError(f"{PREFIX}{name} must be COUNT/SECONDS (e.g. 30/60) or off, "
                              f"not {settings[name]!r}")
    url = str(settings["DATABASE_URL"])
    if url.startswith("sqlite") and url.split("?", 1)[0].rstrip("/") in (
            "sqlite:", "sqlite:/", "sqlite://", "sqlite:///:memory:") or ":memory:" in url:
        # every connection of an in-memory database is a database of its own
        raise ConfigError(f"{PREFIX}DATABASE_URL: an in-memory SQLite database cannot be shared "
                          "by the server's connections; use a file (sqlite:///path/qr-oidc.db)")
    if int(settings["POLL_INTERVAL"]) < 1:
        raise ConfigError(f"{PREFIX}POLL_INTERVAL must be at least 1 second")
    if int(settings["TICKET_TTL"]) < 1:
        raise ConfigError(f"{PREFIX}TICKET_TTL must be at least 1 second")
    for name in ("SESSION_IDLE", "SESSION_LIFETIME", "DB_POOL_TIMEOUT"):
        if int(settings[name]) < 1:
            raise ConfigError(f"{PREFIX}{name} must be at least 1 second")
    return settings
