"""RFC 8628 device flow finished in a phone's browser, without the app (issue 3, SPEC.md "Details
that clients rely on"): the QR content (``verification_uri_complete``) opened signed out leads
through the hosted sign-in to the confirmation screen; so does typing the user code at
``verification_uri``. The screen shows the client, the scopes, the requesting IP and user agent,
and approve and cancel of equal weight; what the user picks there is what the device's token poll
gets. ``requests.Session`` plays the phone's browser; the device is plain HTTP.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import jwt
import pytest
import requests

from helpers import DEVICE_GRANT, Provider, login_form

DEVICE_UA = "LivingRoomTV/4.2 (device-flow test)"
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


# -- reading pages as a browser does ---------------------------------------------------------------
class Page(HTMLParser):
    """The forms of a page (action, hidden inputs, radio choices, buttons) and its visible text."""

    def __init__(self, response: requests.Response):
        super().__init__(convert_charrefs=True)
        self.url = response.url
        self.forms: list[dict] = []
        self.text_parts: list[str] = []
        self._form: dict | None = None
        self._button: dict | None = None
        self._skip = 0
        self.feed(response.text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "form":
            self._form = {"action": urljoin(self.url, attrs.get("action") or self.url),
                          "method": (attrs.get("method") or "get").lower(),
                          "inputs": [], "buttons": []}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            self._form["inputs"].append(attrs)
        elif tag == "button":
            self._button = {"tag": tag, "attrs": attrs, "text": "", "form": self._form}
            if self._form is not None:
                self._form["buttons"].append(self._button)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if tag == "form":
            self._form = None
        elif tag == "button":
            self._button = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text_parts.append(data)
        if self._button is not None:
            self._button["text"] += data

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def form_with(self, name: str) -> dict:
        """The one form that has a field or button called ``name``."""
        found = [f for f in self.forms
                 if any(i.get("name") == name for i in f["inputs"])
                 or any(b["attrs"].get("name") == name for b in f["buttons"])]
        assert len(found) == 1, f"expected one form with {name!r} on {self.url}: {self.forms}"
        return found[0]

    def hidden(self, form: dict) -> dict:
        return {i["name"]: i.get("value", "") for i in form["inputs"]
                if i.get("type") == "hidden" and i.get("name")}


def decision_buttons(page: Page) -> tuple[dict, dict, dict]:
    """The confirmation form and its approve and cancel buttons."""
    form = page.form_with("decision")
    buttons = [b for b in form["buttons"] if b["attrs"].get("name") == "decision"]
    approve = [b for b in buttons if b["attrs"].get("value") == "approve"]
    cancel = [b for b in buttons if b["attrs"].get("value") != "approve"]
    assert len(approve) == 1 and len(cancel) == 1, buttons
    return form, approve[0], cancel[0]


def decide(browser: requests.Session, page: Page, which: str, **extra) -> requests.Response:
    """Submit the confirmation form with one of its buttons, as a browser does."""
    form, approve, cancel = decision_buttons(page)
    button = approve if which == "approve" else cancel
    data = {**page.hidden(form), "decision": button["attrs"]["value"], **extra}
    assert form["method"] == "post"
    return browser.post(form["action"], data=data, timeout=10)


# -- the device ------------------------------------------------------------------------------------
def device_authorization(provider: Provider, client: dict, scope: str = "openid profile") -> dict:
    response = requests.post(provider.meta["device_authorization_endpoint"],
                             data={"scope": scope, **_client_id(client)}, auth=_auth(client),
                             headers={"User-Agent": DEVICE_UA}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert USER_CODE.match(body["user_code"]), body
    return body


def device_poll(provider: Provider, client: dict, device: dict) -> requests.Response:
    return requests.post(provider.meta["token_endpoint"], data={
        "grant_type": DEVICE_GRANT, "device_code": device["device_code"], **_client_id(client),
    }, auth=_auth(client), headers={"User-Agent": DEVICE_UA}, timeout=10)


def device_status(provider: Provider, device: dict) -> str:
    """The ticket's state, read without polling the token endpoint (which is throttled)."""
    response = provider.status(device["device_code"])
    assert response.status_code == 200, response.text
    return response.json()["status"]


def _auth(client):
    return (client["client_id"], client["client_secret"]) if client.get("client_secret") else None


def _client_id(client):
    return {} if client.get("client_secret") else {"client_id": client["client_id"]}


