"""Storage models (SQLAlchemy 2.x, typed).

Secrets are never stored: tickets, scan codes, user codes, authorization codes, refresh tokens and
client secrets are kept as SHA-256 digests (``*_hash`` columns) and looked up by digest. Times are
seconds since the epoch (floats): the poll throttle compares them inside one SQL ``UPDATE``, which
stays portable between SQLite and PostgreSQL that way.
"""

from __future__ import annotations

import ipaddress
import re
import time
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from qr_oidc.provider.security import secret_matches
from qr_oidc.provider.storage.db import Base

QR_GRANT_TYPE = "urn:qr-oidc:params:oauth:grant-type:qr-ticket"
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,100}$")  # RFC 6749 §3.3
DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"  # OpenID CIBA Core 1.0 §10.1


def now() -> float:
    return time.time()


def _default_auth_method(context) -> str:
    """A client made without a method: ``none`` if public, else ``client_secret_basic``."""
    return "none" if context.get_current_parameters().get("public") else "client_secret_basic"


class Client(Base, ClientMixin):
    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    number_matching: Mapped[bool] = mapped_column(Boolean, default=False)
    redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    grant_types: Mapped[list] = mapped_column(JSON, default=list)
    scope: Mapped[str] = mapped_column(Text, default="openid profile email")
    logo_uri: Mapped[str | None] = mapped_column(String(2000))
    id_token_signed_response_alg: Mapped[str | None] = mapped_column(String(16))
    # client_secret_basic | client_secret_post | none (grants/client_auth.py); RFC 7591's default
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32),
                                                            default=_default_auth_method)
    # this client's ticket creation limit, COUNT/SECONDS or off; None: QR_OIDC_RATE_TICKET_CLIENT
    ticket_rate: Mapped[str | None] = mapped_column(String(32))
    # push login (CIBA): poll | ping, and where a ping goes (grants/ciba.py)
    backchannel_token_delivery_mode: Mapped[str | None] = mapped_column(String(8))
    backchannel_client_notification_endpoint: Mapped[str | None] = mapped_column(String(2000))
    # every token of this client is DPoP-bound (RFC 9449 §5.2 dpop_bound_access_tokens)
    require_dpop: Mapped[bool] = mapped_column(Boolean, default=False)
    # logout (grants/logout.py): where RP-Initiated Logout may send the browser back, and where
    # Back-Channel Logout posts the logout token
    post_logout_redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[float] = mapped_column(Float, default=now)

    @property
    def auth_method(self) -> str:
        """The one client authentication method this client uses (RFC 7591 §2)."""
        return self.token_endpoint_auth_method

    # Authlib ClientMixin -------------------------------------------------------------------
    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        """What of ``scope`` this client may have (Authlib: the authorization request's scope
        becomes this). Scopes it may not have are left out; a scope that is malformed
        (RFC 6749 §3.3), or of which nothing is left, is None: ``invalid_scope``."""
        if not scope:
            return ""
        requested = scope_to_list(scope) or []
        if not all(SCOPE_TOKEN.match(token) for token in requested):
            return None
        allowed = set(scope_to_list(self.scope))
        kept = [token for token in dict.fromkeys(requested) if token in allowed]
        return " ".join(kept) if kept else None

    def check_redirect_uri(self, redirect_uri):
        """Exact match, except that a loopback IP redirect may use any port (RFC 8252 §7.3)."""
        if redirect_uri in self.redirect_uris:
            return True
        candidate = _loopback_parts(redirect_uri)
        if candidate is None:
            return False
        return any(_loopback_parts(uri) == candidate for uri in self.redirect_uris)

    def check_client_secret(self, client_secret):
        return bool(self.secret_hash) and secret_matches(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method, endpoint):
        return method == self.auth_method

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types

    @property
    def scopes(self) -> list[str]:
        return scope_to_list(self.scope) or []


def _loopback_parts(uri: str):
    """(scheme, host, path, query, fragment) of an http loopback-IP URI, without the port; else
    None. Only the port may vary (RFC 8252 §7.3): a URI with userinfo is no variant of anything."""
    try:
        parts = urlsplit(uri)
        if parts.scheme != "http" or not parts.hostname or "@" in parts.netloc:
            return None
        if not ipaddress.ip_address(parts.hostname).is_loopback:
            return None
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        return None
    return (parts.scheme, parts.hostname, parts.path, parts.query, parts.fragment)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sub: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    picture: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[float] = mapped_column(Float, default=now)

    def get_user_id(self):
        return self.id


class Ticket(Base):
    """A login ticket: what the QR shows, what the phone approves, what the web client polls.

    ``status`` moves pending -> scanned -> approved -> redeemed (or -> denied); expiry is a time,
    not a status, so every step compares ``expires_at`` itself. Every transition is one
    conditional ``UPDATE ... WHERE status = <expected>``, so two instances cannot both win it.
    """

    __tablename__ = "tickets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scan_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # qr | device | authorize (the hosted page's) | push (CIBA: made for a named user)
    kind: Mapped[str] = mapped_column(String(16), default="qr")
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text, default="")
    nonce: Mapped[str | None] = mapped_column(String(512))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(8))
    binding_code: Mapped[str | None] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # (indexed: a user's push inbox, and the outstanding push requests counted per user)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                                index=True)
    requester_ip: Mapped[str | None] = mapped_column(String(64))
    requester_ua: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    scanned_at: Mapped[float | None] = mapped_column(Float)
    decided_at: Mapped[float | None] = mapped_column(Float)  # approval time = auth_time
    redeemed_at: Mapped[float | None] = mapped_column(Float)
    poll_interval: Mapped[int] = mapped_column(Integer, default=5)
    last_poll_at: Mapped[float | None] = mapped_column(Float)
    # for tickets made by the hosted login page: the authorization request to continue
    auth_request: Mapped[dict | None] = mapped_column(JSON)
    # push login (CIBA): the message both screens show, and in ping mode the client's
    # client_notification_token, sealed (it is sent back to the client, so it cannot be a digest)
    binding_message: Mapped[str | None] = mapped_column(String(64))
    notification_token: Mapped[str | None] = mapped_column(Text)
    # the DPoP key (RFC 7638 thumbprint) the ticket was created with: only polls proving it redeem
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))

    def is_expired(self, at: float | None = None) -> bool:
        return (at or now()) >= self.expires_at

    def public_status(self, at: float | None = None) -> str:
        if self.status in ("redeemed", "denied"):
            return self.status
        return "expired" if self.is_expired(at) else self.status

    # read by the OpenID extension, as from an authorization code
    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return int(self.decided_at) if self.decided_at else None

    def get_amr(self):
        return ["qr"]


