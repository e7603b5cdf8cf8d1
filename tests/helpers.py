"""Test helpers: a real server process, and the HTTP calls a relying party and a phone make."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

QR_GRANT = "urn:qr-oidc:params:oauth:grant-type:qr-ticket"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
BIN = shutil.which("qr-oidc", path=str(Path(sys.executable).parent)) or "qr-oidc"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Where PostgreSQL test databases are made: one fresh database per server, dropped afterwards.
PG_ADMIN_URL = os.environ.get("QR_OIDC_TEST_DATABASE_URL",
                              "postgresql://root@127.0.0.1:5432/test")


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"),
                           autocommit=True)


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; returns its SQLAlchemy URL."""
    name = "qr_oidc_test_" + secrets.token_hex(6)
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


GENEROUS_LIMITS = {
    "QR_OIDC_RATE_TICKET_IP": "100000/60",
    "QR_OIDC_RATE_TICKET_CLIENT": "100000/60",
    "QR_OIDC_RATE_USER_CODE_USER": "10000/600",
    "QR_OIDC_RATE_USER_CODE_IP": "10000/600",
    "QR_OIDC_RATE_LOGIN_ACCOUNT": "10000/900",
    "QR_OIDC_RATE_LOGIN_IP": "10000/900",
}


class Provider:
    """One ``qr-oidc serve`` process on a free port with its own database: an SQLite file, or a
    fresh PostgreSQL database (``backend="postgresql"``, or ``database_url`` to share one)."""

    def __init__(self, folder: Path, env: dict | None = None, backend: str = "sqlite",
                 database_url: str | None = None):
        self.folder = Path(folder)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = self.folder / "qr-oidc.db"
        self.backend = backend
        self.owns_database = False
        if database_url is None and backend == "postgresql":
            database_url = create_pg_database()
            self.owns_database = True
        if database_url is None:
            database_url = f"sqlite:///{self.db_path}"
        self.database_url = database_url
        self.env = {
            **os.environ,
            "QR_OIDC_DATABASE_URL": database_url,
            "QR_OIDC_HOST": "127.0.0.1",
            "QR_OIDC_PORT": str(self.port),
            "QR_OIDC_LOG_LEVEL": "info",
            # generous limits: the suite creates many tickets from one address; the rate-limit
            # tests start servers with tight ones
            **GENEROUS_LIMITS,
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.log_path = self.folder / "serve.log"

    # -- process ------------------------------------------------------------------------------
    def start(self, *extra: str) -> None:
        self._log = open(self.log_path, "ab")
        # its own process group, so kill() takes the gunicorn workers down with the master
        self.proc = subprocess.Popen([BIN, "serve", *extra], env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qr-oidc serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/.well-known/openid-configuration", timeout=1).ok:
                    self.meta = requests.get(self.url + "/.well-known/openid-configuration").json()
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"qr-oidc serve did not answer in time:\n{self.log()}")

    def stop(self, keep_database: bool = False) -> None:
        """Stop the server (and drop the PostgreSQL database it made, unless
        ``keep_database``: then ``start`` may run it again on the same data)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
        if self.owns_database and not keep_database:
            drop_pg_database(self.database_url)
            self.owns_database = False

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- operator's CLI -----------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([BIN, *args], env=self.env, capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"qr-oidc {' '.join(args)} failed: {result.stderr}")
        return result

    def create_client(self, *args: str) -> dict:
        return json.loads(self.cli("clients", "create", *args, "--json").stdout)

    def create_user(self, username: str, password: str, **profile) -> dict:
        args = ["users", "create", "--username", username, "--password", password, "--json"]
        for key, value in profile.items():
            args += [f"--{key}", value]
        return json.loads(self.cli(*args).stdout)

    # -- direct reads of the storage (to check what the black box cannot show) -----------------
    def db(self, sql: str, *params) -> list[tuple]:
        """Run SQL (``?`` placeholders) on the server's database; returns the rows."""
        if self.database_url.startswith("sqlite"):
            path = self.database_url.split("sqlite:///", 1)[1]  # maybe shared with another
            with sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=15) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        url = self.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def dump(self) -> bytes:
        """Everything the database keeps, as bytes (to look for secrets stored in clear)."""
        if self.database_url.startswith("sqlite"):
            data = b""
            for suffix in ("", "-wal", "-journal"):
                path = self.db_path.with_name(self.db_path.name + suffix)
                if path.exists():
                    data += path.read_bytes()
            return data
        tables = [name for (name,) in self.db(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(str(row) for table in tables
                          for row in self.db(f'SELECT * FROM "{table}"')).encode()

    # -- relying party ------------------------------------------------------------------------
    def create_ticket(self, client: dict, **params) -> requests.Response:
        data = {"scope": "openid profile", **in_body(client), **params}
        return requests.post(self.url + "/qr/ticket", data=data, auth=_auth(client),
                             timeout=30)

    def ticket(self, client: dict, **params) -> dict:
        response = self.create_ticket(client, **params)
        assert response.status_code == 201, response.text
        return response.json()

    def poll(self, client: dict, ticket: str, as_json: bool = False, **extra) -> requests.Response:
        """A token poll, as a form or as JSON."""
        data = {"grant_type": QR_GRANT, "ticket": ticket, **in_body(client), **extra}
        body = {"json": data} if as_json else {"data": data}
        return requests.post(self.url + "/token", auth=_auth(client), timeout=30, **body)

    def status(self, ticket: str, **extra) -> requests.Response:
        return requests.post(self.url + "/qr/status", data={"ticket": ticket, **extra}, timeout=60)

    # -- phone --------------------------------------------------------------------------------
    def phone(self, action: str, token: str | None, **body) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(f"{self.url}/qr/{action}", data=body, headers=headers, timeout=30)

    def scan_code(self, ticket: dict) -> str:
        return ticket["qr_content"].rsplit("/", 1)[1]


def _auth(client: dict):
    """The Basic credentials of a client_secret_basic client (the default); None for others."""
    if client.get("client_secret") and client.get("token_endpoint_auth_method") != \
            "client_secret_post":
        return (client["client_id"], client["client_secret"])
    return None


def in_body(client: dict) -> dict:
    """The credentials a client_secret_post client sends in the body; {} for the others (public
    clients' tests send their client_id themselves)."""
    if client.get("token_endpoint_auth_method") == "client_secret_post":
        return {"client_id": client["client_id"], "client_secret": client["client_secret"]}
    return {}


def public_params(client: dict) -> dict:
    return {} if client.get("client_secret") else {"client_id": client["client_id"]}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class _Forms(HTMLParser):
    """Every <form> with its inputs and buttons (name, type, value)."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"method": (attrs.get("method") or "get").lower(),
                               "action": attrs.get("action"), "id": attrs.get("id"),
                               "fields": []})
        elif tag in ("input", "button") and self.forms:
            kind = attrs.get("type") or ("submit" if tag == "button" else "text")
            self.forms[-1]["fields"].append({"tag": tag, "name": attrs.get("name"),
                                             "type": kind.lower(), "value": attrs.get("value")})


def forms_of(html: str) -> list[dict]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def submit_form(session: requests.Session, page: requests.Response, having: str,
                **data) -> requests.Response:
    """Post the page's form that has a field named ``having``, as a browser would: its hidden
    inputs (a value of None in ``data`` leaves one out) and ``data``, to its action."""
    form = next(f for f in forms_of(page.text) if any(x["name"] == having for x in f["fields"]))
    body = {x["name"]: x["value"] or "" for x in form["fields"]
            if x["type"] == "hidden" and x["name"]}
    body.update(data)
    body = {k: v for k, v in body.items() if v is not None}
    action = urljoin(page.url, form["action"] or page.url)
    return session.post(action, data=body, allow_redirects=False, timeout=30)


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def login_form(session: requests.Session, response: requests.Response, username: str,
               password: str) -> requests.Response:
    """Fill the hosted login form found at ``response`` (after redirects) and submit it."""
    assert 'name="username"' in response.text and 'name="password"' in response.text
    action = urlsplit(response.url)
    next_value = re.search(r'name="next" value="([^"]*)"', response.text).group(1)
    return session.post(
        f"{action.scheme}://{action.netloc}/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(response.text),
              "next": next_value.replace("&amp;", "&")},
        allow_redirects=False,
        timeout=30,
    )


def authorize(provider: Provider, client: dict, username: str, password: str,
              scope: str = "openid profile", session: requests.Session | None = None,
              **extra) -> tuple[requests.Session, dict, str]:
    """Authorization code flow with PKCE through the hosted login form; returns the redirect's
    query (code, state) and the verifier."""
    session = session or requests.Session()
    verifier, challenge = pkce()
    params = {
        "response_type": "code", "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0], "scope": scope, "state": secrets.token_hex(8),
        "code_challenge": challenge, "code_challenge_method": "S256", **extra,
    }
    response = session.get(f"{provider.url}/authorize?{urlencode(params)}", timeout=30)
    if 'name="password"' in response.text:
        response = login_form(session, response, username, password)
        assert response.status_code == 302, response.text
        response = session.get(provider.url + response.headers["Location"], allow_redirects=False,
                               timeout=30)
    if response.status_code == 200 and 'name="decision"' in response.text:
        response = submit_form(session, response, "decision", decision="approve")
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(client["redirect_uris"][0].split("?")[0]), location
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query.get("state") == params["state"]
    return session, query, verifier


def sign_in_phone(provider: Provider, client: dict, username: str, password: str) -> dict:
    _session, query, verifier = authorize(provider, client, username, password,
                                          scope="openid profile qr:approve")
    response = requests.post(provider.url + "/token", data={
        "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": client["redirect_uris"][0], "client_id": client["client_id"],
        "code_verifier": verifier,
    }, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def approved_ticket(provider: Provider, client: dict, phone_token: str, **params) -> dict:
    """A ticket that the phone has scanned and approved."""
    ticket = provider.ticket(client, **params)
    code = provider.scan_code(ticket)
    assert provider.phone("scan", phone_token, scan_code=code).status_code == 200
    body = {"scan_code": code}
    if "binding_code" in ticket:
        body["binding_code"] = ticket["binding_code"]
    assert provider.phone("approve", phone_token, **body).status_code == 200
    return ticket


# -- the hosted login page's QR, as its script (qr-login.js) drives it ------------------------------
def page_origin(page: requests.Response) -> str:
    parts = urlsplit(page.url)
    return f"{parts.scheme}://{parts.netloc}"


def ask_for_qr(browser: requests.Session, page: requests.Response, **data) -> requests.Response:
    """What the login page's script does on load: post #qr-start and take the ticket as JSON."""
    form = next(f for f in forms_of(page.text) if f["id"] == "qr-start")
    body = {x["name"]: x["value"] for x in form["fields"] if x["type"] == "hidden"}
    body.update(data)
    return browser.post(page_origin(page) + form["action"], data=body,
                        headers={"Accept": "application/json"}, timeout=30)


def complete_qr(browser: requests.Session, page: requests.Response, ticket: str,
                **data) -> requests.Response:
    """What the script does once the phone decided: post #qr-complete with the ticket."""
    return browser.post(page_origin(page) + "/authorize/qr", data={
        "csrf_token": csrf_of(page.text), "ticket": ticket, **data},
        allow_redirects=False, timeout=30)
