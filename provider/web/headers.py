"""Security headers: the one place that says what every answer carries.

Flask's answers get them from one ``after_request`` hook (``init_app``); the answers made before
Flask (the event path, provider/web/events.py; the body limit) take the same list from
``security_headers``. A page that posts on to a client (login, consent) names the client's
redirect origin with ``allow_form_target``; nothing else sets a policy of its own.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import g

JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000"

# what a host may look like in a CSP source: letters, digits, dots, dashes, or an IPv6 literal
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,30}$")


def page_csp(form_targets: tuple[str, ...] = ()) -> str:
    """The pages' policy: only this site's scripts, no framing (the approval screens cannot be
    clickjacked), forms post here, or (login and consent) on to the client's redirect origin,
    which browsers check on the redirects that follow a form post."""
    targets = " ".join(("'self'",) + tuple(form_targets))
    return ("default-src 'self'; script-src 'self'; img-src 'self' data: https:; "
            "style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'; "
            f"form-action {targets}; base-uri 'none'")


def csp_source(uri: str | None) -> str | None:
    """A CSP source for a redirect URI, built from its scheme, host and port only (never its
    userinfo, path or anything that could carry a ``;`` into the policy); None if it has no safe
    one. A native app's private-use scheme becomes ``scheme:``."""
    if not uri:
        return None
    try:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not _SCHEME.match(scheme):
        return None
    if scheme not in ("http", "https"):
        return f"{scheme}:"
    if not host:
        return None
    if ":" in host:  # an IPv6 literal, which urlsplit gives without its brackets
        host = f"[{host}]"
    if not _HOST.match(host):
        return None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def allow_form_target(uri: str | None) -> None:
    """Let this page's forms lead on to ``uri``'s origin (the redirects after a form post)."""
    source = csp_source(uri)
    if source:
        g.qr_oidc_form_targets = (*g.get("qr_oidc_form_targets", ()), source)


def security_headers(mimetype: str | None, secure: bool,
                     form_targets: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The headers every answer of this mimetype carries."""
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
    ]
    if mimetype == "text/html":
        headers.append(("Content-Security-Policy", page_csp(form_targets)))
        headers.append(("Cache-Control", "no-store"))
    else:  # JSON and images: nothing may run, nothing may frame them
        headers.append(("Content-Security-Policy", JSON_CSP))
    if secure:
        headers.append(("Strict-Transport-Security", HSTS))
    return headers


def init_app(app, secure: bool) -> None:
    @app.after_request
    def _security_headers(response):
        targets = g.get("qr_oidc_form_targets", ())
        for name, value in security_headers(response.mimetype, secure, targets):
            response.headers.setdefault(name, value)
        return response
