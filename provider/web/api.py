"""The JSON endpoints' one blueprint, ``api``.

Its routes are added by the modules of each family: ``discovery.py`` (the discovery document,
JWKS), ``token.py`` (token, revocation, introspection, userinfo), ``tickets.py`` (the web
client's side of the QR and device tickets), ``backchannel.py`` (push login's request, CIBA)
and ``mobile.py`` (the phone's side, its inbox included). ``app.py``
imports them all and registers this blueprint once, so every endpoint keeps its name
``api.<view>`` (``cors.py`` and ``oauth.py`` name some).
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__)
