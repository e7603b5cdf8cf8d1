"""The QR login as people see it, in headless Chromium (Debian's, driven by Playwright).

`qr-oidc demo` runs as a real process with its own SQLite database. One browser context is the
computer (the demo relying-party page, or a relying party's hosted login page), another is the
phone (the phone simulator page: sign in, scan by pasting the QR content or by picking a picture of
the QR, approve or cancel on the confirmation screen). The QR shown on the computer is decoded with
zxing-cpp from a screenshot, as a phone camera would. Screenshots of each state go to
tests/artifacts/ (the docs show the best of them).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import secrets
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
import zxingcpp
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from helpers import BIN, free_port, pkce

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP = {"width": 1000, "height": 820}
PHONE = {"width": 390, "height": 844}
WAIT = 20_000  # ms: how long an expectation may take to come true (a long poll answers at once)
expect.set_options(timeout=WAIT)


class Demo:
    """One `qr-oidc demo` process on a free port, with its own database."""

    def __init__(self, folder: Path, env: dict | None = None):
        self.folder = Path(folder)
        self.port = free_port()
        self.env = {**os.environ,
                    "QR_OIDC_DATABASE_URL": f"sqlite:///{self.folder / 'demo.db'}",
                    "QR_OIDC_LOG_LEVEL": "info", **(env or {})}
        for name in ("QR_OIDC_ISSUER", "QR_OIDC_HOST", "QR_OIDC_PORT"):
            self.env.pop(name, None)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.out_path = self.folder / "demo.out"
        self.log_path = self.folder / "demo.log"
        self._out = open(self.out_path, "wb")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BIN, "demo", "--port", str(self.port)], env=self.env,
                                     stdout=self._out, stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qr-oidc demo exited {self.proc.returncode}:\n{self.log()}")
            lines = dict(line.split(": ", 1) for line in
                         self.out_path.read_text().splitlines() if ": " in line)
            if "demo" in lines and "phone" in lines:
                try:
                    if requests.get(self.url + "/.well-known/openid-configuration", timeout=1).ok:
                        self.demo_url, self.phone_url = lines["demo"], lines["phone"]
                        return
                except requests.ConnectionError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"qr-oidc demo did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str) -> str:
        result = subprocess.run([BIN, *args], env=self.env, capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    server = Demo(tmp_path_factory.mktemp("demo"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory):
    """Tickets live 3 seconds: the widget has to renew its QR by itself."""
    server = Demo(tmp_path_factory.mktemp("short-demo"), {"QR_OIDC_TICKET_TTL": "3"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Contexts:
    """Browser contexts of one test; every request they make is recorded."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.requests: list[tuple[str, str]] = []
        self.page_errors: list[str] = []

    def page(self, viewport: dict):
        context = self.browser.new_context(viewport=viewport)
        context.set_default_timeout(WAIT)
        context.on("request", lambda r: self.requests.append((r.resource_type, r.url)))
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        return page

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def contexts(browser, demo):
    made = Contexts(browser)
    yield made
    made.close()
    # everything comes from the provider itself: no CDN, no web font, and no script error
    foreign = [url for _kind, url in made.requests
               if not url.startswith(("http://127.0.0.1:", "data:"))]
    assert not foreign, foreign
    assert not [url for kind, url in made.requests if kind == "font"]
    assert not made.page_errors


def shot(page, name: str) -> None:
    """The page's card (what a person looks at), saved to tests/artifacts/NAME.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    card = page.locator("main.card")
    target = card if card.count() == 1 else page
    target.screenshot(path=str(ARTIFACTS / f"{name}.png"), animations="disabled")


def events_arrive(page, done) -> None:
    """Let the browser's events reach their Python handlers until done() (or WAIT passed)."""
    deadline = time.monotonic() + WAIT / 1000
    while not done() and time.monotonic() < deadline:
        page.wait_for_timeout(100)


def decode(png: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def shown_qr(page, root: str = "") -> tuple[str, bytes]:
    """The QR the widget shows, as a camera sees it: a screenshot of it, decoded."""
    qr = page.locator(f"{root} .qrl[data-state=pending] img.qrl-qr")
    expect(qr).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=qr.element_handle())
    png = qr.screenshot()
    texts = decode(png)
    assert len(texts) == 1, "exactly one QR code on screen"
    return texts[0], png


def open_demo(page, demo) -> dict:
    """Open the demo page; returns the ticket the widget made (as the /qr/ticket answer)."""
    with page.expect_response(lambda r: r.url.endswith("/qr/ticket")) as created:
        page.goto(demo.demo_url)
    assert created.value.status == 201
    return created.value.json()


def phone_signs_in(phone, demo) -> None:
    phone.goto(demo.phone_url)
    phone.get_by_role("link", name="Sign in").click()
    phone.get_by_label("Username", exact=True).fill("demo")
    phone.get_by_label("Password", exact=True).fill("demo-password")
    phone.get_by_role("button", name="Sign in").click()
    expect(phone.locator("#phone-user")).to_contain_text("Signed in as Dana Demo")
    # the app's token (authorization code with PKCE, a navigation there and back) is in, and
    # the inbox has answered once
    expect(phone.locator("#phone-inbox")).to_have_attribute("data-state", "ready")
    phone.wait_for_load_state("load")  # phone.js and the QR decoder are ready


def phone_pastes(phone, content: str) -> None:
    phone.get_by_label("Paste the QR content").fill(content)
    phone.get_by_role("button", name="Scan").click()
    phone_continues(phone)


def phone_continues(phone) -> None:
    """The QR's link opens a page that changes nothing until the person presses Continue."""
    expect(phone.get_by_role("heading", level=1)).to_contain_text("Continue signing in to")
    phone.get_by_role("button", name="Continue").click()
    expect(phone.get_by_role("heading", level=1)).to_contain_text("Sign in to")


def widget_state(page, state: str, root: str = ""):
    widget = page.locator(f"{root} .qrl")
    expect(widget).to_have_attribute("data-state", state)
    return widget


