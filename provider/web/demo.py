"""``qr-oidc demo``: a relying-party page that logs in by QR, and a phone simulator.

Both pages are served by the provider itself (no CDN, usable offline). The demo page is a public
client doing the QR ticket grant with PKCE; the phone page signs in through the hosted login form
and confirms tickets through the browser confirmation screen, as a phone without the app would.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from sqlalchemy import select

from qr_oidc.provider.security import hash_password, new_id
from qr_oidc.provider.storage.models import QR_GRANT_TYPE, Client, User
from qr_oidc.provider.web.pages import current_user

bp = Blueprint("demo", __name__, template_folder="templates")

DEMO_USER = {"username": "demo", "password": "demo-password", "name": "Dana Demo"}
DEMO_CLIENT_ID = "demo-web"


def prepare(app) -> dict:
    """Create the demo user and client once; return how to sign in."""
    parts = app.extensions["qr_oidc"]
    issuer = parts.settings.issuer
    with parts.db.session_factory() as session:
        if session.scalar(select(User.id).where(User.username == DEMO_USER["username"])) is None:
            session.add(User(
                sub=new_id(), username=DEMO_USER["username"],
                password_hash=hash_password(DEMO_USER["password"]), name=DEMO_USER["name"],
                email="dana@example.org", picture=f"{issuer}/static/demo-avatar.svg",
            ))
        if session.get(Client, DEMO_CLIENT_ID) is None:
            session.add(Client(
                client_id=DEMO_CLIENT_ID, name="Demo shop", public=True, first_party=False,
                redirect_uris=[f"{issuer}/demo"], grant_types=[QR_GRANT_TYPE],
                scope="openid profile email", logo_uri=f"{issuer}/static/logo.svg",
            ))
        session.commit()
    return dict(DEMO_USER)


@bp.get("/demo")
def demo_page():
    return render_template("demo.html", client_id=DEMO_CLIENT_ID,
                           issuer=current_app.extensions["qr_oidc"].settings.issuer)


@bp.get("/phone")
def phone_page():
    return render_template("phone.html", user=current_user(),
                           issuer=current_app.extensions["qr_oidc"].settings.issuer)
