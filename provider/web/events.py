"""The event-driven hot path: what many browsers and phones do at once, served on an event loop.

``qr-oidc serve`` runs this ASGI app (provider/runtime/server.py: uvicorn with uvloop and
httptools in gunicorn's processes). It answers six requests itself and hands every other one,
untouched, to the Flask app in the same process, run to the end in a pool of ``THREADS``
threads (``call_wsgi``):

- ``POST /qr/status``: the page's status, and with ``wait`` a long poll, held as a coroutine,
  not a thread (provider/web/longpoll.py);
- ``POST /token`` with the QR ticket or the device code grant: the token core decides
  (provider/web/token_poll.py);
- ``POST /qr/scan``, ``/qr/approve``, ``/qr/deny``: the phone's side (provider/web/actions.py);
- ``POST /qr/inbox``: the phone's push requests, and with ``wait`` a long poll
  (provider/web/inbox.py).

This module is the ASGI app itself: the dispatch, the lifespan, and the plumbing those share.
Work that waits for the database (or signs) runs in a small pool of database threads
(``DB_FAST_POOL_SIZE``), never on the loop; what is left on the loop is HTTP, the body's rules
(provider/web/body.py, read once: provider/web/event_request.py), client authentication against
a copy of the client's row at most half a second old (provider/web/client_cache.py,
grants/client_auth.py), CORS (provider/web/cors.py) and the security headers
(provider/web/headers.py): the same functions Flask's side calls. Other token grants, a
preflight and anything else go to Flask, body and all. Each answer's access log line ends
``event``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from a2wsgi.wsgi import build_environ
from authlib.oauth2 import OAuth2Error
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.middleware.proxy_fix import ProxyFix

from qr_oidc.grants.access_tokens import Proof
from qr_oidc.grants.dpop import values_of
from qr_oidc.grants.signals import browser_label
from qr_oidc.provider.audit import PEER
from qr_oidc.provider.metrics import metrics
from qr_oidc.provider.storage.notify import SqliteWatcher, pg_listen
from qr_oidc.provider.web import actions, cors
from qr_oidc.provider.web.body import MAX_BODY, TOO_LARGE
from qr_oidc.provider.web.client_cache import ClientCache
from qr_oidc.provider.web.event_request import Request
from qr_oidc.provider.web.headers import security_headers
from qr_oidc.provider.web.inbox import InboxPolls
from qr_oidc.provider.web.longpoll import LongPolls
from qr_oidc.provider.web.oauth import error_triple
from qr_oidc.provider.web.token_poll import TOKEN_HEADERS, TokenPolls

log = logging.getLogger("qr_oidc.events")
access_log = logging.getLogger("qr_oidc.access")

MOBILE = {"/qr/scan": "scan", "/qr/approve": "approve", "/qr/deny": "deny"}


def call_wsgi(app, environ) -> tuple[int, list, bytes]:
    """Run a WSGI app to the end in this thread: (status, headers, body).

    The answer is made whole, and the request's teardown has given its database connection
    back, before anything goes to the event loop: every answer Flask makes here is small and
    whole (pages, JSON, QR images). (a2wsgi's own bridge hands ``start_response`` and each chunk
    to the loop and waits for it each time: on a busy loop a request then keeps its connection
    for several loop turns, and answers a turn later for each.)"""
    started: list = []
    body: list[bytes] = []

    def start_response(status, headers, exc_info=None):
        started[:] = [status, headers]
        return body.append

    iterable = app(environ, start_response)
    try:
        body.extend(iterable)
    finally:
        getattr(iterable, "close", lambda: None)()
    return int(started[0].split(" ", 1)[0]), started[1], b"".join(body)


class EventApp:
    """The ASGI app ``qr-oidc serve`` runs: the hot paths here, everything else Flask's."""

    def __init__(self, flask_app, parts, on_start=()):
        settings = parts.settings
        self.flask_app, self.parts = flask_app, parts
        # what the runtime starts beside the event loop once it runs (maintenance)
        self.on_start = list(on_start)
        self.flask_threads = max(1, settings.threads)
        self.db_threads = max(1, settings.db_fast_pool_size)
        # three pools, so that no kind of work queues behind another: Flask's requests, the
        # token polls and the phone's actions, and the long polls' reads
        self.flask_pool: ThreadPoolExecutor | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.status_pool: ThreadPoolExecutor | None = None
        self.clients = ClientCache(parts.tickets)
        self.token_polls = TokenPolls(parts, self.clients, self._db)
        self.long_polls = LongPolls(parts, self._read_status)
        self.inbox_polls = InboxPolls(parts, self._db, self.long_polls, self.proof)
        self.secure = settings.secure
        self.issuer = settings.issuer
        self.json_headers = [(k.encode(), v.encode())
                             for k, v in security_headers("application/json", self.secure)]
        hops = settings.trusted_proxies
        # the address behind trusted proxies: werkzeug's rule, as Flask's side applies it
        self._proxy = ProxyFix(lambda environ, _start: environ, x_for=hops, x_proto=hops) \
            if hops else None
        self._tasks: list[asyncio.Task] = []

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            return await self._lifespan(receive, send)
        if kind != "http":  # (no websockets here)
            return None
        path, method = scope["path"], scope["method"]
        hot = method == "POST" and (path in ("/token", "/qr/status", "/qr/inbox")
                                    or path in MOBILE)
        body = await self._read_body(scope, receive, send)
        if body is None:  # too large: answered
            return None
        if not hot:
            return await self._to_flask(scope, send, body)
        request = Request(scope, body, self._client_ip(scope))
        if path == "/token":
            grant_type = self.token_polls.ticket_grant(request)
            if grant_type is None:
                return await self._to_flask(scope, send, body)
            answer = await self.token_polls.answer(request, grant_type)
        elif path == "/qr/status":
            answer = await self.long_polls.answer(request, receive)
        elif path == "/qr/inbox":
            answer = await self.inbox_polls.answer(request, receive)
        else:
            answer = await self._db(request, actions.mobile, self.parts, MOBILE[path],
                                    request.headers.get("authorization"), request.params,
                                    request.ip, self.proof(request))
        await self._send(send, request, answer)
        return None

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as exc:
                    log.error("could not start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> None:
        """On the worker's event loop: the database threads, the notifier, the background
        threads (key refresh, and what the runtime asked for: maintenance)."""
        loop = asyncio.get_running_loop()
        self.flask_pool = ThreadPoolExecutor(self.flask_threads, thread_name_prefix="qr-oidc-web")
        self.executor = ThreadPoolExecutor(self.db_threads, thread_name_prefix="qr-oidc-db")
        self.status_pool = ThreadPoolExecutor(max(1, self.db_threads // 2),
                                              thread_name_prefix="qr-oidc-status")
        parts = self.parts
        parts.notifier.bind(loop)
        if parts.db.engine.dialect.name == "postgresql":
            self._tasks.append(loop.create_task(pg_listen(parts.db.engine.url, parts.notifier)))
        elif parts.db.is_sqlite:
            watcher = SqliteWatcher(parts.db.engine, parts.notifier)
            self._tasks.append(loop.create_task(watcher.run(self.executor)))
        parts.keys.start_refresher()
        # the user-agent parser loads its rules on first use (about 0.1 s): now, not in the
        # first scan's answer
        self.executor.submit(browser_label, "Mozilla/5.0")
        for start in self.on_start:
            start(parts)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pool in (self.flask_pool, self.executor, self.status_pool):
            if pool is not None:
                pool.shutdown(wait=False)

    def shutting_down(self) -> None:
        """The server stops: every held long poll answers now with what it knows."""
        self.long_polls.shutting_down()

    def proof(self, request: Request) -> Proof:
        """What the request offers as a DPoP proof, for the URL the client addressed (the
        issuer's, behind any proxy)."""
        return Proof(values_of(request.headers.get("dpop")), "POST", self.issuer + request.path)

    # -- plumbing ------------------------------------------------------------------------------
    async def _read_body(self, scope, receive, send) -> bytes | None:
        """The whole body, or None after answering 413 for one over MAX_BODY (chunked ones
        too), as provider/web/body.py's BodyLimit does for Flask."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > MAX_BODY:
                        await self._refuse_large(send)
                        return None
                except ValueError:
                    pass
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b""  # the client left
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                await self._refuse_large(send)
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _refuse_large(self, send) -> None:
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                   (b"connection", b"close"), (b"content-length", str(len(TOO_LARGE)).encode()),
                   *self.json_headers]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": TOO_LARGE})

    def _client_ip(self, scope) -> str | None:
        client = scope.get("client")
        ip = client[0] if client else None
        if self._proxy is None:
            return ip
        environ = {"REMOTE_ADDR": ip, "wsgi.url_scheme": scope.get("scheme", "http"),
                   "HTTP_HOST": ""}
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                environ["HTTP_X_FORWARDED_FOR"] = value.decode("latin-1")
            elif name == b"x-forwarded-proto":
                environ["HTTP_X_FORWARDED_PROTO"] = value.decode("latin-1")
        return self._proxy(environ, None).get("REMOTE_ADDR")

    async def _to_flask(self, scope, send, body: bytes) -> None:
        """Hand a request, with its body, to Flask in a thread of ``flask_pool``, and send the
        whole answer: one turn of the loop each way."""
        environ = build_environ(scope, io.BytesIO(body))
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)  # (read whole already: MAX_BODY holds)
        loop = asyncio.get_running_loop()
        status, headers, payload = await loop.run_in_executor(
            self.flask_pool, call_wsgi, self.flask_app, environ)
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})

    async def _db(self, request: Request, function, *args, pool=None):
        """Run ``function`` in a database thread (of ``pool``, else the token polls' and the
        phone's) with this request's peer for the audit log; the thread's session is ended
        afterwards. Failures become answers."""
        loop = asyncio.get_running_loop()
        session = self.parts.db.session

        def work():
            token = PEER.set((request.ip, request.agent))
            try:
                return function(*args)
            finally:
                PEER.reset(token)
                session.remove()

        try:
            return await loop.run_in_executor(pool or self.executor, work)
        except OAuth2Error as exc:
            return actions.oauth_refusal(exc)
        except PoolTimeout:
            log.warning("no database connection free within QR_OIDC_DB_POOL_TIMEOUT on %s",
                        request.path)
            return actions.error("temporarily_unavailable",
                                 503, "The service is busy; try again shortly.",
                                 {"Retry-After": "1"})
        except Exception as exc:  # a bug or a database failure: the protocol's format, no trace
            log.error("unhandled %s on %s", type(exc).__name__, request.path, exc_info=exc)
            return actions.error("server_error", 500, "Internal error.")

    def _read_status(self, request: Request, ticket: str, first: bool = False):
        """A ticket's status read in a database thread (awaitable), for the long polls: a first
        read in the status reads' pool, a woken long poll's in the token work's."""
        return self._db(request, actions.read_status, self.parts, ticket,
                        pool=self.status_pool if first else None)

    async def _send(self, send, request: Request, answer: actions.Answer) -> None:
        if answer.oauth_error is not None:
            status, body, headers = error_triple(answer.oauth_error)
            payload = json.dumps(body).encode()
        elif answer.headers is TOKEN_HEADERS:  # a token response, as Authlib writes it
            status, payload, headers = answer.status, json.dumps(answer.body).encode(), \
                list(answer.headers.items())
        else:  # as Flask's jsonify writes it
            status, headers = answer.status, list(answer.headers.items())
            payload = (json.dumps(answer.body, separators=(",", ":")) + "\n").encode()
            headers.insert(0, ("Content-Type", "application/json"))
        raw = _latin1(headers)
        raw.append((b"content-length", str(len(payload)).encode()))
        present = {k.lower() for k, _ in raw}
        raw.extend(pair for pair in self.json_headers if pair[0].lower() not in present)
        origin = request.headers.get("origin")
        if origin and request.path == "/qr/status":
            raw.extend(_latin1(cors.answer_headers(origin, any_origin=True)))
        raw.extend(_latin1(answer.cors))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})
        elapsed = time.perf_counter() - request.started
        metrics.request(request.path, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s %.1fms event", "POST", request.path, status,
                            elapsed * 1000)


def _latin1(headers) -> list:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
