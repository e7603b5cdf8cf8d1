"""docs/openapi.yaml, kept true.

1. Every JSON route the app serves is described, and every described operation is served: the
   document is compared with the running app's ``url_map`` (HTML pages are listed and excluded).
2. The document is valid OpenAPI 3.1: schemathesis loads and validates it, every schema in it is a
   valid JSON Schema, every ``$ref`` resolves.
3. Each error code and status SPEC.md names is documented, and a real request that provokes it
   gets an answer that conforms to the document (status, media type, headers, body); DPoP's
   (RFC 9449) too: bound token responses, resources called with proofs, every refusal of a proof
   and, on a server of its own with server nonces, ``use_dpop_nonce``.
4. schemathesis fuzzes a real ``qr-oidc serve`` (its own process, SQLite) with real credentials: a
   confidential client by HTTP Basic (registered for every grant, push login's too, so that a
   generated backchannel authentication request can name a real user) and a phone's Bearer token
   (whose inbox then has push requests). The operations that take a ``DPoP`` header get generated
   (junk) proofs in it, and the phone's ``Authorization: DPoP`` junk. Generated and malformed
   requests
   (coverage, fuzzing and stateful phases, positive and negative data) across every operation:
   never a 5xx, every error JSON with a string ``error``, every response as documented.
5. Afterwards the database is unharmed: SQLite's integrity and foreign-key checks pass, no ticket
   is in a state the SPEC's lifecycle cannot reach (a push request is made bound to its user,
   "scanned"), and each redeemed ticket (QR, device or push) gave one token.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from urllib.parse import quote, unquote

import jsonschema_rs
import pytest
import requests
import schemathesis
import yaml
from dpop_client import DPoPKey, unsigned
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from conftest import phone_app
from helpers import (
    DEVICE_GRANT,
    QR_GRANT,
    Provider,
    approved_ticket,
    authorize,
    pkce,
    sign_in_phone,
)

CIBA_GRANT = "urn:openid:params:grant-type:ciba"
ALL_GRANTS = ("authorization_code", "refresh_token", DEVICE_GRANT, QR_GRANT, CIBA_GRANT)

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT / "docs" / "openapi.yaml"

# Routes that serve HTML to browsers (pages.py, demo.py, Flask's static files): not in the document.
HTML_ROUTES = {
    "/",
    "/login",
    "/logout",
    "/authorize",
    "/authorize/ticket",
    "/authorize/consent",
    "/authorize/qr",
    "/s/<scan_code>",
    "/device",
    "/confirm",
    "/demo",
    "/end_session",  # RP-Initiated Logout: pages, not JSON (tests/test_logout.py)
    "/demo/push",  # the demo shop's own backend (qr-oidc demo only), not the provider's API
    "/demo/push/poll",
    "/phone",
    "/static/<path:filename>",
}
HTML_BLUEPRINTS = ("pages.", "demo.")
# The demo page's own JSON calls (served with DEMO only, for that page and its session): not part of
# the provider's API, so not in the document either
DEMO_PREFIX = "/demo/"
# What operators scrape (provider/web/operations.py: Prometheus' text format behind a token of its
# own, 404 when off): not the JSON API the document describes
OPERATOR_ROUTES = {"/metrics": "operations."}
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}  # Flask answers these for every route by itself
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# Every error code SPEC.md names for the JSON endpoints (and the RFC 6749 / RFC 8707 ones the
# token and ticket endpoints answer), with its status (None: more than one, by endpoint).
SPEC_ERRORS = {
    "invalid_request": 400,
    "invalid_client": 401,
    "invalid_grant": 400,
    "unauthorized_client": 400,
    "unsupported_grant_type": 400,
    "invalid_scope": 400,
    "authorization_pending": 400,
    "slow_down": 400,
    "access_denied": None,  # 400 at the token endpoint, 403 at the phone endpoints
    "expired_token": 400,
    "invalid_target": 400,
    "invalid_token": 401,
    "insufficient_scope": 403,
    "unknown_code": 404,
    "unknown_ticket": 404,
    "already_scanned": 409,
    "invalid_state": 409,
    "expired": 410,
    "binding_mismatch": 403,
    "too_many_requests": 429,
    # OpenID CIBA Core 1.0 §13, at the backchannel authentication endpoint
    "unknown_user_id": 400,
    "invalid_binding_message": 400,
    # RFC 9449 (DPoP): 400 at the token endpoint and at ticket creation, 401 at a resource
    "invalid_dpop_proof": None,
    "use_dpop_nonce": None,  # only with QR_OIDC_DPOP_NONCES (a server of its own, below)
}
# the operations that take a DPoP proof (RFC 9449 §4.1), and those that take a DPoP-bound token
DPOP_OPERATIONS = {("/token", "post"), ("/qr/ticket", "post"), ("/device_authorization", "post"),
                   ("/userinfo", "get"), ("/userinfo", "post"), ("/qr/scan", "post"),
                   ("/qr/approve", "post"), ("/qr/deny", "post"), ("/qr/inbox", "post"),
                   ("/qr/sessions", "post"), ("/qr/sessions/end", "post")}
DPOP_RESOURCES = {op for op in DPOP_OPERATIONS if op[0] not in
                  ("/token", "/qr/ticket", "/device_authorization")}


# -- the document ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load(OPENAPI.read_text())


def resolve(document: dict, node):
    """Follow a local ``$ref`` (possibly several) to what it names."""
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        pointer = node["$ref"]
        assert pointer.startswith("#/"), pointer
        node = document
        for part in pointer[2:].split("/"):
            node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
    return node


def json_pointer(*parts) -> str:
    """A URI fragment naming a place in the document (RFC 6901, percent-encoded)."""
    return "#/" + "/".join(quote(str(p).replace("~", "~0").replace("/", "~1"), safe="~")
                           for p in parts)


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method.upper(), operation


def flask_to_openapi(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def validator(document: dict, pointer: str):
    """A JSON Schema 2020-12 validator for the schema at ``pointer``, its refs resolved in the
    document."""
    root = {"$ref": pointer, "components": document["components"], "paths": document["paths"]}
    return jsonschema_rs.Draft202012Validator(root)


# -- 1. routes -------------------------------------------------------------------------------------
def test_every_json_route_is_described_and_every_described_operation_is_served(tmp_path,
                                                                                  document):
    from qr_oidc.provider.web.app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "DEMO": True})
    served, html = set(), {}
    for rule in app.url_map.iter_rules():
        if rule.rule in HTML_ROUTES:
            html[rule.rule] = rule.endpoint
            continue
        if rule.rule.startswith(DEMO_PREFIX):
            assert rule.endpoint.startswith("demo."), (rule.rule, rule.endpoint)
            continue
        if rule.rule in OPERATOR_ROUTES:
            assert rule.endpoint.startswith(OPERATOR_ROUTES[rule.rule]), (rule.rule, rule.endpoint)
            continue
        for method in sorted(rule.methods - IMPLICIT_METHODS):
            served.add((flask_to_openapi(rule.rule), method))
    described = {(path, method) for path, method, _ in operations(document)}

    assert served - described == set(), \
        "served but not in docs/openapi.yaml (describe it, or list it in HTML_ROUTES if it is " \
        "a page)"
    assert described - served == set(), "in docs/openapi.yaml but not served"
    # the exclusions are real HTML routes, not JSON routes hidden from the document
    assert set(html) == HTML_ROUTES, f"HTML routes listed but not served: {HTML_ROUTES - set(html)}"
    for rule, endpoint in html.items():
        assert endpoint.startswith(HTML_BLUEPRINTS) or endpoint == "static", (rule, endpoint)


# -- 2. a valid document ---------------------------------------------------------------------------
def _walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


def test_the_document_is_valid_openapi_and_every_schema_valid_json_schema(document):
    assert document["openapi"].startswith("3.1.")
    loaded = schemathesis.openapi.from_path(OPENAPI)
    loaded.validate()  # against the OpenAPI 3.1 meta-schema; raises when invalid
    labels = []
    for result in loaded.get_all_operations():
        labels.append(result.ok().label)  # .ok() raises for an operation schemathesis cannot use
    assert len(labels) == len(list(operations(document)))

    # every $ref resolves; every schema is valid JSON Schema 2020-12 (which the meta-schema above
    # does not look into)
    for path, node in _walk(document):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            assert resolve(document, {"$ref": node["$ref"]}) is not None, path
    schemas = [(("components", "schemas", name), schema)
               for name, schema in document["components"]["schemas"].items()]
    for section in ("paths", "components"):
        schemas += [(path, node) for path, node in _walk(document[section], (section,))
                    if path[-1] == "schema" and isinstance(node, dict)]
    assert len(schemas) > 50
    for path, schema in schemas:
        jsonschema_rs.meta.validate(schema)  # raises, naming the problem
        validator(document, json_pointer(*path))

    # operation ids are unique; links name operations that exist
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for path, node in _walk(document["paths"]):
        if len(path) >= 2 and path[-2] == "links":
            assert node["operationId"] in ids, path


def test_every_error_code_and_status_spec_names_is_documented(document):
    documented: dict[str, set[int]] = {}
    for _path, _method, operation in operations(document):
        for status, response in operation["responses"].items():
            response = resolve(document, response)
            for media in response.get("content", {}).values():
                codes = _error_codes(document, media["schema"])
                for code in codes:
                    documented.setdefault(code, set()).add(int(status))
    for code, status in SPEC_ERRORS.items():
        assert code in documented, f"{code} is not documented"
        if status is not None:
            assert status in documented[code], (code, status, documented[code])
    assert {400, 403} <= documented["access_denied"]
    for code in ("invalid_dpop_proof", "use_dpop_nonce"):
        assert {400, 401} <= documented[code], (code, documented[code])
    # and the generic answers of any path
    for name, _status, code in (("NotFound", 404, "not_found"),
                                ("MethodNotAllowed", 405, "method_not_allowed"),
                                ("BodyTooLarge", 413, "invalid_request")):
        response = document["components"]["responses"][name]
        assert code in _error_codes(document, response["content"]["application/json"]["schema"])
    # 413 on every operation that takes a body, 429 where a rate limit applies
    for path, method, operation in operations(document):
        if method == "POST":
            assert "413" in operation["responses"], (path, method)
    for path in ("/qr/ticket", "/device_authorization", "/qr/scan", "/qr/approve", "/qr/deny",
                 "/backchannel/authenticate"):
        assert "429" in document["paths"][path]["post"]["responses"], path


def test_dpop_is_documented_where_the_server_takes_it(document):
    """The DPoP header on every operation that reads it (and no other), the DPoP scheme beside
    Bearer at every resource, dpop_jkt at ticket creation, the DPoP-Nonce header with each answer
    that may carry it, the DPoP challenge."""
    parameter = document["components"]["parameters"]["DPoP"]
    assert (parameter["in"], parameter["name"], parameter.get("required", False)) == \
        ("header", "DPoP", False)
    scheme = document["components"]["securitySchemes"]["dpopToken"]
    assert (scheme["type"], scheme["scheme"].lower()) == ("http", "dpop")
    for path, method, operation in operations(document):
        refs = {p.get("$ref") for p in operation.get("parameters", [])}
        takes = "#/components/parameters/DPoP" in refs
        assert takes == ((path, method.lower()) in DPOP_OPERATIONS), (path, method)
        schemes = {name for requirement in operation.get("security", []) for name in requirement}
        if (path, method.lower()) in DPOP_RESOURCES:
            assert {"bearerToken", "dpopToken"} <= schemes, (path, method)
            unauthorized = resolve(document, operation["responses"]["401"])
            assert "DPoP-Nonce" in unauthorized["headers"], path
            codes = _error_codes(document, unauthorized["content"]["application/json"]["schema"])
            assert {"invalid_token", "invalid_dpop_proof", "use_dpop_nonce"} <= codes, path
            challenge = resolve(document, unauthorized["headers"]["WWW-Authenticate"])["schema"]
            check = jsonschema_rs.Draft202012Validator(challenge)
            assert check.is_valid('DPoP error="invalid_dpop_proof", error_description="x", '
                                  'algs="ES256 RS256 PS256 EdDSA Ed25519"')
            assert check.is_valid('Bearer error="invalid_token", error_description="x"')
        elif takes:  # the token endpoint and ticket creation: 400 with a nonce
            refused = resolve(document, operation["responses"]["400"])
            assert "DPoP-Nonce" in refused["headers"], path
            codes = _error_codes(document, refused["content"]["application/json"]["schema"])
            assert {"invalid_dpop_proof", "use_dpop_nonce"} <= codes, path
        else:
            assert "dpopToken" not in schemes, (path, method)
    schemas = document["components"]["schemas"]
    for name in ("TicketRequest", "DeviceAuthorizationRequest"):
        assert "dpop_jkt" in schemas[name]["properties"], name
    assert "dpop_signing_alg_values_supported" in schemas["Discovery"]["required"]
    assert set(schemas["TokenResponse"]["properties"]["token_type"]["enum"]) == {"Bearer", "DPoP"}
    active = schemas["Introspection"]["oneOf"][1]["properties"]
    assert "DPoP" in active["token_type"]["enum"] and "jkt" in active["cnf"]["properties"]


def _error_codes(document: dict, schema) -> set[str]:
    schema = resolve(document, schema)
    codes = set()
    if not isinstance(schema, dict):
        return codes
    error = schema.get("properties", {}).get("error")
    if isinstance(error, dict):
        codes |= set(error.get("enum", [])) | ({error["const"]} if "const" in error else set())
    for key in ("allOf", "oneOf", "anyOf"):
        for part in schema.get(key, []):
            codes |= _error_codes(document, part)
    return codes


# -- a server of our own, with real credentials ----------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    own = Provider(tmp_path_factory.mktemp("openapi"), {
        "QR_OIDC_POLL_INTERVAL": "1",
        "QR_OIDC_LONG_POLL_MAX": "1",  # a generated long poll on a real ticket holds 1 s at most
        "QR_OIDC_RATE_USER_CODE_USER": "1000000/600",
        "QR_OIDC_RATE_USER_CODE_IP": "1000000/600",
        "QR_OIDC_RATE_TICKET_IP": "1000000/60",
        "QR_OIDC_RATE_TICKET_CLIENT": "1000000/60",
    })
    own.start()
    yield own
    own.stop()


@pytest.fixture(scope="module")
def creds(server) -> dict:
    every_grant = [arg for grant in ALL_GRANTS for arg in ("--grant-type", grant)]
    # the fuzzed client may use push login too (poll mode): its backchannel requests get past
    # client authentication and, naming alice (the document's example), make push requests
    web = server.create_client("--name", "Fuzzed shop", "--redirect-uri", "https://shop.example/cb",
                               "--logo-uri", "https://shop.example/logo.png", *every_grant)
    limited = server.create_client("--name", "QR only", "--grant-type", QR_GRANT,
                                   "--scope", "openid profile")
    banking = server.create_client("--name", "Bank", "--number-matching", *every_grant)
    form = server.create_client("--name", "Form shop", "--token-endpoint-auth-method",
                                "client_secret_post")
    phone = phone_app(server)
    server.create_user("alice", "alice-password", name="Alice Liddell",
                       picture="https://pics.example/alice.png", email="alice@example.org")
    server.create_user("bob", "bob-password", name="Bob Builder")
    alice = sign_in_phone(server, phone, "alice", "alice-password")["access_token"]
    bob = sign_in_phone(server, phone, "bob", "bob-password")["access_token"]
    return {"web": web, "limited": limited, "bank": banking, "form": form, "phone": phone,
            "alice": alice, "bob": bob}


def basic(client: dict) -> tuple[str, str]:
    return client["client_id"], client["client_secret"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def expire(server, ticket: str) -> None:
    """Move a ticket's times back until its expiry is past (what waiting out its TTL would
    do): its whole timeline, so the lifecycle's order in time holds."""
    digest = hashlib.sha256(ticket.encode()).hexdigest()
    at = time.time() - 1
    server.db("UPDATE tickets SET created_at = created_at - (expires_at - ?), "
              "scanned_at = scanned_at - (expires_at - ?), "
              "decided_at = decided_at - (expires_at - ?), expires_at = ? "
              "WHERE ticket_hash = ?", at, at, at, at, digest)
    assert server.db("SELECT COUNT(*) FROM tickets WHERE ticket_hash = ?", digest) == [(1,)]


