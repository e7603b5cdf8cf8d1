"""The JSON endpoints: discovery, JWKS, token, userinfo, and the QR ticket endpoints.

Routes stay thin: they parse, call the ticket state machine (``grants.tickets``) or Authlib's
server, and shape the answer. Errors are JSON ``{"error", "error_description"}`` with the status
SPEC.md names, ``Cache-Control: no-store`` wherever a secret or a ticket's state is in play.
"""

from __future__ import annotations

import io
import ipaddress
import re
import time

import qrcode
import qrcode.image.svg
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from flask import Blueprint, Response, current_app, jsonify, request
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from qr_oidc.grants.access_tokens import (
    ACCESS_TOKEN_ALGS,
    BearerError,
    authenticate_bearer,
)
from qr_oidc.grants.openid import user_claims
from qr_oidc.grants.refresh_token import revoke_family
from qr_oidc.provider.audit import discard_after_rollback, flush_after_commit
from qr_oidc.provider.security import digest
from qr_oidc.provider.storage.models import (
    DEVICE_GRANT_TYPE,
    QR_GRANT_TYPE,
    SCOPE_TOKEN,
    Client,
    Token,
    User,
)
from qr_oidc.provider.storage.ratelimit import TooManyRequests
from qr_oidc.provider.web import actions
from qr_oidc.provider.web.body import body_params
from qr_oidc.provider.web.oauth import BodyRequest

bp = Blueprint("api", __name__)

PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
SCOPES_SUPPORTED = ["openid", "profile", "email", "offline_access", "qr:approve"]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def parts():
    return current_app.extensions["qr_oidc"]


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


def url(path: str) -> str:
    return parts().settings.issuer + path


# -- discovery ---------------------------------------------------------------------------------
@bp.get("/.well-known/openid-configuration")
def discovery():
    p = parts()
    algs = p.keys.algorithms()
    body = {
        "issuer": p.settings.issuer,
        "authorization_endpoint": url("/authorize"),
        "token_endpoint": url("/token"),
        "userinfo_endpoint": url("/userinfo"),
        "jwks_uri": url("/jwks.json"),
        "device_authorization_endpoint": url("/device_authorization"),
        "qr_ticket_endpoint": url("/qr/ticket"),
        "qr_status_endpoint": url("/qr/status"),
        "qr_scan_endpoint": url("/qr/scan"),
        "qr_approve_endpoint": url("/qr/approve"),
        "qr_deny_endpoint": url("/qr/deny"),
        "revocation_endpoint": url("/revoke"),
        "introspection_endpoint": url("/introspect"),
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post",
        ],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            DEVICE_GRANT_TYPE,
            QR_GRANT_TYPE,
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none",
        ],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "at_hash",
            "name", "preferred_username", "picture", "email", "email_verified",
        ],
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "claims_parameter_supported": False,
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/jwks.json")
def jwks():
    response = jsonify(parts().keys.jwks())
    # shorter than the time a next key is published before it signs (keys/rotation.py)
    response.headers["Cache-Control"] = f"public, max-age={parts().settings.jwks_max_age}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


# -- token and userinfo --------------------------------------------------------------------------
@bp.post("/token")
def token():
    p = parts()
    try:
        response = p.server.create_token_response()
    except OAuth2Error as exc:  # e.g. a body that is not a form
        response = oauth_error(exc)
    if response.status_code == 200:
        try:
            p.db.session.commit()  # the credential is used up together with the tokens saved
        except SQLAlchemyError:
            p.db.session.rollback()
            discard_after_rollback()
            return error("server_error", 500, "The tokens could not be saved; try again.")
        flush_after_commit()
    else:
        p.db.session.rollback()
        discard_after_rollback()
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo():
    try:
        _claims, row, user = authenticate_bearer(parts(), request.headers.get("Authorization"),
                                                 required_scope="openid")
    except BearerError as exc:
        return bearer_error(exc)
    if user is None:
        return bearer_error(BearerError("invalid_token", 401, "The token names no user."))
    return json_response(user_claims(user, row.scope))


def _find_token(value: str | None, hint: str | None):
    """The token row a presented access token (JWT, by ``jti``) or refresh token (by digest) is."""
    if not isinstance(value, str) or not value or len(value) > 8192:
        return None, None
    session = parts().db.session
    kinds = ["refresh_token", "access_token"]
    if hint == "access_token":
        kinds.reverse()
    for kind in kinds:
        if kind == "refresh_token":
            row = session.scalar(select(Token).where(Token.refresh_token_hash == digest(value)))
        else:
            row = _access_token_row(value)
        if row is not None:
            return row, kind
    return None, None


def _access_token_row(value: str):
    try:
        decoded = jose_jwt.decode(value, parts().keys.public_set(), algorithms=ACCESS_TOKEN_ALGS)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    jti = decoded.claims.get("jti")
    if not isinstance(jti, str):
        return None
    return parts().db.session.query(Token).filter_by(jti=jti).one_or_none()


