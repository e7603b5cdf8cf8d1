"""HTML pages, the ``pages`` blueprint: sign-in, and the authorization endpoint (login with QR,
consent); the helpers every page of the blueprint uses.

The hosted sign-in is a form with inputs ``username`` and ``password``; every form carries a CSRF
token in a hidden input, checked for every POST in one place (``provider/web/csrf.py``). No GET
changes a row: the login page's QR ticket is made by a POST from the page's script (or its
no-script button), an opened QR link asks the signed-in person to continue before anything is
scanned, and authorization codes are sealed, not stored (``grants/authorization_code.py``).

The hosted login page's QR (``/authorize/ticket``, ``/authorize/qr``): the ticket keeps the whole
authorization request it was made for (client, redirect URI, scope as the phone shows it, state,
nonce, PKCE challenge). The phone's approval is consent for that one request: the page's browser
is answered with that request's code, exactly as kept, and is *not* signed in at the provider
(the cross-device "session transfer" attack: a relayed QR must not become every login of the
user). Only a password sign-in starts a provider session (``provider/web/sessions.py``).

The blueprint's browser confirmation pages (a QR opened without the app, a typed user code) are
in ``provider/web/confirm.py``.
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import parse_qsl, urlencode

from authlib.oauth2 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oidc.core.errors import (
    ConsentRequiredError,
    LoginRequiredError,
    RequestNotSupportedError,
    RequestURINotSupportedError,
)
from flask import (
    Blueprint,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from qr_oidc.provider.audit import audit, flush_after_commit
from qr_oidc.provider.security import (
    check_password,
    digest,
    hash_password,
    needs_rehash,
    new_secret,
)
from qr_oidc.provider.storage.models import Client, User
from qr_oidc.provider.storage.ratelimit import TooManyRequests
from qr_oidc.provider.web import sessions
from qr_oidc.provider.web.headers import allow_form_target
from qr_oidc.provider.web.i18n import N_, describe
from qr_oidc.provider.web.tickets import qr_content

bp = Blueprint("pages", __name__, template_folder="templates")

# the authorization request parameters a hosted-page ticket keeps (OIDC Core §3.1.2.1)
KEPT_PARAMETERS = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
                   "code_challenge", "code_challenge_method", "prompt", "max_age", "login_hint",
                   "ui_locales", "display", "acr_values", "response_mode")
# RFC 6749 Appendix A: these are printable ASCII (VSCHAR and narrower); anything else is refused
# before Authlib sees it (some of its errors quote the value, and it refuses to quote such text)
ASCII_PARAMETERS = ("response_type", "client_id", "redirect_uri", "scope", "state",
                    "code_challenge", "code_challenge_method", "response_mode", "prompt",
                    "max_age")
RESPONSE_TYPE = re.compile(r"^[A-Za-z0-9_ ]*$")  # Appendix A.3 (and Authlib quotes it)
FRESH_SIGN_IN = 60  # seconds a password sign-in counts as the fresh login prompt=login asks for
CONSENT_TIME = 600  # seconds a consent page may be answered
MAX_FLOWS = 5  # hosted-page tickets a browser may follow at once (tabs)

log = logging.getLogger("qr_oidc.pages")
# an unknown username costs the same hash as a wrong password (by cost)
_dummy_hashes: dict[int, str] = {}


def parts():
    return current_app.extensions["qr_oidc"]


def current_user() -> User | None:
    signed_in = sessions.current()
    return signed_in.user if signed_in else None


def too_many_page(exc: TooManyRequests, message: str):
    """429 with Retry-After: an HTML page for a browser (in its language), the protocol's JSON
    (in English) for anything else."""
    if wants_html():
        response = make_response(render_template("error.html", error="too_many_requests",
                                                 description=describe(message)), 429)
    else:
        response = jsonify(error="too_many_requests", error_description=message)
        response.status_code = 429
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def wants_html() -> bool:
    return request.accept_mimetypes.accept_html and not request.accept_mimetypes.accept_json


def error_page(error: str, description: str, status: int):
    """The error page, its description in the page's language when the catalog has it."""
    return render_template("error.html", error=error, description=describe(description)), status


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute URL (no open redirect)."""
    if (not isinstance(target, str) or not target.startswith("/") or target.startswith("//")
            or "\\" in target or not target.isprintable()):
        return url_for("pages.home")
    return target


# -- sign-in -----------------------------------------------------------------------------------
@bp.get("/")
def home():
    return render_template("home.html", user=current_user())


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=next_url, error=None)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    p = parts()
    account = username.strip().lower()[:150]
    try:  # counted before the password is checked: parallel guesses cannot all pass
        counted = [p.limiter.hit("login_account", account),
                   p.limiter.hit("login_ip", request.remote_addr)]
    except TooManyRequests as exc:
        audit("signin.refused", username=account, reason="rate_limited")
        return too_many_page(exc, N_("Too many sign-in attempts. Try again later."))
    found = None
    if username and len(username) <= 150 and "\x00" not in username:
        found = p.db.session.execute(
            select(User.id, User.password_hash).where(User.username == username)).first()
    p.db.session.rollback()  # no connection is held through the (slow) password hash
    cost = p.settings.password_cost
    if not check_password(found.password_hash if found else _dummy(cost), password) or not found:
        audit("signin.failed", username=account)
        return render_template("login.html", next=next_url,
                               error=gettext("Wrong username or password.")), 401
    for count in counted:
        p.limiter.give_back(count)
    if needs_rehash(found.password_hash, cost):  # stored with less than PASSWORD_COST asks
        _rehash(p, found, password, cost)
    audit("signin", user_id=found.id, amr="pwd")
    sessions.start(found.id, "pwd")
    # the request this sign-in was for counts it as the fresh login prompt=login asks for
    session["fresh_sign_in"] = [digest(next_url), int(time.time())]
    return redirect(next_url)


def _dummy(cost: int) -> str:
    """A hash of nothing, checked for an unknown username so that its answer takes as long as a
    known one's: made with the cost new hashes are made with."""
    if cost not in _dummy_hashes:
        _dummy_hashes[cost] = hash_password(new_secret(), cost)
    return _dummy_hashes[cost]


