"""The ``qr-oidc`` command: serve, demo, clients, users, keys.

Errors are one clear line on standard error and a non-zero exit; with ``--json`` standard output
holds only the JSON.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import sys
import tempfile
import time
from urllib.parse import urlsplit

import click
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from qr_oidc.keys import KeyError_
from qr_oidc.keys.keyset import ALGORITHMS
from qr_oidc.keys.rotation import NotReady, remove_expired, rotate
from qr_oidc.provider import settings as config
from qr_oidc.provider.metrics import prepare as prepare_metrics
from qr_oidc.provider.runtime.logqueue import BackgroundHandler
from qr_oidc.provider.runtime.maintenance import min_publication
from qr_oidc.provider.runtime.server import run
from qr_oidc.provider.security import digest, hash_password, new_id, new_secret
from qr_oidc.provider.storage import migrate
from qr_oidc.provider.storage.db import Database
from qr_oidc.provider.storage.migrate import SchemaBehind
from qr_oidc.provider.storage.models import (
    CIBA_GRANT_TYPE,
    DEVICE_GRANT_TYPE,
    QR_GRANT_TYPE,
    Client,
    SigningKey,
    User,
)
from qr_oidc.provider.storage.ratelimit import parse_limit
from qr_oidc.provider.web.app import create_app
from qr_oidc.provider.web.demo import prepare
from qr_oidc.provider.web.sessions import end_all

# what a client may be registered for; without --grant-type it gets all of them but push login,
# which needs a delivery mode and is for confidential clients only
DEFAULT_GRANT_TYPES = ["authorization_code", "refresh_token", DEVICE_GRANT_TYPE, QR_GRANT_TYPE]
GRANT_TYPES = [*DEFAULT_GRANT_TYPES, CIBA_GRANT_TYPE]
DEFAULT_SCOPE = "openid profile email offline_access"


def _settings(**overrides) -> config.Settings:
    try:
        return config.load({k: v for k, v in overrides.items() if v is not None})
    except config.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _database(settings: config.Settings, prepare: bool = True):
    try:
        database = Database(settings.database_url)
        if prepare:
            database.prepare()
    except SchemaBehind as exc:
        raise click.ClickException(str(exc)) from None
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise click.ClickException(f"cannot open the database: {exc.__class__.__name__}: "
                                   f"{str(exc).splitlines()[0]}") from None
    return database


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Authlib logs whole token dicts at debug level: never let it.
    logging.getLogger("authlib").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start and stop lines
    # the audit log: bare JSON lines, ready to ship
    audit = logging.getLogger("qr_oidc.audit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit.handlers[:] = [handler]
    audit.propagate = False
    audit.setLevel(logging.INFO)
    # the access log: a line per request, written by a thread of its own
    # (provider/runtime/logqueue.py)
    access = logging.getLogger("qr_oidc.access")
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    access.handlers[:] = [BackgroundHandler(writer)]
    access.propagate = False


def _build_app(settings: config.Settings):
    try:
        return create_app(settings)
    except (config.ConfigError, KeyError_, SchemaBehind) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"cannot open the database: {str(exc).splitlines()[0]}") from None


@click.group()
def cli():
    """qr-oidc: an OpenID Connect provider with QR-code login."""


def main(argv=None) -> None:
    """Entry point: a usage or runtime error is one line on standard error, exit status 2 or 1."""
    try:
        cli.main(args=argv, prog_name="qr-oidc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("qr-oidc: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"qr-oidc: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)


# -- serve -----------------------------------------------------------------------------------------
@cli.command()
@click.option("--host", default=None, help="Address to listen on (QR_OIDC_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (QR_OIDC_PORT, 8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (QR_OIDC_WORKERS).")
@click.option("--threads", type=int, default=None, help="Threads per worker (QR_OIDC_THREADS).")
def serve(host, port, workers, threads):
    """Run the provider with a production WSGI server."""
    settings = _settings(host=host, port=port, workers=workers, threads=threads)
    _configure_logging(settings.log_level)
    if settings.metrics_token:
        prepare_metrics(settings.workers)  # (before anything counts: the workers share it)
    app = _build_app(settings)
    click.echo(f"qr-oidc: issuer {settings.issuer}, listening on "
               f"http://{settings.host}:{settings.port}", err=True)
    run(app, settings.host, settings.port, settings.workers, settings.threads,
        settings.long_poll_max)


@cli.command()
@click.option("--host", default=None, help="Address to listen on (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (8000).")
@click.option("--database-url", default=None,
              help="Database (default: an SQLite file in a fresh temporary folder).")
def demo(host, port, database_url):
    """Run the provider with a demo client, a demo user, a QR login page and a phone simulator."""
    if database_url is None and "QR_OIDC_DATABASE_URL" not in os.environ:
        folder = tempfile.mkdtemp(prefix="qr-oidc-demo-")
        database_url = f"sqlite:///{folder}/demo.db"
    settings = _settings(host=host, port=port, database_url=database_url)
    _configure_logging(settings.log_level)
    app = _build_app(settings.replace(demo=True))
    info = prepare(app)
    issuer = settings.issuer
    click.echo(f"demo: {issuer}/demo")
    click.echo(f"phone: {issuer}/phone")
    click.echo(f"Sign in on the phone page as {info['username']} / {info['password']}.", err=True)
    sys.stdout.flush()
    run(app, settings.host, settings.port, 1, settings.threads,
        settings.long_poll_max)


# -- database --------------------------------------------------------------------------------------
@cli.group()
def db():
    """The database schema (Alembic migrations shipped with qr-oidc)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision):
    """Bring the schema up to this version of qr-oidc (back up the database first).

    The migrations run one after another in one transaction; each is shown on standard error as
    it starts ("0005 -> 0006 ..."): a progress bar on a terminal, a plain line otherwise.
    """
    database = _database(_settings(), prepare=False)
    terminal = sys.stderr.isatty()
    bar = None

    def step(index, total, before, after, doc):
        nonlocal bar
        label = f"{before or 'empty'} -> {after}" + (f" {doc}" if doc else "")
        if not terminal:
            click.echo(f"migration {index + 1} of {total}: {label}", err=True)
            return
        label = label if len(label) <= 60 else label[:57] + "..."
        if bar is None:
            bar = click.progressbar(length=total, label="db upgrade", file=sys.stderr,
                                    show_pos=True, show_eta=False,
                                    item_show_func=lambda item: item)
            bar.__enter__()
        bar.current_item = label
        if index:
            bar.update(1)  # the one before is done
        else:
            bar.render_progress()

    try:
        before = migrate.current(database.engine)
        done = False
        try:
            migrate.upgrade(database.engine, revision, on_step=step)
            done = True
        finally:
            if bar is not None:
                bar.current_item = "done" if done else "failed"
                bar.update(1) if done else bar.render_progress()
                bar.__exit__(None, None, None)
        after = migrate.current(database.engine)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"upgrade failed: {str(exc).splitlines()[0]}") from None
    except (CommandError, RevisionError) as exc:
        raise click.ClickException(f"upgrade failed: {exc}") from None
    click.echo(f"schema: {before or 'empty'} -> {after}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision):
    """Take the schema back to REVISION (\"base\" empties it)."""
    database = _database(_settings(), prepare=False)
    try:
        migrate.downgrade(database.engine, revision)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"downgrade failed: {str(exc).splitlines()[0]}") from None
    click.echo(f"schema: {migrate.current(database.engine) or 'empty'}")


