"""The pages a person sees speak the language asked for: the authorization request's
``ui_locales`` (kept with the request through the login, consent and hosted QR pages, or a query
parameter of any page), then ``Accept-Language``, then English (provider/web/i18n.py). The
catalogs (provider/web/translations/) are complete, their placeholders and markup the English
ones, their compiled .mo files up to date, and the .pot names every message the sources use.

The app runs in this process (helpers.InProcess), on SQLite: the language is no matter of the
database. The same in real Chromium, in Chinese: tests/test_browser.py's
``test_hosted_login_and_the_phone_confirmation_in_chinese``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from helpers import InProcess, forms_of, pkce

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "provider" / "web"
CATALOGS = WEB / "translations"
LANGUAGES = ("zh", "de", "fr", "es", "ja")
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\w+\}")
TAG = re.compile(r"</?[a-z]+[^>]*>")
HTML_LANG = re.compile(r'<html lang="([^"]+)"')
ALIKE = {("de", "Browser"), ("de", "Code"), ("fr", "Code"), ("de", "in {time}")}  # the same word


def catalog(lang: str):
    with open(CATALOGS / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f)


TRANSLATED = {lang: {m.id: m.string for m in catalog(lang) if m.id} for lang in LANGUAGES}


def plain(value):
    """A message's id or string as one type (plurals: a tuple), whichever reader gave it."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def said(lang: str, msgid: str) -> str:
    """``msgid`` in ``lang``, as a page's HTML carries it."""
    text = msgid if lang == "en" else TRANSLATED[lang][msgid]
    return html.escape(text, quote=False).replace("'", "&#39;")