# -- 3. real answers conform to the document -------------------------------------------------------
class Conformance:
    """Checks real responses against the document: documented status, media type, required
    headers, body schema. The status a step expects is asserted at once (later steps build on
    it); the rest is collected in ``problems``, so that one run lists every disagreement."""

    def __init__(self, document: dict):
        self.document = document
        self.seen: set[tuple[str | None, str, int, str | None]] = set()
        self.problems: list[str] = []

    def response_definition(self, path: str | None, method: str, status: int):
        if path is None:  # any path: the generic answers
            name = {404: "NotFound", 405: "MethodNotAllowed"}[status]
            return (self.document["components"]["responses"][name],
                    json_pointer("components", "responses", name))
        responses = self.document["paths"][path][method.lower()]["responses"]
        if str(status) not in responses:
            return None, None
        pointer = json_pointer("paths", path, method.lower(), "responses", status)
        definition = responses[str(status)]
        if "$ref" in definition:
            pointer = definition["$ref"]
        return resolve(self.document, definition), pointer

    def check(self, path: str | None, method: str, response: requests.Response,
              status: int, error: str | None = None):
        label = f"{method} {path or response.request.path_url} -> {response.status_code}"
        assert response.status_code == status, (label, response.text[:300])
        definition, pointer = self.response_definition(path, method, response.status_code)
        if definition is None:
            self.problems.append(f"{label}: status not documented")
            return response.content
        media = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media not in definition.get("content", {}):
            self.problems.append(f"{label}: media type {media!r} not documented")
        for name, header in definition.get("headers", {}).items():
            header = resolve(self.document, header)
            value = response.headers.get(name)
            if value is None:
                if header.get("required"):
                    self.problems.append(f"{label}: no {name} header")
                continue
            header_schema = resolve(self.document, header["schema"])
            if not jsonschema_rs.Draft202012Validator(header_schema).is_valid(value):
                self.problems.append(f"{label}: {name}: {value!r} is not as documented")
        if media != "application/json":
            return response.content
        body = response.json()
        schema_pointer = pointer + json_pointer("content", "application/json", "schema")[1:]
        for problem in validator(self.document, schema_pointer).iter_errors(body):
            self.problems.append(f"{label}: {body!r}: {problem.message}")
        if response.status_code >= 400:
            assert isinstance(body, dict) and isinstance(body.get("error"), str), (label, body)
            if error is not None:
                assert body["error"] == error, (label, body)
        self.seen.add((path, method, response.status_code,
                       body.get("error") if isinstance(body, dict) else None))
        return body