@bp.post("/revoke")
def revoke():
    """RFC 7009: always 200 for a token that is unknown or not the client's. Revoking an access
    token revokes it alone (its refresh token keeps working); revoking a refresh token revokes
    its grant: every access and refresh token of its family (SPEC.md)."""
    p = parts()
    try:
        client, data = _authenticated_client("revocation")
    except OAuth2Error as exc:
        return oauth_error(exc)
    value = data.get("token")
    if not value:
        return error("invalid_request", 400, "Missing 'token'.")
    row, kind = _find_token(value, data.get("token_type_hint"))
    if row is not None and row.client_id == client.client_id:
        if kind == "refresh_token":
            revoke_family(p.db.session, row.family_id)
        else:
            row.revoked = True
        p.db.session.commit()
    return json_response({})


@bp.post("/introspect")
def introspect():
    """RFC 7662, for confidential clients. Who may introspect what (§4: the server decides):

    - a client, the tokens issued to it;
    - a first-party confidential client (the operator's own resource servers, gateways), any
      token;
    - anything else is ``{"active": false}``, as for an unknown token, so the endpoint tells a
      client nothing about other clients' tokens.

    An active token's answer says only what its scope lets its holder read at userinfo: ``sub``
    always, ``username`` only with ``profile``."""
    p = parts()
    try:
        oauth_request = BodyRequest(request)
        client = p.server.authenticate_client(
            oauth_request, ["client_secret_basic", "client_secret_post"], "introspection")
    except OAuth2Error as exc:
        return oauth_error(exc)
    data = oauth_request.payload.data
    value = data.get("token")
    if not value:
        return error("invalid_request", 400, "Missing 'token'.")
    row, kind = _find_token(value, data.get("token_type_hint"))
    at = time.time()
    if row is None or not (row.client_id == client.client_id or client.first_party):
        return json_response({"active": False})
    if kind == "refresh_token":
        active, expires = row.refresh_status == "active", row.refresh_expires_at
    else:
        active, expires = not row.revoked, row.expires_at
    if not active or (expires is not None and expires <= at):
        return json_response({"active": False})
    user = p.db.session.get(User, row.user_id) if row.user_id else None
    body = {
        "active": True,
        "scope": row.scope,
        "client_id": row.client_id,
        "token_type": "Bearer" if kind == "access_token" else "refresh_token",
        "exp": int(expires) if expires else None,
        "iat": int(row.issued_at),
        "iss": p.settings.issuer,
        "jti": row.jti if kind == "access_token" else None,
    }
    if user is not None:
        body["sub"] = user.sub
        if "profile" in (scope_to_list(row.scope) or []):
            body["username"] = user.username
    return json_response({k: v for k, v in body.items() if v is not None})


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


# -- tickets: the web client's side ----------------------------------------------------------------
def _authenticated_client(endpoint: str):
    """Client authentication as at the token endpoint, from the body (form or JSON)."""
    oauth_request = BodyRequest(request)
    client = parts().server.authenticate_client(
        oauth_request, ["client_secret_basic", "client_secret_post", "none"], endpoint
    )
    return client, oauth_request.payload.data


def _requested_scope(client: Client, raw: str | None) -> str:
    scope = raw if raw is not None else "openid"
    scopes = scope_to_list(scope) or []
    if not scopes or not all(SCOPE_TOKEN.match(s) for s in scopes):
        raise InvalidScopeError("The scope is empty or malformed.")
    if not set(scopes) <= set(client.scopes):
        raise InvalidScopeError("The client may not ask for: "
                                + " ".join(sorted(set(scopes) - set(client.scopes))))
    return " ".join(dict.fromkeys(scopes))


# not shown to a person as they are: C0 and C1 controls, DEL, line and paragraph separators, and
# the bidi controls that could make a user agent read as something else on the phone
_NOT_FOR_A_SCREEN = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _requester(client: Client, data) -> tuple[str | None, str | None, bool]:
    """Who is asking, as the phone will show it: (ip, user agent, whether the client passed
    them). A confidential client's backend passes the person's ``requester_ip`` and
    ``requester_user_agent``; otherwise the requester is the HTTP peer (the address behind
    trusted proxies) and its User-Agent."""
    ip, agent = data.get("requester_ip"), data.get("requester_user_agent")
    if ip is None and agent is None:
        return request.remote_addr, request.headers.get("User-Agent"), False
    if client.public:
        raise InvalidRequestError("requester_ip and requester_user_agent are for confidential "
                                  "clients, which create tickets from their backend.")
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip)) if len(ip) <= 64 else None
        except ValueError:
            ip = None
        if ip is None:
            raise InvalidRequestError("requester_ip must be an IPv4 or IPv6 address.")
    if agent is not None and (len(agent) > 512 or _NOT_FOR_A_SCREEN.search(agent)):
        raise InvalidRequestError("requester_user_agent must be at most 512 characters, "
                                  "without control characters.")
    return ip, agent or None, True