class TicketEvent(Base):
    """A ticket changed state: SQLite's stand-in for PostgreSQL's NOTIFY
    (provider/storage/notify.py).

    Written in the transition's own transaction; every serving process reads the rows after the
    last one it saw, a few times a second, and wakes its long polls. Kept a minute.
    """

    __tablename__ = "ticket_events"
    # AUTOINCREMENT: a purged table must not hand out a seq a watcher has already passed
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[float] = mapped_column(Float, index=True)


class RedeemedCode(Base):
    """An authorization code that was exchanged for tokens, by its digest.

    A code is sealed, not stored (``grants/authorization_code.py``): issuing one writes nothing.
    Its redemption inserts this row in the transaction that saves the tokens, so a code is
    exchanged once; presented again, the row names the token family it started, which is then
    revoked (RFC 6749 §4.1.2). Purged once the code would have expired anyway.
    """

    __tablename__ = "redeemed_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    family_id: Mapped[str] = mapped_column(String(32))
    redeemed_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class Token(Base):
    """An issued access token (a JWT, stored by its ``jti``) and its refresh token's digest.

    The two are revoked apart: ``revoked`` is the access token's, ``refresh_status`` the refresh
    token's (``active``, ``rotated`` once it was used for a new one, ``revoked``; None without a
    refresh token). Presenting a ``rotated`` refresh token is a reuse, which revokes the family.
    """

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    grant_type: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(Text, default="")
    issued_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    refresh_expires_at: Mapped[float | None] = mapped_column(Float)
    refresh_status: Mapped[str | None] = mapped_column(String(16))
    family_id: Mapped[str | None] = mapped_column(String(32), index=True)
    auth_time: Mapped[float | None] = mapped_column(Float)
    amr: Mapped[str | None] = mapped_column(String(32))
    # the DPoP key the access token is bound to (its cnf.jkt); a public client's refresh token
    # is bound to it too (RFC 9449 §5.0)
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    # the sign-in the token descends from (the ID token's sid): a password session's, or the
    # ticket's id for a QR, device or push approval; ending it revokes the tokens
    sid: Mapped[str | None] = mapped_column(String(32), index=True)

    # Authlib's refresh token grant, and the OpenID extension on a refresh
    def check_client(self, client):
        return self.client_id == client.client_id

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return None  # a refreshed ID token carries no nonce (OIDC Core §12.2)

    def get_auth_time(self):
        return int(self.auth_time) if self.auth_time else None

    def get_amr(self):
        return [self.amr] if self.amr else None


class SigningKey(Base):
    """A signing key: ``next`` (published, not signing) -> ``active`` -> ``retired`` -> removed."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    private_pem: Mapped[str] = mapped_column(Text)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    public_jwk: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    activated_at: Mapped[float | None] = mapped_column(Float)
    retired_at: Mapped[float | None] = mapped_column(Float)


class BrowserSession(Base):
    """A sign-in at the provider by a browser (provider/web/sessions.py), by its id's digest."""

    __tablename__ = "browser_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    amr: Mapped[str] = mapped_column(String(16), default="pwd")
    auth_time: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    # the session's public id: the sid of the ID tokens issued under it (the cookie's secret
    # stays the browser's)
    sid: Mapped[str | None] = mapped_column(String(32), index=True)


class Setting(Base):
    """Small values every instance must share (the session signing key)."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RateCounter(Base):
    """One rate-limit window's counter (provider/storage/ratelimit.py); purged when the window
    ends."""

    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class Delivery(Base):
    """An HTTP notice to send: a CIBA ping to a client's notification endpoint, or a push
    gateway notice (``QR_OIDC_PUSH_WEBHOOK``). Written in the transaction of the change it tells
    of, sent by any serving instance's sender (provider/runtime/deliveries.py), retried with
    backoff until ``expires_at``, then dropped. ``authorization`` (a ping's bearer token) is
    sealed."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # ping | push
    url: Mapped[str] = mapped_column(String(2000))
    body: Mapped[str] = mapped_column(Text)
    authorization: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    next_at: Mapped[float] = mapped_column(Float, index=True)
    expires_at: Mapped[float] = mapped_column(Float)
    locked_until: Mapped[float | None] = mapped_column(Float)


class UserSignal(Base):
    """What the risk hints of a confirmation screen are made of (grants/signals.py): a user's
    approval from a requester (``kind`` ``approved``, ``key`` the digest of address and browser;
    one row per requester, its latest time) and a user's denials (``kind`` ``denied``, ``key``
    the ticket; purged after a day)."""

    __tablename__ = "user_signals"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