# -- the demo relying party ---------------------------------------------------------------------
def test_demo_qr_scanned_by_pasting_its_content_signs_in_with_a_verified_id_token(contexts, demo):
    computer = contexts.page(DESKTOP)
    tokens: list[dict] = []
    computer.on("response", lambda r: tokens.append(r.json())
                if r.url.endswith("/token") and r.status == 200 else None)
    ticket = open_demo(computer, demo)

    # the QR on screen is the ticket's QR content; the code for typing and the alt text are there
    content, _png = shown_qr(computer)
    assert content == ticket["qr_content"]
    assert content.startswith(demo.url + "/s/") and ticket["ticket"] not in content
    expect(computer.locator(".qrl-user-code")).to_have_text(ticket["user_code"])
    alt = computer.locator("img.qrl-qr").get_attribute("alt")
    assert "QR code" in alt and ticket["user_code"] in alt
    status = computer.locator(".qrl-status")
    assert status.get_attribute("role") == "status"
    assert status.get_attribute("aria-live") == "polite"
    expect(status).to_have_text("Scan the QR code with the app to log in.")
    shot(computer, "demo-1-pending")

    # the phone signs in, "scans" by pasting what the camera read, and sees who asks for what
    phone = contexts.page(PHONE)
    phone_signs_in(phone, demo)
    shot(phone, "phone-1-signed-in")
    phone_pastes(phone, content)
    expect(phone.get_by_role("heading", level=1)).to_have_text("Sign in to Demo shop?")
    details = phone.locator("dl")
    expect(details).to_contain_text("openid, profile, email")
    expect(details).to_contain_text("127.0.0.1")
    expect(details).to_contain_text("Chrome")  # the computer's browser, from its User-Agent
    expect(details).to_contain_text(ticket["user_code"])
    shot(phone, "phone-2-confirm")

    # the computer learned of the scan: the user's avatar and name over the QR
    widget_state(computer, "scanned")
    expect(computer.locator(".qrl-name")).to_have_text("Dana Demo")
    avatar = computer.locator("img.qrl-avatar")
    expect(avatar).to_be_visible()
    assert avatar.get_attribute("src") == demo.url + "/static/demo-avatar.svg"
    computer.wait_for_function("img => img.complete && img.naturalWidth > 0",
                               arg=avatar.element_handle())
    expect(computer.locator(".qrl-status")).to_have_text(
        "Dana Demo scanned the code. Confirm on the phone.")
    assert decode(computer.locator("img.qrl-qr").screenshot()) == []  # blurred: not scannable again
    shot(computer, "demo-2-scanned")

    phone.get_by_role("button", name="Approve").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("Signed in")
    shot(phone, "phone-3-approved")

    # the computer is signed in, with the name taken from the ID token it verified
    expect(computer.locator("#demo-signed-in")).to_be_visible()
    expect(computer.locator("#demo-name")).to_have_text("Dana Demo")
    expect(computer.locator("#demo-email")).to_have_text("dana@example.org")
    expect(computer.locator("#demo-amr")).to_have_text("QR code, approved on the phone")
    expect(computer.locator("#demo-verified")).to_contain_text("signature verified")
    expect(computer.locator("#demo-welcome")).to_be_focused()
    expect(computer.locator("#demo-signed-out")).to_be_hidden()
    callbacks = computer.locator("#demo-events li").evaluate_all(
        "items => items.map(i => i.dataset.callback)")
    assert callbacks == ["onScanned", "onSuccess"]
    shot(computer, "demo-3-signed-in")

    # the ID token the page got is genuine, and the page's check rejects a forged one
    events_arrive(computer, lambda: tokens)
    assert len(tokens) == 1
    id_token = tokens[0]["id_token"]
    claims = jwt.decode(id_token, options={"verify_signature": False})
    assert claims["name"] == "Dana Demo" and claims["amr"] == ["qr"]
    assert claims["aud"] == "demo-web" and claims["iss"] == demo.url
    header, _payload, signature = id_token.split(".")
    forged_claims = {**claims, "name": "Mallory"}
    forged = ".".join([header, base64.urlsafe_b64encode(json.dumps(forged_claims).encode())
                       .rstrip(b"=").decode(), signature])
    check = """async ([token, issuer]) => {
        try { return (await QrLogin.verifyIdToken(token, {issuer, clientId: "demo-web"})).name; }
        catch (e) { return "rejected: " + e.description; } }"""
    assert computer.evaluate(check, [id_token, demo.url]) == "Dana Demo"
    assert computer.evaluate(check, [forged, demo.url]) == "rejected: bad signature"
    other_client = computer.evaluate(check.replace('"demo-web"', '"someone-else"'),
                                     [id_token, demo.url])
    assert other_client == "rejected: not for this client"

    # signing out goes through the provider's end-session page and back, and the provider's
    # back-channel logout reaches the demo shop's server for this very sign-in; a fresh QR again
    computer.get_by_role("button", name="Sign out").click()
    expect(computer.locator("#demo-logout")).to_have_text(
        "Signed out. The provider's back-channel logout reached the shop's server for this "
        "sign-in.", timeout=20_000)
    assert urlsplit(computer.url).path == "/demo"
    assert parse_qs(urlsplit(computer.url).query)["state"]
    widget_state(computer, "pending")
    again, _ = shown_qr(computer)
    assert again != content
    # and the sign-in's tokens are revoked
    access = jwt.decode(tokens[0]["access_token"], options={"verify_signature": False})
    assert demo_db(demo, "SELECT revoked FROM tokens WHERE jti = ?", access["jti"]) == [(1,)]