def test_real_answers_for_every_spec_error_and_every_success_conform_to_the_document(
        server, creds, document):
    c = Conformance(document)
    url = server.url
    web, limited, bank, alice, bob = (creds[k] for k in ("web", "limited", "bank", "alice", "bob"))

    def post(path, data=None, json_body=None, auth=None, headers=None):
        return requests.post(url + path, data=data, json=json_body, auth=auth, headers=headers,
                             timeout=30)

    def scan_code(ticket):
        return ticket["qr_content"].rsplit("/", 1)[1]

    # discovery and keys
    c.check("/.well-known/openid-configuration", "GET",
            requests.get(url + "/.well-known/openid-configuration", timeout=30), 200)
    jwks = c.check("/jwks.json", "GET", requests.get(url + "/jwks.json", timeout=30), 200)
    assert not any(k in key for key in jwks["keys"] for k in ("d", "p", "q", "dp", "dq", "qi"))

    # tickets, status, images
    ticket = c.check("/qr/ticket", "POST", post("/qr/ticket", {"scope": "openid profile email "
                                                "offline_access", "nonce": "n-1"}, auth=basic(web)),
                     201)
    form = creds["form"]
    c.check("/qr/ticket", "POST", post("/qr/ticket", json_body={
        "client_id": form["client_id"], "client_secret": form["client_secret"]}), 201)
    code = scan_code(ticket)
    c.check("/qr/{scan_code}.{fmt}", "GET", requests.get(f"{url}/qr/{code}.png", timeout=30), 200)
    c.check("/qr/{scan_code}.{fmt}", "GET", requests.get(f"{url}/qr/{code}.svg", timeout=30), 200)
    c.check("/qr/{scan_code}.{fmt}", "GET", requests.get(f"{url}/qr/{code}.gif", timeout=30), 404,
            "not_found")
    c.check("/qr/{scan_code}.{fmt}", "GET", requests.get(f"{url}/qr/nothing.png", timeout=30), 404,
            "unknown_code")
    status = c.check("/qr/status", "POST", post("/qr/status", {"ticket": ticket["ticket"]}), 200)
    assert status["status"] == "pending"
    c.check("/qr/status", "POST", post("/qr/status", json_body={"ticket": "nope"}), 404,
            "unknown_ticket")
    c.check("/qr/status", "POST", post("/qr/status", {}), 400, "invalid_request")
    c.check("/qr/status", "POST", post("/qr/status", {"ticket": "x", "wait": "soon"}), 400,
            "invalid_request")

    # token polls before approval; the phone side
    poll = {"grant_type": QR_GRANT, "ticket": ticket["ticket"]}
    c.check("/token", "POST", post("/token", poll, auth=basic(web)), 400, "authorization_pending")
    c.check("/token", "POST", post("/token", poll, auth=basic(web)), 400, "slow_down")
    c.check("/qr/approve", "POST", post("/qr/approve", {"scan_code": code}, headers=bearer(alice)),
            409, "invalid_state")  # not scanned yet
    view = c.check("/qr/scan", "POST", post("/qr/scan", {"scan_code": code}, headers=bearer(alice)),
                   200)
    assert view["user_code"] == ticket["user_code"] and "binding_choices" not in view
    c.check("/qr/{scan_code}.{fmt}", "GET", requests.get(f"{url}/qr/{code}.png", timeout=30), 410,
            "expired")
    status = c.check("/qr/status", "POST", post("/qr/status", json_body={
        "ticket": ticket["ticket"], "wait": 0}), 200)
    assert status["status"] == "scanned" and status["user"]["name"] == "Alice Liddell"
    c.check("/qr/scan", "POST", post("/qr/scan", {"scan_code": code}, headers=bearer(bob)), 409,
            "already_scanned")
    c.check("/qr/approve", "POST", post("/qr/approve", {"scan_code": code}, headers=bearer(bob)),
            403, "access_denied")
    c.check("/qr/deny", "POST", post("/qr/deny", {"scan_code": code}, headers=bearer(bob)),
            403, "access_denied")
    c.check("/qr/approve", "POST", post("/qr/approve", {"user_code": ticket["user_code"].lower()},
                                        headers=bearer(alice)), 200)
    c.check("/qr/scan", "POST", post("/qr/scan", {"scan_code": code}, headers=bearer(alice)), 409,
            "invalid_state")
    # (an approved ticket's poll is not throttled: no slow_down now)
    c.check("/token", "POST", post("/token", {**poll, "resource": "no-uri"}, auth=basic(web)), 400,
            "invalid_target")
    tokens = c.check("/token", "POST", post("/token", poll, auth=basic(web)), 200)
    assert {"id_token", "refresh_token"} <= set(tokens)
    c.check("/qr/status", "POST", post("/qr/status", {"ticket": ticket["ticket"]}), 200)
    c.check("/token", "POST", post("/token", poll, auth=basic(web)), 400, "invalid_grant")

    # userinfo, introspection, refresh, revocation
    for method in ("GET", "POST"):
        c.check("/userinfo", method, requests.request(method, url + "/userinfo",
                                                      headers=bearer(alice), timeout=30), 200)
        c.check("/userinfo", method, requests.request(method, url + "/userinfo", timeout=30), 401,
                "invalid_token")
    c.check("/qr/scan", "POST", post("/qr/scan", {"scan_code": code},
                                     headers=bearer(tokens["access_token"])), 403,
            "insufficient_scope")
    c.check("/introspect", "POST", post("/introspect", {"token": tokens["access_token"]},
                                        auth=basic(web)), 200)
    c.check("/introspect", "POST", post("/introspect", {"token": tokens["refresh_token"]},
                                        auth=basic(web)), 200)
    c.check("/introspect", "POST", post("/introspect", {"token": "nope"}, auth=basic(web)), 200)
    c.check("/introspect", "POST", post("/introspect", {}, auth=basic(web)), 400, "invalid_request")
    c.check("/introspect", "POST", post("/introspect", {"token": "x", "client_id": "nobody"}), 401,
            "invalid_client")
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    renewed = c.check("/token", "POST", post("/token", refresh, auth=basic(web)), 200)
    # a used refresh token: refused (and its family revoked), in the protocol's error format
    c.check("/token", "POST", post("/token", refresh, auth=basic(web)), 400, "invalid_grant")
    c.check("/revoke", "POST", post("/revoke", {"token": renewed["refresh_token"]},
                                    auth=basic(web)), 200)
    c.check("/revoke", "POST", post("/revoke", {}, auth=basic(web)), 400, "invalid_request")
    c.check("/revoke", "POST", post("/revoke", {"token": "x"}, auth=("nobody", "nothing")), 401,
            "invalid_client")

    # token endpoint refusals
    c.check("/token", "POST", post("/token", {"grant_type": QR_GRANT}, auth=basic(web)), 400,
            "invalid_request")
    c.check("/token", "POST", post("/token", {"grant_type": QR_GRANT, "ticket": "x"},
                                   auth=("nobody", "nothing")), 401, "invalid_client")
    c.check("/token", "POST", post("/token", {"grant_type": QR_GRANT, "ticket": "x"},
                                   auth=basic(web)), 400, "invalid_grant")
    c.check("/token", "POST", post("/token", {"grant_type": DEVICE_GRANT, "device_code": "x"},
                                   auth=basic(limited)), 400, "unauthorized_client")
    c.check("/token", "POST", post("/token", {"grant_type": "password", "username": "alice"},
                                   auth=basic(web)), 400, "unsupported_grant_type")
    c.check("/token", "POST", post("/token", {"grant_type": "authorization_code", "code": "x"},
                                   auth=basic(web)), 400, "invalid_grant")
    c.check("/token", "POST", post("/token", {"grant_type": "refresh_token",
                                              "refresh_token": "never-issued"}, auth=basic(web)),
            400, "invalid_grant")
    c.check("/token", "POST", requests.post(url + "/token", data="grant_type=x", timeout=30,
                                            headers={"Content-Type": "text/plain"}), 400,
            "invalid_request")

    # ticket creation refusals; a public client; device authorization
    c.check("/qr/ticket", "POST", post("/qr/ticket", {"scope": "openid admin"}, auth=basic(web)),
            400, "invalid_scope")
    c.check("/device_authorization", "POST", post("/device_authorization", {},
                                                  auth=basic(limited)), 400, "unauthorized_client")
    c.check("/qr/ticket", "POST", post("/qr/ticket", {"client_id": creds["phone"]["client_id"]}),
            400, "unauthorized_client")
    c.check("/qr/ticket", "POST", post("/qr/ticket", {"client_id": "nobody"}), 401,
            "invalid_client")
    public = server.create_client("--name", "SPA", "--public", "--grant-type", QR_GRANT)
    c.check("/qr/ticket", "POST", post("/qr/ticket", {"client_id": public["client_id"]}), 400,
            "invalid_request")
    _verifier, challenge = pkce()
    c.check("/qr/ticket", "POST", post("/qr/ticket", {
        "client_id": public["client_id"], "code_challenge": challenge,
        "code_challenge_method": "S256"}), 201)
    device = c.check("/device_authorization", "POST", post("/device_authorization",
                                                           {"scope": "openid"}, auth=basic(web)),
                     200)
    c.check("/token", "POST", post("/token", {"grant_type": DEVICE_GRANT,
                                              "device_code": device["device_code"]},
                                   auth=basic(web)), 400, "authorization_pending")

    # denied, expired
    denied = server.ticket(web)
    c.check("/qr/scan", "POST", post("/qr/scan", json_body={"user_code": denied["user_code"]},
                                     headers=bearer(alice)), 200)
    c.check("/qr/deny", "POST", post("/qr/deny", json_body={"user_code": denied["user_code"]},
                                     headers=bearer(alice)), 200)
    c.check("/qr/approve", "POST", post("/qr/approve", {"user_code": denied["user_code"]},
                                        headers=bearer(alice)), 409, "invalid_state")
    c.check("/token", "POST", post("/token", {"grant_type": QR_GRANT, "ticket": denied["ticket"]},
                                   auth=basic(web)), 400, "access_denied")
    old = server.ticket(web)
    expire(server, old["ticket"])
    c.check("/qr/scan", "POST", post("/qr/scan", {"scan_code": scan_code(old)},
                                     headers=bearer(alice)), 410, "expired")
    c.check("/qr/status", "POST", post("/qr/status", {"ticket": old["ticket"]}), 200)
    c.check("/token", "POST", post("/token", {"grant_type": QR_GRANT, "ticket": old["ticket"]},
                                   auth=basic(web)), 400, "expired_token")

    # number matching
    matched = c.check("/qr/ticket", "POST", post("/qr/ticket", {}, auth=basic(bank)), 201)
    assert re.fullmatch(r"[0-9]{2}", matched["binding_code"])
    view = c.check("/qr/scan", "POST", post("/qr/scan", {"scan_code": scan_code(matched)},
                                            headers=bearer(alice)), 200)
    assert matched["binding_code"] in view["binding_choices"]
    c.check("/qr/approve", "POST", post("/qr/approve", {"scan_code": scan_code(matched)},
                                        headers=bearer(alice)), 400, "invalid_request")
    wrong = next(n for n in view["binding_choices"] if n != matched["binding_code"])
    c.check("/qr/approve", "POST", post("/qr/approve", {"scan_code": scan_code(matched),
                                                        "binding_code": wrong},
                                        headers=bearer(alice)), 403, "binding_mismatch")

    # phone refusals
    c.check("/qr/scan", "POST", post("/qr/scan", {"scan_code": "nothing"}, headers=bearer(alice)),
            404, "unknown_code")
    c.check("/qr/deny", "POST", post("/qr/deny", {}, headers=bearer(alice)), 400,
            "invalid_request")
    c.check("/qr/deny", "POST", post("/qr/deny", {"scan_code": "x"}), 401, "invalid_token")
    c.check("/qr/approve", "POST", post("/qr/approve", {"scan_code": "x"},
                                        headers=bearer("not.a.token")), 401, "invalid_token")

    # push login (CIBA): the backchannel request, the phone's inbox, the token poll
    push_login(c, server, creds)

    # DPoP (RFC 9449): bound tickets and tokens, resources with proofs, refused proofs
    dpop_exchanges(c, server, creds)

    # any path: body too large, unknown paths, other methods
    big = "ticket=" + "a" * (64 * 1024 + 10)
    c.check("/qr/status", "POST", requests.post(url + "/qr/status", data=big, timeout=30, headers={
        "Content-Type": "application/x-www-form-urlencoded"}), 413, "invalid_request")
    c.check(None, "GET", requests.get(url + "/no/such/path", timeout=30), 404, "not_found")
    c.check(None, "GET", requests.get(url + "/qr/scan", timeout=30), 405, "method_not_allowed")
    c.check(None, "DELETE", requests.delete(url + "/token", timeout=30), 405, "method_not_allowed")

    # every error code SPEC.md names was seen, with a conforming answer (429 and use_dpop_nonce
    # come next, on servers of their own)
    seen_codes = {error for *_rest, error in c.seen if error}
    assert set(SPEC_ERRORS) - {"too_many_requests", "use_dpop_nonce"} <= seen_codes, \
        set(SPEC_ERRORS) - seen_codes
    assert c.problems == [], "\n".join(c.problems)


