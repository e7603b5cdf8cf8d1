"""The app factory: settings, database, keys, tickets, Authlib's server, then the HTTP layer."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from flask import Flask, g, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from keys import KeyStore

from . import config
from .body import MAX_BODY, BodyLimit
from .db import Database
from .fastpoll import FastPoll
from .models import Setting
from .notify import LocalNotifier
from .ratelimit import RateLimiter

log = logging.getLogger("qr_oidc")
access_log = logging.getLogger("qr_oidc.access")


@dataclass
class Parts:
    """What the endpoints and grants share; ``app.extensions['qr_oidc']``."""

    settings: dict
    db: Database
    keys: KeyStore
    notifier: LocalNotifier
    tickets: object = None
    server: object = None
    limiter: object = None


def create_app(overrides: dict | None = None) -> Flask:
    from grants import register as register_grants
    from grants.tickets import Tickets

    from . import cors, http, pages
    from .oauth import Server

    settings = config.load(overrides)
    app = Flask("provider")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False

    database = Database(settings["DATABASE_URL"], int(settings["DB_POOL_SIZE"]),
                        int(settings["DB_MAX_OVERFLOW"]), int(settings["DB_FAST_POOL_SIZE"]))
    database.prepare()
    database.init_app(app)

    keys = KeyStore(database, passphrase=settings["KEY_PASSPHRASE"],
                    refresh_seconds=float(settings["KEY_REFRESH"]))
    keys.ensure()
    keys.check_startup()

    notifier = LocalNotifier(recheck=float(settings["LONG_POLL_RECHECK"]))
    parts = Parts(settings=settings, db=database, keys=keys, notifier=notifier)
    parts.tickets = Tickets(database, settings, notifier)
    parts.limiter = RateLimiter(database, settings)
    app.extensions["qr_oidc"] = parts

    app.secret_key = settings["SECRET_KEY"] or _shared_secret(database)
    secure = settings["ISSUER"].startswith("https://")
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_NAME="qr_oidc_session",
    )

    parts.server = Server(app, parts)
    register_grants(parts.server, parts)

    app.register_blueprint(http.bp)
    cors.init_app(app)
    app.register_blueprint(pages.bp)
    if settings.get("DEMO"):
        from . import demo

        app.register_blueprint(demo.bp)
    _install_error_handlers(app)
    _install_access_log(app, secure)
    # WSGI middleware, innermost first: the fast poll path, the body limit, the proxy headers
    if settings["FAST_POLL"]:
        app.wsgi_app = FastPoll(app.wsgi_app, parts, secure)
    app.wsgi_app = BodyLimit(app.wsgi_app)
    if int(settings["TRUSTED_PROXIES"]):
        hops = int(settings["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    return app


def _shared_secret(database: Database) -> str:
    """The session signing key, made once and kept in the database so every instance shares it."""
    session = database.session_factory()
    try:
        row = session.get(Setting, "session_secret")
        if row is None:
            session.add(Setting(name="session_secret", value=secrets.token_hex(32)))
            try:
                session.commit()
            except IntegrityError:  # another instance made it first
                session.rollback()
            row = session.get(Setting, "session_secret")
        return row.value
    finally:
        session.close()


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        codes = {
            400: "invalid_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "invalid_request",
            415: "invalid_request",
        }
        body = {
            "error": codes.get(error.code, "invalid_request"),
            "error_description": error.description if error.code != 413 else "Body too large.",
        }
        response = jsonify(body)
        response.status_code = error.code or 400
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        # a bug: say so in the protocol's format, log the type (never request values)
        log.error("unhandled %s on %s", type(error).__name__, request.url_rule, exc_info=error)
        app.extensions["qr_oidc"].db.session.rollback()
        response = jsonify(error="server_error", error_description="Internal error.")
        response.status_code = 500
        return response


def _install_access_log(app: Flask, secure: bool) -> None:
    """One line per request naming the route *pattern*, never the path: paths carry scan codes."""

    @app.before_request
    def _start():
        g.qr_oidc_started = time.perf_counter()

    @app.after_request
    def _log(response):
        started = g.get("qr_oidc_started")
        elapsed = (time.perf_counter() - started) * 1000 if started else 0.0
        rule = request.url_rule.rule if request.url_rule else "<unmatched>"
        access_log.info("%s %s %s %.1fms", request.method, rule, response.status_code, elapsed)
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        if response.mimetype != "text/html":  # pages get theirs from provider/pages.py
            # JSON and images: nothing may run, nothing may frame them
            headers.setdefault("Content-Security-Policy",
                               "default-src 'none'; frame-ancestors 'none'")
        if secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response
