"""The app factory: settings, database, keys, tickets, Authlib's server, then the HTTP layer."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from flask import Flask, g, jsonify, render_template, request
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from qr_oidc.grants import register as register_grants
from qr_oidc.grants.ciba import PushLogins
from qr_oidc.grants.dpop import DPoP, Nonces
from qr_oidc.grants.logout import Logouts
from qr_oidc.grants.tickets import Tickets
from qr_oidc.grants.token_core import TokenCore
from qr_oidc.keys import KeyError_, KeyStore
from qr_oidc.provider import audit, seal
from qr_oidc.provider import settings as config
from qr_oidc.provider.metrics import metrics
from qr_oidc.provider.storage.db import Database
from qr_oidc.provider.storage.deliveries import Outbox
from qr_oidc.provider.storage.models import (
    CIBA_GRANT_TYPE,
    DEVICE_GRANT_TYPE,
    QR_GRANT_TYPE,
    Setting,
)
from qr_oidc.provider.storage.notify import LocalNotifier
from qr_oidc.provider.storage.ratelimit import RateLimiter
from qr_oidc.provider.web import (
    api,
    backchannel,
    confirm,
    cors,
    csrf,
    demo,
    discovery,
    headers,
    i18n,
    logout,
    mobile,
    operations,
    pages,
    tickets,
    token,
)
from qr_oidc.provider.web.body import MAX_BODY, BodyLimit
from qr_oidc.provider.web.oauth import Server

log = logging.getLogger("qr_oidc")
GRANT_TYPES = {"authorization_code", "refresh_token", DEVICE_GRANT_TYPE, QR_GRANT_TYPE,
               CIBA_GRANT_TYPE}
access_log = logging.getLogger("qr_oidc.access")
# modules imported for the routes they add to a blueprint defined elsewhere: the api blueprint's
# families (provider/web/api.py), and the browser confirmation pages of pages.py's blueprint
ROUTE_MODULES = (discovery, token, tickets, mobile, backchannel, confirm, logout)


@dataclass
class Parts:
    """What the endpoints and grants share; ``app.extensions['qr_oidc']``."""

    settings: config.Settings
    db: Database
    keys: KeyStore
    notifier: LocalNotifier
    tickets: object = None
    server: object = None
    limiter: object = None
    codes: object = None  # seals authorization codes (grants/authorization_code.py)
    core: object = None  # the token core of the ticket grants (grants/token_core.py)
    push: object = None  # push login's requests (grants/ciba.py)
    dpop: object = None  # DPoP proof checks (grants/dpop.py)
    logouts: object = None  # ending sign-ins, back-channel logout (grants/logout.py)
    outbox: object = None  # notices to send: CIBA pings, push gateway (storage/deliveries.py)


def create_app(overrides: config.Settings | dict | None = None) -> Flask:
    """The Flask app, with everything the endpoints share in ``app.extensions['qr_oidc']``.

    ``overrides``: settings already parsed (the CLI's), or names and values laid over the
    environment's (tests)."""
    settings = overrides if isinstance(overrides, config.Settings) else config.load(overrides)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False

    database = Database(settings.database_url, settings.db_pool_size,
                        settings.db_max_overflow, settings.db_fast_pool_size,
                        settings.db_pool_timeout)
    database.prepare()
    database.init_app(app)

    keys = KeyStore(database, passphrase=settings.key_passphrase,
                    refresh_seconds=settings.key_refresh)
    keys.ensure()
    keys.check_startup()

    app.secret_key = settings.secret_key or _shared_secret(database,
                                                                  settings.key_passphrase)
    notifier = LocalNotifier(recheck=settings.long_poll_recheck)
    parts = Parts(settings=settings, db=database, keys=keys, notifier=notifier)
    parts.outbox = Outbox(database, settings, app.secret_key)
    parts.tickets = Tickets(database, settings, notifier, secret=app.secret_key,
                            outbox=parts.outbox)
    parts.core = TokenCore(settings, keys, parts.tickets)
    parts.push = PushLogins(settings, keys, parts.tickets, database)
    parts.logouts = Logouts(settings, keys, database, parts.outbox)
    parts.limiter = RateLimiter(database, settings)
    parts.dpop = DPoP(parts.limiter.first_use,
                      Nonces(app.secret_key) if settings.dpop_nonces else None)
    # (the issuer is bound in: another deployment sharing the secret cannot open these)
    parts.codes = seal.Sealer(app.secret_key, f"authorization code {settings.issuer}")
    app.extensions["qr_oidc"] = parts

    secure = settings.secure
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        # on https the __Host- prefix: Secure, Path=/, no Domain, so no sibling host can set it
        SESSION_COOKIE_NAME="__Host-qr_oidc_session" if secure else "qr_oidc_session",
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=settings.session_lifetime,
    )

    i18n.init_app(app)
    parts.server = Server(app, parts)
    register_grants(parts.server, parts)

    app.register_blueprint(api.bp)
    cors.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(operations.bp)
    if settings.metrics_token:
        metrics.start()
    if settings.demo:
        app.register_blueprint(demo.bp)
    _install_error_handlers(app)
    _install_access_log(app)
    csrf.init_app(app)
    headers.init_app(app, secure)
    # WSGI middleware, innermost first: the body limit, the proxy headers
    app.wsgi_app = BodyLimit(app.wsgi_app, secure=secure)
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    return app