def verify_id_token(provider: Provider, token: str, audience: str) -> dict:
    """An independent check (PyJWT) of the ID token against the served JWKS."""
    jwks = requests.get(provider.meta["jwks_uri"], timeout=10).json()
    header = jwt.get_unverified_header(token)
    keys = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert len(keys) == 1
    return jwt.decode(token, jwt.PyJWK(keys[0]).key, algorithms=[header["alg"]],
                      audience=audience, issuer=provider.meta["issuer"])


# -- the phone's browser ---------------------------------------------------------------------------
def sign_in_on_the_way(browser: requests.Session, url: str, username: str, password: str):
    """Open ``url`` signed out: it must lead to the hosted sign-in form; sign in there and follow
    the way back. Returns the page the browser ends on."""
    response = browser.get(url, timeout=10)
    assert response.status_code == 200
    assert urlsplit(response.url).path == "/login", response.url
    form = Page(response).form_with("password")
    names = {i.get("name") for i in form["inputs"]}
    assert {"username", "password", "csrf_token"} <= names
    signed_in = login_form(browser, response, username, password)
    assert signed_in.status_code == 302, signed_in.text
    return browser.get(urljoin(response.url, signed_in.headers["Location"]), timeout=10)


def open_the_qr(browser: requests.Session, provider: Provider, url: str, secret: str,
                username: str = "alice", password: str = "alice-password") -> requests.Response:
    """Open the QR's link ``url`` signed out, sign in on the way, and press Continue on the page
    it shows; opening the link itself changes nothing (``secret`` polls the ticket's status).
    Returns the page Continue leads to."""
    before = provider.status(secret).json()["status"]
    landed = sign_in_on_the_way(browser, url, username, password)
    assert landed.status_code == 200, landed.text
    assert provider.status(secret).json()["status"] == before  # a GET scans nothing
    page = Page(landed)
    form = page.form_with("csrf_token")
    assert form["method"] == "post" and form["action"] == url
    return browser.post(form["action"], data=page.hidden(form), timeout=10)


def assert_confirmation_screen(page: Page, client_name: str, scopes: list[str]):
    text = page.text
    assert client_name in text
    for scope in scopes:
        assert re.search(rf"(?<![\w:]){re.escape(scope)}(?![\w:])", text), (scope, text)
    assert "127.0.0.1" in text  # where the request came from
    assert DEVICE_UA in text  # and what asked
    form, approve, cancel = decision_buttons(page)
    assert page.hidden(form).get("csrf_token")
    # equal weight: the same element, the same type and look; only value (and text) differ
    alike = {"value", "formnovalidate"}
    assert approve["tag"] == cancel["tag"] == "button"
    kinds = {approve["attrs"].get("type", "submit"), cancel["attrs"].get("type", "submit")}
    assert kinds == {"submit"}
    assert ({k: v for k, v in approve["attrs"].items() if k not in alike}
            == {k: v for k, v in cancel["attrs"].items() if k not in alike})
    assert approve["text"].strip() and cancel["text"].strip()


@pytest.fixture(scope="module")
def tv(provider):
    return provider.create_client("--name", "Living-room TV", "--grant-type", DEVICE_GRANT,
                                  "--scope", "openid profile email")


@pytest.fixture(scope="module")
def kiosk(provider):
    return provider.create_client("--name", "Library kiosk", "--public",
                                  "--grant-type", DEVICE_GRANT)


# -- the QR content, opened in a browser -----------------------------------------------------------
def test_the_qr_content_opened_signed_out_leads_through_sign_in_to_the_confirmation_screen(
        provider, tv, alice):
    device = device_authorization(provider, tv, scope="openid profile email")
    assert device["verification_uri_complete"].startswith(provider.meta["issuer"] + "/")
    browser = requests.Session()
    screen = open_the_qr(browser, provider, device["verification_uri_complete"],
                         device["device_code"])
    assert screen.status_code == 200, screen.text
    page = Page(screen)
    assert_confirmation_screen(page, "Living-room TV", ["openid", "profile", "email"])
    assert device["user_code"] in page.text  # to compare with the device's screen
    # showing the screen bound the ticket to the user, like a scan in the app
    status = provider.status(device["device_code"]).json()
    assert status["status"] == "scanned" and status["user"]["name"] == "Alice Liddell"


