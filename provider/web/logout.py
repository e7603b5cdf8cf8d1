"""Logout pages of the ``pages`` blueprint (provider/web/pages.py): the end-session endpoint
(OpenID RP-Initiated Logout 1.0), and the provider's own sign-out.

``GET /end_session`` changes nothing: it checks the request (``id_token_hint``,
``post_logout_redirect_uri``, ``state``, ``client_id``) and shows a page with a CSRF-protected
form. With a valid hint, the page's script submits it at once (the relying party asked; without
a script the person presses the button); without one the person confirms. ``POST /end_session``
ends the sign-ins concerned (grants/logout.py: this browser's session, and the one the hint
names, with back-channel logout to their clients) and sends the browser to the registered
``post_logout_redirect_uri`` with ``state``, or shows "signed out". A request that cannot be
honoured (a forged or foreign hint, an unregistered redirect) gets a page, never a redirect.
"""

from __future__ import annotations

from flask import redirect, render_template, request, url_for
from flask_babel import gettext
from sqlalchemy import select

from qr_oidc.grants.logout import LogoutError
from qr_oidc.provider.storage.models import User
from qr_oidc.provider.web import sessions
from qr_oidc.provider.web.headers import allow_form_target
from qr_oidc.provider.web.i18n import keep_language
from qr_oidc.provider.web.pages import bp, error_page, parts

FIELDS = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id", "ui_locales")


def _request_fields() -> dict:
    source = request.form if request.method == "POST" else request.args
    fields = {}
    for name in FIELDS:
        values = source.getlist(name)
        if len(values) > 1:
            raise LogoutError(gettext("'%(name)s' was sent more than once.", name=name))
        if values and values[0] != "":
            if len(values[0]) > 8192 or not values[0].isprintable():
                raise LogoutError(gettext("'%(name)s' is malformed.", name=name))
            fields[name] = values[0]
    return fields


@bp.route("/end_session", methods=["GET", "POST"])
def end_session():
    logouts = parts().logouts
    try:
        fields = _request_fields()
        hint = logouts.hint(fields.get("id_token_hint"), fields.get("client_id"))
        target = logouts.redirect_uri(hint, fields.get("post_logout_redirect_uri"),
                                      fields.get("state"))
    except LogoutError as exc:
        return error_page("invalid_request", exc.description, 400)
    allow_form_target(target)  # (the form's post ends in a redirect there)
    if request.method == "GET":
        return render_template("logout.html", fields=fields, client=hint.client if hint else None,
                               automatic=hint is not None and bool(hint.sub))
    signed_in = sessions.current()
    if signed_in is not None and signed_in.record.sid:
        logouts.end(signed_in.user.id, signed_in.record.sid, "rp-initiated")
    if hint is not None and hint.sid and hint.sub:
        user = parts().db.session.scalar(select(User).where(User.sub == hint.sub))
        if user is not None:
            logouts.end(user.id, hint.sid, "rp-initiated")
    sessions.end()
    if target:
        return redirect(target, code=303)
    return render_template("logged_out.html", client=hint.client if hint else None)


@bp.post("/logout")
def logout():
    """The provider's own sign-out button: this browser's session ends, with back-channel logout
    to the clients that signed in through it."""
    signed_in = sessions.current()
    if signed_in is not None and signed_in.record.sid:
        parts().logouts.end(signed_in.user.id, signed_in.record.sid, "signed-out")
    sessions.end()
    return redirect(url_for("pages.home", **keep_language()))