def test_phone_scans_a_picked_picture_of_the_qr(contexts, demo, tmp_path):
    computer = contexts.page(DESKTOP)
    ticket = open_demo(computer, demo)
    content, png = shown_qr(computer)
    assert content == ticket["qr_content"]
    picture = tmp_path / "qr-photo.png"
    # a "photo": the QR screenshot on a larger grey background, as a camera would frame it
    qr = Image.open(io.BytesIO(png)).convert("RGB")
    photo = Image.new("RGB", (qr.width * 3, qr.height * 2), (200, 203, 208))
    photo.paste(qr, (qr.width, qr.height // 2))
    photo.save(picture)
    blank = tmp_path / "no-qr.png"
    Image.new("RGB", (300, 200), (255, 255, 255)).save(blank)

    phone = contexts.page(PHONE)
    phone_signs_in(phone, demo)
    # a picture without a QR code, and a QR code of another site, are refused in the page
    phone.get_by_label("Or pick a picture of the QR code").set_input_files(str(blank))
    expect(phone.locator("#phone-message")).to_have_text(
        "No QR code found in that picture. Try a sharper one.")
    phone_url = phone.url
    phone.get_by_label("Paste the QR content").fill("https://elsewhere.example/s/abc")
    phone.get_by_role("button", name="Scan").click()
    expect(phone.locator("#phone-message")).to_have_text(
        "That is not a QR code of this sign-in service.")
    assert phone.url == phone_url
    shot(phone, "phone-0-not-a-qr")

    phone.get_by_label("Or pick a picture of the QR code").set_input_files(str(picture))
    expect(phone.get_by_role("heading", level=1)).to_have_text(
        "Continue signing in to Demo shop?")
    assert phone.url == content  # what the page decoded from the picture
    widget_state(computer, "pending")  # opening the link scanned nothing
    phone_continues(phone)
    expect(phone.get_by_role("heading", level=1)).to_have_text("Sign in to Demo shop?")
    widget_state(computer, "scanned")
    phone.get_by_role("button", name="Approve").click()
    expect(computer.locator("#demo-name")).to_have_text("Dana Demo")


def test_cancel_on_the_phone_and_a_new_qr_by_keyboard(contexts, demo):
    computer = contexts.page(DESKTOP)
    open_demo(computer, demo)
    content, _ = shown_qr(computer)
    phone = contexts.page(PHONE)
    phone_signs_in(phone, demo)
    phone_pastes(phone, content)
    widget_state(computer, "scanned")
    phone.get_by_role("button", name="Cancel").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("Cancelled")

    widget_state(computer, "denied")
    expect(computer.locator(".qrl-status")).to_have_text("Cancelled on the phone.")
    renew = computer.get_by_role("button", name="Show a new QR code")
    expect(renew).to_be_visible()
    expect(computer.locator(".qrl-code")).to_be_hidden()  # that code is no use any more
    expect(computer.locator("#demo-signed-in")).to_be_hidden()
    expect(computer.locator("#demo-events li[data-callback=onCancel]")).to_have_count(1)
    shot(computer, "demo-4-cancelled")

    # keyboard only: Tab to the button, Enter gives a new QR for a new ticket
    with computer.expect_response(lambda r: r.url.endswith("/qr/ticket")) as created:
        for _ in range(10):
            computer.keyboard.press("Tab")
            if renew.evaluate("b => b === document.activeElement"):
                break
        expect(renew).to_be_focused()
        computer.keyboard.press("Enter")
    fresh, _ = shown_qr(computer)
    assert fresh == created.value.json()["qr_content"] != content
    expect(computer.locator(".qrl-status")).to_have_text("Scan the QR code with the app to log in.")


def test_an_expired_qr_is_renewed_by_itself(browser, short_demo):
    made = Contexts(browser)
    try:
        computer = made.page(DESKTOP)
        tickets: list[dict] = []
        computer.on("response", lambda r: tickets.append(r.json())
                    if r.url.endswith("/qr/ticket") and r.status == 201 else None)
        computer.goto(short_demo.demo_url)
        expect(computer.locator("#demo-events li[data-callback=onExpired]").first).to_be_attached()
        expect(computer.locator(".qrl-status")).to_have_text(
            "The QR code expired. Here is a new one.")
        events_arrive(computer, lambda: len(tickets) >= 2)
        assert len(tickets) >= 2
        # the QR on screen now is one of the renewed tickets, never the first one
        for _attempt in range(5):
            try:
                content, _ = shown_qr(computer)
            except AssertionError:  # it expired again while being read: read the next one
                continue
            break
        renewed = [t["qr_content"] for t in tickets[1:]]
        assert content in renewed and content != tickets[0]["qr_content"]
        shot(computer, "demo-5-renewed")
        assert not made.page_errors
    finally:
        made.close()


def test_demo_page_is_readable_at_phone_width(contexts, demo):
    page = contexts.page(PHONE)
    open_demo(page, demo)
    content, _ = shown_qr(page)
    assert content.startswith(demo.url + "/s/")
    frame = page.locator(".qrl-frame").bounding_box()
    assert frame["x"] >= 0 and frame["x"] + frame["width"] <= PHONE["width"]
    assert frame["width"] >= 200  # big enough to scan from another phone
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "demo-6-phone-width")


# -- the hosted login page (any relying party, authorization code flow) ----------------------------
class Callback(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<!doctype html><title>relying party</title><p>back at the relying party</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def relying_party(demo):
    """A confidential client with number matching, and its loopback redirect target."""
    client = json.loads(demo.cli("clients", "create", "--name", "Loopback shop",
                                 "--number-matching", "--redirect-uri", "http://127.0.0.1/callback",
                                 "--grant-type", "authorization_code", "--json"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client["redirect_uri"] = f"http://127.0.0.1:{server.server_address[1]}/callback"
    yield client
    server.shutdown()
    server.server_close()


def start_hosted_login(page, demo, client) -> dict:
    verifier, challenge = pkce()
    flow = {"state": secrets.token_hex(8), "nonce": secrets.token_hex(8), "verifier": verifier}
    page.goto(demo.url + "/authorize?" + urlencode({
        "response_type": "code", "client_id": client["client_id"],
        "redirect_uri": client["redirect_uri"], "scope": "openid profile",
        "state": flow["state"], "nonce": flow["nonce"],
        "code_challenge": challenge, "code_challenge_method": "S256",
    }))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Loopback shop")
    # the password form beside the QR
    expect(page.get_by_label("Username", exact=True)).to_be_visible()
    widget_state(page, "pending", "#hosted-qr")
    return flow


def test_hosted_login_continues_by_itself_when_the_phone_approves(contexts, demo, relying_party):
    computer = contexts.page(DESKTOP)
    flow = start_hosted_login(computer, demo, relying_party)
    content, _ = shown_qr(computer, "#hosted-qr")
    assert content.startswith(demo.url + "/s/")
    number = computer.locator("#hosted-qr .qrl-binding-code").inner_text()
    assert re.fullmatch(r"\d\d", number)
    expect(computer.locator("#hosted-qr .qrl-binding")).to_have_text(
        f"When the app asks, pick {number}")
    shot(computer, "hosted-1-pending")

    phone = contexts.page(PHONE)
    phone_signs_in(phone, demo)
    phone_pastes(phone, content)
    expect(phone.get_by_role("heading", level=1)).to_have_text("Sign in to Loopback shop?")
    choices = phone.locator("input[name=binding_code]")
    expect(choices).to_have_count(3)
    assert number in choices.evaluate_all("inputs => inputs.map(i => i.value)")
    widget_state(computer, "scanned", "#hosted-qr")
    expect(computer.locator("#hosted-qr .qrl-name")).to_have_text("Dana Demo")
    expect(computer.locator("#hosted-qr img.qrl-avatar")).to_be_visible()
    expect(computer.locator("#hosted-qr .qrl-binding")).to_have_text(f"On the phone, pick {number}")
    shot(computer, "hosted-2-scanned")
    shot(phone, "phone-4-binding-choices")

    phone.get_by_label(number, exact=True).check()
    phone.get_by_role("button", name="Approve").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("Signed in")

    # no click on the computer: it arrives at the relying party with a code
    computer.wait_for_url(re.compile(re.escape(relying_party["redirect_uri"]) + r"\?"))
    query = {k: v[0] for k, v in parse_qs(urlsplit(computer.url).query).items()}
    assert query["state"] == flow["state"] and "error" not in query
    expect(computer.locator("body")).to_contain_text("back at the relying party")
    tokens = requests.post(demo.url + "/token", data={
        "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": relying_party["redirect_uri"], "code_verifier": flow["verifier"],
    }, auth=(relying_party["client_id"], relying_party["client_secret"]), timeout=30)
    assert tokens.status_code == 200, tokens.text
    claims = jwt.decode(tokens.json()["id_token"], options={"verify_signature": False})
    assert claims["amr"] == ["qr"] and claims["name"] == "Dana Demo"
    assert claims["nonce"] == flow["nonce"] and claims["aud"] == relying_party["client_id"]


def test_hosted_login_cancelled_on_the_phone_returns_access_denied(contexts, demo, relying_party):
    computer = contexts.page(DESKTOP)
    flow = start_hosted_login(computer, demo, relying_party)
    content, _ = shown_qr(computer, "#hosted-qr")
    phone = contexts.page(PHONE)
    phone_signs_in(phone, demo)
    phone_pastes(phone, content)
    widget_state(computer, "scanned", "#hosted-qr")
    phone.get_by_role("button", name="Cancel").click()
    computer.wait_for_url(re.compile(re.escape(relying_party["redirect_uri"]) + r"\?"))
    query = {k: v[0] for k, v in parse_qs(urlsplit(computer.url).query).items()}
    assert query["error"] == "access_denied" and query["state"] == flow["state"]
    assert "code" not in query



# -- push login (CIBA): the demo shop's server asks, the phone's inbox shows it live -------------
PUSH_MESSAGE = "Demo shop: sign in at the counter?"


def risk_texts(risk: dict) -> list[str]:
    """The hints as the phone words them, from the inbox answer's ``risk``."""
    texts = ["Same network as this phone" if risk["same_network"]
             else "Not on this phone's network"]
    if risk["first_time"]:
        texts.append("First request from this browser and address")
    if risk["recent_denials"]:
        n = risk["recent_denials"]
        texts.append(f"You declined {n} request{'s' if n != 1 else ''} in the last 24 hours")
    return texts


def phone_with_inbox(contexts, demo):
    """The phone signed in, its inbox empty; returns the page and what /qr/inbox answered."""
    phone = contexts.page(PHONE)
    inbox: list[dict] = []
    phone.on("response", lambda r: inbox.append(r.json())
             if r.url.endswith("/qr/inbox") and r.status == 200 else None)
    phone_signs_in(phone, demo)
    assert phone.url == demo.phone_url  # the authorization code left the address bar
    expect(phone.locator("#inbox-status")).to_have_text(
        "No requests right now. New ones appear here as they arrive.")
    expect(phone.locator(".push-request")).to_have_count(0)
    return phone, inbox


def computer_sends_push(contexts, demo):
    """The demo page with "Send a push login to demo" pressed; returns the page and the JSON
    bodies of its /demo/push calls."""
    computer = contexts.page(DESKTOP)
    answers: list[dict] = []
    computer.on("response", lambda r: answers.append(r.json())
                if "/demo/push" in r.url else None)
    open_demo(computer, demo)
    computer.get_by_role("button", name="Send a push login to demo").click()
    expect(computer.locator("#demo-push-status")).to_have_text(
        "Waiting for approval on the phone…")
    expect(computer.locator("#demo-push-binding")).to_have_text(
        f"The phone shows: “{PUSH_MESSAGE}”")
    events_arrive(computer, lambda: answers)
    started = answers[0]
    # the page holds a handle; the auth_req_id stays with the shop's server
    assert set(started) == {"handle", "expires_in", "interval", "binding_message"}
    assert started["binding_message"] == PUSH_MESSAGE and started["expires_in"] > 0
    return computer, answers


def test_push_login_arrives_live_on_the_phone_and_signs_the_demo_page_in(contexts, demo):
    phone, inbox = phone_with_inbox(contexts, demo)
    saved = phone.evaluate("() => JSON.parse(sessionStorage.getItem('qr-oidc-demo-phone:token'))")
    assert phone.evaluate("() => localStorage.length") == 0  # the token is this tab's only
    token_claims = jwt.decode(saved["token"], options={"verify_signature": False})
    assert "qr:approve" in token_claims["scope"].split()
    assert token_claims["client_id"] == "demo-phone"
    navigations: list[str] = []
    phone.on("framenavigated", lambda frame: navigations.append(frame.url))

    computer, answers = computer_sends_push(contexts, demo)
    shot(computer, "push-demo-waiting")

    # the request arrives on the phone by itself, with who asks, for what, and the hints
    request = phone.locator(".push-request")
    expect(request).to_have_count(1)
    expect(request.get_by_role("heading", level=3)).to_have_text(
        "Sign in to Demo shop (push)?")
    expect(request.locator(".push-binding")).to_have_text(f"“{PUSH_MESSAGE}”")
    expect(request.locator("dl")).to_contain_text("openid, profile, email")
    expect(request.locator("dl")).to_contain_text("127.0.0.1")
    expect(request.locator("dl")).to_contain_text("Chrome")  # the computer's browser
    expect(request.locator(".push-expiry")).to_have_text(re.compile(r"^in [0-9]+:[0-5][0-9]$"))
    entries = [e for answer in inbox for e in answer["requests"]]
    assert entries and entries[-1]["client"]["name"] == "Demo shop (push)"
    assert entries[-1]["kind"] == "push" and entries[-1]["requester"]["browser"]
    hints = request.locator(".push-risk li")
    expect(hints).to_have_text(risk_texts(entries[-1]["risk"]))
    expect(hints.first).to_have_text("Same network as this phone")
    approve = request.get_by_role("button", name="Approve")
    cancel = request.get_by_role("button", name="Cancel")
    sizes = approve.bounding_box(), cancel.bounding_box()
    assert abs(sizes[0]["width"] - sizes[1]["width"]) < 2  # the two answers weigh the same
    assert navigations == []  # no reload: the long poll brought it
    shot(phone, "push-phone-request")

    approve.click()
    expect(phone.locator("#inbox-result")).to_have_text("Approved: Demo shop (push) signs you in.")
    expect(request).to_have_count(0)

    expect(computer.locator("#demo-signed-in")).to_be_visible()
    expect(computer.locator("#demo-name")).to_have_text("Dana Demo")
    expect(computer.locator("#demo-email")).to_have_text("dana@example.org")
    expect(computer.locator("#demo-amr")).to_have_text("Push request, approved on the phone")
    expect(computer.locator("#demo-verified")).to_contain_text("checked by the shop's server")
    expect(computer.locator("#demo-welcome")).to_be_focused()
    shot(computer, "push-demo-signed-in")
    events_arrive(computer, lambda: any("claims" in a for a in answers))
    claims = next(a["claims"] for a in answers if "claims" in a)
    assert claims["amr"] == ["push"] and claims["aud"] == "demo-push"
    assert claims["iss"] == demo.url and claims["name"] == "Dana Demo"
    assert not any("auth_req_id" in json.dumps(a) for a in answers)
    # the QR of the page is gone with the sign-in; signing out offers both ways again
    computer.get_by_role("button", name="Sign out").click()
    widget_state(computer, "pending")
    expect(computer.get_by_role("button", name="Send a push login to demo")).to_be_visible()


def test_push_login_cancelled_on_the_phone_is_said_and_can_be_tried_again(contexts, demo):
    phone, _inbox = phone_with_inbox(contexts, demo)
    computer, _answers = computer_sends_push(contexts, demo)
    request = phone.locator(".push-request")
    expect(request).to_have_count(1)
    request.get_by_role("button", name="Cancel").click()
    expect(phone.locator("#inbox-result")).to_have_text(
        "Cancelled: Demo shop (push) was told no.")
    expect(request).to_have_count(0)

    status = computer.locator("#demo-push-status")
    expect(status).to_have_text("The push login was cancelled on the phone.")
    expect(computer.locator("#demo-signed-in")).to_be_hidden()
    again = computer.get_by_role("button", name="Try again")
    expect(again).to_be_visible()
    shot(computer, "push-demo-cancelled")

    # trying again sends a new request, which the phone shows (the declined one counted)
    again.click()
    expect(status).to_have_text("Waiting for approval on the phone…")
    expect(request).to_have_count(1)
    expect(request.locator(".push-risk")).to_contain_text("You declined")
    request.get_by_role("button", name="Cancel").click()
    expect(status).to_have_text("The push login was cancelled on the phone.")


@pytest.fixture
def push_demo(tmp_path):
    server = Demo(tmp_path)
    server.start()
    yield server
    server.stop()


def test_push_routes_answer_json_and_keep_the_request_to_the_page_that_made_it(push_demo):
    page = requests.Session()
    html = page.get(push_demo.demo_url, timeout=30).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    # without the page's CSRF token: refused before anything is made
    refused = page.post(push_demo.url + "/demo/push", timeout=30)
    assert refused.status_code == 400 and "text/html" in refused.headers["Content-Type"]
    assert requests.get(push_demo.url + "/demo/push", timeout=30).status_code == 405

    started = page.post(push_demo.url + "/demo/push", data={"csrf_token": token}, timeout=30)
    assert started.status_code == 201, started.text
    handle = started.json()["handle"]
    assert "auth_req_id" not in started.text
    poll = page.post(push_demo.url + "/demo/push/poll",
                     data={"csrf_token": token, "handle": handle}, timeout=30)
    assert poll.status_code == 400 and poll.json()["error"] == "authorization_pending"
    # another browser with the same handle gets nothing
    other = requests.Session()
    other_token = re.search(r'name="csrf_token" value="([^"]+)"',
                            other.get(push_demo.demo_url, timeout=30).text).group(1)
    stolen = other.post(push_demo.url + "/demo/push/poll",
                        data={"csrf_token": other_token, "handle": handle}, timeout=30)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    for bad in ("", "x" * 5000, "\x00", "ä"):
        answer = page.post(push_demo.url + "/demo/push/poll",
                           data={"csrf_token": token, "handle": bad}, timeout=30)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"

    # at most three undecided per user: the fourth is a 429 in JSON, not a 500
    codes = [page.post(push_demo.url + "/demo/push", data={"csrf_token": token},
                       timeout=30).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    refused = page.post(push_demo.url + "/demo/push", data={"csrf_token": token}, timeout=30)
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_requests"
    assert refused.headers["Retry-After"]


def test_push_login_with_number_matching_asks_for_the_number_on_the_phone(contexts, demo):
    """Any CIBA client's request shows up the same way; a number-matching one asks for the
    number its page shows, as buttons, and Approve waits for one."""
    client = json.loads(demo.cli("clients", "create", "--name", "Counter <b>till</b>",
                                 "--grant-type", "urn:openid:params:grant-type:ciba",
                                 "--number-matching", "--json"))
    auth = (client["client_id"], client["client_secret"])
    phone, _inbox = phone_with_inbox(contexts, demo)
    asked = requests.post(demo.url + "/backchannel/authenticate", auth=auth, timeout=30, data={
        "scope": "openid profile", "login_hint": "demo", "binding_message": "Till 3 <script>",
        "requester_ip": "203.0.113.9", "requester_user_agent": "curl/8.5.0"})
    assert asked.status_code == 200, asked.text
    number = asked.json()["binding_code"]

    request = phone.locator(".push-request")
    expect(request).to_have_count(1)
    # the client's name and message are text, never markup
    expect(request.get_by_role("heading", level=3)).to_have_text("Sign in to Counter <b>till</b>?")
    expect(request.locator(".push-binding")).to_have_text("“Till 3 <script>”")
    expect(request.locator("b, script")).to_have_count(0)
    expect(request.locator("dl")).to_contain_text("203.0.113.9")
    expect(request.locator(".push-risk li").first).to_have_text("Not on this phone's network")
    choices = request.locator(".push-numbers button")
    expect(choices).to_have_count(3)
    assert number in choices.all_inner_texts()
    request.get_by_role("button", name="Approve").click()
    expect(request.locator(".push-said")).to_have_text(
        "Pick the number shown on that screen first.")
    shot(phone, "push-phone-number-matching")
    request.get_by_role("button", name=number, exact=True).click()
    expect(request.get_by_role("button", name=number, exact=True)).to_have_attribute(
        "aria-pressed", "true")
    request.get_by_role("button", name="Approve").click()
    expect(phone.locator("#inbox-result")).to_have_text(
        "Approved: Counter <b>till</b> signs you in.")

    tokens = requests.post(demo.url + "/token", auth=auth, timeout=30, data={
        "grant_type": "urn:openid:params:grant-type:ciba",
        "auth_req_id": asked.json()["auth_req_id"]})
    assert tokens.status_code == 200, tokens.text
    claims = jwt.decode(tokens.json()["id_token"], options={"verify_signature": False})
    assert claims["amr"] == ["push"] and claims["name"] == "Dana Demo"


# -- DPoP (RFC 9449): the widget's ticket and tokens, the phone's token, bound to their keys -----
def thumbprint(jwk: dict) -> str:
    """RFC 7638: SHA-256 of the required members, in order, without white space."""
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
                           separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()) \
        .rstrip(b"=").decode()


def proof_parts(proof: str) -> tuple[dict, dict]:
    """A DPoP proof's header and claims (not verified: the server does that)."""
    return jwt.get_unverified_header(proof), jwt.decode(proof, options={"verify_signature": False})


def proof_jkt(proof: str) -> str:
    header, _claims = proof_parts(proof)
    assert header["typ"] == "dpop+jwt" and header["alg"] == "ES256"
    assert set(header["jwk"]) == {"kty", "crv", "x", "y"}  # the public key, nothing private
    return thumbprint(header["jwk"])


def demo_db(server: Demo, query: str, *args) -> list[tuple]:
    """Rows of the demo's own SQLite database."""
    with closing(sqlite3.connect(server.folder / "demo.db")) as db:
        return db.execute(query, args).fetchall()


def ticket_jkt(server: Demo, ticket: str):
    rows = demo_db(server, "SELECT dpop_jkt FROM tickets WHERE ticket_hash = ?",
                   hashlib.sha256(ticket.encode()).hexdigest())
    assert len(rows) == 1
    return rows[0][0]


def token_jkt(server: Demo, access_token: str):
    jti = jwt.decode(access_token, options={"verify_signature": False})["jti"]
    rows = demo_db(server, "SELECT dpop_jkt FROM tokens WHERE jti = ?", jti)
    assert len(rows) == 1
    return rows[0][0]


def record(page, *endpoints: str) -> list[dict]:
    """Requests of the page to paths ending with one of ``endpoints``: url, headers, and once
    answered its status, headers and JSON body."""
    seen: list[dict] = []

    def answered(response):
        for entry in seen:
            if entry["request"] is response.request:
                # the body is a round trip to the browser, during which the test may run on:
                # the entry gets status and body together, once both are known (``settled``)
                try:
                    body = response.json()
                except Exception:
                    body = None
                entry.update(status=response.status, answer_headers=response.headers, body=body)

    def sent(request):
        if urlsplit(request.url).path.endswith(endpoints):
            seen.append({"request": request, "url": request.url, "path": urlsplit(request.url).path,
                         "headers": request.headers})

    page.on("request", sent)
    page.on("response", answered)
    return seen


def settled(page, calls: list[dict], path: str) -> list[dict]:
    """The recorded ``calls`` to ``path``, once each has its answer (``record`` fills it in as the
    browser's answer events arrive, which may be a moment after the page has moved on)."""
    events_arrive(page, lambda: all("status" in c for c in calls if c["path"] == path))
    return [c for c in calls if c["path"] == path]


def qr_login_with_the_widget(contexts, demo, url: str):
    """The demo page at ``url`` signed in by a QR approved on the phone; returns the page, the
    ticket, and the recorded /qr/ticket and /token requests."""
    computer = contexts.page(DESKTOP)
    calls = record(computer, "/qr/ticket", "/token")
    # (the first answer may be use_dpop_nonce, then the same request again with the nonce)
    with computer.expect_response(lambda r: r.url.endswith("/qr/ticket") and r.status != 400) \
            as created:
        computer.goto(url)
    assert created.value.status == 201
    ticket = created.value.json()
    content, _ = shown_qr(computer)
    phone = contexts.page(PHONE)
    phone_signs_in(phone, demo)
    phone_pastes(phone, content)
    phone.get_by_role("button", name="Approve").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("Signed in")
    expect(computer.locator("#demo-name")).to_have_text("Dana Demo")
    events_arrive(computer, lambda: any(c["path"] == "/token" and c.get("status") == 200
                                        for c in calls))
    return computer, ticket, calls


def test_widget_binds_its_ticket_and_tokens_to_a_dpop_key(contexts, demo):
    computer, ticket, calls = qr_login_with_the_widget(contexts, demo, demo.demo_url)
    made = [c for c in calls if c["path"] == "/qr/ticket"]
    polls = [c for c in calls if c["path"] == "/token"]
    assert made and polls
    # a proof with the ticket and with every token poll, all by one key, each one new
    jkts = {proof_jkt(c["headers"]["dpop"]) for c in made + polls}
    assert len(jkts) == 1
    jkt = jkts.pop()
    claims = [proof_parts(c["headers"]["dpop"])[1] for c in made + polls]
    assert len({c["jti"] for c in claims}) == len(claims)
    assert all(len(base64.urlsafe_b64decode(c["jti"] + "==")) >= 16 for c in claims)
    assert all(c["htm"] == "POST" and abs(c["iat"] - time.time()) < 60 for c in claims)
    assert {c["htu"] for c in claims} == {demo.url + "/qr/ticket", demo.url + "/token"}
    assert "ath" not in claims[0] and "nonce" not in claims[0]

    tokens = next(c["body"] for c in polls if c.get("status") == 200)
    assert tokens["token_type"] == "DPoP"
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert access["cnf"] == {"jkt": jkt}
    expect(computer.locator("#demo-token-type")).to_contain_text("DPoP")
    # what the demo's database holds: the ticket and the token row are bound to that key
    assert ticket_jkt(demo, ticket["ticket"]) == jkt
    assert token_jkt(demo, tokens["access_token"]) == jkt

    # the page can prove its key for a resource: the widget's dpopProof, at /userinfo
    proof = computer.evaluate("""async ([url, token]) => {
        const widget = QrLogin.mount(document.createElement("div"), {clientId: "demo-web"});
        try { return await widget.dpopProof("get", url, token); } finally { widget.destroy(); }
    }""", [demo.url + "/userinfo", tokens["access_token"]])
    assert proof_parts(proof)[1]["ath"]  # (another mount: another key, refused below)
    copied = requests.get(demo.url + "/userinfo", timeout=30, headers={
        "Authorization": "Bearer " + tokens["access_token"]})
    assert copied.status_code == 401
    other_key = requests.get(demo.url + "/userinfo", timeout=30, headers={
        "Authorization": "DPoP " + tokens["access_token"], "DPoP": proof})
    assert other_key.status_code == 401


def test_widget_with_dpop_off_gets_bearer_tokens_and_an_unbound_ticket(contexts, demo):
    computer, ticket, calls = qr_login_with_the_widget(contexts, demo, demo.demo_url + "?dpop=off")
    assert calls and not [c for c in calls if "dpop" in c["headers"]]
    tokens = next(c["body"] for c in calls if c["path"] == "/token" and c.get("status") == 200)
    assert tokens["token_type"] == "Bearer"
    assert "cnf" not in jwt.decode(tokens["access_token"], options={"verify_signature": False})
    expect(computer.locator("#demo-token-type")).to_contain_text("Bearer")
    assert ticket_jkt(demo, ticket["ticket"]) is None
    assert token_jkt(demo, tokens["access_token"]) is None


def key_line(phone) -> str:
    line = phone.locator("#phone-key")
    expect(line).to_have_text(re.compile(r"^This phone's key: [A-Za-z0-9_-]{8}\b"))
    return re.match(r"This phone's key: (\S{8})", line.inner_text()).group(1)


def test_phone_token_is_bound_to_a_key_kept_in_the_browser(contexts, demo):
    phone = contexts.page(PHONE)
    calls = record(phone, "/token", "/qr/inbox", "/qr/approve", "/qr/deny")
    phone_signs_in(phone, demo)
    exchange = settled(phone, calls, "/token")
    assert len(exchange) == 1
    jkt = proof_jkt(exchange[0]["headers"]["dpop"])
    assert exchange[0].get("status") == 200 and exchange[0]["body"]["token_type"] == "DPoP"
    assert key_line(phone) == jkt[:8]
    saved = phone.evaluate("() => JSON.parse(sessionStorage.getItem('qr-oidc-demo-phone:token'))")
    access_token = saved["token"]
    assert token_jkt(demo, access_token) == jkt
    assert demo_db(demo, "SELECT require_dpop FROM clients WHERE client_id = ?",
                   "demo-phone") == [(1,)]

    # push approve: the inbox and the approval carry the token as DPoP, with a proof of the key
    computer, _answers = computer_sends_push(contexts, demo)
    phone.locator(".push-request").get_by_role("button", name="Approve").click()
    expect(phone.locator("#inbox-result")).to_have_text("Approved: Demo shop (push) signs you in.")
    expect(computer.locator("#demo-amr")).to_have_text("Push request, approved on the phone")
    resource = [c for c in calls if c["path"] != "/token"]
    assert {"/qr/inbox", "/qr/approve"} <= {c["path"] for c in resource}
    for call in resource:
        assert call["headers"]["authorization"] == "DPoP " + access_token
        header, claims = proof_parts(call["headers"]["dpop"])
        assert thumbprint(header["jwk"]) == jkt and claims["htu"] == demo.url + call["path"]
        assert claims["ath"] == base64.urlsafe_b64encode(
            hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()

    # a QR approve (the confirmation screen, by the browser session) still works
    computer.get_by_role("button", name="Sign out").click()
    content, _ = shown_qr(computer)
    phone_pastes(phone, content)
    phone.get_by_role("button", name="Approve").click()
    expect(computer.locator("#demo-amr")).to_have_text("QR code, approved on the phone")

    # back on the phone page, and after a reload: the same key, the same token, no new exchange
    for again in (lambda: phone.goto(demo.phone_url), phone.reload):
        calls.clear()
        again()
        expect(phone.locator("#phone-inbox")).to_have_attribute("data-state", "ready")
        assert key_line(phone) == jkt[:8]
        events_arrive(phone, lambda: any(c["path"] == "/qr/inbox" and c.get("status") == 200
                                         for c in calls))
        assert [c["path"] for c in calls if c["path"] == "/token"] == []
        assert {proof_jkt(c["headers"]["dpop"]) for c in calls} == {jkt}
    # another tab of the same browser profile: a token of its own, by the same key
    tab = phone.context.new_page()
    tab.goto(demo.phone_url)
    expect(tab.locator("#phone-inbox")).to_have_attribute("data-state", "ready")
    assert key_line(tab) == jkt[:8]
    other = tab.evaluate("() => JSON.parse(sessionStorage.getItem('qr-oidc-demo-phone:token'))")
    assert other["token"] != access_token and token_jkt(demo, other["token"]) == jkt

    # the token copied out of sessionStorage is refused without the key
    for scheme in ("Bearer", "DPoP"):
        copied = requests.post(demo.url + "/qr/inbox", data={"wait": "0"}, timeout=30,
                               headers={"Authorization": f"{scheme} {access_token}"})
        assert copied.status_code == 401, (scheme, copied.text)
        assert copied.headers["WWW-Authenticate"].startswith("DPoP ")


@pytest.fixture(scope="module")
def nonce_demo(tmp_path_factory):
    """Proofs must carry the server's nonce (DPoP-Nonce)."""
    server = Demo(tmp_path_factory.mktemp("nonce-demo"), {"QR_OIDC_DPOP_NONCES": "true"})
    server.start()
    yield server
    server.stop()


def test_widget_and_phone_retry_with_the_servers_dpop_nonce(contexts, nonce_demo):
    demo = nonce_demo
    computer, ticket, calls = qr_login_with_the_widget(contexts, demo, demo.demo_url)
    # the first ticket request had no nonce, was told one, and was sent again with it
    made = [c for c in calls if c["path"] == "/qr/ticket"]
    assert made[0]["status"] == 400 and made[0]["body"]["error"] == "use_dpop_nonce"
    nonce = made[0]["answer_headers"]["dpop-nonce"]
    assert made[1]["status"] == 201 and proof_parts(made[1]["headers"]["dpop"])[1]["nonce"] == nonce
    polls = [c for c in calls if c["path"] == "/token"]
    assert all(proof_parts(c["headers"]["dpop"])[1].get("nonce") for c in polls)
    tokens = next(c["body"] for c in polls if c.get("status") == 200)
    assert tokens["token_type"] == "DPoP"
    jkt = proof_jkt(made[0]["headers"]["dpop"])
    assert ticket_jkt(demo, ticket["ticket"]) == jkt == token_jkt(demo, tokens["access_token"])

    phone = contexts.page(PHONE)
    phone_calls = record(phone, "/token", "/qr/inbox")
    phone_signs_in(phone, demo)
    exchange = settled(phone, phone_calls, "/token")
    assert [c.get("status") for c in exchange] == [400, 200]
    assert exchange[0]["body"]["error"] == "use_dpop_nonce"
    # (the first inbox ask is answered at once; the next ones are held long polls)
    events_arrive(phone, lambda: any(c["path"] == "/qr/inbox" and c.get("status") == 200
                                     for c in phone_calls))
    inbox = [c for c in phone_calls if c["path"] == "/qr/inbox"]
    assert inbox and all(proof_parts(c["headers"]["dpop"])[1].get("nonce") for c in inbox)
    assert any(c.get("status") == 200 for c in inbox)


def test_widget_without_webcrypto_stops_with_an_error_rather_than_unbound_tokens(contexts, demo):
    """A page that is not a secure context has no crypto.subtle: no PKCE, no DPoP key, no ticket."""
    computer = contexts.page(DESKTOP)
    computer.add_init_script(
        "Object.defineProperty(Crypto.prototype, 'subtle', {get: () => undefined})")
    calls = record(computer, "/qr/ticket", "/token")
    computer.goto(demo.demo_url)
    widget_state(computer, "error")
    expect(computer.locator(".qrl-status")).to_contain_text("needs WebCrypto")
    expect(computer.locator("#demo-events li[data-callback=onError]")).to_contain_text(
        "unsupported_browser")
    assert calls == []


def test_an_existing_demo_database_gets_the_phone_client_bound_to_dpop(tmp_path):
    server = Demo(tmp_path)
    server.start()
    server.stop()
    with closing(sqlite3.connect(tmp_path / "demo.db")) as db:  # a demo DB from before DPoP
        db.execute("UPDATE clients SET require_dpop = 0 WHERE client_id = 'demo-phone'")
        db.commit()
    server.start()
    try:
        assert demo_db(server, "SELECT require_dpop FROM clients WHERE client_id = ?",
                       "demo-phone") == [(1,)]
    finally:
        server.stop()