@db.command("current")
def db_current():
    """Print the schema revision of the database and the one this qr-oidc needs."""
    database = _database(_settings(), prepare=False)
    click.echo(f"database: {migrate.current(database.engine) or 'empty'}; needed: {migrate.head()}")


# -- clients ---------------------------------------------------------------------------------------
@cli.group()
def clients():
    """Register relying parties."""


UNSAFE_SCHEMES = {"javascript", "data", "vbscript", "file", "about", "blob"}


def _check_redirect_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if (not parts.scheme or parts.fragment or parts.scheme.lower() in UNSAFE_SCHEMES
            or (parts.scheme in ("http", "https") and not parts.netloc)):
        raise click.BadParameter(f"{uri!r} is not an absolute URI without a fragment",
                                 param_hint="--redirect-uri")
    if "@" in parts.netloc or not uri.isascii() or not uri.isprintable() or " " in uri:
        raise click.BadParameter(f"{uri!r} must be printable ASCII without user information",
                                 param_hint="--redirect-uri")
    return uri


def _check_ticket_rate(ctx, _param, value):
    if value is None or (value == "default" and ctx.command.name == "update"):
        return value

    try:
        parse_limit("ticket_rate", value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not COUNT/SECONDS (e.g. 600/60) or off") from None
    return value.strip().lower()


AUTH_METHODS = click.Choice(["client_secret_basic", "client_secret_post", "none"])


@clients.command("create")
@click.option("--name", required=True, help="Shown to users on the phone and consent screens.")
@click.option("--public", is_flag=True, help="No client secret (browser or native app); PKCE.")
@click.option("--first-party", is_flag=True, help="Skips the consent screen.")
@click.option("--number-matching", is_flag=True, help="Tickets carry a binding code to match.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Repeatable.")
@click.option("--grant-type", "grant_types", multiple=True,
              help="Repeatable; the identifiers discovery lists. Default: all of them.")
@click.option("--scope", default=DEFAULT_SCOPE, show_default=True,
              help="What the client may ask for.")
@click.option("--logo-uri", default=None)
@click.option("--id-token-alg", default=None, type=click.Choice(["RS256", "ES256", "EdDSA"]),
              help="id_token_signed_response_alg (default RS256).")
@click.option("--token-endpoint-auth-method", "auth_method", default=None, type=AUTH_METHODS,
              help="How the client authenticates (default client_secret_basic; none if --public).")
@click.option("--ticket-rate", default=None, callback=_check_ticket_rate,
              help="Ticket creation limit of this client, COUNT/SECONDS or off "
                   "(default QR_OIDC_RATE_TICKET_CLIENT).")
@click.option("--backchannel-token-delivery-mode", "delivery_mode", default=None,
              type=click.Choice(["poll", "ping"]),
              help="Push login (CIBA): how the client learns of a decision (default poll).")
@click.option("--backchannel-client-notification-endpoint", "notification_endpoint",
              default=None, help="Push login in ping mode: where the provider pings (https).")
@click.option("--require-dpop", is_flag=True,
              help="Every token of this client is DPoP-bound (RFC 9449): no proof, no token.")
@click.option("--post-logout-redirect-uri", "post_logout_uris", multiple=True,
              help="Where RP-initiated logout may send the browser back (repeatable).")
@click.option("--backchannel-logout-uri", default=None,
              help="Where the provider posts logout tokens (Back-Channel Logout 1.0).")
@click.option("--json", "as_json", is_flag=True, help="Print only the client as JSON.")
def clients_create(name, public, first_party, number_matching, redirect_uris, grant_types, scope,
                   logo_uri, id_token_alg, auth_method, ticket_rate, delivery_mode,
                   notification_endpoint, require_dpop, post_logout_uris, backchannel_logout_uri,
                   as_json):
    """Register a client; prints its client_id (and client_secret, shown only once)."""
    if not name.strip() or len(name) > 200:
        raise click.BadParameter("must be 1 to 200 characters, not blank", param_hint="--name")
    for grant_type in grant_types:
        if grant_type not in GRANT_TYPES:
            raise click.BadParameter(
                f"{grant_type!r} is not one of: {', '.join(GRANT_TYPES)}",
                param_hint="--grant-type")
    for uri in redirect_uris:
        _check_redirect_uri(uri)
    if logo_uri is not None and urlsplit(logo_uri).scheme not in ("http", "https"):
        raise click.BadParameter("must be an http(s) URL", param_hint="--logo-uri")
    if not scope.split():
        raise click.BadParameter("must name at least one scope", param_hint="--scope")
    auth_method = auth_method or ("none" if public else "client_secret_basic")
    if public != (auth_method == "none"):
        raise click.BadParameter("a public client uses none, a confidential one a secret method",
                                 param_hint="--token-endpoint-auth-method")
    ciba = CIBA_GRANT_TYPE in grant_types
    if ciba and public:
        raise click.BadParameter("push login (CIBA) is for confidential clients",
                                 param_hint="--grant-type")
    if (delivery_mode or notification_endpoint) and not ciba:
        raise click.BadParameter(f"only with --grant-type {CIBA_GRANT_TYPE}",
                                 param_hint="--backchannel-token-delivery-mode")
    if ciba:
        delivery_mode = delivery_mode or "poll"
    if (delivery_mode == "ping") != bool(notification_endpoint):
        raise click.BadParameter("ping mode needs a notification endpoint, and only ping mode "
                                 "has one", param_hint="--backchannel-client-notification-endpoint")
    if notification_endpoint:
        _check_notification_endpoint(notification_endpoint)
    for uri in post_logout_uris:
        _check_redirect_uri(uri)
    if backchannel_logout_uri:
        _check_https(backchannel_logout_uri, "--backchannel-logout-uri")
    settings = _settings()
    database = _database(settings)
    client_id = new_id()
    secret = None if public else new_secret()
    row = Client(
        client_id=client_id,
        name=name,
        secret_hash=digest(secret) if secret else None,
        public=public,
        first_party=first_party,
        number_matching=number_matching,
        redirect_uris=list(redirect_uris),
        grant_types=list(dict.fromkeys(grant_types or DEFAULT_GRANT_TYPES)),
        scope=" ".join(dict.fromkeys(scope.split())),
        logo_uri=logo_uri,
        id_token_signed_response_alg=id_token_alg,
        token_endpoint_auth_method=auth_method,
        ticket_rate=ticket_rate,
        backchannel_token_delivery_mode=delivery_mode,
        backchannel_client_notification_endpoint=notification_endpoint,
        require_dpop=require_dpop,
        post_logout_redirect_uris=list(post_logout_uris),
        backchannel_logout_uri=backchannel_logout_uri,
    )
    with database.session_factory() as session:
        session.add(row)
        session.commit()
    _print_client(row, secret, as_json)


def _check_notification_endpoint(uri: str) -> None:
    """CIBA §4: an https URL (http only on loopback, for development), without a fragment."""
    _check_https(uri, "--backchannel-client-notification-endpoint")


def _check_https(uri: str, option: str) -> None:
    """An https URL (http only on loopback, for development), without a fragment."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        parts, host = None, ""
    loopback = host == "localhost" or _is_loopback_host(host)
    if (parts is None or not host or parts.fragment or len(uri) > 2000
            or not (parts.scheme == "https" or (parts.scheme == "http" and loopback))):
        raise click.BadParameter("must be an https URL (http only on loopback), no fragment",
                                 param_hint=option)


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _print_client(row: Client, secret: str | None, as_json: bool) -> None:
    out = client_json(row)
    if secret:
        out = {"client_id": row.client_id, "client_secret": secret, **out}
    if as_json:
        click.echo(json.dumps(out))
    else:
        for key, value in out.items():
            click.echo(f"{key}: {value}")


@clients.command("update")
@click.argument("client_id")
@click.option("--new-secret", "rotate_secret", is_flag=True,
              help="Replace the client secret (printed once); the old one stops working.")
@click.option("--token-endpoint-auth-method", "auth_method", default=None, type=AUTH_METHODS)
@click.option("--ticket-rate", default=None, callback=_check_ticket_rate,
              help="COUNT/SECONDS or off; 'default' goes back to QR_OIDC_RATE_TICKET_CLIENT.")
@click.option("--number-matching/--no-number-matching", default=None)
@click.option("--require-dpop/--no-require-dpop", default=None,
              help="Every token of this client DPoP-bound, or not.")
@click.option("--json", "as_json", is_flag=True, help="Print only the client as JSON.")
def clients_update(client_id, rotate_secret, auth_method, ticket_rate, number_matching,
                   require_dpop, as_json):
    """Change a client; every running instance uses the change within a second."""
    database = _database(_settings())
    secret = None
    with database.session_factory() as session:
        row = session.get(Client, client_id)
        if row is None:
            raise click.ClickException(f"no client {client_id!r}")
        if rotate_secret:
            if row.public:
                raise click.BadParameter("a public client has no secret", param_hint="--new-secret")
            secret = new_secret()
            row.secret_hash = digest(secret)
        if auth_method is not None:
            if row.public != (auth_method == "none"):
                raise click.BadParameter(
                    "a public client uses none, a confidential one a secret method",
                    param_hint="--token-endpoint-auth-method")
            row.token_endpoint_auth_method = auth_method
        if ticket_rate is not None:
            row.ticket_rate = None if ticket_rate == "default" else ticket_rate
        if number_matching is not None:
            row.number_matching = number_matching
        if require_dpop is not None:
            row.require_dpop = require_dpop
        session.commit()
        _print_client(row, secret, as_json)


def client_json(row: Client) -> dict:
    return {
        "client_id": row.client_id,
        "client_name": row.name,
        "first_party": row.first_party,
        "number_matching": row.number_matching,
        "redirect_uris": row.redirect_uris,
        "grant_types": row.grant_types,
        "scope": row.scope,
        "logo_uri": row.logo_uri,
        "id_token_signed_response_alg": row.id_token_signed_response_alg or "RS256",
        "token_endpoint_auth_method": row.auth_method,
        "ticket_rate": row.ticket_rate,
        "dpop_bound_access_tokens": bool(row.require_dpop),
        "post_logout_redirect_uris": list(row.post_logout_redirect_uris or []),
        "backchannel_logout_uri": row.backchannel_logout_uri,
        **({"backchannel_token_delivery_mode": row.backchannel_token_delivery_mode,
            "backchannel_client_notification_endpoint":
                row.backchannel_client_notification_endpoint}
           if row.backchannel_token_delivery_mode else {}),
    }


# -- users -----------------------------------------------------------------------------------------
@cli.group()
def users():
    """Manage the people who sign in."""


@users.command("create")
@click.option("--username", required=True)
@click.option("--password", required=True)
@click.option("--name", default=None)
@click.option("--email", default=None)
@click.option("--picture", default=None, help="Avatar URL.")
@click.option("--json", "as_json", is_flag=True)
def users_create(username, password, name, email, picture, as_json):
    """Create a user who can sign in with a password and approve QR logins."""
    if not username.strip() or len(username) > 150:
        raise click.BadParameter("must be 1 to 150 characters", param_hint="--username")
    if len(password) < 4:
        raise click.BadParameter("must be at least 4 characters", param_hint="--password")
    if picture is not None and urlsplit(picture).scheme not in ("http", "https"):
        raise click.BadParameter("must be an http(s) URL", param_hint="--picture")
    settings = _settings()
    database = _database(settings)
    row = create_user(database, username, password, settings.password_cost, name=name,
                      email=email, picture=picture)
    out = {"sub": row.sub, "username": row.username, "name": row.name, "email": row.email,
           "picture": row.picture}
    click.echo(json.dumps(out) if as_json else f"created user {row.username} (sub {row.sub})")


@users.command("set-password")
@click.option("--username", required=True)
@click.option("--password", required=True)
def users_set_password(username, password):
    """Give a user a new password, and end every provider session they have (a copied session
    cookie stops working at once)."""
    if len(password) < 4:
        raise click.BadParameter("must be at least 4 characters", param_hint="--password")
    settings = _settings()
    hashed = hash_password(password, settings.password_cost)  # before a connection is taken
    database = _database(settings)
    with database.session_factory() as session:
        row = session.scalar(select(User).where(User.username == username))
        if row is None:
            raise click.ClickException(f"no user named {username!r}")
        row.password_hash = hashed
        ended = end_all(session, row.id)
        session.commit()
    click.echo(f"password of {username} changed; {ended} session(s) ended")


def create_user(database, username, password, cost: int, **profile) -> User:
    hashed = hash_password(password, cost)  # before a connection is taken
    with database.session_factory() as session:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            raise click.ClickException(f"a user named {username!r} exists already")
        row = User(sub=new_id(), username=username, password_hash=hashed, **profile)
        session.add(row)
        session.commit()
        return row


# -- keys ------------------------------------------------------------------------------------------
@cli.group()
def keys():
    """The signing key lifecycle: next -> active -> retired -> removed."""


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
def keys_list(as_json):
    """List the keys, their algorithm and state."""
    database = _database(_settings())
    with database.session_factory() as session:
        rows = session.scalars(select(SigningKey).order_by(SigningKey.alg,
                                                           SigningKey.created_at)).all()
        out = [{"kid": r.kid, "alg": r.alg, "status": r.status, "encrypted": r.encrypted,
                "created_at": int(r.created_at),
                "activated_at": int(r.activated_at) if r.activated_at else None,
                "retired_at": int(r.retired_at) if r.retired_at else None} for r in rows]
    if as_json:
        click.echo(json.dumps(out))
    else:
        for item in out:
            click.echo(f"{item['alg']:6} {item['status']:8} {item['kid']}")


@keys.command("rotate")
@click.option("--alg", default=None, type=click.Choice(["RS256", "ES256", "EdDSA"]),
              help="Only this algorithm (default: every one).")
@click.option("--force", is_flag=True,
              help="Rotate even if relying parties may not have fetched the next key yet.")
@click.option("--wait", is_flag=True,
              help="If the next key has not been published long enough yet "
                   "(QR_OIDC_JWKS_MAX_AGE + 2 x QR_OIDC_KEY_REFRESH seconds), wait until it has "
                   "(a countdown on a terminal; Ctrl-C stops), then rotate. Without it, such a "
                   "rotation is refused.")
def keys_rotate(alg, force, wait):
    """Make the published next key the signing key now and publish a new next key.

    A next key signs only once it has been published longer than a relying party may cache the
    JWKS; before that this refuses (saying how long is left), or waits with --wait.
    """
    settings = _settings()
    database = _database(settings)
    needed = 0 if force else min_publication(settings)
    terminal = sys.stderr.isatty()

    def left(names) -> float:
        """Seconds until the newest next key of ``names`` has been published long enough."""
        with database.session_factory() as session:
            created = session.scalars(select(SigningKey.created_at).where(
                SigningKey.alg.in_(names), SigningKey.status == "next")).all()
        return max((float(c) + needed - time.time() for c in created), default=0.0)

    def wait_for(names) -> None:
        remaining = left(names)
        if remaining <= 0:
            return
        what = ", ".join(names)
        until = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + remaining))
        if not terminal:
            click.echo(f"waiting {math.ceil(remaining)} s for the next {what} key to be "
                       f"published long enough (until {until})", err=True)
            time.sleep(remaining + 0.05)
            return
        deadline = time.monotonic() + remaining
        ticks = max(1, math.ceil(remaining * 10))
        with click.progressbar(length=ticks, label=f"next {what} key published long enough in",
                               file=sys.stderr, show_eta=False, show_percent=False,
                               item_show_func=lambda item: item) as bar:
            done = 0
            while (now := time.monotonic()) < deadline:
                target = min(ticks, ticks - math.ceil((deadline - now) * 10))
                bar.update(target - done, f"{math.ceil(deadline - now)} s")
                done = target
                time.sleep(min(0.1, deadline - now))
            bar.update(ticks - done, "0 s")
        time.sleep(0.05)

    names = [alg] if alg else list(ALGORITHMS)
    if wait and not force:
        wait_for(names)  # once for all: a rotation publishes a new next key of its algorithm
    for name in names:
        while True:
            try:
                kid = rotate(database, name, settings.key_passphrase, min_published=needed)
                break
            except NotReady as exc:
                if not wait or force:
                    raise click.ClickException(str(exc)) from None
                wait_for([name])  # (a next key made meanwhile, or clocks apart)
        click.echo(f"{name}: {kid or 'rotated meanwhile by another instance'} signs now")
    click.echo(f"running instances sign with the new keys within {settings.key_refresh} s")


@keys.command("retire")
def keys_retire():
    """Remove retired keys once every token they signed has expired."""
    settings = _settings()
    longest = max(settings.access_token_ttl, settings.id_token_ttl)
    removed = remove_expired(_database(settings), longest)
    click.echo(f"removed {removed} retired key(s)")


if __name__ == "__main__":  # pragma: no cover
    main()
