"""``qr-oidc demo``: a relying-party page that logs in by QR or by push, and a phone simulator.

Both pages are served by the provider itself (no CDN, usable offline). The demo page is a public
client doing the QR ticket grant with PKCE. Its "Send a push login" button is the demo shop's
backend at work: this blueprint's POST routes act as a confidential CIBA client ("Demo shop
(push)", poll mode) by calling the rule functions in-process (``parts.push.start`` for the
backchannel request, ``parts.core.poll`` for the token request), keep the ``auth_req_id`` on the
server under a random handle, and give the page only the ID token's claims, verified here. The
phone page signs in through the hosted login form, confirms scanned tickets through the browser
confirmation screen, and, as the app would, gets a ``qr:approve`` token for the first-party
"Demo phone app" (authorization code with PKCE, phone.js) to long-poll its push inbox. That
client is registered with ``require_dpop``: the token is DPoP-bound (RFC 9449) to a
non-extractable key phone.js keeps in IndexedDB, and every inbox call proves it.
"""

from __future__ import annotations

import logging
import threading
import time

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, current_app, render_template, request, session
from flask_babel import gettext as _
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import select

from qr_oidc.grants.ciba import ID_TOKEN_ALGS
from qr_oidc.grants.tickets import TooManyOutstanding
from qr_oidc.provider.security import constant_equals, digest, hash_password, new_id, new_secret
from qr_oidc.provider.storage.models import CIBA_GRANT_TYPE, QR_GRANT_TYPE, Client, User
from qr_oidc.provider.web.pages import current_user
from qr_oidc.provider.web.responses import error, json_response

log = logging.getLogger("qr_oidc.demo")
bp = Blueprint("demo", __name__, template_folder="templates")

DEMO_USER = {"username": "demo", "password": "demo-password", "name": "Dana Demo"}
DEMO_CLIENT_ID = "demo-web"
DEMO_PHONE_CLIENT_ID = "demo-phone"  # the phone simulator as the first-party app
DEMO_PUSH_CLIENT_ID = "demo-push"  # the demo shop's backend, a confidential CIBA client
PUSH_SCOPE = "openid profile email"
PUSH_MESSAGE = "Demo shop: sign in at the counter?"
PUSH_GRACE = 60  # seconds a handle outlives its request, so the page learns "expired_token"
PUSH_MAX_PENDING = 1000  # handles kept at once (the demo runs one process)


def prepare(app) -> dict:
    """Create the demo user and clients once; return how to sign in."""
    parts = app.extensions["qr_oidc"]
    issuer = parts.settings.issuer
    with parts.db.session_factory() as session:
        if session.scalar(select(User.id).where(User.username == DEMO_USER["username"])) is None:
            session.add(User(
                sub=new_id(), username=DEMO_USER["username"],
                password_hash=hash_password(DEMO_USER["password"],
                                            parts.settings.password_cost),
                name=DEMO_USER["name"],
                email="dana@example.org", picture=f"{issuer}/static/demo-avatar.svg",
            ))
        if session.get(Client, DEMO_CLIENT_ID) is None:
            session.add(Client(
                client_id=DEMO_CLIENT_ID, name="Demo shop", public=True, first_party=False,
                redirect_uris=[f"{issuer}/demo"], grant_types=[QR_GRANT_TYPE],
                scope="openid profile email", logo_uri=f"{issuer}/static/logo.svg",
            ))
            session.flush()
        phone = session.get(Client, DEMO_PHONE_CLIENT_ID)
        if phone is None:
            session.add(Client(
                client_id=DEMO_PHONE_CLIENT_ID, name="Demo phone app", public=True,
                first_party=True, redirect_uris=[f"{issuer}/phone"],
                grant_types=["authorization_code"], scope="openid profile qr:approve",
                token_endpoint_auth_method="none", logo_uri=f"{issuer}/static/logo.svg",
                require_dpop=True,
            ))
        elif not phone.require_dpop:
            # the app's tokens are DPoP-bound to the key phone.js keeps (a demo DB made before)
            phone.require_dpop = True
        if session.get(Client, DEMO_PUSH_CLIENT_ID) is None:
            # the demo calls the rule functions in-process: nobody needs the plaintext secret
            session.add(Client(
                client_id=DEMO_PUSH_CLIENT_ID, name="Demo shop (push)", public=False,
                first_party=False, secret_hash=digest(new_secret()), redirect_uris=[],
                grant_types=[CIBA_GRANT_TYPE], scope=PUSH_SCOPE,
                backchannel_token_delivery_mode="poll", logo_uri=f"{issuer}/static/logo.svg",
            ))
        # signing out on the demo page: RP-initiated logout back to it, and the back-channel's
        # logout token to the demo shop's server (also for a demo database made before)
        for client_id in (DEMO_CLIENT_ID, DEMO_PUSH_CLIENT_ID):
            shop = session.get(Client, client_id)
            if shop is not None:
                shop.post_logout_redirect_uris = [f"{issuer}/demo"]
                shop.backchannel_logout_uri = f"{issuer}/demo/backchannel-logout"
        session.commit()
    return dict(DEMO_USER)


