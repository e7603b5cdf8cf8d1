"""CORS for the endpoints a browser relying party calls directly (the qr-login.js widget).

None of them use cookies, so no credentials are ever allowed. Who may read the answers:
- ``/qr/status``: any origin. It reveals nothing without the ticket, which only its creator has.
- ``/qr/ticket``, ``/token``, ``/device_authorization``, ``/revoke``: only the origins of the
  calling client's registered redirect URIs (Keycloak calls them "web origins"). A page elsewhere
  cannot start a login in a public client's name and read the tokens: a phishing site embedding
  the widget with a bank's client_id gets nothing.
A preflight (for JSON bodies; Flask answers OPTIONS itself) is answered for any origin; the real
answer then decides.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, current_app, request

from qr_oidc.grants import client_auth
from qr_oidc.provider.storage.models import Client
from qr_oidc.provider.web.body import body_params

CLIENT_ORIGIN_ENDPOINTS = {"api.create_ticket", "api.token", "api.device_authorization",
                           "api.revoke"}
ANY_ORIGIN_ENDPOINTS = {"api.ticket_status"}


def origin_of(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}".lower()
    return None


def _calling_client_id() -> str | None:
    try:
        params = body_params(request)
    except Exception:  # an unreadable body: no origin is allowed
        return None
    return client_auth.presented_id(request.headers.get("Authorization"), params)


def origin_allowed(origin: str, redirect_uris) -> bool:
    """Whether ``origin`` is the origin of one of a client's redirect URIs."""
    return origin.lower() in {origin_of(uri) for uri in redirect_uris}


def _allowed(origin: str) -> bool:
    client_id = _calling_client_id()
    if not client_auth.usable_id(client_id):
        return False
    client = current_app.extensions["qr_oidc"].db.session.get(Client, client_id)
    return client is not None and origin_allowed(origin, client.redirect_uris)


def answer_headers(origin: str, *, any_origin: bool = False, preflight: bool = False,
                   allowed=lambda: False) -> list[tuple[str, str]]:
    """The CORS headers of an answer to a request from ``origin``: for a preflight, for an
    endpoint any origin may read, or for one whose client's origins may (``allowed()``).
    Flask's answers and the event path's (provider/web/events.py) both take them from here."""
    headers = []
    if preflight:
        headers += [("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Methods", "POST"),
                    # (a DPoP proof travels in its own header, RFC 9449 §4.1)
                    ("Access-Control-Allow-Headers", "Content-Type, DPoP"),
                    ("Access-Control-Max-Age", "600")]
    elif any_origin:
        headers.append(("Access-Control-Allow-Origin", "*"))
    elif allowed():
        headers += [("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Expose-Headers", "Retry-After, DPoP-Nonce")]
    headers.append(("Vary", "Origin"))
    return headers


def init_app(app) -> None:
    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        endpoint = request.endpoint
        if not origin or endpoint not in CLIENT_ORIGIN_ENDPOINTS | ANY_ORIGIN_ENDPOINTS:
            return response
        for name, value in answer_headers(origin, any_origin=endpoint in ANY_ORIGIN_ENDPOINTS,
                                          preflight=request.method == "OPTIONS",
                                          allowed=lambda: _allowed(origin)):
            if name == "Vary":
                response.headers.add(name, value)
            else:
                response.headers[name] = value
        return response