def _shared_secret(database: Database, passphrase: str) -> str:
    """The session signing key, made once and kept in the database so every instance shares it.

    With a key passphrase it is kept sealed with it, as the private keys are: whoever reads the
    database cannot forge a session (one kept in clear by an older version is sealed now). A
    wrong passphrase stops the server, as it does for the keys."""
    session = database.session_factory()
    try:
        row = session.get(Setting, "session_secret")
        if row is None:
            value = secrets.token_hex(32)
            stored = seal.seal_with_passphrase(value, passphrase) if passphrase else value
            session.add(Setting(name="session_secret", value=stored))
            try:
                session.commit()
            except IntegrityError:  # another instance made it first
                session.rollback()
            row = session.get(Setting, "session_secret")
        if not seal.is_sealed(row.value):
            if passphrase:
                value = row.value
                if database.is_sqlite:  # the clear text must not linger in a freed cell
                    session.execute(text("PRAGMA secure_delete = ON"))
                row.value = seal.seal_with_passphrase(value, passphrase)
                session.commit()
                if database.is_sqlite:  # nor in the write-ahead log
                    session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
                    session.commit()
                log.warning("the session secret was kept in clear; it is sealed with "
                            "QR_OIDC_KEY_PASSPHRASE now")
                return value
            return row.value
        if not passphrase:
            raise KeyError_("the session secret is sealed: set QR_OIDC_KEY_PASSPHRASE to the "
                            "passphrase it was sealed with")
        value = seal.open_with_passphrase(row.value, passphrase)
        if value is None:
            raise KeyError_("the session secret cannot be opened: wrong QR_OIDC_KEY_PASSPHRASE?")
        return value
    finally:
        session.close()


def _install_error_handlers(app: Flask) -> None:
    """Errors in the protocol's format: JSON ``{"error", "error_description"}``, or an HTML page
    for the routes a person's browser shows (provider/web/csrf.py: the HTML blueprints)."""

    def answer(error: str, description: str, status: int):
        if csrf.is_html_route():
            response = app.make_response(
                (render_template("error.html", error=error,
                                 description=i18n.describe(description)), status))
        else:
            response = jsonify(error=error, error_description=description)
            response.status_code = status
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        codes = {
            400: "invalid_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "invalid_request",
            415: "invalid_request",
        }
        description = error.description if error.code != 413 else "Body too large."
        response = answer(codes.get(error.code, "invalid_request"), description, error.code or 400)
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(PoolTimeout)
    def _busy(_error: PoolTimeout):
        # every database connection of this process is taken: say so, and when to come back
        log.warning("no database connection free within QR_OIDC_DB_POOL_TIMEOUT on %s",
                    request.url_rule)
        app.extensions["qr_oidc"].db.session.rollback()
        response = answer("temporarily_unavailable", "The service is busy; try again shortly.",
                          503)
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        # a bug: say so in the protocol's format, log the type (never request values)
        log.error("unhandled %s on %s", type(error).__name__, request.url_rule, exc_info=error)
        app.extensions["qr_oidc"].db.session.rollback()
        return answer("server_error", "Internal error.", 500)


def token_grant() -> str | None:
    """The grant type a token request named, for the metrics (only the ones discovery lists)."""
    try:
        grant = request.form.get("grant_type") if request.mimetype != "application/json" \
            else (request.get_json(silent=True) or {}).get("grant_type")
    except Exception:  # (a body the endpoint refused: no grant to name)
        return None
    if not isinstance(grant, str):
        return None
    return grant if grant in GRANT_TYPES else "other"


def _install_access_log(app: Flask) -> None:
    """One line per request naming the route *pattern*, never the path: paths carry scan codes."""

    @app.before_request
    def _start():
        g.qr_oidc_started = time.perf_counter()
        # the audit log's peer (provider/audit.py knows no web framework)
        audit.begin(request.remote_addr, request.headers.get("User-Agent"))

    @app.teardown_request
    def _end(_error):
        audit.end()

    @app.after_request
    def _log(response):
        started = g.get("qr_oidc_started")
        elapsed = (time.perf_counter() - started) * 1000 if started else 0.0
        rule = request.url_rule.rule if request.url_rule else "<unmatched>"
        access_log.info("%s %s %s %.1fms", request.method, rule, response.status_code, elapsed)
        metrics.request(rule, elapsed / 1000)
        if request.endpoint == "api.token":
            body = response.get_json(silent=True) if response.status_code != 200 else None
            metrics.token_request(
                token_grant(), "issued" if response.status_code == 200
                else (body or {}).get("error", str(response.status_code)))
        return response