def push_login(c: Conformance, server, creds) -> None:
    """Push requests made, listed in the inbox, decided and redeemed; and their refusals."""
    url = server.url
    web, limited, bank, alice, bob = (creds[k] for k in ("web", "limited", "bank", "alice", "bob"))

    def post(path, data=None, json_body=None, auth=None, headers=None):
        return requests.post(url + path, data=data, json=json_body, auth=auth, headers=headers,
                             timeout=30)

    def backchannel(data=None, json_body=None, auth=None):
        return post("/backchannel/authenticate", data, json_body, auth or basic(web))

    def inbox(token, data=None, json_body=None):
        return post("/qr/inbox", data, json_body, headers=bearer(token) if token else None)

    def ciba(auth_req_id, client=web):
        return post("/token", {"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id},
                    auth=basic(client))

    # bob's inbox is empty; a push request for him appears in it, with the scan response's fields
    empty = c.check("/qr/inbox", "POST", inbox(bob), 200)
    assert empty["requests"] == [], empty
    pushed = c.check("/backchannel/authenticate", "POST", backchannel({
        "scope": "openid profile", "login_hint": "bob", "binding_message": "Order 7F3K",
        "requested_expiry": "300", "nonce": "n-push", "requester_ip": "203.0.113.9",
        "requester_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:140.0) "
                                "Gecko/20100101 Firefox/140.0"}), 200)
    assert "binding_code" not in pushed and pushed["expires_in"] <= 300, pushed
    listed = c.check("/qr/inbox", "POST", inbox(bob, json_body={"wait": 1,
                                                                "cursor": empty["cursor"]}), 200)
    assert len(listed["requests"]) == 1 and listed["cursor"] != empty["cursor"], listed
    entry = listed["requests"][0]
    assert entry["kind"] == "push" and entry["binding_message"] == "Order 7F3K", entry
    assert entry["status"] == "scanned" and entry["client"]["client_id"] == web["client_id"]
    assert entry["requester"]["ip"] == "203.0.113.9" and entry["requester"]["browser"], entry
    assert set(entry["risk"]) == {"same_network", "first_time", "recent_denials"}, entry
    # nothing changed: a long poll with the cursor waits (LONG_POLL_MAX, 1 s), then answers alike
    again = c.check("/qr/inbox", "POST", inbox(bob, {"wait": "1", "cursor": listed["cursor"]}),
                    200)
    assert again["cursor"] == listed["cursor"], again
    # the client polls; bob approves; tokens once
    c.check("/token", "POST", ciba(pushed["auth_req_id"]), 400, "authorization_pending")
    c.check("/token", "POST", ciba(pushed["auth_req_id"]), 400, "slow_down")
    c.check("/token", "POST", post("/token", {"grant_type": QR_GRANT,
                                              "ticket": pushed["auth_req_id"]}, auth=basic(web)),
            400, "invalid_grant")  # a push request is not a QR ticket
    c.check("/token", "POST", ciba(pushed["auth_req_id"], limited), 400, "unauthorized_client")
    c.check("/qr/approve", "POST", post("/qr/approve", {"scan_code": entry["scan_code"]},
                                        headers=bearer(alice)), 403, "access_denied")
    c.check("/qr/approve", "POST", post("/qr/approve", {"scan_code": entry["scan_code"]},
                                        headers=bearer(bob)), 200)
    tokens = c.check("/token", "POST", ciba(pushed["auth_req_id"]), 200)
    assert "id_token" in tokens, tokens
    c.check("/token", "POST", ciba(pushed["auth_req_id"]), 400, "invalid_grant")
    assert c.check("/qr/inbox", "POST", inbox(bob), 200)["requests"] == []

    # a number-matching client's push request (JSON body, JSON number); denied; expired
    c.check("/backchannel/authenticate", "POST", backchannel(json_body={
        "scope": "openid", "login_hint": "BOB", "requested_expiry": 60}, auth=basic(bank)), 400,
        "unknown_user_id")  # a username is compared as it is; an email address case aside
    matched = c.check("/backchannel/authenticate", "POST", backchannel(json_body={
        "scope": "openid", "login_hint": "ALICE@example.org", "requested_expiry": 60},
        auth=basic(bank)), 200)
    assert re.fullmatch(r"[0-9]{2}", matched["binding_code"]), matched
    entry = c.check("/qr/inbox", "POST", inbox(alice), 200)["requests"][0]
    assert matched["binding_code"] in entry["binding_choices"] and entry["binding_message"] is None
    c.check("/qr/deny", "POST", post("/qr/deny", {"scan_code": entry["scan_code"]},
                                     headers=bearer(alice)), 200)
    c.check("/token", "POST", ciba(matched["auth_req_id"], bank), 400, "access_denied")
    old = c.check("/backchannel/authenticate", "POST", backchannel({
        "scope": "openid", "login_hint": "alice"}), 200)
    expire(server, old["auth_req_id"])
    c.check("/token", "POST", ciba(old["auth_req_id"]), 400, "expired_token")
    assert c.check("/qr/inbox", "POST", inbox(alice), 200)["requests"] == []
    c.check("/token", "POST", ciba("never-issued"), 400, "invalid_grant")
    c.check("/token", "POST", post("/token", {"grant_type": CIBA_GRANT}, auth=basic(web)), 400,
            "invalid_request")

    # refusals of the backchannel request (CIBA §13)
    refusals = [
        ({"login_hint": "alice"}, "invalid_request"),  # no scope
        ({"scope": "profile", "login_hint": "alice"}, "invalid_request"),  # no openid
        ({"scope": "openid"}, "invalid_request"),  # no hint
        ({"scope": "openid", "login_hint": "alice", "id_token_hint": tokens["id_token"]},
         "invalid_request"),  # two hints
        ({"scope": "openid", "id_token_hint": "not.a.jwt"}, "invalid_request"),
        ({"scope": "openid", "login_hint": "alice", "requested_expiry": "0"}, "invalid_request"),
        ({"scope": "openid", "login_hint": "alice", "user_code": "1234"}, "invalid_request"),
        ({"scope": "openid", "login_hint": "alice", "requester_ip": "here"}, "invalid_request"),
        ({"scope": "openid admin", "login_hint": "alice"}, "invalid_scope"),
        ({"scope": "openid", "login_hint": "nobody"}, "unknown_user_id"),
        ({"scope": "openid", "login_hint": "alice", "binding_message": "x" * 65},
         "invalid_binding_message"),
        ({"scope": "openid", "login_hint": "alice", "binding_message": "Pay\u202eevil"},
         "invalid_binding_message"),
    ]
    for data, code in refusals:
        c.check("/backchannel/authenticate", "POST", backchannel(data), 400, code)
    # an id_token_hint (bob's ID token, issued to this client) names its user
    hinted = c.check("/backchannel/authenticate", "POST", backchannel({
        "scope": "openid", "id_token_hint": tokens["id_token"]}), 200)
    assert len(c.check("/qr/inbox", "POST", inbox(bob), 200)["requests"]) == 1
    c.check("/token", "POST", ciba(hinted["auth_req_id"], bank), 400, "invalid_grant")
    c.check("/backchannel/authenticate", "POST", backchannel({
        "scope": "openid", "id_token_hint": tokens["id_token"]}, auth=basic(bank)), 400,
        "invalid_request")  # another client's ID token
    c.check("/backchannel/authenticate", "POST", backchannel(
        {"scope": "openid", "login_hint": "alice"}, auth=basic(limited)), 400,
        "unauthorized_client")
    c.check("/backchannel/authenticate", "POST", post("/backchannel/authenticate", {
        "scope": "openid", "login_hint": "alice", "client_id": creds["phone"]["client_id"]}),
        400, "unauthorized_client")  # a public client
    c.check("/backchannel/authenticate", "POST", backchannel(
        {"scope": "openid", "login_hint": "alice"}, auth=(web["client_id"], "wrong")), 401,
        "invalid_client")
    form = creds["form"]
    c.check("/backchannel/authenticate", "POST", post("/backchannel/authenticate", {
        "scope": "openid", "login_hint": "alice", "client_id": form["client_id"],
        "client_secret": form["client_secret"]}), 400, "unauthorized_client")

    # the inbox's refusals
    c.check("/qr/inbox", "POST", inbox(None), 401, "invalid_token")
    c.check("/qr/inbox", "POST", inbox("not.a.token"), 401, "invalid_token")
    c.check("/qr/inbox", "POST", inbox(tokens["access_token"]), 403, "insufficient_scope")
    c.check("/qr/inbox", "POST", inbox(alice, {"wait": "soon"}), 400, "invalid_request")
    c.check("/qr/inbox", "POST", inbox(alice, {"wait": "-1"}), 400, "invalid_request")
    c.check("/qr/inbox", "POST", inbox(alice, {"cursor": "c" * 65}), 400, "invalid_request")
    c.check("/qr/inbox", "POST", inbox(alice, json_body=["wait"]), 400, "invalid_request")
    # bob's pending request is left for the fuzzing (his inbox is not fuzzed; it expires)


def dpop_post(url: str, path: str, key: DPoPKey | None = None, proof: str | None = None,
              data=None, auth=None, headers=None, token: str | None = None,
              method: str = "POST") -> requests.Response:
    """A request with a DPoP proof (``key``'s fresh one for this request unless ``proof``), and
    with ``token`` as ``Authorization: DPoP``."""
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"DPoP {token}"
    if proof is None and key is not None:
        proof = key.proof(method, url + path, access_token=token)
    if proof is not None:
        headers["DPoP"] = proof
    return requests.request(method, url + path, data=data, auth=auth, headers=headers,
                            timeout=30)


def dpop_phone_token(server, phone: dict, username: str, password: str, key: DPoPKey,
                     nonce: str | None = None) -> str:
    """The phone app's access token (``qr:approve``), bound to ``key``."""
    _session, query, verifier = authorize(server, phone, username, password,
                                          scope="openid profile qr:approve")
    answer = dpop_post(server.url, "/token", proof=key.proof("POST", server.url + "/token",
                                                             nonce=nonce), data={
        "grant_type": "authorization_code", "code": query["code"],
        "redirect_uri": phone["redirect_uris"][0], "client_id": phone["client_id"],
        "code_verifier": verifier})
    assert answer.status_code == 200 and answer.json()["token_type"] == "DPoP", answer.text
    return answer.json()["access_token"]


def challenge_is_dpop(response: requests.Response, error: str) -> None:
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith(f'DPoP error="{error}"'), challenge
    assert 'algs="ES256 RS256 PS256 EdDSA Ed25519"' in challenge, challenge


def dpop_exchanges(c: Conformance, server, creds) -> None:
    """DPoP: tickets bound by a proof or dpop_jkt, bound token responses, introspection's cnf,
    userinfo and the phone's endpoints with proofs; each refusal of a proof, in the document's
    terms."""
    url = server.url
    web, alice = creds["web"], creds["alice"]
    key, other = DPoPKey(), DPoPKey("EdDSA")

    def ticket_with(path="/qr/ticket", **kwargs):
        return dpop_post(url, path, auth=basic(web), **kwargs)

    def poll(ticket, **kwargs):
        return dpop_post(url, "/token", data={"grant_type": QR_GRANT, "ticket": ticket},
                         auth=basic(web), **kwargs)

    # tickets bound to a key: by a proof, by dpop_jkt, by both (agreeing); a device code too
    bound = c.check("/qr/ticket", "POST", ticket_with(key=key, data={
        "scope": "openid profile offline_access"}), 201)
    c.check("/qr/ticket", "POST", ticket_with(data={"dpop_jkt": key.jkt}), 201)
    c.check("/qr/ticket", "POST", ticket_with(key=key, data={"dpop_jkt": key.jkt}), 201)
    device = c.check("/device_authorization", "POST", ticket_with(
        "/device_authorization", key=key, data={"scope": "openid"}), 200)
    c.check("/device_authorization", "POST", ticket_with(
        "/device_authorization", data={"dpop_jkt": other.jkt}), 200)
    # ... and refused: a proof by another key than dpop_jkt names, a malformed proof, a proof for
    # another URL, a dpop_jkt that is no thumbprint
    c.check("/qr/ticket", "POST", ticket_with(key=other, data={"dpop_jkt": key.jkt}), 400,
            "invalid_dpop_proof")
    c.check("/qr/ticket", "POST", ticket_with(proof="not-a-proof"), 400, "invalid_dpop_proof")
    c.check("/qr/ticket", "POST", ticket_with(proof=key.proof("POST", url + "/token")), 400,
            "invalid_dpop_proof")
    c.check("/qr/ticket", "POST", ticket_with(data={"dpop_jkt": "x" * 42}), 400,
            "invalid_request")
    c.check("/device_authorization", "POST", ticket_with(
        "/device_authorization", proof=unsigned({"typ": "dpop+jwt", "alg": "none",
                                                 "jwk": key.public()},
                                                {"jti": "abcdefghij", "htm": "POST",
                                                 "htu": url + "/device_authorization",
                                                 "iat": int(time.time())})), 400,
        "invalid_dpop_proof")
    c.check("/token", "POST", dpop_post(url, "/token", key, data={
        "grant_type": DEVICE_GRANT, "device_code": device["device_code"]}, auth=basic(web)), 400,
        "authorization_pending")

    # the bound ticket's polls: without a proof or by another key refused, by its key pending
    c.check("/token", "POST", poll(bound["ticket"]), 400, "invalid_dpop_proof")
    c.check("/token", "POST", poll(bound["ticket"], key=other), 400, "invalid_dpop_proof")
    c.check("/token", "POST", poll(bound["ticket"], proof=key.proof("POST", url + "/token?x=1")),
            400, "invalid_dpop_proof")
    c.check("/token", "POST", poll(bound["ticket"], key=key), 400, "authorization_pending")
    code = bound["qr_content"].rsplit("/", 1)[1]
    for action in ("scan", "approve"):
        c.check(f"/qr/{action}", "POST", requests.post(f"{url}/qr/{action}", timeout=30,
                                                      data={"scan_code": code},
                                                      headers=bearer(alice)), 200)
    c.check("/token", "POST", poll(bound["ticket"], proof="a.b.c"), 400, "invalid_dpop_proof")
    tokens = c.check("/token", "POST", poll(bound["ticket"], key=key), 200)
    assert tokens["token_type"] == "DPoP" and "refresh_token" in tokens, tokens
    access = tokens["access_token"]
    seen = c.check("/introspect", "POST", requests.post(url + "/introspect", timeout=30,
                                                        data={"token": access},
                                                        auth=basic(web)), 200)
    assert seen["token_type"] == "DPoP" and seen["cnf"] == {"jkt": key.jkt}, seen
    # the refresh token of a confidential client is not bound; the new tokens are, by the proof
    renewed = c.check("/token", "POST", dpop_post(url, "/token", key, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=basic(web)), 200)
    assert renewed["token_type"] == "DPoP", renewed

    # userinfo with the bound token: with a fresh proof by its key, by GET and by POST
    for method in ("GET", "POST"):
        claims = c.check("/userinfo", method, dpop_post(url, "/userinfo", key, token=access,
                                                        method=method), 200)
        assert claims["sub"], claims
    refusals = {
        "as Bearer": ({"headers": bearer(access)}, "invalid_token"),
        "no proof": ({"token": access}, "invalid_dpop_proof"),
        "another key's proof": ({"token": access, "key": other}, "invalid_dpop_proof"),
        "a proof for another method": ({"token": access, "proof": key.proof(
            "POST", url + "/userinfo", access_token=access)}, "invalid_dpop_proof"),
        "a proof without ath": ({"token": access, "proof": key.proof("GET", url + "/userinfo")},
                                "invalid_dpop_proof"),
        "a malformed proof": ({"token": access, "proof": "junk"}, "invalid_dpop_proof"),
    }
    for what, (kwargs, error) in refusals.items():
        answer = dpop_post(url, "/userinfo", method="GET", **kwargs)
        c.check("/userinfo", "GET", answer, 401, error)
        challenge_is_dpop(answer, error)
        assert what
    replayed = key.proof("GET", url + "/userinfo", access_token=access)
    c.check("/userinfo", "GET", dpop_post(url, "/userinfo", proof=replayed, token=access,
                                          method="GET"), 200)
    again = dpop_post(url, "/userinfo", proof=replayed, token=access, method="GET")
    c.check("/userinfo", "GET", again, 401, "invalid_dpop_proof")
    challenge_is_dpop(again, "invalid_dpop_proof")
    # an unbound token sent as DPoP: refused, with a Bearer challenge
    unbound = dpop_post(url, "/userinfo", key, token=alice, method="GET")
    c.check("/userinfo", "GET", unbound, 401, "invalid_token")
    assert unbound.headers["WWW-Authenticate"].startswith("Bearer "), unbound.headers

    # the phone with a bound token: scan, approve, deny, the inbox, each with a proof
    phone_key = DPoPKey("RS256")
    phone = dpop_phone_token(server, creds["phone"], "bob", "bob-password", phone_key)
    for action in ("approve", "deny"):
        ticket = server.ticket(web)
        code = ticket["qr_content"].rsplit("/", 1)[1]
        c.check("/qr/scan", "POST", dpop_post(url, "/qr/scan", phone_key, token=phone,
                                              data={"scan_code": code}), 200)
        for kwargs, error in (({"headers": bearer(phone)}, "invalid_token"),
                              ({}, "invalid_dpop_proof"),
                              ({"key": other}, "invalid_dpop_proof"),
                              ({"proof": phone_key.proof("POST", url + "/qr/scan",
                                                         access_token=phone)},
                               "invalid_dpop_proof")):
            answer = dpop_post(url, f"/qr/{action}", token=None if "headers" in kwargs else phone,
                               data={"scan_code": code}, **kwargs)
            c.check(f"/qr/{action}", "POST", answer, 401, error)
            challenge_is_dpop(answer, error)
        assert server.status(ticket["ticket"]).json()["status"] == "scanned"  # refusals: no change
        decided = c.check(f"/qr/{action}", "POST", dpop_post(
            url, f"/qr/{action}", phone_key, token=phone, data={"scan_code": code}), 200)
        assert decided["status"] == {"approve": "approved", "deny": "denied"}[action]
    c.check("/qr/inbox", "POST", dpop_post(url, "/qr/inbox", phone_key, token=phone), 200)
    c.check("/qr/inbox", "POST", dpop_post(url, "/qr/inbox", token=phone), 401,
            "invalid_dpop_proof")
    # the bound web token lacks qr:approve: its proof is good, its scope not
    c.check("/qr/scan", "POST", dpop_post(url, "/qr/scan", key, token=access,
                                          data={"scan_code": "x"}), 403, "insufficient_scope")


def test_dpop_nonce_answers_conform_to_the_document(tmp_path, document):
    """``use_dpop_nonce`` with ``DPoP-Nonce`` (RFC 9449 §8, §9), on a server of its own with
    ``QR_OIDC_DPOP_NONCES`` on: at the token endpoint, at ticket creation, at a resource."""
    nonced = Provider(tmp_path, {"QR_OIDC_DPOP_NONCES": "true", "QR_OIDC_POLL_INTERVAL": "1"})
    nonced.start()
    try:
        c = Conformance(document)
        url = nonced.url
        web = nonced.create_client("--name", "Shop", "--grant-type", QR_GRANT,
                                   "--grant-type", DEVICE_GRANT)
        phone = phone_app(nonced)
        nonced.create_user("carol", "carol-password")
        key = DPoPKey()

        def asked(answer, status) -> str:
            c.check(path, "POST" if method != "GET" else "GET", answer, status, "use_dpop_nonce")
            nonce = answer.headers.get("DPoP-Nonce")
            assert nonce, answer.headers
            return nonce

        method = "POST"
        path = "/qr/ticket"
        nonce = asked(dpop_post(url, path, key, auth=basic(web)), 400)
        path = "/device_authorization"
        assert asked(dpop_post(url, path, key, auth=basic(web)), 400) == nonce
        path = "/qr/ticket"
        ticket = c.check(path, "POST", dpop_post(url, path, proof=key.proof(
            "POST", url + path, nonce=nonce), auth=basic(web)), 201)
        path = "/token"
        poll = {"grant_type": QR_GRANT, "ticket": ticket["ticket"]}
        asked(dpop_post(url, path, key, data=poll, auth=basic(web)), 400)
        stale = key.proof("POST", url + path, nonce="not-the-nonce")
        asked(dpop_post(url, path, proof=stale, data=poll, auth=basic(web)), 400)
        # a bound phone token (its token request carried the nonce) and the web's bound tokens
        phone_key = DPoPKey("PS256")
        token = dpop_phone_token(nonced, phone, "carol", "carol-password", phone_key, nonce)
        code = ticket["qr_content"].rsplit("/", 1)[1]
        for action in ("scan", "approve"):
            path = f"/qr/{action}"
            answer = dpop_post(url, path, token=token, data={"scan_code": code},
                               proof=phone_key.proof("POST", url + path, access_token=token))
            asked(answer, 401)
            challenge_is_dpop(answer, "use_dpop_nonce")
            c.check(path, "POST", dpop_post(url, path, token=token, data={"scan_code": code},
                                            proof=phone_key.proof("POST", url + path,
                                                                  access_token=token,
                                                                  nonce=nonce)), 200)
        path = "/qr/inbox"
        asked(dpop_post(url, path, phone_key, token=token), 401)
        path = "/token"
        tokens = c.check(path, "POST", dpop_post(url, path, proof=key.proof(
            "POST", url + path, nonce=nonce), data=poll, auth=basic(web)), 200)
        assert tokens["token_type"] == "DPoP", tokens
        access = tokens["access_token"]
        method, path = "GET", "/userinfo"
        answer = dpop_post(url, path, key, token=access, method="GET")
        asked(answer, 401)
        challenge_is_dpop(answer, "use_dpop_nonce")
        c.check(path, "GET", dpop_post(url, path, token=access, method="GET", proof=key.proof(
            "GET", url + path, access_token=access, nonce=nonce)), 200)
        assert {error for *_rest, error in c.seen} >= {"use_dpop_nonce"}
        assert c.problems == [], "\n".join(c.problems)
    finally:
        nonced.stop()


def test_rate_limited_answers_conform_to_the_document(tmp_path, document):
    """429 with Retry-After, on a server of its own with tight limits."""
    tight = Provider(tmp_path, {"QR_OIDC_RATE_TICKET_CLIENT": "2/86400",
                                "QR_OIDC_RATE_USER_CODE_USER": "1/86400",
                                "QR_OIDC_RATE_PUSH_CLIENT": "4/86400"})
    tight.start()
    try:
        c = Conformance(document)
        web = tight.create_client("--name", "Shop")
        tight.create_user("carol", "carol-password")
        token = sign_in_phone(tight, phone_app(tight), "carol", "carol-password")["access_token"]
        for _ in range(2):
            c.check("/qr/ticket", "POST", tight.create_ticket(web), 201)
        c.check("/qr/ticket", "POST", tight.create_ticket(web), 429, "too_many_requests")
        c.check("/device_authorization", "POST", requests.post(
            tight.url + "/device_authorization", auth=basic(web), timeout=30), 429,
            "too_many_requests")
        c.check("/qr/scan", "POST", tight.phone("scan", token, user_code="BCDF-GHJK"), 404,
                "unknown_code")
        for action in ("scan", "approve", "deny"):
            c.check(f"/qr/{action}", "POST", tight.phone(action, token, user_code="BCDF-GHJL"),
                    429, "too_many_requests")
        # push login: three undecided requests per user, then 429 until one is decided or
        # expires; and the client's own limit (4 a day here)
        bank = tight.create_client("--name", "Bank", "--grant-type", CIBA_GRANT)
        push = {"scope": "openid", "login_hint": "carol"}
        for expected in (200, 200, 200, 429, 429):
            answer = requests.post(tight.url + "/backchannel/authenticate", data=push,
                                   auth=basic(bank), timeout=30)
            c.check("/backchannel/authenticate", "POST", answer, expected,
                    "too_many_requests" if expected == 429 else None)
        assert int(answer.headers["Retry-After"]) > 1000  # the client's daily limit
        inbox = requests.post(tight.url + "/qr/inbox", headers=bearer(token), timeout=30)
        assert len(c.check("/qr/inbox", "POST", inbox, 200)["requests"]) == 3
        assert c.problems == [], "\n".join(c.problems)
    finally:
        tight.stop()


# -- 4. schemathesis against a running server ------------------------------------------------------
# What a run covers: every phase (examples, coverage: boundary values, missing and wrong-typed
# parameters, undocumented methods; fuzzing: generated positive and negative data; stateful: chains
# that follow the document's links, e.g. ticket -> scan -> approve -> token poll). About 3,000
# requests; under a minute on a laptop.
MAX_EXAMPLES = 100  # generated requests per operation in the fuzzing phase
STATEFUL_STEPS = 8
MIN_REQUESTS = 2000

CHECKS = {
    "not_a_server_error": {"enabled": True},
    "status_code_conformance": {"enabled": True},
    "content_type_conformance": {"enabled": True},
    "response_headers_conformance": {"enabled": True},
    "response_schema_conformance": {"enabled": True},
    "unsupported_method": {"enabled": True},
    "missing_required_header": {"enabled": True},
    "ignored_auth": {"enabled": True},
    "use_after_free": {"enabled": True},
    "ensure_resource_availability": {"enabled": True},
    "protocol_error_format": {"enabled": True},
    # These two would call the server wrong where it is right: it ignores parameters it does not
    # know (RFC 6749 §3.1), and it refuses well-formed requests for tickets that do not exist.
    "positive_data_acceptance": {"enabled": False},
    "negative_data_rejection": {"enabled": False},
}


@schemathesis.check
def protocol_error_format(ctx, response, case):
    """Our own check on every response: never a 5xx; every error is JSON with a string ``error``;
    a 401 carries a challenge, a 429 a Retry-After."""
    status = response.status_code
    if status >= 500:
        raise AssertionError(f"{status} from {case.operation.label}")
    if status < 400:
        return
    headers = {name.lower(): values for name, values in response.headers.items()}
    media = (headers.get("content-type") or [""])[0].split(";")[0].strip()
    if media != "application/json":
        raise AssertionError(f"{status} error as {media!r}, not JSON")
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"{status} error body is not JSON: {response.content[:200]!r}") from None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        raise AssertionError(f"{status} error without a string 'error': {body!r}")
    if status == 401 and not headers.get("www-authenticate"):
        raise AssertionError("401 without WWW-Authenticate")
    if status == 429 and not headers.get("retry-after"):
        raise AssertionError("429 without Retry-After")
    return


