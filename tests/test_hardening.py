"""What a security review found besides the big two (issue 20): a slow password hash must not
hold the database's connections, limits must hold against parallel attempts, secrets at rest
stay secret, and small things (number-matching choices, audit lines). Real servers, SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from test_requester import away_from_a_window_edge

from qr_oidc.provider.security import binding_choices

from conftest import phone_app
from helpers import (
    GENEROUS_LIMITS,
    Provider,
    ask_for_qr,
    csrf_of,
    sign_in_phone,
)


def wrong_login(server: Provider, username: str, password: str = "wrong") -> int:
    browser = requests.Session()
    page = browser.get(server.url + "/login", timeout=60)
    return browser.post(server.url + "/login", data={
        "username": username, "password": password, "csrf_token": csrf_of(page.text),
        "next": "/"}, allow_redirects=False, timeout=60).status_code


# -- no request holds a connection across a password hash ------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def small_pool(request, tmp_path):
    """Two database connections per process and no overflow: a request that held one through
    a password hash, or needed two, would starve the others within the pool timeout. Passwords
    at the default cost (a sixth of a second of a core each), not the suite's cheap one."""
    server = Provider(tmp_path, {"QR_OIDC_DB_POOL_SIZE": "2", "QR_OIDC_DB_MAX_OVERFLOW": "0",
                                 "QR_OIDC_DB_POOL_TIMEOUT": "3", "QR_OIDC_PASSWORD_COST": "15"},
                      backend=request.param)
    server.start()
    yield server
    server.stop()


def test_forty_failed_sign_ins_at_once_stall_nothing_and_fail_nothing(small_pool):
    server = small_pool
    server.create_user("target", "target-password")
    web = server.create_client("--name", "Bystander shop")
    phone = sign_in_phone(server, phone_app(server), "target", "target-password")
    bearer = {"Authorization": f"Bearer {phone['access_token']}"}

    def bystander(n: int) -> int:
        if n % 3 == 0:
            return requests.get(server.url + "/userinfo", headers=bearer, timeout=60).status_code
        if n % 3 == 1:
            return server.create_ticket(web).status_code
        return requests.get(server.url + "/.well-known/openid-configuration",
                            timeout=60).status_code

    with ThreadPoolExecutor(60) as pool:
        guesses = [pool.submit(wrong_login, server, "target") for _ in range(40)]
        others = [pool.submit(bystander, n) for n in range(30)]
        guessed = [f.result() for f in guesses]
        answered = [f.result() for f in others]
    assert guessed == [401] * 40
    assert sorted(set(answered)) == [200, 201], answered
    log = server.log()
    assert "no database connection free" not in log and "QueuePool limit" not in log
    assert "Traceback" not in log


# -- limits count first ----------------------------------------------------------------------------
RACY = {**GENEROUS_LIMITS, "QR_OIDC_RATE_LOGIN_ACCOUNT": "10/900",
        "QR_OIDC_RATE_USER_CODE_USER": "10/600"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "redis"])
def racy(request, tmp_path_factory):
    env = dict(RACY)
    backend = request.param
    if backend == "redis":
        env["QR_OIDC_REDIS_URL"] = "redis://127.0.0.1:6379/0"
        backend = "postgresql"
    server = Provider(tmp_path_factory.mktemp("racy"), env, backend=backend)
    server.start()
    yield server
    server.stop()


def someone() -> str:
    """A name no earlier run used (Redis keeps its counters between runs)."""
    return "user-" + secrets.token_hex(6)


def test_parallel_password_guesses_cannot_pass_the_limit_together(racy):
    frank = someone()
    racy.create_user(frank, "frank-password")
    away_from_a_window_edge(900, margin=60)
    with ThreadPoolExecutor(25) as pool:
        answers = list(pool.map(lambda _: wrong_login(racy, frank), range(25)))
    assert sorted(answers) == [401] * 10 + [429] * 15


def test_a_right_password_gives_its_count_back(racy):
    grace = someone()
    racy.create_user(grace, "grace-password")
    away_from_a_window_edge(900, margin=60)
    assert [wrong_login(racy, grace) for _ in range(9)] == [401] * 9
    assert wrong_login(racy, grace, "grace-password") == 302  # counted, then given back
    assert wrong_login(racy, grace) == 401  # the tenth failure
    assert wrong_login(racy, grace) == 429
    assert wrong_login(racy, grace, "grace-password") == 429


