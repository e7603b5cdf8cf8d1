"""The QR and device tickets, the web client's side (routes of the ``api`` blueprint,
provider/web/api.py): a QR ticket, a device authorization (RFC 8628 over the same tickets), the
ticket's status, and its QR as an image.

Routes stay thin: they parse, call the ticket state machine (``grants.tickets``), and shape the
answer. ``qr-oidc serve`` answers the status on its event loop instead, where it may be a long
poll (provider/web/longpoll.py).
"""

from __future__ import annotations

import io
import ipaddress
import re

import qrcode
import qrcode.image.svg
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from flask import Response, request

from qr_oidc.grants import dpop
from qr_oidc.grants.ciba import NOT_FOR_A_SCREEN
from qr_oidc.grants.dpop import DPoPError, InvalidDPoPProofError, one_proof, values_of
from qr_oidc.provider.storage.models import (
    DEVICE_GRANT_TYPE,
    QR_GRANT_TYPE,
    SCOPE_TOKEN,
    Client,
)
from qr_oidc.provider.storage.ratelimit import TooManyRequests
from qr_oidc.provider.web import actions
from qr_oidc.provider.web.api import bp
from qr_oidc.provider.web.body import body_params
from qr_oidc.provider.web.oauth import authenticated_client
from qr_oidc.provider.web.responses import (
    error,
    json_response,
    oauth_error,
    parts,
    respond,
    too_many,
    url,
)

PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def _requested_scope(client: Client, raw: str | None) -> str:
    scope = raw if raw is not None else "openid"
    scopes = scope_to_list(scope) or []
    if not scopes or not all(SCOPE_TOKEN.match(s) for s in scopes):
        raise InvalidScopeError("The scope is empty or malformed.")
    if not set(scopes) <= set(client.scopes):
        raise InvalidScopeError("The client may not ask for: "
                                + " ".join(sorted(set(scopes) - set(client.scopes))))
    return " ".join(dict.fromkeys(scopes))


def requester(client: Client, data) -> tuple[str | None, str | None, bool]:
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
    if agent is not None and (len(agent) > 512 or NOT_FOR_A_SCREEN.search(agent)):
        raise InvalidRequestError("requester_user_agent must be at most 512 characters, "
                                  "without control characters.")
    return ip, agent or None, True


def _create_ticket(kind: str, grant_type: str):
    client, data = authenticated_client(kind)
    if not client.check_grant_type(grant_type):
        raise UnauthorizedClientError(f"The client may not use grant type {grant_type}.")
    requester_ip, requester_ua, passed = requester(client, data)
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
    dpop_jkt = _ticket_binding(data)
    return client, parts().tickets.create(
        client,
        scope,
        kind=kind,
        nonce=nonce,
        code_challenge=challenge,
        code_challenge_method=method,
        requester_ip=requester_ip,
        requester_ua=requester_ua,
        dpop_jkt=dpop_jkt,
    )


_JKT = re.compile(r"^[A-Za-z0-9_-]{43}$")  # a base64url SHA-256 thumbprint (RFC 7638)


def _ticket_binding(data) -> str | None:
    """The DPoP key a new ticket is bound to: the one its creation request proves (a ``DPoP``
    header), or a ``dpop_jkt`` parameter (as RFC 9449 §10 has for authorization requests); both
    must then agree. Only polls that prove that key redeem the ticket."""
    named = data.get("dpop_jkt") or None
    if named is not None and not _JKT.match(named):
        raise InvalidRequestError("dpop_jkt must be a JWK SHA-256 thumbprint (43 characters).")
    header = one_proof(values_of(request.headers.get("DPoP")))
    if header is None:
        return named
    proved = parts().dpop.check(header, "POST", url(request.path))
    if named is not None and named != proved:
        raise InvalidDPoPProofError("The DPoP proof is not by the key dpop_jkt names.")
    return proved


def qr_content(scan_code: str) -> str:
    return url(f"/s/{scan_code}")


def _new_ticket(kind: str, grant_type: str):
    """(the new ticket, None), or (None, the error response)."""
    try:
        _client, new = _create_ticket(kind, grant_type)
    except DPoPError as exc:
        parts().db.session.rollback()
        return None, oauth_error(dpop.oauth_error(exc))
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
    ``wait`` makes a long poll (provider/web/longpoll.py); here, in the app alone, it answers at
    once with the current status (a long poll must not hold a thread)."""
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