# ``Authorization: DPoP <token>`` (the dpopToken scheme) as schemathesis makes it when the phone's
# Bearer token is not what it sends: junk after the scheme, or a JWT-shaped junk token
schemathesis.openapi.format("_dpop_auth", st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200),
    st.from_regex(r"\A[A-Za-z0-9_-]{1,60}\.[A-Za-z0-9_-]{1,200}\.[A-Za-z0-9_-]{0,80}\Z"),
).map("DPoP {}".format))


class FuzzOutcome:
    def __init__(self):
        self.requests = 0
        self.statuses: dict[tuple[str, int], int] = {}
        # requests that carried a DPoP header / an ``Authorization: DPoP``, by label
        self.with_proof: dict[str, int] = {}
        self.dpop_auth: dict[str, int] = {}
        self.failures: list[str] = []
        self.errors: list[str] = []
        self.stop_reason = None

    def count(self, label: str, status: int) -> int:
        return self.statuses.get((label, status), 0)


def run_schemathesis(schema) -> FuzzOutcome:
    """The run ``st run`` would make, through schemathesis' engine; collects what it found."""
    from schemathesis.engine import Status, events, from_schema

    outcome = FuzzOutcome()
    seen_failures = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for interaction in recorder.interactions.values():
                outcome.requests += 1
                if interaction.response is None:
                    continue
                label = recorder.label
                if label == "Stateful tests":
                    path = "/" + interaction.request.uri.split("/", 3)[-1].split("?")[0]
                    path = re.sub(r"^/qr/[^/]+\.(png|svg)$", "/qr/{scan_code}.{fmt}", path)
                    label = f"stateful {interaction.request.method} {path}"
                key = (label, interaction.response.status_code)
                outcome.statuses[key] = outcome.statuses.get(key, 0) + 1
                headers = {name.lower(): values
                           for name, values in interaction.request.headers.items()}
                if headers.get("dpop"):
                    outcome.with_proof[label] = outcome.with_proof.get(label, 0) + 1
                if any(str(v).lower().startswith("dpop") for v in headers.get("authorization",
                                                                              [])):
                    outcome.dpop_auth[label] = outcome.dpop_auth.get(label, 0) + 1
            for checks in recorder.checks.values():
                for check in checks:
                    if check.status != Status.FAILURE or check.failure_info is None:
                        continue
                    failure = check.failure_info.failure
                    key = (recorder.label, check.name, failure.title)
                    if key in seen_failures:
                        continue
                    seen_failures.add(key)
                    outcome.failures.append(
                        f"{recorder.label}: {check.name}: {failure.title}\n{failure.message}\n"
                        f"{check.failure_info.code_sample}")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            value = getattr(event, "value", None) or getattr(event, "exception", None)
            outcome.errors.append(
                f"{type(event).__name__} {getattr(event, 'label', '')}: {value!r}")
        elif isinstance(event, events.EngineFinished):
            outcome.stop_reason = str(event.stop_reason)
            for failure in event.failures:
                outcome.failures.append(f"{failure.title}: {failure.message}")
    return outcome