@pytest.mark.parametrize("which", ["tv", "kiosk"])
def test_approving_in_the_browser_gives_the_device_its_tokens(provider, tv, kiosk, alice, which):
    client = tv if which == "tv" else kiosk
    device = device_authorization(provider, client)
    browser = requests.Session()
    screen = open_the_qr(browser, provider, device["verification_uri_complete"],
                         device["device_code"])
    done = decide(browser, Page(screen), "approve")
    assert done.status_code == 200, done.text
    assert device_status(provider, device) == "approved"

    poll = device_poll(provider, client, device)
    assert poll.status_code == 200, poll.text
    tokens = poll.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid profile"
    claims = verify_id_token(provider, tokens["id_token"], client["client_id"])
    assert claims["sub"] == alice["sub"]
    assert claims["amr"] == ["qr"]
    # the device flow gives its tokens once
    again = device_poll(provider, client, device)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_cancelling_in_the_browser_gives_the_device_access_denied(provider, tv, alice):
    device = device_authorization(provider, tv)
    browser = requests.Session()
    screen = open_the_qr(browser, provider, device["verification_uri_complete"],
                         device["device_code"])
    done = decide(browser, Page(screen), "cancel")
    assert done.status_code == 200, done.text
    assert device_status(provider, device) == "denied"
    poll = device_poll(provider, tv, device)
    assert poll.status_code == 400 and poll.json()["error"] == "access_denied"
    assert "access_token" not in poll.json()


def test_a_second_user_opening_the_same_qr_is_refused(provider, tv, alice, bob):
    device = device_authorization(provider, tv)
    alice_browser = requests.Session()
    open_the_qr(alice_browser, provider, device["verification_uri_complete"],
                device["device_code"])
    bob_browser = requests.Session()
    refused = open_the_qr(bob_browser, provider, device["verification_uri_complete"],
                          device["device_code"], "bob", "bob-password")
    assert refused.status_code == 409
    assert not any(b["attrs"].get("name") == "decision"
                   for f in Page(refused).forms for b in f["buttons"])
    assert device_status(provider, device) == "scanned"


# -- the user code, typed at verification_uri ------------------------------------------------------
def enter_code(browser: requests.Session, provider: Provider, device: dict, typed: str,
               username: str = "alice", password: str = "alice-password") -> requests.Response:
    """Open verification_uri signed out, sign in, type ``typed`` into its form."""
    entry = sign_in_on_the_way(browser, device["verification_uri"], username, password)
    assert entry.status_code == 200, entry.text
    page = Page(entry)
    form = page.form_with("user_code")
    assert page.hidden(form).get("csrf_token")
    assert form["method"] == "post"
    return browser.post(form["action"], data={**page.hidden(form), "user_code": typed},
                        timeout=10)


@pytest.mark.parametrize("spelling", ["lower case without the dash", "lower case", "spaced"])
def test_a_user_code_typed_at_the_verification_uri_leads_to_the_same_screen(provider, tv, alice,
                                                                            spelling):
    device = device_authorization(provider, tv)
    assert device["verification_uri"] == provider.meta["issuer"] + "/device"
    code = device["user_code"]
    typed = {"lower case without the dash": code.replace("-", "").lower(),
             "lower case": code.lower(),
             "spaced": " ".join(code.replace("-", "").lower()[i:i + 4] for i in (0, 4))}[spelling]
    browser = requests.Session()
    screen = enter_code(browser, provider, device, typed)
    assert screen.status_code == 200, screen.text
    page = Page(screen)
    assert_confirmation_screen(page, "Living-room TV", ["openid", "profile"])
    assert decide(browser, page, "approve").status_code == 200
    poll = device_poll(provider, tv, device)
    assert poll.status_code == 200, poll.text
    assert verify_id_token(provider, poll.json()["id_token"], tv["client_id"])["amr"] == ["qr"]


def test_an_unknown_user_code_shows_the_entry_form_again_with_an_error(provider, tv, alice):
    device = device_authorization(provider, tv)
    other = "BCDF-GHJK" if device["user_code"] != "BCDF-GHJK" else "ZXWV-TSRQ"
    browser = requests.Session()
    response = enter_code(browser, provider, device, other)
    assert response.status_code == 404
    page = Page(response)
    page.form_with("user_code")  # typed again, not a dead end
    assert not any(b["attrs"].get("name") == "decision" for f in page.forms for b in f["buttons"])
    assert device_status(provider, device) == "pending"


# -- CSRF ------------------------------------------------------------------------------------------
def foreign_csrf(provider: Provider) -> str:
    """A valid CSRF token, but of another browser's session."""
    login = Page(requests.Session().get(provider.url + "/login", timeout=10))
    return login.hidden(login.form_with("password"))["csrf_token"]


