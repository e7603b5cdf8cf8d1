"""The token endpoint on the event loop (provider/web/events.py): ``POST /token`` with the QR
ticket or the device code grant.

The token core decides (grants/token_core.py; the Authlib grant Flask would call asks the same
core), in a database thread; the client authenticates against a copy of its row at most half a
second old (provider/web/client_cache.py, grants/client_auth.py). Any other grant, or a body this
path does not read, is Flask's.
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error

from qr_oidc.grants import client_auth, dpop
from qr_oidc.grants.dpop import DPoPError, one_proof, values_of
from qr_oidc.grants.token_core import CREDENTIAL
from qr_oidc.provider.metrics import metrics
from qr_oidc.provider.web import actions, cors
from qr_oidc.provider.web.client_cache import ClientCache
from qr_oidc.provider.web.event_request import Request

# a token response's headers, as Authlib writes them (EventApp._send knows the answer by them)
TOKEN_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store",
                 "Pragma": "no-cache"}


class TokenPolls:
    """The QR and device grants' token requests. ``run(request, function)`` runs ``function`` in
    a database thread and makes a failure an answer (``EventApp._db``)."""

    def __init__(self, parts, clients: ClientCache, run):
        self.parts, self.clients, self.run = parts, clients, run
        self.token_url = parts.settings.issuer + "/token"

    @staticmethod
    def ticket_grant(request: Request) -> str | None:
        """The QR or device grant this token request is, or None (another grant, or a body
        this path does not read: Flask answers it)."""
        try:
            grant_type = request.params().get("grant_type")
        except OAuth2Error:
            return None
        return grant_type if grant_type in CREDENTIAL else None

    async def answer(self, request: Request, grant_type: str) -> actions.Answer:
        params = request.params()

        def authenticate():
            return client_auth.authenticate(self.clients.get,
                                           request.headers.get("authorization"), params)

        def poll():
            try:
                jkt = self._proof(request)
                answer = actions.Answer(200, self.parts.core.poll(grant_type, params,
                                                                  authenticate, jkt),
                                        TOKEN_HEADERS)
            except DPoPError as exc:
                answer = actions.oauth_refusal(dpop.oauth_error(exc))
            except OAuth2Error as exc:
                answer = actions.oauth_refusal(exc)
            metrics.token_request(grant_type, "issued" if answer.oauth_error is None
                                  else answer.oauth_error.error)
            origin = request.headers.get("origin")
            if origin:  # who may read it: the origins of the calling client's redirect URIs
                answer.cors = cors.answer_headers(
                    origin, allowed=lambda: self._origin_allowed(request, params, origin))
            return answer

        return await self.run(request, poll)

    def _proof(self, request: Request) -> str | None:
        """The key a DPoP proof of this token request shows (grants/dpop.py), None without one;
        raises DPoPError."""
        header = request.headers.get("dpop")
        if header is None:
            return None
        return self.parts.dpop.check(one_proof(values_of(header)), "POST", self.token_url)

    def _origin_allowed(self, request: Request, params, origin: str) -> bool:
        client_id = client_auth.presented_id(request.headers.get("authorization"), params)
        record = self.clients.get(client_id) if client_auth.usable_id(client_id) else None
        return record is not None and cors.origin_allowed(origin, record.redirect_uris)
