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
import io
import json
import os
import re
import secrets
import subprocess
import threading
import time
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

    # signing out shows a fresh QR again
    computer.get_by_role("button", name="Sign out").click()
    widget_state(computer, "pending")
    again, _ = shown_qr(computer)
    assert again != content


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
