"""Discovery: the OpenID Provider configuration document and the JWKS (routes of the ``api``
blueprint, provider/web/api.py). Both are public and cacheable, and readable from any origin."""

from __future__ import annotations

from flask import jsonify

from qr_oidc.grants.ciba import DELIVERY_MODES
from qr_oidc.grants.dpop import ALGORITHMS as DPOP_ALGORITHMS
from qr_oidc.provider.storage.models import CIBA_GRANT_TYPE, DEVICE_GRANT_TYPE, QR_GRANT_TYPE
from qr_oidc.provider.web.api import bp
from qr_oidc.provider.web.responses import parts, url

SCOPES_SUPPORTED = ["openid", "profile", "email", "offline_access", "qr:approve"]


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
        "qr_inbox_endpoint": url("/qr/inbox"),
        "backchannel_authentication_endpoint": url("/backchannel/authenticate"),
        "backchannel_token_delivery_modes_supported": list(DELIVERY_MODES),
        "backchannel_user_code_parameter_supported": False,
        "end_session_endpoint": url("/end_session"),
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "qr_sessions_endpoint": url("/qr/sessions"),
        "qr_end_session_endpoint": url("/qr/sessions/end"),
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
            CIBA_GRANT_TYPE,
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none",
        ],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "at_hash", "sid",
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
