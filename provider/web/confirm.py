"""HTML pages of the ``pages`` blueprint (provider/web/pages.py) for confirming a sign-in in a
browser: what the phone's browser shows when the QR is opened without the app
(``/s/<scan_code>``) or a user code is typed (``/device``): the client, the scopes, the
requesting IP and browser, and approve and cancel of equal weight (``/confirm``).

Every form carries the CSRF token (provider/web/csrf.py); opening the QR's link changes nothing.
"""

from __future__ import annotations

from flask import redirect, render_template, request, session, url_for

from qr_oidc.grants.tickets import TicketError
from qr_oidc.provider.security import constant_equals, digest
from qr_oidc.provider.storage.models import Client
from qr_oidc.provider.storage.ratelimit import TooManyRequests
from qr_oidc.provider.web.actions import find_by_user_code
from qr_oidc.provider.web.i18n import N_, describe, keep_language
from qr_oidc.provider.web.pages import bp, current_user, error_page, parts, too_many_page


@bp.route("/s/<scan_code>", methods=["GET", "POST"])
def scanned_in_browser(scan_code: str):
    """The QR's link. Opening it changes nothing (whoever made the ticket learns nothing of who
    opened it): the page asks the signed-in person to continue, and only that POST scans."""
    user = current_user()
    if user is None:
        return redirect(url_for("pages.login", next=url_for(request.endpoint, scan_code=scan_code,
                                                            **keep_language()),
                                **keep_language()))
    if request.method == "POST":
        return _confirm_screen(scan_code=scan_code)
    row, _code = parts().tickets.by_code(scan_code, None)
    if row is None:
        return error_page("unknown_code", N_("No login is waiting for this code."), 404)
    status = row.public_status()
    if status not in ("pending", "scanned"):
        return error_page("expired" if status == "expired" else "invalid_state",
                          N_("This sign-in request is no longer waiting."),
                          410 if status == "expired" else 409)
    client = parts().db.session.get(Client, row.client_id)
    return render_template("continue.html", client=client, user=user, scan_code=scan_code)


@bp.route("/device", methods=["GET", "POST"])
def device():
    user = current_user()
    if user is None:
        return redirect(url_for("pages.login", next=url_for(request.endpoint, **keep_language()),
                                **keep_language()))
    if request.method == "GET":
        return render_template("device.html", error=None)
    return _confirm_screen(user_code=request.form.get("user_code", ""))


def _confirm_screen(scan_code: str | None = None, user_code: str | None = None):
    p = parts()
    user = current_user()
    if scan_code is not None:
        row, code = p.tickets.by_code(scan_code, None)
    else:
        try:
            row, code = find_by_user_code(p, user_code, user, request.remote_addr)
        except TooManyRequests as exc:
            return too_many_page(exc, N_("Too many wrong codes. Try again later."))
    try:
        row = p.tickets.scan(row, user)
    except TicketError as exc:
        if user_code is not None and exc.error == "unknown_code":
            return render_template("device.html",
                                   error=describe("No login is waiting for this code.")), 404
        return error_page(exc.error, exc.description, exc.status)
    client = p.db.session.get(Client, row.client_id)
    view = p.tickets.scan_view(row, code, client, phone_ip=request.remote_addr)
    session["confirm_ticket"] = digest(row.id)
    return render_template("confirm.html", view=view, code=code)


@bp.post("/confirm")
def confirm():
    p = parts()
    user = current_user()
    if user is None:
        return redirect(url_for("pages.login", **keep_language()))
    code = request.form.get("user_code", "")
    row, _ = p.tickets.by_code(None, code)
    if row is None or not constant_equals(digest(row.id), session.get("confirm_ticket")):
        return error_page("unknown_code", N_("No login is waiting for this code."), 404)
    try:
        if request.form.get("decision") == "approve":
            p.tickets.approve(row, user, request.form.get("binding_code"))
            outcome = "approved"
        else:
            p.tickets.deny(row, user)
            outcome = "denied"
    except TicketError as exc:
        return error_page(exc.error, exc.description, exc.status)
    session.pop("confirm_ticket", None)
    return render_template("done.html", outcome=outcome)