@pytest.fixture(scope="module")
def fuzzed(server, creds) -> FuzzOutcome:
    """One schemathesis run against this module's server, with real credentials: the
    confidential client by HTTP Basic (client_secret_basic) and Alice's phone token as Bearer."""
    config = SchemathesisConfig.from_dict({
        "base-url": server.url,
        "request-timeout": 30,
        "workers": 1,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": CHECKS,
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            # chains of real tickets: positive data, so that the linked steps can succeed
            "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS,
                         "generation": {"mode": "positive"}},
        },
        "auth": {"openapi": {
            "clientBasic": {"username": creds["web"]["client_id"],
                            "password": creds["web"]["client_secret"]},
            "bearerToken": {"bearer": creds["alice"]},
        }},
    })
    schema = schemathesis.openapi.from_path(OPENAPI, config=config)
    return run_schemathesis(schema)


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(fuzzed, server):
    assert fuzzed.failures == [], "\n\n".join(fuzzed.failures)
    assert fuzzed.errors == [], "\n".join(fuzzed.errors)
    assert fuzzed.stop_reason == "completed", fuzzed.stop_reason
    assert not [key for key in fuzzed.statuses if key[1] >= 500], fuzzed.statuses
    # a bug is logged as "unhandled", with its traceback
    log = server.log()
    assert "unhandled" not in log and "Traceback" not in log, \
        log[max(0, log.find("Traceback") - 200):][:3000]


