"""A client nobody on this team wrote: panva's ``openid-client`` (Node), pinned in
tests/node/package-lock.json, drives a real ``qr-oidc serve``.

Each test runs one script from tests/node/ as a subprocess; the script speaks JSON lines on
standard output (see tests/node/lib.mjs) so the test can play the phone at the right moment:
approve after the device has polled at least once, deny, pick a number. Every ID token in these
tests is validated by openid-client itself: its signature against ``jwks_uri``
(``enableNonRepudiationChecks``), ``iss``, ``aud``, ``exp``, ``iat``, ``sub``, and in the code
flow the ``state``, PKCE and the ``nonce``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conftest import phone_app
from helpers import (
    DEVICE_GRANT,
    QR_GRANT,
    Provider,
    approved_ticket,
    ask_for_qr,
    complete_qr,
    sign_in_phone,
)

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")  # RFC 8628 §6.1
REDIRECT = "https://rp.example/callback"


# -- running the Node scripts ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def node_clients():
    """tests/node with its locked dependencies installed (scripts/test runs ``npm ci``; this does
    it too when they are missing, so a bare ``pytest`` works)."""
    node = shutil.which("node")
    assert node, "Node.js is needed for the openid-client tests"
    lock = NODE_DIR / "package-lock.json"
    assert lock.exists(), "tests/node/package-lock.json pins openid-client"
    installed = NODE_DIR / "node_modules" / "openid-client" / "package.json"
    if not installed.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install tests/node (npm ci)"
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=NODE_DIR, capture_output=True, text=True, timeout=600,
                              check=False)
        assert done.returncode == 0, done.stderr
    return node


class NodeRun:
    """One Node script as a subprocess, its JSON lines read as they come."""

    def __init__(self, node: str, script: str, provider: Provider, client: dict, **env: str):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("QR_OIDC_")}
        clean.update({
            "QR_OIDC_ISSUER": provider.meta["issuer"],
            "QR_OIDC_CLIENT_ID": client["client_id"],
            **({"QR_OIDC_CLIENT_SECRET": client["client_secret"]}
               if client.get("client_secret") else {}),
            **env,
        })
        self.proc = subprocess.Popen([node, str(NODE_DIR / script)], cwd=NODE_DIR, env=clean,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self._lines: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _diagnosis(self) -> str:
        return f"events so far: {self.events}\nstderr: {''.join(self._stderr)}"

    def next(self, *kinds: str, timeout: float = 120) -> dict:
        """The next line whose event is one of ``kinds`` (earlier ones are kept in ``events``).
        The timeout only keeps a broken run from hanging the suite."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    f"no {kinds} from the Node client\n{self._diagnosis()}") from None
            if line is None:
                raise AssertionError(f"the Node client ended before {kinds}\n{self._diagnosis()}")
            event = json.loads(line)
            self.events.append(event)
            if event["event"] in kinds:
                return event

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def outcome(self, timeout: float = 120) -> dict:
        """The final line: ``result`` or ``error``."""
        last = self.next("result", "error", timeout=timeout)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == (0 if last["event"] == "result" else 2), self._diagnosis()
        return last

    def result(self, timeout: float = 120) -> dict:
        last = self.outcome(timeout)
        assert last["event"] == "result", f"openid-client failed: {last}\n{self._diagnosis()}"
        return last

    def token_errors(self) -> list:
        return [e["error"] for e in self.events if e["event"] == "token_response"]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def run(node_clients):
    started: list[NodeRun] = []

    def start(script: str, provider: Provider, client: dict, **env: str) -> NodeRun:
        started.append(NodeRun(node_clients, script, provider, client, **env))
        return started[-1]

    yield start
    for one in started:
        one.kill()


# -- clients ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tv(provider):
    """A confidential device-flow client."""
    return provider.create_client("--name", "Living-room TV", "--grant-type", DEVICE_GRANT,
                                  "--grant-type", "refresh_token",
                                  "--scope", "openid profile email offline_access")


@pytest.fixture(scope="module")
def public_tv(provider):
    return provider.create_client("--name", "Kiosk", "--public", "--grant-type", DEVICE_GRANT)