def _rehash(p, found, password: str, cost: int) -> None:
    """The password again with the configured cost, stored if it is still the one checked (a
    password changed meanwhile is left alone)."""
    stronger = hash_password(password, cost)
    try:
        p.db.session.execute(update(User).where(User.id == found.id,
                                                User.password_hash == found.password_hash)
                             .values(password_hash=stronger))
        p.db.session.commit()
    except SQLAlchemyError as exc:  # the sign-in stands; the next one tries again
        p.db.session.rollback()
        log.warning("password re-hash not stored (%s)", type(exc).__name__)
        return
    audit("password.rehashed", user_id=found.id)


# -- the authorization endpoint ------------------------------------------------------------------
@bp.route("/authorize", methods=["GET", "POST"])
def authorize():
    """The authorization endpoint (GET, or POST with the request as a form: OIDC Core §3.1.2.1).

    Not signed in, ``prompt=login``, or a sign-in older than ``max_age``: the login page, with a
    QR for this very request beside the password form. Signed in: consent (unless first-party),
    then the code. ``prompt=none`` answers ``login_required`` or ``consent_required`` instead of
    a page. Nothing here writes a row."""
    server = parts().server
    signed_in = sessions.current()
    try:
        _check_characters(request.values)
        grant = server.get_consent_grant(end_user=signed_in.user if signed_in else None)
        _check_request(grant)
    except OAuth2Error as exc:
        return authorization_error(exc)
    client: Client = grant.client
    params = grant.request.payload.data
    prompts = set((params.get("prompt") or "").split())
    fresh = _fresh_sign_in()
    needs_login = signed_in is None or (not fresh and (
        "login" in prompts or _too_old(signed_in.record.auth_time, params.get("max_age"))))
    if needs_login:
        if "none" in prompts:
            return authorization_error(_redirected(LoginRequiredError(), grant))
        return _login_page(grant)
    if "consent" in prompts or not client.first_party:
        if "none" in prompts:
            return authorization_error(_redirected(ConsentRequiredError(), grant))
        allow_form_target(grant.redirect_uri)
        query = _query_of(params)
        # the consent form may answer this request only, as it stands after the checks above
        # (prompt=login, max_age): a request posted to it without them is sent through them
        session["consent_for"] = [digest(query), int(time.time())]
        return render_template("consent.html", client=client, user=signed_in.user,
                               scopes=(grant.request.scope or "").split(), request_query=query)
    return _issue_code(grant, signed_in.user, signed_in.record.auth_time, signed_in.record.amr,
                       signed_in.record.sid)


@bp.post("/authorize/consent")
def authorize_consent():
    """The consent form's answer, for the request the consent page was shown for (validated
    again, with the signed-in user). Any other request goes back through /authorize."""
    server = parts().server
    try:
        params = _params_of(request.form.get("request", ""))
    except OAuth2Error as exc:
        return authorization_error(exc)
    query = urlencode(params)
    signed_in = sessions.current()
    shown = session.pop("consent_for", None)
    if signed_in is None or not (
            isinstance(shown, list) and len(shown) == 2 and shown[0] == digest(query)
            and isinstance(shown[1], int) and 0 <= time.time() - shown[1] <= CONSENT_TIME):
        return redirect(url_for("pages.authorize") + "?" + query)  # signed out, or not shown
    try:
        kept = kept_request(params)
        grant = server.get_consent_grant(request=kept, end_user=signed_in.user)
        _check_request(grant)
    except OAuth2Error as exc:
        return authorization_error(exc)
    allow_form_target(grant.redirect_uri)
    if request.form.get("decision") != "approve":
        return server.create_authorization_response(request=kept, grant_user=None, grant=grant)
    return _issue_code(grant, signed_in.user, signed_in.record.auth_time, signed_in.record.amr,
                       signed_in.record.sid)