def test_parallel_user_code_guesses_cannot_pass_the_limit_together(racy):
    heidi = someone()
    racy.create_user(heidi, "heidi-password")
    token = sign_in_phone(racy, phone_app(racy), heidi, "heidi-password")["access_token"]
    away_from_a_window_edge(600, margin=60)
    codes = [f"BCDF-GH{a}{b}" for a in "JKLMNP" for b in "QR"]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(
            lambda code: racy.phone("scan", token, user_code=code).status_code, codes))
    assert sorted(answers) == [404] * 10 + [429] * 2


# -- secrets at rest -------------------------------------------------------------------------------
def session_secret(server: Provider) -> str:
    return server.db("SELECT value FROM settings WHERE name = 'session_secret'")[0][0]


def signed_in_cookies(server: Provider, username: str, password: str) -> dict:
    browser = requests.Session()
    page = browser.get(server.url + "/login", timeout=30)
    answer = browser.post(server.url + "/login", data={
        "username": username, "password": password, "csrf_token": csrf_of(page.text),
        "next": "/"}, allow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text
    return browser.cookies.get_dict()


def is_signed_in(server: Provider, cookies: dict) -> bool:
    return "Signed in as" in requests.get(server.url + "/", cookies=cookies, timeout=30).text


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_session_secret_is_sealed_with_the_key_passphrase(tmp_path, backend):
    server = Provider(tmp_path, backend=backend)  # first without a passphrase, as before
    try:
        server.start()
        server.create_user("ivan", "ivan-password")
        cookies = signed_in_cookies(server, "ivan", "ivan-password")
        plain = session_secret(server)
        assert len(plain) == 64 and int(plain, 16) >= 0  # in clear: readable, forgeable
        server.stop(keep_database=True)
        server.env["QR_OIDC_KEY_PASSPHRASE"] = "correct horse battery staple"
        server.start()  # sealed now, the same secret: the cookie of before still works
        sealed = session_secret(server)
        assert sealed.startswith("sealed:v1:") and plain not in sealed
        assert plain.encode() not in server.dump()
        assert is_signed_in(server, cookies)
        server.stop(keep_database=True)
        server.env["QR_OIDC_KEY_PASSPHRASE"] = "wrong"
        refused = server.cli("serve", check=False)
        assert refused.returncode != 0 and "QR_OIDC_KEY_PASSPHRASE" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    finally:
        server.stop()


def test_a_new_sqlite_database_and_its_wal_are_readable_by_their_owner_only(make_in_process):
    app = make_in_process()  # the app makes the database, as a server does at its start
    app.create_user("judy", "judy-password")
    files = [app.db_path.with_name(app.db_path.name + suffix) for suffix in ("", "-wal", "-shm")]
    assert all(f.exists() for f in files)
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, (f, oct(os.stat(f).st_mode))


def test_an_old_world_readable_database_is_narrowed_at_start(make_in_process, caplog):
    app = make_in_process(build=False)
    app.cli("db", "upgrade")
    os.chmod(app.db_path, 0o644)
    app.build()  # what a server does at its start
    assert stat.S_IMODE(os.stat(app.db_path).st_mode) == 0o600
    assert "was readable by others" in caplog.text


# -- small things ----------------------------------------------------------------------------------
def flask_session(cookie: str) -> dict:
    """What a browser can read of Flask's signed (not encrypted) session cookie."""
    payload = cookie.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if cookie.startswith("."):  # compressed
        raw = zlib.decompress(raw)
    return json.loads(raw)


def test_the_number_matching_choices_derive_from_nothing_a_browser_holds(provider, nm_client,
                                                                         alice_phone):
    derivable = 0
    for _ in range(6):
        ticket = provider.ticket(nm_client)
        code = provider.scan_code(ticket)
        choices = provider.phone("scan", alice_phone, scan_code=code).json()["binding_choices"]
        ticket_id = provider.db("SELECT id FROM tickets WHERE scan_code_hash = ?",
                                hashlib.sha256(code.encode()).hexdigest())[0][0]
        derivable += choices == binding_choices(ticket["binding_code"], ticket_id)
        # the same choices on a second scan: nothing learnt by scanning twice
        again = provider.phone("scan", alice_phone, scan_code=code).json()["binding_choices"]
        assert again == choices
    assert derivable < 6


def test_the_hosted_pages_cookie_does_not_carry_the_tickets_id(provider):
    client = provider.create_client("--name", "Cookie shop", "--number-matching",
                                    "--redirect-uri", "https://cookie.example/cb")
    browser = requests.Session()
    page = browser.get(provider.url + "/authorize", params={
        "response_type": "code", "client_id": client["client_id"],
        "redirect_uri": "https://cookie.example/cb", "scope": "openid", "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeJF8bB6fCqnvTTdtpm8",
        "code_challenge_method": "S256"}, timeout=30)
    made = ask_for_qr(browser, page)
    assert made.status_code == 201
    ids = [row[0] for row in provider.db("SELECT id FROM tickets")]
    readable = json.dumps(flask_session(browser.cookies["qr_oidc_session"]))
    assert not [i for i in ids if i in readable]


def test_audit_lines_cannot_be_split_by_what_a_user_types(provider):
    name = 'mallory\u2028{"event":"signin","user":"admin"}\u0085\u000b\u001c x'
    assert wrong_login(provider, name) == 401
    deadline = time.monotonic() + 10
    while True:
        raw = provider.log_path.read_bytes()
        events = [json.loads(line) for line in raw.split(b"\n") if line.startswith(b"{")]
        failed = [e for e in events if e["event"] == "signin.failed"
                  and e.get("username", "").startswith("mallory")]
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert failed and failed[-1]["username"] == name.strip().lower()[:150]
    for separator in ("\u2028", "\u0085", "\u000b", "\u001c"):
        assert separator.encode("utf-8") not in raw
    # and the log reads as lines of JSON for anything that splits lines the Unicode way
    text = raw.decode("utf-8", errors="replace")
    assert not [line for line in text.splitlines()
                if line.startswith("{") and not line.endswith("}")]


# -- upkeep ----------------------------------------------------------------------------------------
def test_the_maintenance_round_forgets_old_sessions_and_old_redemptions(make_in_process):
    """Ended or expired session records (after a day) and the redemptions of codes that have
    expired anyway are deleted by the background round; live ones stay."""
    from qr_oidc.provider.runtime.maintenance import run_once
    from qr_oidc.provider.storage.models import (
        BrowserSession,
        Client,
        RedeemedCode,
        User,
    )
    parts = make_in_process().app.extensions["qr_oidc"]
    now = time.time()
    with parts.db.session_factory() as session:
        session.add(User(id=1, sub="s", username="u", password_hash="x"))
        session.add(Client(client_id="c", name="c", public=True))
        session.commit()
        session.add_all([
            BrowserSession(id="live", user_id=1, auth_time=now, created_at=now,
                           expires_at=now + 3600),
            BrowserSession(id="ended-long-ago", user_id=1, auth_time=now - 9e4,
                           created_at=now - 9e4, expires_at=now + 3600, ended_at=now - 9e4),
            BrowserSession(id="expired-long-ago", user_id=1, auth_time=now - 2e5,
                           created_at=now - 2e5, expires_at=now - 9e4),
            BrowserSession(id="ended-just-now", user_id=1, auth_time=now, created_at=now,
                           expires_at=now + 3600, ended_at=now),
            RedeemedCode(code_hash="old", client_id="c", family_id="f", expires_at=now - 400),
            # (kept a while after its code expired: another instance's clock may run behind)
            RedeemedCode(code_hash="just", client_id="c", family_id="f", expires_at=now - 10),
            RedeemedCode(code_hash="young", client_id="c", family_id="f", expires_at=now + 60),
        ])
        session.commit()
    run_once(parts)
    with parts.db.session_factory() as session:
        assert sorted(r.id for r in session.query(BrowserSession)) == ["ended-just-now", "live"]
        assert sorted(r.code_hash for r in session.query(RedeemedCode)) == ["just", "young"]