@pytest.mark.parametrize("token", ["missing", "another session's"])
def test_the_code_entry_form_needs_its_csrf_token(provider, tv, alice, token):
    device = device_authorization(provider, tv)
    browser = requests.Session()
    entry = sign_in_on_the_way(browser, device["verification_uri"], "alice", "alice-password")
    form = Page(entry).form_with("user_code")
    data = {"user_code": device["user_code"]}
    if token != "missing":
        data["csrf_token"] = foreign_csrf(provider)
    refused = browser.post(form["action"], data=data, timeout=10)
    assert refused.status_code == 400
    assert device_status(provider, device) == "pending"  # nobody scanned it


@pytest.mark.parametrize("token", ["missing", "another session's"])
def test_the_confirmation_form_needs_its_csrf_token(provider, tv, alice, token):
    device = device_authorization(provider, tv)
    browser = requests.Session()
    screen = open_the_qr(browser, provider, device["verification_uri_complete"],
                         device["device_code"])
    page = Page(screen)
    form, _approve, _cancel = decision_buttons(page)
    data = {**page.hidden(form), "decision": "approve"}
    if token == "missing":
        del data["csrf_token"]
    else:
        data["csrf_token"] = foreign_csrf(provider)
        assert data["csrf_token"] != page.hidden(form)["csrf_token"]
    refused = browser.post(form["action"], data=data, timeout=10)
    assert refused.status_code == 400
    assert device_status(provider, device) == "scanned"  # undecided
    # the real form still works afterwards
    assert decide(browser, page, "approve").status_code == 200
    assert device_status(provider, device) == "approved"


# -- number matching -------------------------------------------------------------------------------
def choices_on(page: Page) -> list[str]:
    form, _approve, _cancel = decision_buttons(page)
    return [i["value"] for i in form["inputs"]
            if i.get("name") == "binding_code" and i.get("type") == "radio"]


@pytest.mark.parametrize("pick", ["right", "wrong"])
def test_a_number_matching_qr_in_the_browser_offers_three_choices(provider, nm_client, alice,
                                                                  pick):
    """A number-matching client's QR opened in a browser: the screen offers three numbers in the
    decision form; the right one approves, a wrong one denies the ticket."""
    ticket = provider.ticket(nm_client, scope="openid profile")
    browser = requests.Session()
    screen = open_the_qr(browser, provider, ticket["qr_content"], ticket["ticket"])
    assert screen.status_code == 200, screen.text
    page = Page(screen)
    choices = choices_on(page)
    assert len(choices) == 3 and len(set(choices)) == 3
    assert all(re.fullmatch(r"[0-9]{2}", c) for c in choices)
    assert ticket["binding_code"] in choices
    chosen = ticket["binding_code"] if pick == "right" else next(
        c for c in choices if c != ticket["binding_code"])
    decide(browser, page, "approve", binding_code=chosen)
    poll = provider.poll(nm_client, ticket["ticket"])
    if pick == "right":
        assert poll.status_code == 200, poll.text
        claims = verify_id_token(provider, poll.json()["id_token"], nm_client["client_id"])
        assert claims["sub"] == alice["sub"] and claims["amr"] == ["qr"]
    else:
        assert poll.status_code == 400 and poll.json()["error"] == "access_denied"


def test_approving_a_number_matching_ticket_without_a_pick_changes_nothing(provider, nm_client,
                                                                           alice):
    ticket = provider.ticket(nm_client, scope="openid profile")
    browser = requests.Session()
    page = Page(open_the_qr(browser, provider, ticket["qr_content"], ticket["ticket"]))
    assert len(choices_on(page)) == 3
    refused = decide(browser, page, "approve")
    assert refused.status_code == 400
    assert provider.status(ticket["ticket"]).json()["status"] == "scanned"
    # cancelling needs no number
    assert decide(browser, page, "cancel").status_code == 200
    assert provider.status(ticket["ticket"]).json()["status"] == "denied"


def test_a_number_matching_device_gets_the_number_to_show(provider, alice):
    """The device is the screen in front of the user: for a number-matching client it must get
    the number the confirmation screen asks for, or nobody could pick it but by luck."""
    bank_tv = provider.create_client("--name", "Bank TV", "--number-matching",
                                     "--grant-type", DEVICE_GRANT)
    device = device_authorization(provider, bank_tv)
    assert re.fullmatch(r"[0-9]{2}", str(device.get("binding_code"))), device
    browser = requests.Session()
    page = Page(open_the_qr(browser, provider, device["verification_uri_complete"],
                            device["device_code"]))
    assert device["binding_code"] in choices_on(page)
    decide(browser, page, "approve", binding_code=device["binding_code"])
    assert device_poll(provider, bank_tv, device).status_code == 200
