"""Logout: ending a sign-in, and telling the relying parties of it (OpenID RP-Initiated Logout 1.0,
Back-Channel Logout 1.0).

A *sign-in* is what an ID token's ``sid`` names: a password session at the provider (its public
id, ``browser_sessions.sid``), or one approval on the phone (the ticket's id, for a QR, device,
push or hosted-page QR login). Every token issued from it carries the same ``sid``
(``tokens.sid``: refreshes keep it). Ending one (``Logouts.end``) revokes those tokens, ends the
browser session if it is one, and queues one signed *logout token* for each client that holds
tokens of it and registered a ``backchannel_logout_uri``: posted by the outbox's sender, retried
with backoff (provider/storage/deliveries.py), in the transaction that ended the sign-in.

Who may end one: the browser that is signed in (its own session), a relying party through the
browser with an ``id_token_hint`` it was issued (the sign-in that token names), and the user on
their phone (any of their sign-ins, ``qr_sessions_endpoint``). Framework-free: the web layer
(provider/web/logout.py, the phone's actions) calls this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import and_, case, or_, select, update

from qr_oidc.keys.jws import sign_compact
from qr_oidc.provider.audit import audit
from qr_oidc.provider.security import new_id
from qr_oidc.provider.storage.models import BrowserSession, Client, Token, User

EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TTL = 120
ID_TOKEN_ALGS = ["RS256", "ES256", "EdDSA"]


class LogoutError(Exception):
    """A logout request that cannot be honoured as asked: shown as a page, never redirected."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class Hint:
    """What an ``id_token_hint`` says: its client, user and sign-in (``sid`` may be None)."""

    client: Client
    sub: str
    sid: str | None


