"""Grants: one module per grant, plus the shared OpenID extension.

- ``qr_ticket``: the QR ticket grant (and RFC 8628 device code and the CIBA grant, the same
  tickets)
- ``ciba``: push login (OpenID CIBA): the backchannel authentication request
- ``signals``: the confirmation screen's browser and risk hints
- ``authorization_code``: code + PKCE behind the hosted login page
- ``refresh_token``: rotation and reuse detection
- ``tickets``: the ticket state machine both the grants and the mobile endpoints use
- ``token_core``: every rule of a ticket poll and its issuance, for both token paths
- ``openid``: the ID token, for every grant
- ``access_tokens``: the access token made, kept and checked (for every grant and resource)
- ``client_auth``: client authentication, the one function every endpoint and both token paths call

No web framework here: the web layer (provider/web/) calls these; they reach storage
(provider/storage/) and keys, never the other way round (tests/test_layers.py).
"""

from qr_oidc.grants.authorization_code import AuthorizationCodeGrant, CodeChallenge
from qr_oidc.grants.openid import OpenIDCode, OpenIDToken
from qr_oidc.grants.qr_ticket import CibaGrant, DeviceCodeGrant, QRTicketGrant
from qr_oidc.grants.refresh_token import RefreshTokenGrant


def register(server, parts) -> None:
    """Register every grant on Authlib's server, bound to the app's storage and keys."""
    for cls in (QRTicketGrant, DeviceCodeGrant, CibaGrant):
        # the token core adds the ID token itself (grants/token_core.py)
        server.register_grant(type(cls.__name__, (cls,), {"core": parts.core}))
    code = type("AuthorizationCodeGrant", (AuthorizationCodeGrant,), {"parts": parts})
    server.register_grant(
        code, [CodeChallenge(required=True), _bind(OpenIDCode, parts)(require_nonce=False)]
    )
    refresh = type("RefreshTokenGrant", (RefreshTokenGrant,), {"parts": parts})
    server.register_grant(refresh, [_bind(OpenIDToken, parts)()])


def _bind(cls, parts):
    return type(cls.__name__, (cls,), {"parts": parts})