def test_schemathesis_sent_thousands_of_requests_that_reached_the_real_code(fuzzed, document):
    assert fuzzed.requests >= MIN_REQUESTS, fuzzed.requests
    labels = {f"{method} {path}" for path, method, _ in operations(document)}
    for label in labels:  # every operation was fuzzed; those with parameters many times
        sent = sum(n for (lab, _), n in fuzzed.statuses.items() if lab == label)
        assert sent >= (50 if label.startswith("POST") else 10), (label, sent)
    # the credentials worked: requests got past client and token authentication
    assert fuzzed.count("POST /qr/ticket", 201) > 0
    assert fuzzed.count("POST /device_authorization", 200) > 0
    assert fuzzed.count("GET /userinfo", 200) > 0
    assert fuzzed.count("POST /introspect", 200) > 0
    assert fuzzed.count("POST /backchannel/authenticate", 200) > 0  # alice, the example
    assert fuzzed.count("POST /qr/inbox", 200) > 0
    # and malformed requests were refused
    for label in labels - {"GET /.well-known/openid-configuration", "GET /jwks.json"}:
        assert any(lab == label and 400 <= status < 500 for (lab, status) in fuzzed.statuses), label
    # generated DPoP proofs (junk) went to every operation that reads one, and they were refused
    for path, method in DPOP_OPERATIONS:
        label = f"{method.upper()} {path}"
        assert fuzzed.with_proof.get(label, 0) >= 10, (label, fuzzed.with_proof)
    # (whether schemathesis picks the dpopToken scheme over the Bearer credentials it is given
    # is its own random choice: junk ``Authorization: DPoP`` tokens are fuzzed deterministically
    # by tests/test_properties.py, test_a_junk_dpop_token_is_refused_...)
    # the stateful phase followed links to real tickets: polled, and scanned by the phone
    assert fuzzed.count("stateful POST /qr/ticket", 201) > 0
    assert fuzzed.count("stateful POST /qr/status", 200) > 0
    assert fuzzed.count("stateful POST /qr/scan", 200) > 0