def demo_texts() -> dict:
    """demo.js's texts in the page's language ({name} marks a value the script puts in)."""
    return {
        "amrQr": _("QR code, approved on the phone"),
        "amrPush": _("Push request, approved on the phone"),
        "notShared": _("(not shared)"),
        "keptByServer": _("(kept by the shop's server)"),
        "verifiedHere": _("signature verified in this page ({alg}, key {kid}…, from /jwks.json); "
                          "issuer, audience, expiry and nonce checked"),
        "verifiedByServer": _("checked by the shop's server ({alg}, key {kid}…, from "
                              "/jwks.json): signature, issuer, audience and expiry"),
        "dpop": _("DPoP: bound to this page's key, useless to anyone who copies it"),
        "bearer": _("Bearer: whoever holds it can use it"),
        "phoneCancelled": _("the phone cancelled"),
        "renewal": _("renewal {number}"),
        "unreachable": _("The shop's server could not be reached."),
        "pageExpired": _("This page expired; reload it."),
        "serverAnswered": _("The shop's server answered {status}."),
        "sending": _("Sending the push login…"),
        "phoneBusy": _("The phone already has requests waiting: decide on them there first, "
                       "then try again."),
        "notSent": _("The push login could not be sent: {reason}"),
        "sent": _("sent, waiting for the phone"),
        "waiting": _("Waiting for approval on the phone…"),
        "phoneShows": _("The phone shows: “{message}”"),
        "approved": _("approved"),
        "cancelledNote": _("cancelled on the phone"),
        "cancelled": _("The push login was cancelled on the phone."),
        "expiredNote": _("expired"),
        "expired": _("The push login expired before it was approved."),
        "failed": _("The push login failed: {reason}"),
        "tokensForgotten": _("tokens forgotten"),
        "signingOut": _("at the provider, then back here"),
        "logoutWaiting": _("Signed out. Waiting to hear it on the shop's back-channel…"),
        "logoutHeard": _("Signed out. The provider's back-channel logout reached the shop's "
                         "server for this sign-in."),
        "logoutHeardNote": _("received by the shop's server"),
        "logoutNotHeard": _("Signed out. The shop's server has not heard the back-channel logout "
                            "(yet)."),
    }


def phone_texts() -> dict:
    """phone.js's texts in the page's language ({name} marks a value the script puts in)."""
    return {
        "notOurs": _("That is not a QR code of this sign-in service."),
        "opening": _("Opening the sign-in request…"),
        "pasteFirst": _("Paste the QR content first, or pick a picture."),
        "reading": _("Reading the picture…"),
        "unreadable": _("That file could not be read as a picture."),
        "noQr": _("No QR code found in that picture. Try a sharper one."),
        "key": _("This phone's key:"),
        "keyKept": _("(kept in this browser; the app's token works only with it)"),
        "keyPageOnly": _("(this page only: the browser keeps no keys here)"),
        "connecting": _("Connecting the app…"),
        "sameNetwork": _("Same network as this phone"),
        "otherNetwork": _("Not on this phone's network"),
        "firstTime": _("First request from this browser and address"),
        "declinedOne": _("You declined 1 request in the last 24 hours"),
        "declinedMany": _("You declined {number} requests in the last 24 hours"),
        "expired": _("expired"),
        "expiresIn": _("in {time}"),
        "unknownService": _("an unknown service"),
        "signInTo": _("Sign in to {name}?"),
        "asksFor": _("Asks for"),
        "from": _("From"),
        "unknownBrowser": _("Unknown browser"),
        "unknownAddress": _("unknown address"),
        "expires": _("Expires"),
        "pickNumber": _("Pick the number shown on that screen"),
        "pickNumberFirst": _("Pick the number shown on that screen first."),
        "cancel": _("Cancel"),
        "approve": _("Approve"),
        "theService": _("the service"),
        "noConnection": _("No connection; try again."),
        "approvedBy": _("Approved: {name} signs you in."),
        "cancelledBy": _("Cancelled: {name} was told no."),
        "didNotWork": _("That did not work."),
        "empty": _("No requests right now. New ones appear here as they arrive."),
        "tokenRefused": _("The app could not connect: its token was refused."),
        "retrying": _("No connection to the sign-in service; retrying…"),
        "noKey": _("The app could not make its key ({error}); this page needs a browser with "
                   "WebCrypto, over HTTPS or on localhost."),
        "notConnected": _("The app could not connect ({error}). Sign out and in again."),
    }