def _issue_code(grant, user, auth_time, amr: str, sid: str | None):
    """Redirect to the client with a code for ``grant``'s request, granted by ``user`` in the
    sign-in ``sid`` (the ID token's ``sid``)."""
    grant.request.auth_time, grant.request.amr, grant.request.sid = auth_time, amr, sid
    allow_form_target(grant.redirect_uri)
    return parts().server.create_authorization_response(request=grant.request, grant_user=user,
                                                         grant=grant)


def authorization_error(exc: OAuth2Error):
    """To the client's redirect URI when it is known to be the client's, else an error page."""
    if exc.redirect_uri:
        return parts().server.handle_error_response(None, exc)
    return error_page(exc.error, exc.get_error_description() or "The request is not valid.",
                      exc.status_code if 400 <= exc.status_code < 500 else 400)


def _redirected(exc: OAuth2Error, grant) -> OAuth2Error:
    exc.redirect_uri = grant.redirect_uri
    exc.state = grant.request.payload.state
    return exc


def _check_characters(params) -> None:
    """The protocol's parameters are printable ASCII (RFC 6749 Appendix A); ``nonce`` at least
    has no control characters. Refused with an error page: such a request cannot be answered
    at a redirect URI that is not known to be the client's, nor its state echoed."""
    for key in ASCII_PARAMETERS:
        value = params.get(key)
        if value is not None and not (value.isascii() and value.isprintable()):
            raise InvalidRequestError(f"{key} must be printable ASCII.")
    if not RESPONSE_TYPE.match(params.get("response_type") or ""):
        raise InvalidRequestError(N_("response_type must be letters, digits, _ and spaces."))
    nonce = params.get("nonce")
    if nonce is not None and not nonce.isprintable():
        raise InvalidRequestError(N_("nonce must be printable text."))


def _check_request(grant) -> None:
    """What discovery says is not supported is refused, not silently ignored (OIDC Core §6);
    values too long to keep in a code are refused too."""
    params = grant.request.payload.data
    error = None
    if "request" in params:
        error = RequestNotSupportedError("Request objects are not supported.")
    elif "request_uri" in params:
        error = RequestURINotSupportedError("request_uri is not supported.")
    elif params.get("response_mode", "query") != "query":
        error = InvalidRequestError("Only response_mode=query is supported.")
    elif len((params.get("nonce") or "").encode("utf-8", "replace")) > 512:
        error = InvalidRequestError("nonce is too long (512 bytes at most).")
    elif len(params.get("state") or "") > 2000:
        error = InvalidRequestError("state is too long (2000 characters at most).")
    elif params.get("max_age") is not None and _max_age(params.get("max_age")) is None:
        error = InvalidRequestError("max_age must be a whole number of seconds.")
    if error is not None:
        raise _redirected(error, grant)


def _max_age(value) -> int | None:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 9:
        return None
    return int(value)


def _too_old(auth_time: float, max_age) -> bool:
    limit = _max_age(max_age)
    return limit is not None and time.time() - auth_time > limit


def _fresh_sign_in() -> bool:
    """A password sign-in made just now for this very request (the login page's ``next``)
    satisfies its ``prompt=login`` and ``max_age``, once."""
    mark = session.pop("fresh_sign_in", None)
    return (isinstance(mark, list) and len(mark) == 2 and mark[0] == digest(request.full_path)
            and isinstance(mark[1], int) and 0 <= time.time() - mark[1] <= FRESH_SIGN_IN)


def _query_of(params) -> str:
    return urlencode([(k, v) for k, v in params.items() if isinstance(v, str)])


def _params_of(query) -> dict:
    if not isinstance(query, str) or len(query) > 16384:
        raise InvalidRequestError(N_("The sign-in request is missing; start again."))
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError(N_("The sign-in request is malformed; start again.")) from None
    params = {}
    for key, value in pairs:
        if key in params:
            raise InvalidRequestError(N_("The sign-in request repeats a parameter."))
        params[key] = value
    _check_characters(params)
    return params


def kept_request(params: dict) -> OAuth2Request:
    """An authorization request the provider holds (not the browser's), as Authlib takes it."""
    uri = parts().settings.issuer + "/authorize?" + urlencode(params)
    kept = OAuth2Request("GET", uri)
    kept.payload = BasicOAuth2Payload(params)
    return kept