@pytest.fixture(scope="module")
def shop(provider):
    """A confidential relying party that may use the QR grant and refresh its tokens."""
    return provider.create_client("--name", "Node shop", "--grant-type", QR_GRANT,
                                  "--grant-type", "refresh_token",
                                  "--scope", "openid profile email offline_access")


@pytest.fixture(scope="module")
def spa(provider):
    return provider.create_client("--name", "Node SPA", "--public", "--grant-type", QR_GRANT)


@pytest.fixture(scope="module")
def bank(provider):
    return provider.create_client("--name", "Node bank", "--number-matching",
                                  "--grant-type", QR_GRANT)


@pytest.fixture(scope="module")
def portal(provider):
    """A relying party that knows only the authorization code flow."""
    return provider.create_client("--name", "Node portal", "--redirect-uri", REDIRECT,
                                  "--grant-type", "authorization_code")


def assert_qr_id_token(claims: dict, provider: Provider, client: dict, user: dict):
    """What openid-client returned as the validated claims, against what SPEC.md promises."""
    assert claims["iss"] == provider.meta["issuer"]
    assert claims["aud"] == client["client_id"]
    assert claims["sub"] == user["sub"]
    assert claims["amr"] == ["qr"]
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]


# -- the pinned client -----------------------------------------------------------------------------
def test_the_installed_openid_client_is_the_pinned_one(node_clients):
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["openid-client"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pinned to an exact version"
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/openid-client"]["version"] == pinned
    installed = json.loads((NODE_DIR / "node_modules/openid-client/package.json").read_text())
    assert installed["version"] == pinned
    assert int(pinned.split(".")[0]) >= 6


# -- discovery -------------------------------------------------------------------------------------
def test_openid_client_discovers_the_provider(run, provider, tv):
    result = run("discovery.mjs", provider, tv).result()
    metadata = result["metadata"]
    # openid-client accepted the document (its issuer is the one it was asked for) and kept it whole
    assert metadata == provider.meta
    assert metadata["issuer"] == provider.url
    assert metadata["device_authorization_endpoint"] == provider.url + "/device_authorization"
    assert {DEVICE_GRANT, QR_GRANT} <= set(metadata["grant_types_supported"])
    assert result["supports_pkce_s256"] is True and result["supports_pkce_plain"] is False
    assert result["client_id"] == tv["client_id"]
    url = urlsplit(result["authorization_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == metadata["authorization_endpoint"]


# -- device flow -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["confidential", "public"])
def test_device_flow_through_openid_client_polls_through_the_approval(
        run, provider, tv, public_tv, alice, alice_phone, kind):
    # the TV may refresh and asks for offline_access; the kiosk may not refresh
    client = tv if kind == "confidential" else public_tv
    scope = "openid profile offline_access" if kind == "confidential" else "openid profile"
    nonce = secrets.token_urlsafe(12)
    device = run("device.mjs", provider, client, QR_OIDC_NONCE=nonce, QR_OIDC_SCOPE=scope)
    started = device.next("device_authorization")
    assert USER_CODE.match(started["user_code"]), started
    assert started["verification_uri"] == provider.url + "/device"
    assert urlsplit(started["verification_uri_complete"]).path.startswith("/s/")
    assert started["interval"] == 2 and started["expires_in"] > 0

    # the phone sees who asks: this client, from openid-client's own user agent
    scanned = provider.phone("scan", alice_phone, user_code=started["user_code"].lower())
    assert scanned.status_code == 200, scanned.text
    view = scanned.json()
    assert view["client"]["client_id"] == client["client_id"]
    assert view["requester"]["user_agent"].startswith("openid-client/")
    assert view["scopes"] == scope.split()

    # openid-client polls and is told to wait; the user approves meanwhile
    first = device.next("token_response")
    assert (first["status"], first["error"]) == (400, "authorization_pending")
    approved = provider.phone("approve", alice_phone, user_code=started["user_code"])
    assert approved.status_code == 200, approved.text

    result = device.result()
    assert device.token_errors()[-1] is None  # the last poll got the tokens
    assert result["token_type"] == "bearer" and result["scope"] == scope
    claims = result["claims"]
    assert_qr_id_token(claims, provider, client, alice)
    assert claims["nonce"] == nonce
    assert claims["name"] == "Alice Liddell"
    # fetchUserInfo checked that userinfo's sub is the ID token's
    assert result["userinfo"]["sub"] == alice["sub"]
    assert result["userinfo"]["name"] == "Alice Liddell"
    assert (result["refresh_token"] is not None) == (kind == "confidential")


def test_device_flow_denied_on_the_phone_is_access_denied_in_openid_client(
        run, provider, tv, alice_phone):
    device = run("device.mjs", provider, tv)
    code = device.next("device_authorization")["user_code"]
    assert provider.phone("scan", alice_phone, user_code=code).status_code == 200
    assert provider.phone("deny", alice_phone, user_code=code).status_code == 200
    outcome = device.outcome()
    assert outcome["event"] == "error"
    assert outcome["name"] == "ResponseBodyError"
    assert (outcome["status"], outcome["error"]) == (400, "access_denied")


@pytest.fixture(scope="module")
def fast_provider(tmp_path_factory):
    """A provider with a one-second poll interval, for a client that polls faster still."""
    server = Provider(tmp_path_factory.mktemp("fast-provider"), {"QR_OIDC_POLL_INTERVAL": "1"})
    server.start()
    yield server
    server.stop()


def test_openid_client_copes_with_slow_down(run, fast_provider):
    """A device that ignores the interval (it polls back to back) is told slow_down; openid-client
    adds 5 s to its interval as RFC 8628 §3.5 says, and still gets the tokens once approved."""
    provider = fast_provider
    client = provider.create_client("--name", "Impatient TV", "--grant-type", DEVICE_GRANT)
    user = provider.create_user("carol", "carol-password", name="Carol")
    phone = sign_in_phone(provider, phone_app(provider), "carol", "carol-password")["access_token"]

    device = run("device.mjs", provider, client, QR_OIDC_POLL_EVERY="0")
    code = device.next("device_authorization")["user_code"]
    first = device.next("token_response")
    assert first["error"] == "authorization_pending"  # the first poll is never slow_down
    second = device.next("token_response")
    assert second["error"] == "slow_down"
    assert provider.phone("scan", phone, user_code=code).status_code == 200
    assert provider.phone("approve", phone, user_code=code).status_code == 200

    result = device.result()
    assert_qr_id_token(result["claims"], provider, client, user)
    assert device.token_errors()[-1] is None
    # the server grew its interval for this ticket and kept it (5 s per slow_down)
    intervals = provider.db("SELECT poll_interval FROM tickets WHERE client_id = ?",
                            client["client_id"])
    assert len(intervals) == 1 and intervals[0][0] >= 6


# -- the QR grant through genericGrantRequest ------------------------------------------------------
@pytest.mark.parametrize("kind", ["confidential", "public", "number matching"])
def test_qr_grant_through_openid_client_generic_grant_request(
        run, provider, shop, spa, bank, alice, alice_phone, kind):
    client = {"confidential": shop, "public": spa, "number matching": bank}[kind]
    nonce = secrets.token_urlsafe(12)
    web = run("qr_grant.mjs", provider, client, QR_OIDC_NONCE=nonce)
    ticket = web.next("ticket")
    scan_code = urlsplit(ticket["qr_content"]).path.rsplit("/", 1)[1]
    assert (ticket["binding_code"] is not None) == (kind == "number matching")

    scanned = provider.phone("scan", alice_phone, scan_code=scan_code)
    assert scanned.status_code == 200, scanned.text
    assert scanned.json()["client"]["name"] == client["client_name"]
    first = web.next("token_response")
    assert (first["status"], first["error"]) == (400, "authorization_pending")
    body = {"scan_code": scan_code}
    if ticket["binding_code"] is not None:
        assert ticket["binding_code"] in scanned.json()["binding_choices"]
        body["binding_code"] = ticket["binding_code"]
    assert provider.phone("approve", alice_phone, **body).status_code == 200

    result = web.result()
    claims = result["claims"]
    assert_qr_id_token(claims, provider, client, alice)
    assert claims["nonce"] == nonce
    assert result["token_type"] == "bearer" and result["scope"] == "openid profile"
    # the access token is the provider's: userinfo takes it
    info = requests.get(provider.meta["userinfo_endpoint"], timeout=10,
                        headers={"Authorization": f"Bearer {result['access_token']}"})
    assert info.status_code == 200 and info.json()["sub"] == alice["sub"]


def test_a_wrong_number_pick_reaches_openid_client_as_access_denied(run, provider, bank,
                                                                   alice_phone):
    web = run("qr_grant.mjs", provider, bank)
    ticket = web.next("ticket")
    scan_code = urlsplit(ticket["qr_content"]).path.rsplit("/", 1)[1]
    choices = provider.phone("scan", alice_phone, scan_code=scan_code).json()["binding_choices"]
    wrong = next(c for c in choices if c != ticket["binding_code"])
    refused = provider.phone("approve", alice_phone, scan_code=scan_code, binding_code=wrong)
    assert refused.status_code == 403 and refused.json()["error"] == "binding_mismatch"
    outcome = web.outcome()
    assert outcome["event"] == "error"
    assert (outcome["name"], outcome["error"]) == ("ResponseBodyError", "access_denied")


# -- the hosted login page through openid-client's authorization code flow -------------------------
def drive_hosted_login(provider: Provider, url: str, phone: str, decision: str) -> str:
    """The browser part: open the login page, let the phone decide on its QR, and follow the page
    back to the relying party. Returns the URL the browser lands on."""
    browser = requests.Session()
    page = browser.get(url, timeout=10)
    assert page.status_code == 200 and 'name="password"' in page.text
    made = ask_for_qr(browser, page)
    assert made.status_code == 201, made.text
    ticket = made.json()
    scan_code = ticket["qr_content"].rsplit("/", 1)[1]
    assert provider.phone("scan", phone, scan_code=scan_code).status_code == 200
    assert provider.phone(decision, phone, scan_code=scan_code).status_code == 200
    done = complete_qr(browser, page, ticket["ticket"])
    assert done.status_code == 302, done.text
    return done.headers["Location"]


def test_hosted_qr_login_through_openid_client_code_flow(run, provider, portal, alice,
                                                         alice_phone):
    rp = run("code_flow.mjs", provider, portal, QR_OIDC_REDIRECT_URI=REDIRECT)
    started = rp.next("authorization_url")
    landed = drive_hosted_login(provider, started["url"], alice_phone, "approve")
    assert landed.startswith(REDIRECT + "?")
    rp.send(landed)
    result = rp.result()
    claims = result["claims"]  # state, PKCE and nonce checked by openid-client
    assert_qr_id_token(claims, provider, portal, alice)
    assert claims["nonce"] == started["nonce"]


def test_hosted_qr_login_denied_reaches_openid_client_as_access_denied(run, provider, portal,
                                                                      alice_phone):
    rp = run("code_flow.mjs", provider, portal, QR_OIDC_REDIRECT_URI=REDIRECT)
    started = rp.next("authorization_url")
    landed = drive_hosted_login(provider, started["url"], alice_phone, "deny")
    rp.send(landed)
    outcome = rp.outcome()
    assert outcome["event"] == "error"
    # the state matched (else openid-client says so first), and the error is the server's
    assert (outcome["name"], outcome["error"]) == ("AuthorizationResponseError", "access_denied")


# -- afterwards: refresh, userinfo, introspection, revocation --------------------------------------
def test_refresh_revocation_and_introspection_through_openid_client(run, provider, shop, alice,
                                                                   alice_phone):
    ticket = approved_ticket(provider, shop, alice_phone, scope="openid profile offline_access")
    first = provider.poll(shop, ticket["ticket"])
    assert first.status_code == 200, first.text
    tokens = first.json()

    result = run("tokens.mjs", provider, shop, QR_OIDC_REFRESH_TOKEN=tokens["refresh_token"],
                 QR_OIDC_SUB=alice["sub"]).result()
    refreshed = result["refreshed"]
    assert refreshed["refresh_token"] and refreshed["refresh_token"] != tokens["refresh_token"]
    assert_qr_id_token(refreshed["claims"], provider, shop, alice)  # validated again
    assert "nonce" not in refreshed["claims"]

    before = result["introspection_before"]
    assert before["active"] is True and before["sub"] == alice["sub"]
    assert before["client_id"] == shop["client_id"]
    assert result["userinfo_before"]["sub"] == alice["sub"]
    # revoked through openid-client: refused at once
    assert result["introspection_after"] == {"active": False}
    after = result["userinfo_after"]
    assert after["status"] == 401 and after["challenge_error"] == "invalid_token"
    # reuse of the rotated refresh token, and the whole family is gone
    assert result["replay"]["error"] == "invalid_grant"
    assert result["newest_after_replay"]["error"] == "invalid_grant"


# -- push login (CIBA) -----------------------------------------------------------------------------
CIBA = "urn:openid:params:grant-type:ciba"


@pytest.fixture(scope="module")
def call_centre(provider):
    """A confidential relying party that logs people in by push (CIBA, poll mode)."""
    return provider.create_client("--name", "Node call centre", "--grant-type", CIBA)


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_push_login_through_openid_client(run, provider, call_centre, phone_client, decision):
    name = f"node-push-{decision}-{secrets.token_hex(3)}"
    user = provider.create_user(name, name + "-password", name="Nora Node")
    phone = sign_in_phone(provider, phone_client, name, name + "-password")["access_token"]
    ciba = run("ciba.mjs", provider, call_centre, QR_OIDC_LOGIN_HINT=name,
               QR_OIDC_BINDING_MESSAGE="Node order 42")
    started = ciba.next("backchannel_authentication")
    assert started["auth_req_id_length"] >= 22
    assert started["interval"] == 2 and started["expires_in"] == 120
    first = ciba.next("token_response")
    assert (first["status"], first["error"]) == (400, "authorization_pending")
    requests_waiting = requests.post(provider.meta["qr_inbox_endpoint"], timeout=30,
                                     headers={"Authorization": f"Bearer {phone}"}).json()
    [entry] = requests_waiting["requests"]
    assert entry["binding_message"] == "Node order 42" and entry["kind"] == "push"
    assert entry["client"]["name"] == "Node call centre"
    assert entry["requester"]["user_agent"].startswith("openid-client/")
    assert provider.phone(decision, phone, scan_code=entry["scan_code"]).status_code == 200
    if decision == "deny":
        outcome = ciba.outcome()
        assert outcome["event"] == "error"
        assert (outcome["status"], outcome["error"]) == (400, "access_denied")
        return
    result = ciba.result()
    assert ciba.token_errors()[-1] is None
    claims = result["claims"]  # validated by openid-client, signature included
    assert claims["iss"] == provider.meta["issuer"] and claims["aud"] == call_centre["client_id"]
    assert claims["sub"] == user["sub"] and claims["amr"] == ["push"]
    assert result["userinfo"]["sub"] == user["sub"]
    assert result["userinfo"]["name"] == "Nora Node"


# -- DPoP (RFC 9449) through openid-client's own proofs --------------------------------------------
def access_claims(token: str) -> dict:
    """The access token's claims (no check: the server made it; userinfo checks it)."""
    import jwt
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture(scope="module")
def dpop_spa(provider):
    """A public relying party of the code flow that refreshes: its refresh tokens get bound."""
    return provider.create_client("--name", "Node DPoP SPA", "--public", "--redirect-uri",
                                  REDIRECT, "--grant-type", "authorization_code",
                                  "--grant-type", "refresh_token",
                                  "--scope", "openid profile offline_access")


def assert_dpop_code_flow(result: dict, started: dict, provider: Provider, client: dict,
                          user: dict, public: bool):
    """What dpop_code_flow.mjs reports, for a client whose refresh tokens are bound (public) or
    kept to its client authentication (confidential)."""
    jkt = started["jkt"]
    assert result["jkt"] == jkt
    tokens = result["tokens"]
    # openid-client checked the ID token (state, PKCE, nonce, signature) and that the answer's
    # token_type is DPoP (it refuses a Bearer answer to a DPoP request)
    assert_qr_id_token(tokens["claims"], provider, client, user)
    assert tokens["claims"]["nonce"] == started["nonce"]
    assert tokens["token_type"] == "dpop"  # openid-client lower-cases it
    assert access_claims(tokens["access_token"])["cnf"] == {"jkt": jkt}
    assert tokens["refresh_token"]
    assert result["userinfo"]["sub"] == user["sub"]
    # the same token without the key is refused, with a DPoP challenge
    as_bearer = result["userinfo_as_bearer"]
    assert (as_bearer["status"], as_bearer["challenge_error"]) == (401, "invalid_token")
    other = result["userinfo_with_another_key"]
    assert (other["status"], other["challenge_error"]) == (401, "invalid_dpop_proof")
    # refreshed with the handle: bound to the same key again, a new ID token validated
    refreshed = result["refreshed"]
    assert refreshed["token_type"] == "dpop"
    assert access_claims(refreshed["access_token"])["cnf"] == {"jkt": jkt}
    assert refreshed["refresh_token"] and refreshed["refresh_token"] != tokens["refresh_token"]
    assert_qr_id_token(refreshed["claims"], provider, client, user)
    assert result["userinfo_refreshed"]["sub"] == user["sub"]
    without = result["refresh_without_key"]
    if public:  # the public client's refresh token is bound to the key: refused without it
        assert (without["status"], without["error"]) == (400, "invalid_grant")
    else:  # a confidential client's is kept by its authentication: a Bearer token without it
        assert without["ok"]["token_type"] == "bearer"
        assert "cnf" not in access_claims(without["ok"]["access_token"])


def test_hosted_qr_login_through_openid_client_code_flow_with_dpop(run, provider, dpop_spa,
                                                                   alice, alice_phone):
    rp = run("dpop_code_flow.mjs", provider, dpop_spa, QR_OIDC_REDIRECT_URI=REDIRECT)
    started = rp.next("authorization_url")
    landed = drive_hosted_login(provider, started["url"], alice_phone, "approve")
    rp.send(landed)
    result = rp.result()
    assert_dpop_code_flow(result, started, provider, dpop_spa, alice, public=True)
    # every proof went through the first time: no nonce asked for, none retried
    assert rp.token_errors() == [None, None, "invalid_grant"]
    resources = [(e["status"], e["scheme"], e["error"]) for e in rp.events
                 if e["event"] == "resource_response"
                 and e["url"] == provider.meta["userinfo_endpoint"]]
    assert resources == [(200, None, None), (401, "DPoP", "invalid_token"),
                         (401, "DPoP", "invalid_dpop_proof"), (200, None, None)]


@pytest.fixture(scope="module")
def nonce_provider(tmp_path_factory):
    """A provider that asks for its own DPoP nonces (QR_OIDC_DPOP_NONCES)."""
    server = Provider(tmp_path_factory.mktemp("dpop-nonce-provider"),
                      {"QR_OIDC_DPOP_NONCES": "true"})
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("kind", ["public", "confidential"])
def test_openid_client_code_flow_with_dpop_retries_the_servers_nonce(run, nonce_provider, kind):
    provider = nonce_provider
    name = f"nonce-{kind}"
    client = provider.create_client(
        "--name", f"Node DPoP {kind}", *(["--public"] if kind == "public" else []),
        "--redirect-uri", REDIRECT, "--grant-type", "authorization_code",
        "--grant-type", "refresh_token", "--scope", "openid profile offline_access")
    user = provider.create_user(name, name + "-password", name="Nina Nonce")
    phone = sign_in_phone(provider, phone_app(provider), name, name + "-password")["access_token"]

    rp = run("dpop_code_flow.mjs", provider, client, QR_OIDC_REDIRECT_URI=REDIRECT,
             QR_OIDC_DPOP_ALG="EdDSA" if kind == "public" else "RS256")
    started = rp.next("authorization_url")
    rp.send(drive_hosted_login(provider, started["url"], phone, "approve"))
    result = rp.result()
    assert_dpop_code_flow(result, started, provider, client, user, public=kind == "public")
    # the first proof had no nonce: use_dpop_nonce, and openid-client retried with the one the
    # server named; later proofs carried it from the start (one handle, one nonce)
    errors = rp.token_errors()
    assert errors[:2] == ["use_dpop_nonce", None], errors
    assert errors[2:] == [None, "invalid_grant" if kind == "public" else None], errors
    resources = [(e["status"], e["error"]) for e in rp.events if e["event"] == "resource_response"
                 and e["url"] == provider.meta["userinfo_endpoint"]]
    # userinfo took the nonce the token endpoint gave; the other key's fresh handle had none: it
    # was asked for one at userinfo (401 use_dpop_nonce with DPoP-Nonce), retried, and refused
    assert resources == [(200, None), (401, "invalid_token"), (401, "use_dpop_nonce"),
                         (401, "invalid_dpop_proof"), (200, None)], resources
    assert [e["nonce"] for e in rp.events if e["event"] == "resource_response"
            and e["error"] == "use_dpop_nonce"] == [True]
