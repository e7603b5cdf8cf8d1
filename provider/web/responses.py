"""What the JSON endpoints (the ``api`` blueprint's families) share: the app's parts, the
provider's URLs, and answers in the protocol's format.

Errors are JSON ``{"error", "error_description"}`` with the status SPEC.md names,
``Cache-Control: no-store`` wherever a secret or a ticket's state is in play.
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import Response, current_app, jsonify, request

from qr_oidc.grants.access_tokens import BearerError, Proof
from qr_oidc.grants.dpop import values_of
from qr_oidc.provider.storage.ratelimit import TooManyRequests
from qr_oidc.provider.web import actions

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def parts():
    return current_app.extensions["qr_oidc"]


def url(path: str) -> str:
    return parts().settings.issuer + path


def error(code: str, status: int, description: str, headers: dict | None = None) -> Response:
    response = jsonify(error=code, error_description=description)
    response.status_code = status
    response.headers.update(NO_STORE)
    if headers:
        response.headers.update(headers)
    return response


def too_many(exc: TooManyRequests) -> Response:
    return error("too_many_requests", 429, "Too many requests; try again later.",
                 {"Retry-After": str(exc.retry_after)})


def oauth_error(exc: OAuth2Error) -> Response:
    return parts().server.handle_error_response(None, exc)


def json_response(body: dict, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(NO_STORE)
    return response


def bearer_error(exc: BearerError) -> Response:
    return respond(actions.bearer_error(exc))


def respond(answer: actions.Answer) -> Response:
    """A Flask response for an answer of provider/web/actions.py."""
    if answer.oauth_error is not None:
        return oauth_error(answer.oauth_error)
    response = jsonify(answer.body)
    response.status_code = answer.status
    response.headers.update(answer.headers)
    return response


def proof() -> Proof:
    """What this request offers as a DPoP proof, for the URL the client addressed (the issuer's
    plus the path, whatever proxy is in between)."""
    return Proof(values_of(request.headers.get("DPoP")), request.method, url(request.path))