@bp.get("/demo")
def demo_page():
    return render_template("demo.html", client_id=DEMO_CLIENT_ID, demo_texts=demo_texts(),
                           issuer=current_app.extensions["qr_oidc"].settings.issuer)


@bp.get("/phone")
def phone_page():
    return render_template("phone.html", user=current_user(), client_id=DEMO_PHONE_CLIENT_ID,
                           phone_texts=phone_texts(),
                           issuer=current_app.extensions["qr_oidc"].settings.issuer)


# -- the demo shop's backend: push login (CIBA, poll mode) -----------------------------------------
class PendingPushes:
    """The push logins the demo page waits for: a random handle (what the page holds) to the
    ``auth_req_id`` (never sent to the browser), the browser session it was made for, and when
    the handle lapses."""

    def __init__(self, limit: int = PUSH_MAX_PENDING):
        self.limit = limit
        self._lock = threading.Lock()
        self._by_handle: dict[str, dict] = {}

    def add(self, auth_req_id: str, owner: str, lapses_at: float) -> str | None:
        """A new handle, or None when too many are kept."""
        with self._lock:
            self._purge()
            if len(self._by_handle) >= self.limit:
                return None
            handle = new_secret()
            self._by_handle[handle] = {"auth_req_id": auth_req_id, "owner": owner,
                                       "lapses_at": lapses_at}
            return handle

    def get(self, handle: object, owner: str) -> str | None:
        """The ``auth_req_id`` of a handle this browser session holds, or None."""
        if not isinstance(handle, str) or not handle or len(handle) > 100:
            return None
        with self._lock:
            self._purge()
            entry = self._by_handle.get(handle)
        if entry is None or not constant_equals(entry["owner"], owner):
            return None
        return entry["auth_req_id"]

    def forget(self, handle: str) -> None:
        with self._lock:
            self._by_handle.pop(handle, None)

    def _purge(self) -> None:
        at = time.time()
        for handle in [h for h, e in self._by_handle.items() if e["lapses_at"] <= at]:
            del self._by_handle[handle]


pending = PendingPushes()


def _owner() -> str:
    """Names this browser session: its CSRF token (the CSRF check has just matched it)."""
    return digest("demo push " + str(session.get("csrf") or ""))


def _push_client(parts) -> Client | None:
    return parts.db.session.get(Client, DEMO_PUSH_CLIENT_ID)


@bp.post("/demo/push")
def push_start():
    """Start a push login for the demo user; answers ``{"handle", "expires_in", "interval",
    "binding_message"}`` (the ``auth_req_id`` stays here)."""
    parts = current_app.extensions["qr_oidc"]
    try:
        client = _push_client(parts)
        if client is None:
            return error("unauthorized_client", 400, "The demo's push client is missing.")
        new = parts.push.start(client, {
            "scope": PUSH_SCOPE, "login_hint": DEMO_USER["username"],
            "binding_message": PUSH_MESSAGE,
        }, request.remote_addr, request.headers.get("User-Agent"))
    except OAuth2Error as exc:
        parts.db.session.rollback()
        return error(exc.error, exc.status_code if 400 <= exc.status_code < 500 else 400,
                     exc.get_error_description() or "The push login was refused.")
    except TooManyOutstanding as exc:
        parts.db.session.rollback()
        return error("too_many_requests", 429,
                     "The phone has too many push requests waiting; decide on them first.",
                     {"Retry-After": str(exc.retry_after)})
    except Exception:  # the database failed: say so in JSON, as every answer of this route
        parts.db.session.rollback()
        log.exception("the demo's push login could not start")
        return error("temporarily_unavailable", 503, "The push login could not start; retry.")
    row = new.row
    expires_in = int(row.expires_at - row.created_at)
    handle = pending.add(new.ticket, _owner(), row.expires_at + PUSH_GRACE)
    if handle is None:
        return error("too_many_requests", 429, "Too many push logins are waiting; retry later.",
                     {"Retry-After": "30"})
    return json_response({"handle": handle, "expires_in": expires_in,
                          "interval": row.poll_interval, "binding_message": PUSH_MESSAGE}, 201)


