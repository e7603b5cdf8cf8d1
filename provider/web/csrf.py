"""CSRF: one check for every HTML form post, before any view runs.

Every page form carries the session's token in a hidden input ``csrf_token`` (templates call
``csrf_token()``); a POST to any route of the HTML blueprints without the token of this browser's
session is refused with an HTML 400 page, whatever the view. No view calls a check of its own, so
a new form cannot forget it. The one route exempt is the authorization endpoint's POST: OIDC Core
§3.1.2.1 lets a relying party's page post an authorization request there from its own site, and
that request changes nothing (it is a GET sent as a form).

The JSON endpoints use no cookies (the token endpoint, the ticket endpoints, the phone's Bearer
endpoints), so a cross-site request carries nothing to abuse there.
"""

from __future__ import annotations

from flask import current_app, render_template, request, session
from flask_babel import gettext
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from qr_oidc.provider.security import constant_equals, new_secret

HTML_BLUEPRINTS = frozenset({"pages", "demo"})
# an authorization request sent as a form (see above); the demo shop's back-channel logout
# endpoint, which the provider's server posts to (it carries a signed logout token, no cookie)
EXEMPT = frozenset({"pages.authorize", "demo.backchannel_logout"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = session["csrf"] = new_secret()
    return token


def is_html_route() -> bool:
    """This request was routed to an HTML page (its errors are pages too), or came to a page's
    address with a method the page does not take."""
    if request.blueprint is not None:
        return request.blueprint in HTML_BLUEPRINTS
    refused = request.routing_exception
    if isinstance(refused, MethodNotAllowed) and refused.valid_methods:
        try:
            endpoint, _args = current_app.url_map.bind_to_environ(request.environ).match(
                method=sorted(refused.valid_methods)[0])
        except HTTPException:
            return False
        return endpoint.partition(".")[0] in HTML_BLUEPRINTS
    return False


def init_app(app) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def _check_csrf():
        if (request.method in SAFE_METHODS or request.routing_exception is not None
                or not is_html_route() or request.endpoint in EXEMPT):
            return None  # (a request no route takes is answered 404 or 405)
        sent = request.form.get("csrf_token")
        if constant_equals(sent, session.get("csrf")):
            return None
        return render_template(
            "error.html", error="invalid_request",
            description=gettext("The form expired or did not come from this site; reload it.")), 400
