"""Authlib's authorization server, wired to our storage, keys and token format.

- Requests to the token endpoint and our JSON endpoints read parameters from the body only (form or
  JSON): no secret travels in a URL, so a ticket in a query string is not even looked at.
- Access tokens are RFC 9068 JWTs signed with the active RS256 key; the row kept per token holds its
  ``jti`` (for revocation) and the SHA-256 digest of its refresh token.
- ``save_token`` adds rows to the request's session and does not commit: the token endpoint commits
  once, after the grant has also marked its credential used.
- ``authenticated_client``: the revocation and ticket endpoints authenticate a client as the token
  endpoint does (grants/client_auth.py), from the body.
"""

from __future__ import annotations

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import (
    FlaskOAuth2Payload,
    FlaskOAuth2Request,
)
from authlib.oauth2 import OAuth2Request
from authlib.oauth2.rfc6749.util import scope_to_list
from flask import current_app, g
from flask import request as flask_request

from qr_oidc.grants import client_auth
from qr_oidc.grants.access_tokens import new_access_token, token_row
from qr_oidc.grants.token_core import check_resource
from qr_oidc.provider.storage.models import Client, Token
from qr_oidc.provider.web.body import body_params

_PENDING = "qr_oidc:pending"  # a generated token's row data, until save_token takes it


class BodyPayload(FlaskOAuth2Payload):
    """Parameters from the request body only: a form, or a JSON object of strings."""

    def __init__(self, request):
        super().__init__(request)
        self._data = body_params(request)

    @property
    def data(self):
        return self._data


class BodyRequest(FlaskOAuth2Request):
    def __init__(self, request):
        super().__init__(request)
        self.payload = BodyPayload(request)

    @property
    def form(self):
        return self.payload.data


# for errors Authlib raises without a text of their own
DESCRIPTIONS = {
    "invalid_grant": "The grant is invalid, expired, revoked, or was issued to another client.",
    "invalid_client": "Client authentication failed.",
    "invalid_scope": "The requested scope is invalid or not allowed for this client.",
    "unauthorized_client": "The client may not use this grant type.",
    "invalid_request": "The request is missing a parameter or is malformed.",
}


def requested_resource() -> str | None:
    """The ``resource`` of a token request (RFC 8707): the access token's ``aud`` if given
    (the token core's rule, ``grants/token_core.check_resource``)."""
    if flask_request.endpoint != "api.token":
        return None
    return check_resource(body_params(flask_request).get("resource"))


def authenticated_client(endpoint: str):
    """Client authentication as at the token endpoint, from the body (form or JSON), for the
    revocation and ticket endpoints: (the client, the body's parameters)."""
    oauth_request = BodyRequest(flask_request)
    client = current_app.extensions["qr_oidc"].server.authenticate_client(
        oauth_request, ["client_secret_basic", "client_secret_post", "none"], endpoint
    )
    return client, oauth_request.payload.data


class Server(AuthorizationServer):
    """The authorization server; ``app.extensions['qr_oidc']`` holds the parts it uses."""

    def __init__(self, app, parts):
        self.parts = parts
        super().__init__()
        self.init_app(app, query_client=self._query_client_impl, save_token=self._save_token_impl)
        self.register_token_generator("default", self._generate_token)

    # -- requests ----------------------------------------------------------------------------
    def create_oauth2_request(self, request):
        if isinstance(request, OAuth2Request):  # an authorization request kept by the provider
            return request
        if flask_request.method == "GET" or flask_request.endpoint == "pages.authorize":
            return FlaskOAuth2Request(flask_request)
        oauth_request = BodyRequest(flask_request)
        # the key the token request's DPoP proof showed (provider/web/token.py checked it)
        oauth_request.dpop_jkt = g.get("dpop_jkt")
        return oauth_request

    def authenticate_client(self, request, methods, endpoint="token"):
        """Every endpoint's client authentication, the event path's too: grants/client_auth.py."""
        client = client_auth.authenticate(self._query_client_impl,
                                         request.headers.get("Authorization"),
                                         request.payload.data, methods)
        request.auth_method = client.auth_method  # (what Authlib's PKCE check reads)
        return client

    def handle_error_response(self, request, error):
        return self.handle_response(*error_triple(error))

    # -- storage -----------------------------------------------------------------------------
    def _query_client_impl(self, client_id):
        if not client_auth.usable_id(client_id):
            return None
        return self.parts.db.session.get(Client, client_id)

    def _generate_token(self, grant_type, client, user=None, scope=None, expires_in=None,
                        include_refresh_token=True):
        token, pending = new_access_token(
            self.parts.settings, self.parts.keys, grant_type=grant_type,
            client_id=client.client_id, sub=user.sub if user else client.client_id, scope=scope,
            aud=requested_resource(), lifetime=expires_in,
            refresh=include_refresh_token and "offline_access" in (scope_to_list(scope) or []),
            jkt=g.get("dpop_jkt"),
        )
        # what save_token stores; it takes it off the token before the response is made
        token[_PENDING] = pending
        return token

    def _save_token_impl(self, token, request):
        pending = token.pop(_PENDING)
        credential = getattr(request, "credential", None) or getattr(
            request, "authorization_code", None
        )
        previous = getattr(request, "refresh_token", None)
        auth_time = credential.get_auth_time() if credential is not None else None
        amr = credential.get_amr()[0] if credential is not None else None
        # a family: every token descended from one grant (a code's family is named in the code)
        family_id = getattr(credential, "family_id", None)
        sid = getattr(credential, "sid", None)
        if previous is not None:
            auth_time, amr, family_id = previous.auth_time, previous.amr, previous.family_id
            sid = previous.sid
        row = Token(**token_row(
            self.parts.settings, pending, client_id=request.client.client_id,
            user_id=request.user.id if request.user else None, scope=token.get("scope", ""),
            family_id=family_id, auth_time=auth_time, amr=amr, sid=sid,
        ))
        self.parts.db.session.add(row)
        return row


def error_triple(error) -> tuple[int, dict, list]:
    """(status, body, headers) of an OAuth error, as Authlib renders it, for Flask's answers
    and the event path's alike: ``invalid_client`` is always 401 here (SPEC.md), with the Basic
    challenge RFC 6749 §5.2 names, and every error has a description."""
    if error.error == "invalid_client":
        error.status_code = 401
    if not error.description:  # some Authlib errors keep their text only in a getter
        error.description = error.get_error_description() or DESCRIPTIONS.get(
            error.error, error.error.replace("_", " ").capitalize() + ".")
    return error()


def issuer() -> str:
    return current_app.extensions["qr_oidc"].settings.issuer
