"""The phone's side of a ticket: scan, approve and deny, and the inbox of push requests, with
the phone app's Bearer token (routes of the ``api`` blueprint, provider/web/api.py).

The work is provider/web/actions.py's; ``qr-oidc serve`` answers these on its event loop
(provider/web/events.py, the inbox's long poll provider/web/inbox.py), and these Flask routes
answer them in the app alone (the inbox at once: a long poll must not hold a thread).
"""

from __future__ import annotations

from flask import request

from qr_oidc.provider.web import actions
from qr_oidc.provider.web.api import bp
from qr_oidc.provider.web.body import body_params
from qr_oidc.provider.web.responses import parts, proof, respond


def _mobile(action: str):
    return respond(actions.mobile(parts(), action, request.headers.get("Authorization"),
                                  lambda: body_params(request), request.remote_addr,
                                  proof()))


@bp.post("/qr/scan")
def scan():
    return _mobile("scan")


@bp.post("/qr/approve")
def approve():
    return _mobile("approve")


@bp.post("/qr/deny")
def deny():
    return _mobile("deny")


@bp.post("/qr/inbox")
def inbox():
    found = actions.inbox(parts(), request.headers.get("Authorization"),
                          lambda: body_params(request), request.remote_addr,
                          parts().settings.long_poll_max, proof())
    return respond(found if isinstance(found, actions.Answer) else found.answer())


@bp.post("/qr/sessions")
def sessions_list():
    """The user's sign-ins, to end one from the phone."""
    return respond(actions.phone_sessions(parts(), request.headers.get("Authorization"),
                                          lambda: body_params(request), proof()))


@bp.post("/qr/sessions/end")
def sessions_end():
    return respond(actions.phone_sessions(parts(), request.headers.get("Authorization"),
                                          lambda: body_params(request), proof(), end=True))