# -- 5. the database afterwards --------------------------------------------------------------------
TICKET_STATES = {
    # status: columns that must be set, columns that must be empty
    # (a push request is made bound to its user, "scanned": it has no scan time of its own)
    "pending": ((), ("user_id", "scanned_at", "decided_at", "redeemed_at")),
    "scanned": (("user_id", "scanned_at"), ("decided_at", "redeemed_at")),
    "approved": (("user_id", "scanned_at", "decided_at"), ("redeemed_at",)),
    "denied": (("user_id", "scanned_at", "decided_at"), ("redeemed_at",)),
    "redeemed": (("user_id", "scanned_at", "decided_at", "redeemed_at"), ()),
    # its time ran out before it was redeemed or denied (the upkeep marks it): from any of the
    # three waiting states, so nothing more is required of it; it was never redeemed
    "expired": ((), ("redeemed_at",)),
}


def assert_database_unharmed(server) -> None:
    assert server.db("PRAGMA integrity_check") == [("ok",)]
    assert server.db("PRAGMA foreign_key_check") == []
    statuses = {s for (s,) in server.db("SELECT DISTINCT status FROM tickets")}
    assert statuses <= set(TICKET_STATES), statuses
    for status, (filled, empty) in TICKET_STATES.items():
        for column in filled:
            unless = " AND kind != 'push'" if column == "scanned_at" else ""
            bad = server.db(f"SELECT id FROM tickets WHERE status = ? AND {column} IS NULL{unless}",
                            status)
            assert bad == [], f"{len(bad)} {status} tickets without {column}"
        for column in empty:
            bad = server.db(f"SELECT id FROM tickets WHERE status = ? AND {column} IS NOT NULL",
                            status)
            assert bad == [], f"{len(bad)} {status} tickets with {column}"
    # the lifecycle's order in time, each step before expiry
    out_of_order = server.db("""SELECT kind, status, created_at, scanned_at, decided_at,
                                redeemed_at, expires_at FROM tickets WHERE scanned_at < created_at
                                OR decided_at < scanned_at OR redeemed_at < decided_at
                                OR scanned_at >= expires_at OR decided_at >= expires_at
                                OR redeemed_at >= expires_at""")
    assert out_of_order == [], repr(out_of_order)[:400]
    assert server.db("""SELECT id FROM tickets WHERE poll_interval < 1 OR poll_interval > 60
                        OR kind NOT IN ('qr', 'device', 'authorize', 'push')
                        OR (binding_code IS NOT NULL AND length(binding_code) != 2)""") == []
    # push requests: made for a user (never pending), the only tickets with a binding message
    assert server.db("""SELECT id FROM tickets WHERE kind = 'push'
                        AND (status = 'pending' OR user_id IS NULL
                             OR (scanned_at IS NOT NULL AND scanned_at < created_at))""") == []
    assert server.db("""SELECT id FROM tickets WHERE (binding_message IS NOT NULL
                        AND (kind != 'push' OR length(binding_message) > 64))
                        OR (notification_token IS NOT NULL AND kind != 'push')""") == []
    # what points elsewhere points at something
    assert server.db("""SELECT id FROM tokens WHERE client_id NOT IN (SELECT client_id FROM clients)
                        OR (user_id IS NOT NULL AND user_id NOT IN (SELECT id FROM users))""") == []
    assert server.db("""SELECT id FROM tickets
                        WHERE client_id NOT IN (SELECT client_id FROM clients)
                        OR (user_id IS NOT NULL AND user_id NOT IN (SELECT id FROM users))""") == []
    assert server.db("""SELECT code_hash FROM redeemed_codes
                        WHERE client_id NOT IN (SELECT client_id FROM clients)""") == []
    # one token per redeemed ticket: tokens were issued exactly once for each (push requests by
    # the CIBA grant, and only those)
    redeemed = server.db("""SELECT COUNT(*) FROM tickets WHERE status = 'redeemed'
                            AND kind IN ('qr', 'device')""")[0][0]
    issued = server.db("SELECT COUNT(*) FROM tokens WHERE grant_type IN (?, ?)",
                       QR_GRANT, DEVICE_GRANT)[0][0]
    assert issued == redeemed, (issued, redeemed)
    pushed = server.db("""SELECT COUNT(*) FROM tickets WHERE status = 'redeemed'
                          AND kind = 'push'""")[0][0]
    issued = server.db("SELECT COUNT(*) FROM tokens WHERE grant_type = ?", CIBA_GRANT)[0][0]
    assert issued == pushed, (issued, pushed)


def test_the_database_is_unharmed_after_the_fuzzing(server, creds, fuzzed):
    assert fuzzed.requests >= MIN_REQUESTS
    assert_database_unharmed(server)
    # the clients and the phone's token still work
    ticket = approved_ticket(server, creds["web"], creds["alice"], scope="openid")
    response = server.poll(creds["web"], ticket["ticket"])
    assert response.status_code == 200, response.text
    assert_database_unharmed(server)
