"""Push login's request: the backchannel authentication endpoint (OpenID CIBA Core 1.0 §7), a
route of the ``api`` blueprint (provider/web/api.py).

The relying party's backend authenticates as at the token endpoint and names the user; the rules
are grants/ciba.py's, the push request a ticket (grants/tickets.py). The answer is CIBA §7.3's
``{"auth_req_id", "expires_in", "interval"}`` (with ``binding_code`` for a number-matching
client, which its page shows as it shows a QR ticket's); errors are CIBA §13's, in RFC 6749's
JSON. A client may pass ``requester_ip`` / ``requester_user_agent`` as for a QR ticket, and the
phone shows them.
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error

from qr_oidc.grants.tickets import TooManyOutstanding
from qr_oidc.provider.storage.ratelimit import TooManyRequests
from qr_oidc.provider.web.api import bp
from qr_oidc.provider.web.oauth import authenticated_client
from qr_oidc.provider.web.responses import error, json_response, oauth_error, parts, too_many
from qr_oidc.provider.web.tickets import requester


@bp.post("/backchannel/authenticate")
def backchannel_authentication():
    p = parts()
    try:
        client, data = authenticated_client("backchannel")
        requester_ip, requester_ua, _passed = requester(client, data)
        p.limiter.hit("push_client", client.client_id)
        new = p.push.start(client, data, requester_ip, requester_ua)
    except OAuth2Error as exc:
        p.db.session.rollback()
        return oauth_error(exc)
    except TooManyRequests as exc:
        return too_many(exc)
    except TooManyOutstanding as exc:
        return error("too_many_requests", 429,
                     "The user has too many push requests waiting; try again later.",
                     {"Retry-After": str(exc.retry_after)})
    row = new.row
    body = {
        "auth_req_id": new.ticket,
        "expires_in": int(row.expires_at - row.created_at),
        "interval": row.poll_interval,
    }
    if row.binding_code is not None:
        body["binding_code"] = row.binding_code
    return json_response(body, 200)
