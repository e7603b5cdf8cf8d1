"""What operators scrape: ``GET /metrics`` in Prometheus' text format (provider/metrics.py says
what is counted). Off (404) unless ``QR_OIDC_METRICS_TOKEN`` is set; then only
``Authorization: Bearer <that token>`` is answered, compared in constant time, and any other
request gets 401 and nothing else: no metric, no hint of which part was wrong."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request

from qr_oidc.provider.metrics import metrics
from qr_oidc.provider.web.responses import error, parts

bp = Blueprint("operations", __name__)


@bp.get("/metrics")
def scrape():
    token = parts().settings.metrics_token
    if not token:
        return error("not_found", 404, "Metrics are off (QR_OIDC_METRICS_TOKEN).")
    scheme, _, presented = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8", "replace"), token.encode()):
        return error("invalid_token", 401, "Send the metrics token: Authorization: Bearer ...",
                     {"WWW-Authenticate": 'Bearer realm="metrics"'})
    body, content_type = metrics.exposition()
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response
