"""Test helpers: a real server process, and the HTTP calls a relying party and a phone make."""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

QR_GRANT = "urn:qr-oidc:params:oauth:grant-type:qr-ticket"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
BIN = shutil.which("qr-oidc", path=str(Path(sys.executable).parent)) or "qr-oidc"


def _port_block() -> range:
    """The ports this test process hands out: below the kernel's ephemeral range (so no client
    connection, of which the suite opens thousands, can take a port between the check here and
    the server's bind), one block per pytest-xdist worker (so two workers never pick the same),
    starting at a random place in it (so two runs at once on one machine seldom meet)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low, high = 15000, 32000  # ip_local_port_range starts at 32768 by default
    size = (high - low) // 8
    start = low + (index % 8) * size
    return range(start, start + size)


_PORTS = _port_block()
_next_port = secrets.randbelow(len(_PORTS))


def free_port() -> int:
    """A port nothing listens on, for a server this process starts."""
    global _next_port
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_port % len(_PORTS)]
        _next_port += 1
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


# Where PostgreSQL test databases are made: one fresh database per server, dropped afterwards.
PG_ADMIN_URL = os.environ.get("QR_OIDC_TEST_DATABASE_URL",
                              "postgresql://root@127.0.0.1:5432/test")


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"),
                           autocommit=True)


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; returns its SQLAlchemy URL."""
    import psycopg

    name = "qr_oidc_test_" + secrets.token_hex(6)
    for attempt in range(10):
        try:
            with _pg_admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            break
        except psycopg.errors.ObjectInUse:  # template1 busy: another worker is making one too
            if attempt == 9:
                raise
            time.sleep(0.2 * (attempt + 1))
    base = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the operator's CLI, without paying its imports on every call ----------------------------------
# ``qr-oidc clients create`` spends about a second of CPU importing (Flask, Authlib, SQLAlchemy,
# Alembic, the app) before it does a few milliseconds of work, and the suite runs hundreds of such
# commands to set up its servers. ``run_cli`` runs them in a process forked from one that has made
# those imports once: each command is still a process of its own, with the caller's environment,
# its own file descriptors 0/1/2, the CLI's real exit status and its atexit handlers; only the
# import is shared. ``fork=False`` runs the installed ``qr-oidc`` script instead.
LONG_RUNNING = {("serve",), ("demo",)}  # servers: always their own ``qr-oidc`` process
_FORK_SERVER = r"""
import atexit, json, os, sys, traceback
from qr_oidc.provider.runtime.cli import main  # what the qr-oidc script imports

def child(args, env, out, err):
    os.environ.clear()
    os.environ.update(env)
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = ["qr-oidc", *args]
    try:
        main(args)  # what the script does: sys.exit(main())
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(request["args"], request["env"], request["out"], request["err"])
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status),
                                 "pid": pid}) + "\n")
    sys.stdout.flush()
"""