# -- the catalogs ---------------------------------------------------------------------------
def test_the_template_names_every_message_the_sources_use():
    """messages.pot is what extraction finds now (pybabel extract, as docs/web.md says)."""
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found = {message for _file, _line, message, _comments, _context in
             extract_from_dir(str(WEB), method_map, keywords=keywords)}
    found = {m if isinstance(m, str) else tuple(m) for m in found}
    with open(CATALOGS / "messages.pot", "rb") as f:
        template = {m.id for m in read_po(f) if m.id}
    assert found == template, (sorted(map(str, found - template)),
                               sorted(map(str, template - found)))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_catalog_translates_every_message_with_the_same_placeholders(lang):
    with open(CATALOGS / "messages.pot", "rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    messages = {m.id: m for m in catalog(lang) if m.id}
    assert set(messages) == wanted
    for msgid, message in messages.items():
        ids = msgid if isinstance(msgid, tuple) else (msgid,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(s.strip() for s in strings), (lang, msgid)
        assert not message.fuzzy, (lang, msgid)
        for string in strings:
            assert sorted(set(PLACEHOLDER.findall(string))) == \
                sorted(set(PLACEHOLDER.findall(ids[-1]))), (lang, msgid, string)
            assert sorted(TAG.findall(string)) == sorted(TAG.findall(ids[0])), (lang, msgid)
            assert string != ids[0] or (lang, ids[0]) in ALIKE, (lang, "left in English", msgid)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_compiled_catalogs_match_their_po_files(lang):
    """The shipped .mo files are compiled from the .po files as they stand (pybabel compile)."""
    with open(CATALOGS / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
        compiled = {plain(m.id): plain(m.string) for m in read_mo(f) if m.id}
    assert compiled == {plain(k): plain(v) for k, v in TRANSLATED[lang].items()}


# -- the pages ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    app = InProcess(tmp_path_factory.mktemp("languages"))
    world = {
        "app": app,
        "shop": app.create_client("--name", "Shop", "--public", "--redirect-uri",
                                  "https://rp.example/cb", "--post-logout-redirect-uri",
                                  "https://rp.example/bye"),
    }
    app.create_user("lena", "lena-password", name="Lena")
    yield world
    app.close()


def authorize_query(world, **extra) -> str:
    _verifier, challenge = pkce()
    return urlencode({"response_type": "code", "client_id": world["shop"]["client_id"],
                      "redirect_uri": "https://rp.example/cb", "scope": "openid profile",
                      "state": "s", "nonce": "n", "code_challenge": challenge,
                      "code_challenge_method": "S256", **extra})


def hidden(page: str, having: str) -> dict:
    form = next(f for f in forms_of(page) if any(x["name"] == having for x in f["fields"]))
    return {x["name"]: x["value"] or "" for x in form["fields"]
            if x["type"] == "hidden" and x["name"]}


def text(response) -> str:
    return response.get_data(as_text=True)


def pages(world, query: dict, headers: dict) -> dict[str, str]:
    """Every page a person meets on the way, asked for with ``query`` and ``headers`` (the
    language asked for by each), as HTML by name."""
    app = world["app"]
    browser = app.client()
    phone = app.client()
    q = ("&" + urlencode(query)) if query else ""
    seen = {}

    def get(client, path, **kw):
        return client.get(path, headers={"Accept": "text/html", **headers}, **kw)

    def post(client, path, data):
        return client.post(path, data=data, headers={"Accept": "text/html", **headers})

    seen["login"] = text(get(browser, "/login?" + urlencode(query)))
    authorize = "/authorize?" + authorize_query(world, **query)
    seen["authorize login"] = login = text(get(browser, authorize))
    # the hosted page's QR: what its script asks for (JSON), then a wrong password on its form
    ticket = browser.post("/authorize/ticket", data=hidden(login, "request"),
                          headers={"Accept": "application/json", **headers}).get_json()
    seen["hosted QR without script"] = text(post(browser, "/authorize/ticket",
                                                 hidden(login, "request")))
    seen["wrong password"] = text(post(browser, "/login", {
        **hidden(login, "next"), "username": "lena", "password": "wrong"}))
    seen["stale QR"] = text(post(browser, "/authorize/qr", {
        **hidden(login, "ticket"), "ticket": "nope"}))
    # the phone: signs in, opens the QR's link (continue), the confirmation screen, done
    scan_path = urlsplit(ticket["qr_content"]).path
    first = get(phone, scan_path + q.replace("&", "?", 1))
    assert first.status_code == 302
    # (the language ui_locales chose goes along to the sign-in and back; an unknown one does not)
    kept = "ui_locales" in first.headers["Location"]
    assert kept == ("ui_locales" in query and query["ui_locales"] != "xx"), first.headers
    phone_login = text(get(phone, first.headers["Location"]))
    signed_in = post(phone, "/login", {**hidden(phone_login, "next"), "username": "lena",
                                       "password": "lena-password"})
    assert signed_in.status_code == 302, text(signed_in)
    seen["continue"] = cont = text(get(phone, signed_in.headers["Location"]))
    seen["confirm"] = confirm = text(post(phone, scan_path, hidden(cont, "csrf_token")))
    seen["done"] = text(post(phone, "/confirm", {**hidden(confirm, "user_code"),
                                                 "decision": "approve"}))
    seen["device"] = device = text(get(phone, "/device?" + urlencode(query)))
    seen["device unknown code"] = text(post(phone, "/device", {
        **hidden(device, "csrf_token"), "user_code": "BCDF-GHJK"}))
    seen["consent"] = text(get(phone, authorize))
    seen["no such code"] = text(get(phone, "/s/not-a-code" + q.replace("&", "?", 1)))
    seen["bad request"] = text(get(browser, "/authorize?client_id=nope&response_type=code" + q))
    seen["csrf refused"] = text(post(browser, "/login", {"username": "lena", **query}))
    seen["end session"] = text(get(phone, "/end_session?" + urlencode(query)))
    seen["end session refused"] = text(get(phone, "/end_session?" + urlencode(
        {"post_logout_redirect_uri": "https://rp.example/bye", **query})))
    return seen


# page: a message it must show (in the language asked for)
EXPECTED = {
    "login": "Password",
    "authorize login": "Scan with the app",
    "hosted QR without script": "I approved on my phone",
    "wrong password": "Wrong username or password.",
    "stale QR": "This sign-in is not waiting here any more.",
    "continue": "Not me",
    "confirm": "Only continue if you started this sign-in yourself, on a screen in front of you.",
    "done": "You can return to the other screen.",
    "device": "Type the code shown on the screen that asks you to sign in.",
    "device unknown code": "No login is waiting for this code.",
    "consent": "Allow access",
    "no such code": "No login is waiting for this code.",
    "bad request": "The client does not exist on this server.",
    "csrf refused": "The form expired or did not come from this site; reload it.",
    "end session": "Do you want to sign out?",
    "end session refused": "post_logout_redirect_uri needs an id_token_hint or client_id.",
}
HTML_LANGS = {"en": "en", "zh": "zh-CN", "de": "de", "fr": "fr", "es": "es", "ja": "ja"}


@pytest.mark.parametrize(("lang", "query", "headers"), [
    ("de", {"ui_locales": "de"}, {}),
    ("fr", {}, {"Accept-Language": "fr-CH, fr;q=0.9"}),
    ("de", {"ui_locales": "de"}, {"Accept-Language": "fr-CH, fr;q=0.9"}),  # ui_locales wins
    ("en", {"ui_locales": "xx"}, {}),  # unknown: English
    ("es", {"ui_locales": "xx es-MX en"}, {"Accept-Language": "de"}),  # its first one spoken
    ("zh", {"ui_locales": "zh-CN"}, {}),
    ("ja", {}, {"Accept-Language": "ja-JP,ja;q=0.9,en;q=0.5"}),
    ("en", {}, {}),
], ids=["ui_locales", "accept-language", "ui_locales-wins", "unknown", "first-spoken", "zh",
        "ja", "nothing-asked"])
def test_every_page_is_in_the_language_asked_for(world, lang, query, headers):
    seen = pages(world, query, headers)
    assert set(seen) == set(EXPECTED)
    for name, page in seen.items():
        assert HTML_LANG.search(page).group(1) == HTML_LANGS[lang], name
        assert said(lang, EXPECTED[name]) in page, (name, lang, page)
        if lang != "en":  # and not the English one (nor English headings)
            assert html.escape(EXPECTED[name], quote=False) not in page, (name, page)
            assert "Something is not right" not in page and "Sign in to" not in page, name


@pytest.mark.parametrize(("lang", "one", "two"), [
    ("en", "You declined 1 request in", "You declined 2 requests in"),
    ("de", "1 Anfrage abgelehnt", "2 Anfragen abgelehnt"),
    ("fr", "refusé 1 demande au", "refusé 2 demandes au"),
    ("es", "Rechazaste 1 solicitud en", "Rechazaste 2 solicitudes en"),
    ("zh", "拒绝了 1 个请求", "拒绝了 2 个请求"),
    ("ja", "1件の要求", "2件の要求"),
])
def test_the_plural_of_the_confirmation_screen(world, lang, one, two):
    from flask import render_template_string

    template = ('{{ ngettext("You declined %(num)d request in the last 24 hours", '
                '"You declined %(num)d requests in the last 24 hours", n) }}')
    with world["app"].app.test_request_context("/?ui_locales=" + lang):
        assert one in render_template_string(template, n=1)
        assert two in render_template_string(template, n=2)


def test_the_hosted_login_page_keeps_ui_locales_with_the_request(world):
    """A password sign-in from the hosted page, and the hosted QR's forms, stay in the language
    the authorization request asked for, whatever the browser's (the request is kept with them)."""
    browser = world["app"].client()
    login = text(browser.get("/authorize?" + authorize_query(world, ui_locales="ja"),
                             headers={"Accept-Language": "de"}))
    assert "ui_locales=ja" in hidden(login, "request")["request"]
    assert "ui_locales=ja" in hidden(login, "next")["next"]
    assert hidden(login, "ticket")["ui_locales"] == "ja"


def test_the_language_of_a_kept_ticket_request_answers_its_completion(world):
    """POST /authorize/qr takes its language from the authorization request kept with the
    ticket (no ui_locales of its own)."""
    browser = world["app"].client()
    login = text(browser.get("/authorize?" + authorize_query(world, ui_locales="fr")))
    ticket = browser.post("/authorize/ticket", data=hidden(login, "request"),
                          headers={"Accept": "application/json"}).get_json()
    form = hidden(login, "ticket")
    del form["ui_locales"]
    pending = browser.post("/authorize/qr", data={**form, "ticket": ticket["ticket"]})
    assert pending.status_code == 302 and "ui_locales=fr" in pending.headers["Location"]


def test_a_garbled_language_asked_for_is_english_and_never_echoed(world):
    browser = world["app"].client()
    page = text(browser.get("/login?ui_locales=" + "%3Cb%3E" * 3,
                            headers={"Accept-Language": "*;q=0.5, zz"}))
    assert HTML_LANG.search(page).group(1) == "en"
    assert "<b>" not in page and 'name="ui_locales"' not in page


def test_the_demo_and_phone_pages_and_their_scripts_texts(tmp_path):
    """The demo pages (with a language switch) and the texts their scripts show."""
    from qr_oidc.provider import settings as config
    from qr_oidc.provider.web import demo
    from qr_oidc.provider.web.app import create_app

    app = InProcess(tmp_path, build=False)
    try:
        settings = dataclasses.replace(config.load(app.settings), demo=True)
        app.app = flask_app = create_app(settings)
        demo.prepare(flask_app)
        client = flask_app.test_client()
        for path in ("/demo", "/phone"):
            page = text(client.get(path + "?ui_locales=de"))
            assert HTML_LANG.search(page).group(1) == "de"
            switch = re.findall(r'<a href="([^"]*)"[^>]* data-language="(\w+)"', page)
            assert {code for _href, code in switch} == {"en", "zh", "de", "fr", "es", "ja"}
            assert all(href == f"{path}?ui_locales={code}" for href, code in switch)
            texts = re.search(r'<script type="application/json" id="(?:demo|phone)-texts">(.*?)'
                              r"</script>", page, re.S).group(1)
            english = re.search(r'<script type="application/json" id="(?:demo|phone)-texts">'
                                r"(.*?)</script>", text(client.get(path)), re.S).group(1)
            assert texts != english and "Handy" in texts
        client.set_cookie("qr_oidc_lang", "ja")
        page = text(client.get("/phone"))
        assert HTML_LANG.search(page).group(1) == "ja"  # the switch's cookie
        page = text(client.get("/phone?ui_locales=es"))
        assert HTML_LANG.search(page).group(1) == "es"  # ui_locales first
    finally:
        app.close()


# -- in Chromium, in Chinese ---------------------------------------------------------------
def english_fragments(msgids) -> set[str]:
    """The English texts of messages as a page could show them: each message split at its
    placeholders and markup, the pieces longer than 3 characters with a letter in them."""
    pieces = set()
    for msgid in msgids:
        for text in (msgid if isinstance(msgid, (tuple, list)) else (msgid,)):
            for piece in re.split(r"%\(\w+\)[sd]|\{\w+\}|<[^>]+>", text):
                piece = piece.strip(" .,:;?!…()“”\"'·-")
                if len(piece) > 3 and re.search(r"[A-Za-z]", piece):
                    pieces.add(piece)
    return pieces


def catalog_english() -> set[str]:
    with open(CATALOGS / "messages.pot", "rb") as f:
        return english_fragments(m.id for m in read_po(f) if m.id)


@pytest.fixture(scope="module")
def zh_demo(tmp_path_factory):
    from test_browser import Demo

    server = Demo(tmp_path_factory.mktemp("zh-demo"))
    server.start()
    yield server
    server.stop()


def test_hosted_login_and_the_phone_confirmation_in_chinese(zh_demo, tmp_path):
    """A relying party asks for ui_locales=zh-CN (the computer's browser says English): the
    hosted login page and its widget are in Chinese; a phone whose browser prefers Chinese signs
    in, scans and gets the confirmation screen in Chinese. No English text of the catalogs (nor
    of the widget's) is left on either screen."""
    from playwright.sync_api import expect, sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, WAIT

    demo = zh_demo
    client = json.loads(demo.cli(
        "clients", "create", "--name", "Loopback shop", "--number-matching", "--redirect-uri",
        "http://127.0.0.1/callback", "--grant-type", "authorization_code", "--json"))
    english = catalog_english()
    # (to tests/artifacts only, as test_browser.py's shots: docs/img keeps the chosen ones, and
    # a test run must not change files the repository tracks)
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    errors: list[str] = []

    def shoot(page, name: str) -> None:
        page.locator("main.card").screenshot(path=str(artifacts / f"{name}.png"),
                                             animations="disabled")

    def english_left(page, also=()) -> list[str]:
        shown = page.evaluate("document.title + '\\n' + document.body.innerText + '\\n' + "
                              "[...document.querySelectorAll('[alt],[placeholder],[aria-label]')]"
                              ".map(e => e.alt || e.placeholder || e.ariaLabel || '').join('\\n')")
        return sorted(f for f in english | set(also) if f in shown)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            computer_context = browser.new_context(viewport=DESKTOP, locale="en-US")
            phone_context = browser.new_context(viewport=PHONE, locale="zh-CN")
            for context in (computer_context, phone_context):
                context.set_default_timeout(WAIT)
            computer = computer_context.new_page()
            phone = phone_context.new_page()
            for page in (computer, phone):
                page.on("pageerror", lambda error: errors.append(str(error)))

            # the computer: a relying party's authorization request with ui_locales=zh-CN
            _verifier, challenge = pkce()
            with computer.expect_response(lambda r: r.url.endswith("/authorize/ticket")) as made:
                computer.goto(demo.url + "/authorize?" + urlencode({
                    "response_type": "code", "client_id": client["client_id"],
                    "redirect_uri": "http://127.0.0.1:9/callback", "scope": "openid profile",
                    "state": "s", "nonce": "n", "code_challenge": challenge,
                    "code_challenge_method": "S256", "ui_locales": "zh-CN"}))
            ticket = made.value.json()
            assert computer.evaluate("navigator.language") == "en-US"
            assert computer.evaluate("document.documentElement.lang") == "zh-CN"
            expect(computer.get_by_role("heading", level=1)).to_have_text("登录 Loopback shop")
            expect(computer.locator("#hosted-qr .qrl")).to_have_attribute("data-state", "pending")
            expect(computer.locator("#hosted-qr .qrl-binding")).to_have_text(
                f"应用询问时，请选择 {ticket['binding_code']}")
            expect(computer.locator("#hosted-qr .qrl-timer")).to_contain_text("有效期")
            locales = computer.evaluate("QrLogin.locales")
            assert set(locales) == {"en", "zh", "de", "fr", "es", "ja"}
            for lang, texts in locales.items():  # the widget's own dictionary is complete
                assert set(texts) == set(locales["en"]), lang
                for key, value in texts.items():
                    assert sorted(re.findall(r"\{\w+\}", value)) == \
                        sorted(re.findall(r"\{\w+\}", locales["en"][key])), (lang, key)
            widget_english = english_fragments(locales["en"].values())
            shoot(computer, "lang-zh-login")
            assert english_left(computer, widget_english) == []

            # the phone, in Chinese by its browser's language: sign in, scan, continue, confirm
            phone.goto(demo.phone_url)
            assert phone.evaluate("document.documentElement.lang") == "zh-CN"
            phone.get_by_role("link", name="登录").click()
            phone.get_by_label("用户名", exact=True).fill("demo")
            phone.get_by_label("密码", exact=True).fill("demo-password")
            phone.get_by_role("button", name="登录").click()
            expect(phone.locator("#phone-inbox")).to_have_attribute("data-state", "ready")
            expect(phone.locator("#inbox-status")).to_have_text(
                "目前没有请求。新的请求到达时会显示在这里。")
            assert english_left(phone) == []
            phone.get_by_label("粘贴二维码内容").fill(ticket["qr_content"])
            phone.get_by_role("button", name="扫描", exact=True).click()
            expect(phone.get_by_role("heading", level=1)).to_have_text("继续登录 Loopback shop？")
            assert english_left(phone) == []
            phone.get_by_role("button", name="继续").click()
            expect(phone.get_by_role("heading", level=1)).to_have_text("登录 Loopback shop？")
            expect(phone.locator("legend")).to_have_text("请选择那块屏幕上显示的数字")
            expect(phone.locator("input[name=binding_code]")).to_have_count(3)
            expect(phone.get_by_role("button", name="批准")).to_be_visible()
            shoot(phone, "lang-zh-confirm")
            assert english_left(phone) == []

            # meanwhile the computer's widget says the phone scanned, in Chinese
            expect(computer.locator("#hosted-qr .qrl")).to_have_attribute("data-state", "scanned")
            expect(computer.locator("#hosted-qr .qrl-status")).to_have_text(
                "Dana Demo 已扫码，请在手机上确认。")
            assert english_left(computer, widget_english) == []
        finally:
            browser.close()
    assert errors == []
