"""The event-driven hot path: what many browsers and phones do at once, served on an event loop.

``qr-oidc serve`` runs this ASGI app (provider/runtime/server.py: uvicorn with uvloop and httptools in
gunicorn's processes). It answers five requests itself and hands every other one, untouched, to
the Flask app in the same process (a2wsgi, in a pool of ``THREADS`` threads):

- ``POST /qr/status``: the page's status, and with ``wait`` a long poll. A waiting page is a
  coroutine awaiting the notifier (provider/storage/notify.py: this process's changes at once, other
  processes' through PostgreSQL's LISTEN on psycopg's async driver or SQLite's event table), not
  a thread: one process holds tens of thousands. At most ``LONG_POLLS_PER_TICKET`` (4) are held
  per ticket and ``LONG_POLL_LIMIT`` per process; one more is answered at once with the current
  status (for a ticket already watched, from what its watchers last read, without touching the
  database), at most one a second per address (``_pace``), so a flood on one ticket gets little
  and costs the server little;
- ``POST /token`` with the QR ticket or the device code grant: the token core decides
  (grants/token_core.py; the Authlib grant Flask would call asks the same core);
- ``POST /qr/scan``, ``/qr/approve``, ``/qr/deny``: the phone's side (provider/web/actions.py).

Work that waits for the database (or signs) runs in a small pool of database threads
(``DB_FAST_POOL_SIZE``), never on the loop; what is left on the loop is HTTP, the body's rules
(provider/web/body.py), client authentication against a copy of the client's row at most half a
second old (grants/client_auth.py), CORS (provider/web/cors.py) and the security headers
(provider/web/headers.py): the same functions Flask's side calls. Other token grants, a preflight
and anything else go to Flask, body and all. Each answer's access log line ends ``event``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from a2wsgi.wsgi import build_environ
from authlib.oauth2 import OAuth2Error
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.middleware.proxy_fix import ProxyFix

from qr_oidc.grants import client_auth
from qr_oidc.grants.token_core import CREDENTIAL
from qr_oidc.provider.audit import PEER
from qr_oidc.provider.security import digest
from qr_oidc.provider.storage.notify import SqliteWatcher, pg_listen
from qr_oidc.provider.web import actions, cors
from qr_oidc.provider.web.body import MAX_BODY, TOO_LARGE, parse_body
from qr_oidc.provider.web.headers import security_headers
from qr_oidc.provider.web.oauth import error_triple

log = logging.getLogger("qr_oidc.events")
access_log = logging.getLogger("qr_oidc.access")

MOBILE = {"/qr/scan": "scan", "/qr/approve": "approve", "/qr/deny": "deny"}
TOKEN_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store",
                 "Pragma": "no-cache"}


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


@dataclass(frozen=True)
class ClientRecord:
    """What client authentication, the token core and CORS need of a client row."""

    client_id: str
    secret_hash: str | None
    public: bool
    grant_types: frozenset
    id_token_signed_response_alg: str | None
    auth_method: str
    redirect_uris: tuple

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


class ClientCache:
    """Client rows, kept per process for ``ttl`` seconds: a secret or setting changed by the
    operator is seen by every process within a second. An unknown id is never cached."""

    def __init__(self, tickets, ttl: float = 0.5):
        self.tickets, self.ttl = tickets, ttl
        self._rows: dict[str, tuple[float, ClientRecord]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: str) -> ClientRecord | None:
        hit = self._rows.get(client_id)
        at = time.monotonic()
        if hit is not None and hit[0] > at:
            return hit[1]
        row = self.tickets.client_for_poll(client_id)
        if row is None:
            return None
        record = ClientRecord(client_id, *row)
        with self._lock:
            if len(self._rows) > 10_000:
                self._rows.clear()
            self._rows[client_id] = (at + self.ttl, record)
        return record


class Watch:
    """The long polls held on one ticket in this process, and what they last read."""

    __slots__ = ("count", "state")

    def __init__(self, state):
        self.count, self.state = 0, state


class Request:
    __slots__ = ("scope", "path", "headers", "body", "started", "ip", "agent", "_params")

    def __init__(self, scope, body: bytes, ip: str | None):
        self.scope, self.path, self.body, self.ip = scope, scope["path"], body, ip
        self._params = None
        self.headers = {}
        for name, value in scope["headers"]:
            # a repeated header is one value joined by commas, as WSGI servers give it
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]},{text}" if key in self.headers else text
        self.agent = self.headers.get("user-agent")
        self.started = time.perf_counter()

    @property
    def mimetype(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def params(self):
        """The body's parameters, read once (provider/web/body.py's rules); raises
        InvalidRequestError for a body that is not one, every time it is asked."""
        if self._params is None:
            try:
                self._params = parse_body(self.body, self.mimetype)
            except OAuth2Error as exc:
                self._params = exc
        if isinstance(self._params, Exception):
            raise self._params
        return self._params


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
        self.secure = settings.secure
        self.json_headers = [(k.encode(), v.encode())
                             for k, v in security_headers("application/json", self.secure)]
        self.long_poll_max = settings.long_poll_max
        self.per_ticket = settings.long_polls_per_ticket
        self.limit = settings.long_poll_limit
        self.watches: dict[str, Watch] = {}
        self._paced: dict[str, float] = {}  # address -> when its last unheld answer is due
        self.held = 0
        self.stopping = False
        hops = settings.trusted_proxies
        # the address behind trusted proxies: werkzeug's rule, as Flask's side applies it
        self._proxy = ProxyFix(lambda environ, _start: environ, x_for=hops, x_proto=hops) \
            if hops else None
        self._tasks: list[asyncio.Task] = []
        self._warned = 0.0

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            return await self._lifespan(receive, send)
        if kind != "http":  # (no websockets here)
            return None
        path, method = scope["path"], scope["method"]
        hot = method == "POST" and (path in ("/token", "/qr/status") or path in MOBILE)
        body = await self._read_body(scope, receive, send)
        if body is None:  # too large: answered
            return None
        if not hot:
            return await self._to_flask(scope, send, body)
        request = Request(scope, body, self._client_ip(scope))
        if path == "/token":
            grant_type = self._ticket_grant(request)
            if grant_type is None:
                return await self._to_flask(scope, send, body)
            answer = await self._token(request, grant_type)
        elif path == "/qr/status":
            answer = await self._status(request, receive)
        else:
            answer = await self._db(request, actions.mobile, self.parts, MOBILE[path],
                                    request.headers.get("authorization"), request.params,
                                    request.ip)
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
        self.stopping = True
        self.parts.notifier.publish_all()

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
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s %.1fms event", "POST", request.path, status,
                            (time.perf_counter() - request.started) * 1000)

    # -- the token endpoint --------------------------------------------------------------------
    @staticmethod
    def _ticket_grant(request: Request) -> str | None:
        """The QR or device grant this token request is, or None (another grant, or a body
        this path does not read: Flask answers it)."""
        try:
            grant_type = request.params().get("grant_type")
        except OAuth2Error:
            return None
        return grant_type if grant_type in CREDENTIAL else None

    async def _token(self, request: Request, grant_type: str) -> actions.Answer:
        params = request.params()

        def authenticate():
            return client_auth.authenticate(self.clients.get,
                                           request.headers.get("authorization"), params)

        def poll():
            try:
                answer = actions.Answer(200, self.parts.core.poll(grant_type, params,
                                                                  authenticate), TOKEN_HEADERS)
            except OAuth2Error as exc:
                answer = actions.oauth_refusal(exc)
            origin = request.headers.get("origin")
            if origin:  # who may read it: the origins of the calling client's redirect URIs
                answer.cors = cors.answer_headers(
                    origin, allowed=lambda: self._origin_allowed(request, params, origin))
            return answer

        return await self._db(request, poll)

    def _origin_allowed(self, request: Request, params, origin: str) -> bool:
        client_id = client_auth.presented_id(request.headers.get("authorization"), params)
        record = self.clients.get(client_id) if client_auth.usable_id(client_id) else None
        return record is not None and cors.origin_allowed(origin, record.redirect_uris)

    # -- the status long poll ------------------------------------------------------------------
    async def _status(self, request: Request, receive) -> actions.Answer:
        try:
            asked = actions.status_request(request.params(), self.long_poll_max)
        except OAuth2Error as exc:
            return actions.oauth_refusal(exc)
        if isinstance(asked, actions.Answer):
            return asked
        key = digest(asked.ticket)
        watch = self.watches.get(key)
        if watch is not None and watch.count >= self.per_ticket:
            # this ticket has its share of long polls: the current status, from what they read
            await self._pace(request, asked.wait)
            return actions.status_answer(watch.state)
        state = await self._db(request, actions.read_status, self.parts, asked.ticket,
                               pool=self.status_pool)
        if isinstance(state, actions.Answer):  # the database failed
            return state
        if state is None or asked.wait <= 0 or self.stopping:
            return actions.status_answer(state)
        if self.held >= self.limit or self.per_ticket <= 0:  # the process holds its ceiling
            await self._pace(request, asked.wait)
            return actions.status_answer(state)
        return await self._hold(request, receive, key, asked, state)

    async def _pace(self, request: Request, wait: float) -> None:
        """A long poll the server will not hold (its ticket has its share, or the process its
        ceiling) is answered at once, unless another from the same address was answered so
        within the last second: then it waits its turn, one a second per address, for at most
        its own ``wait``. A page never needs more than one long poll per ticket (and the widget
        waits a second before asking again), so this touches only a flood: whatever it does,
        reconnecting included, it gets one such answer a second per address, and what waits
        meanwhile is a sleeping coroutine, as cheap as a held long poll."""
        address = request.ip or ""
        now = time.monotonic()
        paced = self._paced
        if len(paced) > 100_000:  # forget addresses that have been quiet
            for old in [a for a, at in paced.items() if at < now - 2]:
                del paced[old]
        due = min(max(now, paced.get(address, 0.0) + 1.0), now + max(0.0, wait))
        paced[address] = max(due, paced.get(address, 0.0))
        if due > now:
            await asyncio.sleep(due - now)

    async def _hold(self, request: Request, receive, key: str, asked, state) -> actions.Answer:
        notifier = self.parts.notifier
        watch = self.watches.get(key)
        if watch is None:
            watch = self.watches[key] = Watch(state)
        if watch.count >= self.per_ticket:  # others came in while this one read
            await self._pace(request, asked.wait)
            return actions.status_answer(watch.state)
        watch.count += 1
        self.held += 1
        left = asyncio.ensure_future(receive())  # the client leaving frees its place
        try:
            known = asked.known or state.public(time.time())
            deadline = time.monotonic() + asked.wait
            while True:
                at = time.time()
                status = state.public(at)
                if (status != known or time.monotonic() >= deadline or self.stopping
                        or left.done()):
                    return actions.status_answer(state, at)
                remaining = deadline - time.monotonic()
                if status != "expired":  # wake when it expires, too
                    remaining = min(remaining, state.expires_at - at + 0.01)
                seen = notifier.version(state.id)
                await notifier.wait(state.id, seen, remaining, also=left)
                if left.done():  # the client left: nobody reads this
                    return actions.status_answer(state)
                # (a woken long poll reads in the token work's pool: it must not queue behind
                # the new long polls' first reads, which a wave of renewals fills)
                fresh = await self._db(request, actions.read_status, self.parts, asked.ticket)
                if isinstance(fresh, actions.Answer):
                    return fresh
                if fresh is None:  # purged meanwhile
                    return actions.status_answer(None)
                state = watch.state = fresh
        finally:
            left.cancel()
            watch.count -= 1
            self.held -= 1
            if watch.count <= 0 and self.watches.get(key) is watch:
                del self.watches[key]


def _latin1(headers) -> list:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