class _ForkServer:
    """One process per test process that forks a child for each CLI command."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="qr-oidc-cli-"))

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            with open(self.folder / "fork-server.err", "wb") as errors:  # e.g. a failed import
                self.proc = subprocess.Popen([sys.executable, "-c", _FORK_SERVER],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=errors, text=True, start_new_session=True)
        return self.proc

    def run(self, args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
        with self.lock:
            proc = self._start()
            out, err = self.folder / "stdout", self.folder / "stderr"
            proc.stdin.write(json.dumps({"args": args, "env": env, "out": str(out),
                                         "err": str(err)}) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            if not ready:  # the command hangs: take it down with the fork server
                os.killpg(proc.pid, 9)
                proc.wait(10)
                raise subprocess.TimeoutExpired([BIN, *args], timeout)
            answer = proc.stdout.readline()
            if not answer:
                errors = (self.folder / "fork-server.err").read_text(errors="replace")
                raise RuntimeError(f"the CLI fork server died (exit {proc.wait(10)}):\n{errors}")
            returncode = json.loads(answer)["returncode"]
            return subprocess.CompletedProcess(
                [BIN, *args], returncode, out.read_text(errors="replace"),
                err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        shutil.rmtree(self.folder, ignore_errors=True)


_fork_server: _ForkServer | None = None


def run_cli(args, env: dict, fork: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """``qr-oidc ARGS`` with the environment ``env`` (text output captured, no standard input)."""
    global _fork_server
    args = [str(a) for a in args]
    if not fork:
        return subprocess.run([BIN, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    if _fork_server is None:
        _fork_server = _ForkServer()
        atexit.register(_fork_server.close)
    return _fork_server.run(args, env, timeout)


GENEROUS_LIMITS = {
    "QR_OIDC_RATE_TICKET_IP": "100000/60",
    "QR_OIDC_RATE_TICKET_CLIENT": "100000/60",
    "QR_OIDC_RATE_USER_CODE_USER": "10000/600",
    "QR_OIDC_RATE_USER_CODE_IP": "10000/600",
    "QR_OIDC_RATE_LOGIN_ACCOUNT": "10000/900",
    "QR_OIDC_RATE_LOGIN_IP": "10000/900",
}
# scrypt at N=2^12 rather than 2^15, as Django's docs advise a test suite to do: the suite hashes
# about 900 passwords, which at the default cost was a seventh of all its CPU. The same code runs
# (scrypt, the hash format, re-hashing on sign-in); the tests about the cost itself
# (test_hardening's forty sign-ins at once, test_passwords) use the default.
CHEAP_PASSWORDS = {"QR_OIDC_PASSWORD_COST": "12"}


class Deployment:
    """A database of qr-oidc's and the operator's CLI pointed at it (``env``); what a server
    process (``Provider``) and the app built in the test's own process (``InProcess``) share."""

    database_url: str
    db_path: Path
    env: dict
    fork_cli = True  # False: every ``cli`` call starts ``qr-oidc`` from scratch

    # -- operator's CLI -----------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``qr-oidc ARGS`` with this database's environment. Short commands run in a process
        forked from one that made the CLI's imports already (``run_cli``); ``serve`` and ``demo``,
        and every command while ``fork_cli`` is false, run ``qr-oidc`` from scratch."""
        result = run_cli(args, self.env, fork=self.fork_cli and args[:1] not in LONG_RUNNING)
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
        """Run SQL (``?`` placeholders) on this database; returns the rows."""
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


class Provider(Deployment):
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
            **CHEAP_PASSWORDS,
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
                log = self.log()
                self.stop()  # (and drop the database it made: no test goes on after this)
                raise RuntimeError(f"qr-oidc serve exited {self.proc.returncode}:\n{log}")
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


class InProcess(Deployment):
    """The provider's Flask app built in the test's own process (``create_app``), on a database
    of its own: an SQLite file, or a fresh PostgreSQL database. For logic that needs no server
    process: ``client()`` is a browser or relying party (Flask's test client, cookies kept per
    client), and the operator's CLI works on the same database as for a server. What crosses
    HTTP (the event loop's hot paths, the HTTP server, several processes) stays with ``Provider``.

    ``settings`` are the app's (``{"ISSUER": "https://..."}``); the CLI gets them as
    ``QR_OIDC_*`` variables."""

    def __init__(self, folder: Path, settings: dict | None = None, backend: str = "sqlite",
                 build: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.db_path = self.folder / "qr-oidc.db"
        self.owns_database = backend == "postgresql"
        self.database_url = (create_pg_database() if self.owns_database
                             else f"sqlite:///{self.db_path}")
        limits = {name.removeprefix("QR_OIDC_"): value
                  for name, value in {**GENEROUS_LIMITS, **CHEAP_PASSWORDS}.items()}
        self.settings = {**limits, **(settings or {}), "DATABASE_URL": self.database_url}
        self.env = {**os.environ, **{f"QR_OIDC_{name}": str(value)
                                     for name, value in self.settings.items()}}
        self.app = None
        if build:
            self.build()

    def build(self):
        """Build the app (``build=False`` leaves it to the test: e.g. after the CLI has made the
        database). What ``qr-oidc serve`` does at start happens here."""
        from qr_oidc.provider.web.app import create_app

        try:
            self.app = create_app(self.settings)
        except BaseException:
            self.close()
            raise
        return self.app

    def client(self):
        """A new browser (or relying party): Flask's test client, with a cookie jar of its own."""
        return self.app.test_client()

    def close(self) -> None:
        app = self.app
        if app is not None:  # its connections go before its database does
            database = app.extensions["qr_oidc"].db
            for engine in (database.engine, getattr(database, "_autocommit", None)):
                if engine is not None:
                    engine.dispose()
        if self.owns_database:
            drop_pg_database(self.database_url)
            self.owns_database = False


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
    scanned = provider.phone("scan", phone_token, scan_code=code)
    assert scanned.status_code == 200, scanned.text
    body = {"scan_code": code}
    if "binding_code" in ticket:
        body["binding_code"] = ticket["binding_code"]
    assert provider.phone("approve", phone_token, **body).status_code == 200
    return ticket


# -- the hosted login page's QR, as its script (qr-login.js) drives it -----------------------------
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
