"""HTML pages: sign-in, the authorization endpoint (consent), and the browser confirmation screen.

The hosted sign-in is a form with inputs ``username`` and ``password``; every form carries a CSRF
token in a hidden input. The confirmation screen is what the phone's browser shows when the QR is
opened without the app (``/s/<scan_code>``) or a user code is typed (``/device``): the client, the
scopes, the requesting IP and browser, and approve and cancel of equal weight.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oidc.core.errors import RequestNotSupportedError, RequestURINotSupportedError
from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select

from grants.tickets import TicketError

from .audit import audit, flush_after_commit
from .http import find_by_user_code
from .models import Client, User
from .ratelimit import TooManyRequests
from .security import check_password, constant_equals, hash_password, new_secret

bp = Blueprint("pages", __name__, template_folder="templates")

# a password check against a hash of this keeps an unknown username as slow as a wrong password
_DUMMY_HASH = None


def parts():
    return current_app.extensions["qr_oidc"]


# -- session helpers ---------------------------------------------------------------------------
def current_user() -> User | None:
    uid = session.get("uid")
    if uid is None:
        return None
    user = parts().db.session.get(User, uid)
    if user is None:
        session.clear()
    return user


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = new_secret()
    return token


def check_csrf() -> None:
    if not constant_equals(request.form.get("csrf_token"), session.get("csrf")):
        abort(400, description="The form expired or did not come from this site; reload it.")


@bp.app_context_processor
def _template_helpers():
    return {"csrf_token": csrf_token}


@bp.after_app_request
def _page_headers(response):
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", page_csp())
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def page_csp(form_targets: tuple[str, ...] = ()) -> str:
    """The pages' policy: only this site's scripts, no framing (the approval screens cannot be
    clickjacked), forms post here, or (login and consent) on to the client's redirect origin,
    which browsers check on the redirects that follow a form post."""
    targets = " ".join(("'self'",) + form_targets)
    return ("default-src 'self'; script-src 'self'; img-src 'self' data: https:; "
            "style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'; "
            f"form-action {targets}; base-uri 'none'")


def _redirect_origin(grant) -> tuple[str, ...]:
    uri = grant.request.payload.redirect_uri or grant.client.get_default_redirect_uri() or ""
    parts_ = urlsplit(uri)
    if not parts_.scheme or not parts_.netloc:
        return ()
    if parts_.scheme in ("http", "https"):
        return (f"{parts_.scheme}://{parts_.netloc}",)
    return (f"{parts_.scheme}:",)  # a native app's private-use scheme


def too_many_page(exc: TooManyRequests, message: str):
    """429 with Retry-After: an HTML page for a browser, the protocol's JSON for anything else."""
    if request.accept_mimetypes.accept_html and not request.accept_mimetypes.accept_json:
        response = make_response(render_template("error.html", error="too_many_requests",
                                                 description=message), 429)
    else:
        response = jsonify(error="too_many_requests", error_description=message)
        response.status_code = 429
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute URL (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("pages.home")
    parts_ = urlsplit(target)
    if parts_.scheme or parts_.netloc:
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
    check_csrf()
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    limiter = parts().limiter
    account = username.strip().lower()[:150]
    try:
        limiter.check("login_account", account)
        limiter.check("login_ip", request.remote_addr)
    except TooManyRequests as exc:
        audit("signin.refused", username=account, reason="rate_limited")
        return too_many_page(exc, "Too many sign-in attempts. Try again later.")
    user = None
    if "\x00" not in username:  # (no account has one, and PostgreSQL cannot compare text with it)
        user = parts().db.session.scalar(select(User).where(User.username == username[:150]))
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(new_secret())
    valid = check_password(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not valid:
        limiter.hit("login_account", account, refuse=False)
        limiter.hit("login_ip", request.remote_addr, refuse=False)
        audit("signin.failed", username=account)
        return render_template("login.html", next=next_url,
                               error="Wrong username or password."), 401
    audit("signin", user_id=user.id, amr="pwd")
    session.clear()  # a new session on sign-in (no fixation)
    session["uid"] = user.id
    session["auth_time"] = time.time()
    session["amr"] = "pwd"
    return redirect(next_url)


@bp.post("/logout")
def logout():
    check_csrf()
    session.clear()
    return redirect(url_for("pages.home"))


# -- the authorization endpoint ------------------------------------------------------------------
@bp.route("/authorize", methods=["GET", "POST"])
def authorize():
    """The authorization endpoint. Signed out: the login page, a QR for this very request beside
    the password form. Signed in: consent (unless first-party, or the phone already confirmed)."""
    server = parts().server
    user = current_user()
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as exc:
        if exc.redirect_uri:
            return server.handle_error_response(None, exc)
        return render_template("error.html", error=exc.error,
                               description=exc.get_error_description()), exc.status_code
    client: Client = grant.client
    unsupported = _unsupported_parameter(grant)
    if unsupported is not None:
        return server.handle_error_response(None, unsupported)
    qr_outcome = session.pop("qr_outcome", None)
    if qr_outcome and qr_outcome.get("client_id") == client.client_id:
        # the phone's confirmation screen (client, scopes) was the consent, or the refusal
        granted = user if qr_outcome.get("outcome") == "approved" else None
        return server.create_authorization_response(grant_user=granted, grant=grant)
    if user is None:
        try:
            parts().limiter.hit("ticket_ip", request.remote_addr)
            parts().limiter.hit("ticket_client", client.client_id)
        except TooManyRequests:  # no QR this time; the password form still works
            page = make_response(render_template(
                "login.html", next=request.full_path, error=None, qr=None, client=client,
                return_to=request.full_path))
        else:
            page = make_response(_login_page(grant))
        page.headers["Content-Security-Policy"] = page_csp(_redirect_origin(grant))
        return page
    if request.method == "GET" and not client.first_party:
        page = make_response(render_template("consent.html", client=client, user=user,
                                             scopes=(grant.request.scope or "").split()))
        page.headers["Content-Security-Policy"] = page_csp(_redirect_origin(grant))
        return page
    if request.method == "POST":
        check_csrf()
        if request.form.get("decision") != "approve":
            return server.create_authorization_response(grant_user=None, grant=grant)
    return server.create_authorization_response(grant_user=user, grant=grant)


def _unsupported_parameter(grant):
    """What discovery says is not supported is refused, not silently ignored (OIDC Core §6)."""
    args = request.args
    error = None
    if "request" in args:
        error = RequestNotSupportedError("Request objects are not supported.")
    elif "request_uri" in args:
        error = RequestURINotSupportedError("request_uri is not supported.")
    elif args.get("response_mode", "query") != "query":
        error = InvalidRequestError("Only response_mode=query is supported.")
    if error is not None:
        error.redirect_uri = grant.redirect_uri
        error.state = args.get("state")
    return error


def _login_page(grant):
    """The hosted login page for an authorization request: password form and QR side by side."""
    p = parts()
    client: Client = grant.client
    new = p.tickets.create(
        client,
        grant.request.scope or "",
        kind="authorize",
        nonce=request.args.get("nonce"),
        requester_ip=request.remote_addr,
        requester_ua=request.headers.get("User-Agent"),
        auth_request={"client_id": client.client_id},
    )
    session["qr_ticket_id"] = new.row.id
    issuer = p.settings["ISSUER"]
    qr = {
        "issuer": issuer,
        "ticket": new.ticket,
        "image": f"{issuer}/qr/{new.scan_code}.png",
        "content": f"{issuer}/s/{new.scan_code}",
        "user_code": new.user_code,
        "binding_code": new.row.binding_code,
        "expires_in": int(new.row.expires_at - new.row.created_at),
    }
    return render_template("login.html", next=request.full_path, error=None, qr=qr,
                           client=client, return_to=request.full_path)


@bp.post("/authorize/qr")
def authorize_qr():
    """The hosted login page's QR was approved or denied on the phone: finish this browser's
    authorization request with that outcome (a code with amr ["qr"], or error=access_denied)."""
    p = parts()
    check_csrf()
    return_to = safe_next(request.form.get("return_to"))
    row = p.tickets.by_ticket(request.form.get("ticket", ""))
    if row is None or row.kind != "authorize" or not constant_equals(
            row.id, session.get("qr_ticket_id")):
        return render_template("error.html", error="invalid_request",
                               description="This sign-in is not waiting here any more."), 400
    status = row.public_status()
    if status == "approved" and p.tickets.redeem(row, time.time()):
        p.db.session.commit()
        flush_after_commit()  # ticket.redeemed
        session.clear()  # a new session for the user who approved (no fixation)
        audit("signin", user_id=row.user_id, amr="qr", ticket=row.id)
        session["uid"] = row.user_id
        session["auth_time"] = row.decided_at
        session["amr"] = "qr"
    elif status == "denied":
        session.pop("qr_ticket_id", None)
    else:
        # pending, expired or already used: show the page again, with a fresh QR
        return redirect(return_to)
    session["qr_outcome"] = {"client_id": row.client_id, "outcome": status}
    return redirect(return_to)


# -- confirmation in a browser: QR opened without the app, or a typed user code ---------------------
@bp.get("/s/<scan_code>")
def scanned_in_browser(scan_code: str):
    user = current_user()
    if user is None:
        return redirect(url_for("pages.login", next=request.path))
    return _confirm_screen(scan_code=scan_code)


@bp.route("/device", methods=["GET", "POST"])
def device():
    user = current_user()
    if user is None:
        return redirect(url_for("pages.login", next=request.path))
    if request.method == "GET":
        return render_template("device.html", error=None)
    check_csrf()
    return _confirm_screen(user_code=request.form.get("user_code", ""))


def _confirm_screen(scan_code: str | None = None, user_code: str | None = None):
    p = parts()
    user = current_user()
    if scan_code is not None:
        row, code = p.tickets.by_code(scan_code, None)
    else:
        try:
            row, code = find_by_user_code(p, user_code, user)
        except TooManyRequests as exc:
            return too_many_page(exc, "Too many wrong codes. Try again later.")
    try:
        row = p.tickets.scan(row, user)
    except TicketError as exc:
        if user_code is not None and exc.error == "unknown_code":
            return render_template("device.html", error="No login is waiting for this code."), 404
        return render_template("error.html", error=exc.error,
                               description=exc.description), exc.status
    client = p.db.session.get(Client, row.client_id)
    view = p.tickets.scan_view(row, code, client)
    session["confirm_ticket"] = row.id
    return render_template("confirm.html", view=view, code=code)


@bp.post("/confirm")
def confirm():
    p = parts()
    user = current_user()
    if user is None:
        return redirect(url_for("pages.login"))
    check_csrf()
    code = request.form.get("user_code", "")
    row, _ = p.tickets.by_code(None, code)
    if row is None or not constant_equals(row.id, session.get("confirm_ticket")):
        return render_template("error.html", error="unknown_code",
                               description="No login is waiting for this code."), 404
    try:
        if request.form.get("decision") == "approve":
            p.tickets.approve(row, user, request.form.get("binding_code"))
            outcome = "approved"
        else:
            p.tickets.deny(row, user)
            outcome = "denied"
    except TicketError as exc:
        return render_template("error.html", error=exc.error,
                               description=exc.description), exc.status
    session.pop("confirm_ticket", None)
    return render_template("done.html", outcome=outcome)
