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

from . import clientauth
from .body import body_params
from .models import Client

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
    return clientauth.presented_id(request.headers.get("Authorization"), params)


def _allowed(origin: str) -> bool:
    client_id = _calling_client_id()
    if not clientauth.usable_id(client_id):
        return False
    client = current_app.extensions["qr_oidc"].db.session.get(Client, client_id)
    if client is None:
        return False
    return origin.lower() in {origin_of(uri) for uri in client.redirect_uris}


def init_app(app) -> None:
    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        endpoint = request.endpoint
        if not origin or endpoint not in CLIENT_ORIGIN_ENDPOINTS | ANY_ORIGIN_ENDPOINTS:
            return response
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "POST"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        elif endpoint in ANY_ORIGIN_ENDPOINTS:
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif _allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        response.headers.add("Vary", "Origin")
        return response