def _login_page(grant, qr: dict | None = None, status: int = 200):
    """The hosted login page for an authorization request: password form and QR side by side.
    The page's script asks ``/authorize/ticket`` for the QR (a POST); without a script, a button
    does."""
    allow_form_target(grant.redirect_uri)
    query = _query_of(grant.request.payload.data)
    return render_template("login.html", next=url_for("pages.authorize") + "?" + query,
                           error=None, client=grant.client, request_query=query, qr=qr,
                           issuer=parts().settings.issuer), status


@bp.post("/authorize/ticket")
def authorize_ticket():
    """The hosted login page's QR: a ticket for the authorization request the page shows, kept
    with it. JSON for the page's script; the page again, with the QR, for a browser without."""
    p = parts()
    try:
        kept = kept_request(_params_of(request.form.get("request")))
        grant = p.server.get_consent_grant(request=kept, end_user=None)
        _check_request(grant)
    except OAuth2Error as exc:
        if wants_html():
            return authorization_error(exc)
        response = jsonify(error=exc.error, error_description=exc.get_error_description())
        response.status_code = 400
        return response
    client: Client = grant.client
    try:  # (the page's own count per client: anonymous pages cannot use up its backend's)
        p.limiter.hit("ticket_ip", request.remote_addr)
        p.limiter.hit("ticket_client", "hosted page:" + client.client_id,
                      p.limiter.client_limit(client))
    except TooManyRequests as exc:
        return too_many_page(exc, N_("Too many QR codes asked for. Try again shortly."))
    params = {k: v for k, v in kept.payload.data.items() if k in KEPT_PARAMETERS}
    params["scope"] = grant.request.scope or ""  # what the client may have: what the phone shows
    new = p.tickets.create(
        client, params["scope"], kind="authorize", nonce=params.get("nonce"),
        requester_ip=request.remote_addr, requester_ua=request.headers.get("User-Agent"),
        auth_request=params)
    flows = [f for f in session.get("qr_flows", []) if isinstance(f, str)]
    session["qr_flows"] = [digest(new.row.id), *flows][:MAX_FLOWS]
    issuer = p.settings.issuer
    body = {
        "ticket": new.ticket,
        "qr_content": qr_content(new.scan_code),
        "qr_image": f"{issuer}/qr/{new.scan_code}.png",
        "user_code": new.user_code,
        "expires_in": int(new.row.expires_at - new.row.created_at),
        "interval": new.row.poll_interval,
    }
    if new.row.binding_code is not None:
        body["binding_code"] = new.row.binding_code
    if wants_html():
        return _login_page(grant, qr=body, status=201)
    response = jsonify(body)
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/authorize/qr")
def authorize_qr():
    """The hosted login page's QR was approved or denied on the phone: answer the authorization
    request kept with the ticket (a code with amr ["qr"], or error=access_denied). The browser is
    not signed in at the provider."""
    p = parts()
    row = p.tickets.by_ticket(request.form.get("ticket", ""))
    if row is not None and isinstance(row.auth_request, dict):
        g.ui_locales = row.auth_request.get("ui_locales")  # (the page's language: i18n.py)
    flows = session.get("qr_flows", [])
    if (row is None or row.kind != "authorize" or not isinstance(flows, list)
            or digest(row.id) not in flows or not isinstance(row.auth_request, dict)):
        return error_page("invalid_request", N_("This sign-in is not waiting here any more."), 400)
    params = row.auth_request
    status = row.public_status()
    if status not in ("approved", "denied"):
        # pending, expired or already used: the login page again, with a fresh QR
        return redirect(url_for("pages.authorize") + "?" + urlencode(params))
    session["qr_flows"] = [f for f in flows if f != digest(row.id)]
    try:
        kept = kept_request(params)
        grant = p.server.get_consent_grant(request=kept, end_user=None)
    except OAuth2Error as exc:  # the client changed since (a redirect URI removed, say)
        return authorization_error(exc)
    allow_form_target(grant.redirect_uri)
    if status == "denied":
        return p.server.create_authorization_response(request=kept, grant_user=None, grant=grant)
    user = p.db.session.get(User, row.user_id)
    kept.auth_time, kept.amr, kept.sid = row.decided_at, "qr", row.id  # (the approval's sid)
    response = p.server.create_authorization_response(request=kept, grant_user=user, grant=grant)
    if not getattr(kept, "code_issued", False):
        return response  # an error the client is told of; the ticket stays as it is
    if not p.tickets.redeem(row, time.time()):
        p.db.session.rollback()
        return error_page("invalid_request", N_("This sign-in was used already."), 400)
    p.db.session.commit()
    flush_after_commit()  # ticket.redeemed
    audit("code.issued", user_id=row.user_id, client_id=row.client_id, amr="qr", ticket=row.id)
    return response