class Logouts:
    """One per app (``parts.logouts``)."""

    def __init__(self, settings, keys, db, outbox):
        self.settings, self.keys, self.db, self.outbox = settings, keys, db, outbox

    # -- RP-Initiated Logout's checks ---------------------------------------------------------
    def hint(self, value: str | None, client_id: str | None) -> Hint | None:
        """The ID token a relying party sends back (its signature, issuer and audience; an
        expired one still names its sign-in, RP-Initiated Logout §2); None without one."""
        if not value:
            if client_id:
                client = self.db.session.get(Client, client_id) if len(client_id) <= 64 \
                    else None
                if client is None:
                    raise LogoutError("No such client.")
                return Hint(client, "", None)
            return None
        if len(value) > 8192:
            raise LogoutError("The id_token_hint is not an ID token of this provider.")
        try:
            decoded = jwt.decode(value, self.keys.public_set(), algorithms=ID_TOKEN_ALGS)
        except (JoseError, ValueError, TypeError, KeyError):
            raise LogoutError("The id_token_hint is not an ID token of this provider.") from None
        claims = decoded.claims
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if claims.get("iss") != self.settings.issuer or decoded.header.get("typ") == "at+jwt" \
                or not audiences or not all(isinstance(a, str) for a in audiences):
            raise LogoutError("The id_token_hint is not an ID token of this provider.")
        if client_id and client_id not in audiences:
            raise LogoutError("The id_token_hint was issued to another client.")
        client = self.db.session.get(Client, client_id or audiences[0])
        if client is None:
            raise LogoutError("The id_token_hint's client is not known any more.")
        sid, sub = claims.get("sid"), claims.get("sub")
        return Hint(client, sub if isinstance(sub, str) else "",
                    sid if isinstance(sid, str) and len(sid) <= 32 else None)

    @staticmethod
    def redirect_uri(hint: Hint | None, uri: str | None, state: str | None) -> str | None:
        """Where to send the browser afterwards: ``uri`` if the hint's client registered it
        (exactly), with ``state``; None without one. Never anything else (no open redirect)."""
        if not uri:
            return None
        if hint is None:
            raise LogoutError("post_logout_redirect_uri needs an id_token_hint or client_id.")
        if uri not in (hint.client.post_logout_redirect_uris or []):
            raise LogoutError("The post_logout_redirect_uri is not one registered for this "
                              "client.")
        if state is not None and len(state) > 512:
            raise LogoutError("The state is too long.")
        if not state:
            return uri
        parts = urlsplit(uri)
        query = "&".join(filter(None, [parts.query, urlencode({"state": state})]))
        return parts._replace(query=query).geturl()

    # -- ending a sign-in -----------------------------------------------------------------------
    def end(self, user_id: int, sid: str | None, reason: str) -> list[str]:
        """End the sign-in ``sid`` of ``user_id``: its tokens revoked, its browser session ended,
        and a logout token queued for each of its clients with a back-channel; committed.
        Returns the ids of the clients told. A sign-in already ended ends nothing again."""
        if not sid:
            return []
        session, at = self.db.session, time.time()
        user = session.get(User, user_id)
        if user is None:
            return []
        # (distinct ids, then the rows: PostgreSQL cannot compare JSON columns for DISTINCT)
        client_ids = session.scalars(
            select(Token.client_id).where(Token.sid == sid, Token.user_id == user_id,
                                          self._live(at)).distinct()).all()
        clients = [client for client in (session.get(Client, cid) for cid in sorted(client_ids))
                   if client is not None]
        session.execute(
            update(Token).where(Token.sid == sid, Token.user_id == user_id)
            .values(revoked=True, refresh_status=case(
                (Token.refresh_status.is_(None), None), else_="revoked"))
            .execution_options(synchronize_session=False))
        session.execute(
            update(BrowserSession).where(BrowserSession.sid == sid,
                                         BrowserSession.user_id == user_id,
                                         BrowserSession.ended_at.is_(None))
            .values(ended_at=at).execution_options(synchronize_session=False))
        told = []
        for client in clients:
            if client.backchannel_logout_uri and self.outbox is not None:
                token = self.logout_token(client, user.sub, sid)
                if self.outbox.add(session, "logout", client.backchannel_logout_uri,
                                   {"logout_token": token}):
                    told.append(client.client_id)
        session.commit()
        audit("session.ended", user_id=user_id, sid=sid, reason=reason,
              clients=",".join(c.client_id for c in clients))
        return told

    @staticmethod
    def _live(at: float):
        return or_(and_(Token.revoked.is_(False), Token.expires_at > at),
                   and_(Token.refresh_status == "active", Token.refresh_expires_at > at))

    def logout_token(self, client: Client, sub: str, sid: str) -> str:
        """Back-Channel Logout §2.4: a JWT (``typ: logout+jwt``) signed as the client's ID
        tokens are, naming the user and the sign-in, with the logout event and no nonce."""
        alg = client.id_token_signed_response_alg or self.settings.signing_alg
        key = self.keys.signing_key(alg)
        issued = int(time.time())
        claims = {"iss": self.settings.issuer, "aud": client.client_id, "iat": issued,
                  "exp": issued + LOGOUT_TOKEN_TTL, "jti": new_id(), "sub": sub, "sid": sid,
                  "events": {EVENT: {}}}
        return sign_compact(key, {"alg": alg, "kid": key.kid, "typ": "logout+jwt"}, claims)

    # -- the phone's list ---------------------------------------------------------------------
    def sessions(self, user_id: int) -> list[dict]:
        """The user's sign-ins that still have live tokens or a live browser session, newest
        first: ``sid``, how (``amr``), since when, and the clients holding tokens of it."""
        session, at = self.db.session, time.time()
        rows = session.execute(
            select(Token.sid, Token.amr, Token.issued_at, Client.name, Client.client_id)
            .join(Client, Client.client_id == Token.client_id)
            .where(Token.user_id == user_id, Token.sid.is_not(None), self._live(at))).all()
        found: dict[str, dict] = {}
        for sid, amr, issued_at, name, client_id in rows:
            entry = found.setdefault(sid, {"sid": sid, "amr": amr or "pwd",
                                           "started_at": int(issued_at), "clients": []})
            entry["started_at"] = min(entry["started_at"], int(issued_at))
            if not any(c["client_id"] == client_id for c in entry["clients"]):
                entry["clients"].append({"client_id": client_id, "name": name})
        for record in session.scalars(
                select(BrowserSession).where(BrowserSession.user_id == user_id,
                                             BrowserSession.sid.is_not(None),
                                             BrowserSession.ended_at.is_(None),
                                             BrowserSession.expires_at > at)):
            entry = found.setdefault(record.sid, {"sid": record.sid, "amr": record.amr,
                                                  "started_at": int(record.created_at),
                                                  "clients": []})
            entry["browser"] = True
        return sorted(found.values(), key=lambda e: e["started_at"], reverse=True)