@bp.post("/demo/push/poll")
def push_poll():
    """The demo shop's token request for a handle: the ID token's claims, verified here against
    the provider's JWKS (issuer, audience, expiry), or ``{"error", "error_description"}`` as the
    token endpoint words it (``authorization_pending``, ``slow_down``, ``access_denied``,
    ``expired_token``, ...). The access token is not sent on: the page has no use for it."""
    parts = current_app.extensions["qr_oidc"]
    handle = request.form.get("handle")
    auth_req_id = pending.get(handle, _owner())
    if auth_req_id is None:
        return error("invalid_grant", 400, "No push login of this page has that handle "
                     "(or it lapsed); send a new one.")
    try:
        client = _push_client(parts)
        if client is None:
            return error("unauthorized_client", 400, "The demo's push client is missing.")
        tokens = parts.core.poll(CIBA_GRANT_TYPE, {"auth_req_id": auth_req_id}, lambda: client)
    except OAuth2Error as exc:
        parts.db.session.rollback()
        if exc.error not in ("authorization_pending", "slow_down"):
            pending.forget(handle)  # it ended: access_denied, expired_token, invalid_grant
        status = exc.status_code if 400 <= exc.status_code < 600 else 400
        return error(exc.error, status, exc.get_error_description() or exc.error)
    except Exception:
        parts.db.session.rollback()
        log.exception("the demo's push poll failed")
        return error("temporarily_unavailable", 503, "The poll failed; it will be retried.")
    pending.forget(handle)
    try:
        decoded = jwt.decode(tokens["id_token"], parts.keys.public_set(), algorithms=ID_TOKEN_ALGS)
    except (JoseError, ValueError, TypeError, KeyError):
        return error("invalid_token", 502, "The ID token did not verify.")
    claims = decoded.claims
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    exp = claims.get("exp")
    if (claims.get("iss") != parts.settings.issuer or DEMO_PUSH_CLIENT_ID not in audiences
            or not isinstance(exp, (int, float)) or exp <= time.time()):
        return error("invalid_token", 502, "The ID token is not for the demo shop.")
    # (the ID token too: the page hands it back as id_token_hint when it signs out)
    return json_response({"claims": claims, "alg": decoded.header.get("alg"),
                          "kid": decoded.header.get("kid"), "id_token": tokens["id_token"]})


# -- the demo shop's backend: back-channel logout -------------------------------------------------
class LogoutsHeard:
    """The sign-ins the provider told the demo shop's server had ended (Back-Channel Logout
    1.0), by ``sid``; the last ``limit`` kept (the demo runs one process)."""

    def __init__(self, limit: int = 1000):
        self.limit = limit
        self._lock = threading.Lock()
        self._heard: dict[str, float] = {}

    def add(self, sid: str) -> None:
        with self._lock:
            self._heard[sid] = time.time()
            while len(self._heard) > self.limit:
                self._heard.pop(next(iter(self._heard)))

    def heard(self, sid: str) -> bool:
        with self._lock:
            return sid in self._heard


heard = LogoutsHeard()
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@bp.post("/demo/backchannel-logout")
def backchannel_logout():
    """The demo shop's ``backchannel_logout_uri``: the provider posts a logout token here when a
    sign-in of the shop ends. It is checked as Back-Channel Logout §2.6 asks (signature against
    the JWKS, issuer, audience, ``typ``, the event, a ``sid``, no ``nonce``) and remembered."""
    parts = current_app.extensions["qr_oidc"]
    token = request.form.get("logout_token")
    try:
        decoded = jwt.decode(token or "", parts.keys.public_set(), algorithms=ID_TOKEN_ALGS)
    except (JoseError, ValueError, TypeError, KeyError):
        return error("invalid_request", 400, "The logout token did not verify.")
    claims = decoded.claims
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    events = claims.get("events")
    sid = claims.get("sid")
    if (decoded.header.get("typ") != "logout+jwt" or claims.get("iss") != parts.settings.issuer
            or not {DEMO_CLIENT_ID, DEMO_PUSH_CLIENT_ID} & set(audiences)
            or not isinstance(events, dict) or LOGOUT_EVENT not in events
            or "nonce" in claims or not isinstance(sid, str)):
        return error("invalid_request", 400, "This is not a logout token for the demo shop.")
    heard.add(sid)
    log.info("back-channel logout received for a sign-in of the demo shop")
    return json_response({})


@bp.get("/demo/logouts")
def logouts_heard():
    """Whether the provider's back-channel told the shop that the sign-in ``sid`` ended (the
    page asks after signing out; reading changes nothing)."""
    sid = request.args.get("sid", "")
    return json_response({"sid_heard": bool(sid) and len(sid) <= 64 and heard.heard(sid)})
