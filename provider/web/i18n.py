"""The pages' languages (Flask-Babel): which one a request gets, and the catalogs' extra messages.

The language of a page is, in this order: the request's ``ui_locales`` (OIDC Core §3.1.2.1: a
space-separated list of BCP 47 tags, best first), as a query parameter or form field of any page,
or inside the authorization request a page keeps (the hosted login page's and the consent form's
hidden ``request``, the ``next`` of the sign-in form, the request kept with a hosted-page ticket);
then the language the demo pages' switch keeps in the cookie ``qr_oidc_lang`` (static/languages.js);
then the browser's ``Accept-Language``; then English. A tag counts by its primary language
(``fr-CH`` is French, ``zh-CN`` and ``zh-Hans`` Simplified Chinese); an unknown one is skipped.

The catalogs are ``translations/<lang>/LC_MESSAGES/messages.po``, compiled to the ``.mo`` files
shipped beside them (tests/test_languages.py checks that they match). Messages that are not in a
template or a ``gettext`` call of this layer (the descriptions the grants and Authlib give, which
the error page shows) are listed below with ``N_`` so that extraction finds them; the error page
translates a description when the catalog has it and shows it as it is otherwise.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from flask import g, request
from flask_babel import Babel, get_locale, gettext

LANGUAGES = ("en", "zh", "de", "fr", "es", "ja")
DEFAULT = "en"
COOKIE = "qr_oidc_lang"  # the demo's language switch (static/languages.js) keeps its choice here
HTML_LANG = {"zh": "zh-CN"}  # <html lang>: Simplified Chinese as browsers name it


def language_of(tag: object) -> str | None:
    """One of LANGUAGES for a BCP 47 tag, or None."""
    if not isinstance(tag, str) or not tag or len(tag) > 35:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else None


def from_ui_locales(value: object) -> str | None:
    """The first language of a ``ui_locales`` list this provider speaks, or None."""
    if not isinstance(value, str) or len(value) > 200:
        return None
    for tag in value.split():
        found = language_of(tag)
        if found:
            return found
    return None


def _kept_ui_locales() -> str | None:
    """``ui_locales`` of an authorization request this request carries along: a view's (the
    request kept with a ticket), a form's hidden ``request``, a sign-in form's ``next``."""
    kept = g.get("ui_locales")
    if kept:
        return kept
    for value in (request.values.get("request"), request.values.get("next")):
        if isinstance(value, str) and "ui_locales" in value and len(value) <= 16384:
            query = urlsplit(value).query if value.startswith("/") else value
            for key, item in parse_qsl(query, keep_blank_values=True):
                if key == "ui_locales":
                    return item
    return None


def explicit_language() -> str | None:
    """The language ``ui_locales`` asked for (directly or kept with the request), or None."""
    try:
        asked = request.values.get("ui_locales")
    except Exception:  # (a body that cannot be read: the language comes from the headers)
        asked = None
    found = from_ui_locales(asked)
    if found is None:
        try:
            found = from_ui_locales(_kept_ui_locales())
        except Exception:
            found = None
    return found


def choose_locale() -> str:
    """Flask-Babel's locale selector: ``ui_locales``, then ``Accept-Language``, then English."""
    found = explicit_language() or language_of(request.cookies.get(COOKIE))
    if found:
        return found
    for tag, _quality in request.accept_languages:
        found = language_of(tag)
        if found:
            return found
    return DEFAULT


def html_lang() -> str:
    locale = str(get_locale() or DEFAULT)
    return HTML_LANG.get(locale, locale)


def keep_language() -> dict:
    """Query parameters that keep the language ``ui_locales`` chose on a link or redirect."""
    found = explicit_language()
    return {"ui_locales": found} if found else {}


def describe(description: object) -> str:
    """An error description as the page's language says it (as it is if the catalog has none)."""
    if not isinstance(description, str) or not description:
        return ""
    return gettext(description)  # (no variables: the text is never %-formatted)


def init_app(app) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT)
    Babel(app, locale_selector=choose_locale)
    app.jinja_env.globals["html_lang"] = html_lang
    app.jinja_env.globals["kept_language"] = lambda: explicit_language() or ""
    app.jinja_env.globals["keep_language"] = keep_language


def N_(text: str) -> str:
    """Marks a message for extraction (gettext's name); translated where it is shown."""
    return text


# Descriptions from below the web layer (grants, Authlib, Werkzeug) that error pages show.
SHOWN_ON_PAGES = (
    # grants/tickets.py
    N_("No ticket has this code."),
    N_("The ticket is already pending."),
    N_("The ticket is already scanned."),
    N_("The ticket is already approved."),
    N_("The ticket is already denied."),
    N_("The ticket is already redeemed."),
    N_("The ticket is already expired."),
    N_("The ticket has expired."),
    N_("Another user has scanned this ticket."),
    N_("Scan the ticket before deciding."),
    N_("Another user scanned this ticket."),
    N_("Number matching: send binding_code."),
    N_("The number does not match; the login was cancelled."),
    N_("The ticket changed meanwhile."),
    # grants/logout.py
    N_("No such client."),
    N_("The id_token_hint is not an ID token of this provider."),
    N_("The id_token_hint was issued to another client."),
    N_("The id_token_hint's client is not known any more."),
    N_("post_logout_redirect_uri needs an id_token_hint or client_id."),
    N_("The post_logout_redirect_uri is not one registered for this client."),
    N_("The state is too long."),
    # the authorization endpoint's (grants/authorization_code.py, Authlib's)
    N_("The request is not valid."),
    N_("The redirect_uri is not one registered for this client."),
    N_("The client does not exist on this server."),
    N_("Missing 'redirect_uri' in request."),
    # Werkzeug's, and the app's error handlers
    N_("The browser (or proxy) sent a request that this server could not understand."),
    N_("The requested URL was not found on the server. If you entered the URL manually please "
       "check your spelling and try again."),
    N_("The method is not allowed for the requested URL."),
    N_("Body too large."),
    N_("The service is busy; try again shortly."),
    N_("Internal error."),
)
