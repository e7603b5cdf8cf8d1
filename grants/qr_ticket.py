"""The QR ticket grant: the web client polls the token endpoint with its ticket.

```
 web client                 qr-oidc                              phone app
 (A) POST qr_ticket_endpoint ------> ticket, qr_content, user_code
                                        (B) scan / approve  <----- Bearer qr:approve
 (C) POST token_endpoint
     grant_type=urn:qr-oidc:params:oauth:grant-type:qr-ticket&ticket=...
 (D)   pending/scanned -> authorization_pending (or slow_down if polled too fast)
       denied -> access_denied; expired -> expired_token
 (E)   approved -> PKCE check -> redeemed exactly once -> access token + ID token
```

Steps (C)-(E) are decided by the token core (``grants/token_core.py``), which the event-driven
hot path calls too: this class is how Authlib's server reaches it when Flask gets the request.
It is Authlib's device-code shape with what that one lacks: the interval is enforced by the
server and kept with the ticket (so it holds across instances), and the credential is consumed
by a conditional UPDATE committed together with the tokens, so of many concurrent polls exactly
one gets tokens. ``DeviceCodeGrant`` is the same grant under the RFC 8628 name: the device code
*is* a ticket.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin

from qr_oidc.grants.token_core import TokensNotSaved, verifier_matches  # noqa: F401 (the grant's errors)
from qr_oidc.provider.storage.models import CIBA_GRANT_TYPE, DEVICE_GRANT_TYPE, QR_GRANT_TYPE


class QRTicketGrant(BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = QR_GRANT_TYPE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    core = None  # the app's TokenCore, set by the app factory

    def validate_token_request(self):
        self._token = self.core.poll(self.GRANT_TYPE, self.request.payload.data,
                                     self.authenticate_token_endpoint_client,
                                     getattr(self.request, "dpop_jkt", None))

    def create_token_response(self):
        return 200, self._token, self.TOKEN_RESPONSE_HEADER


class DeviceCodeGrant(QRTicketGrant):
    """RFC 8628 §3.4:
    ``grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code=...``."""

    GRANT_TYPE = DEVICE_GRANT_TYPE


class CibaGrant(QRTicketGrant):
    """OpenID CIBA Core 1.0 §10.1: ``grant_type=urn:openid:params:grant-type:ciba&auth_req_id=...``
    (the auth_req_id *is* a push request's ticket, grants/ciba.py); confidential clients only."""

    GRANT_TYPE = CIBA_GRANT_TYPE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