def _create_ticket(kind: str, grant_type: str):
    client, data = _authenticated_client(kind)
    if not client.check_grant_type(grant_type):
        raise UnauthorizedClientError(f"The client may not use grant type {grant_type}.")
    requester_ip, requester_ua, passed = _requester(client, data)
    limiter = parts().limiter
    # one person is limited, not the backend that serves everyone (ratelimit.py)
    if client.public or passed:
        limiter.hit("ticket_ip", requester_ip)
    limiter.hit("ticket_client", client.client_id, limiter.client_limit(client))
    scope = _requested_scope(client, data.get("scope"))
    nonce = data.get("nonce") or None
    if nonce is not None and len(nonce) > 512:
        raise InvalidRequestError("nonce is too long (512 characters at most).")
    challenge = data.get("code_challenge") or None
    method = data.get("code_challenge_method") or None
    if kind == "qr":
        if challenge is None and client.public:
            raise InvalidRequestError("Public clients must send code_challenge (PKCE, S256).")
        if challenge is not None and method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        if challenge is not None and not PKCE_CHALLENGE.match(challenge):
            raise InvalidRequestError("code_challenge is malformed.")
        if method is not None and challenge is None:
            raise InvalidRequestError("code_challenge_method without code_challenge.")
    else:
        challenge = method = None
    return client, parts().tickets.create(
        client,
        scope,
        kind=kind,
        nonce=nonce,
        code_challenge=challenge,
        code_challenge_method=method,
        requester_ip=requester_ip,
        requester_ua=requester_ua,
    )


def qr_content(scan_code: str) -> str:
    return url(f"/s/{scan_code}")


def _new_ticket(kind: str, grant_type: str):
    """(the new ticket, None), or (None, the error response)."""
    try:
        _client, new = _create_ticket(kind, grant_type)
    except OAuth2Error as exc:
        parts().db.session.rollback()
        return None, oauth_error(exc)
    except TooManyRequests as exc:
        return None, too_many(exc)
    return new, None


@bp.post("/qr/ticket")
def create_ticket():
    new, refusal = _new_ticket("qr", QR_GRANT_TYPE)
    if refusal is not None:
        return refusal
    row = new.row
    body = {
        "ticket": new.ticket,
        "qr_content": qr_content(new.scan_code),
        "qr_image": url(f"/qr/{new.scan_code}.png"),
        "user_code": new.user_code,
        "expires_in": int(row.expires_at - row.created_at),
        "interval": row.poll_interval,
    }
    if row.binding_code is not None:
        body["binding_code"] = row.binding_code
    return json_response(body, 201)


@bp.post("/device_authorization")
def device_authorization():
    """RFC 8628 §3.1-3.2 over the same tickets: the device code is the ticket."""
    new, refusal = _new_ticket("device", DEVICE_GRANT_TYPE)
    if refusal is not None:
        return refusal
    row = new.row
    return json_response({
        "device_code": new.ticket,
        "user_code": new.user_code,
        "verification_uri": url("/device"),
        "verification_uri_complete": qr_content(new.scan_code),
        "expires_in": int(row.expires_at - row.created_at),
        "interval": row.poll_interval,
        # number matching: the device shows this beside the user code
        **({"binding_code": row.binding_code} if row.binding_code is not None else {}),
    })


@bp.post("/qr/status")
def ticket_status():
    """Status for the page. ``qr-oidc serve`` answers this endpoint on its event loop, where
    ``wait`` makes a long poll (provider/web/events.py); here, in the app alone, it answers at once
    with the current status (a long poll must not hold a thread)."""
    try:
        data = body_params(request)
    except OAuth2Error as exc:
        return oauth_error(exc)
    asked = actions.status_request(data, parts().settings.long_poll_max)
    if isinstance(asked, actions.Answer):
        return respond(asked)
    return respond(actions.status_answer(actions.read_status(parts(), asked.ticket)))


@bp.get("/qr/<scan_code>.<fmt>")
def qr_image(scan_code: str, fmt: str):
    """The QR as PNG or SVG, addressed by the scan code (which the QR shows anyway)."""
    if fmt not in ("png", "svg"):
        return error("not_found", 404, "Ask for .png or .svg.")
    row, _ = parts().tickets.by_code(scan_code, None)
    status = row.public_status() if row is not None else None
    parts().db.session.rollback()  # no connection is held while the picture is drawn
    if row is None:
        return error("unknown_code", 404, "No ticket has this code.")
    if status != "pending":
        return error("expired", 410, "This QR code is no longer valid.")
    content = qr_content(scan_code)
    buffer = io.BytesIO()
    if fmt == "svg":
        qrcode.make(content, image_factory=qrcode.image.svg.SvgPathImage, box_size=10,
                    border=2).save(buffer)
        mimetype = "image/svg+xml"
    else:
        qrcode.make(content, box_size=8, border=2).save(buffer, format="PNG")
        mimetype = "image/png"
    response = Response(buffer.getvalue(), mimetype=mimetype)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- tickets: the phone's side (the work is provider/web/actions.py's; served on the event loop) -------
def _mobile(action: str):
    return respond(actions.mobile(parts(), action, request.headers.get("Authorization"),
                                  lambda: body_params(request), request.remote_addr))


@bp.post("/qr/scan")
def scan():
    return _mobile("scan")


@bp.post("/qr/approve")
def approve():
    return _mobile("approve")


@bp.post("/qr/deny")
def deny():
    return _mobile("deny")
