"""Client authentication: one function for every endpoint and both token paths.

RFC 6749 §2.3 and OIDC Core §9, as a client registered with a ``token_endpoint_auth_method``
expects them:

- ``client_secret_basic``: ``Authorization: Basic base64(urlencode(id):urlencode(secret))``;
- ``client_secret_post``: ``client_id`` and ``client_secret`` in the body;
- ``none``: ``client_id`` alone (public clients; PKCE protects their grants).

A client must use the method it registered, and only one per request (§2.3: "MUST NOT use more
than one"): a Basic header beside a ``client_secret`` in the body is ``invalid_request``.
Whatever fails (an unknown client, a wrong secret, another method, an unreadable header) is the
same ``invalid_client`` with the same words, so the answer does not tell which ``client_id``
exists. Authlib's server (``provider/web/oauth.py``) and the event path (``provider/web/events.py``)
both call ``authenticate``; the CORS layer reads the calling client's id with ``presented_id``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError

from qr_oidc.provider.security import secret_matches

METHODS = ("client_secret_basic", "client_secret_post", "none")
FAILED = "Client authentication failed."


@dataclass(frozen=True)
class Presented:
    """How a request says who its client is."""

    method: str
    client_id: str
    secret: str | None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(client_id, secret) of an ``Authorization: Basic`` header; None if there is no Basic
    header. Raises InvalidClientError for one that cannot be read."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidClientError(description=FAILED) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise InvalidClientError(description=FAILED)
    return unquote(client_id), unquote(secret)


def presented(authorization: str | None, params: Mapping[str, str]) -> Presented:
    """The one method a request uses. Raises InvalidRequestError for two at once, and
    InvalidClientError when none names a client."""
    basic = parse_basic(authorization)
    # (tested first: a werkzeug MultiDict's miss raises and catches a BadRequestKeyError)
    body_id = params.get("client_id") if "client_id" in params else None
    body_secret = params.get("client_secret") if "client_secret" in params else None
    if basic is not None:
        if body_secret is not None:
            raise InvalidRequestError(
                "Use one client authentication method: the Authorization header or "
                "client_secret in the body, not both.")
        if body_id is not None and body_id != basic[0]:
            raise InvalidRequestError("client_id in the body is not the client of the "
                                      "Authorization header.")
        return Presented("client_secret_basic", basic[0], basic[1])
    if body_secret is not None:
        return Presented("client_secret_post", body_id or "", body_secret)
    if body_id:
        return Presented("none", body_id, None)
    raise InvalidClientError(description=FAILED)


def presented_id(authorization: str | None, params: Mapping[str, str]) -> str | None:
    """The client a request names, unauthenticated (for CORS), or None."""
    try:
        return presented(authorization, params).client_id or None
    except (InvalidClientError, InvalidRequestError):
        return None


def usable_id(client_id) -> bool:
    # (PostgreSQL cannot even compare a text with NUL in it)
    return isinstance(client_id, str) and 0 < len(client_id) <= 64 and "\x00" not in client_id


def authenticate(lookup: Callable[[str], object | None], authorization: str | None,
                 params: Mapping[str, str], allowed=METHODS):
    """The authenticated client (what ``lookup(client_id)`` gives: anything with ``client_id``,
    ``secret_hash`` and ``auth_method``), or InvalidClientError / InvalidRequestError."""
    shown = presented(authorization, params)
    client = lookup(shown.client_id) if usable_id(shown.client_id) else None
    if client is None or shown.method not in allowed or shown.method != client.auth_method:
        raise InvalidClientError(description=FAILED)
    if shown.method != "none" and not secret_matches(shown.secret, client.secret_hash or ""):
        raise InvalidClientError(description=FAILED)
    return client
