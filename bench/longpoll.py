"""Long-poll figures: many waiting pages held at once, and the one-ticket flood.

Two phases, each on a fresh ``qr-oidc serve`` (pinned to the server core) over the run's small
database, with the shipped settings except ``RATE_TICKET_CLIENT=off`` (the probes' ticket
creations are the web client's own, not what is measured):

- **held** (``--long-polls`` N, 10,000): N pending tickets written by SQL, each long-polled by its
  own connection (``POST /qr/status`` with ``ticket=<secret>&wait=25&last_status=pending``) from an
  asyncio client in a separate process (on the load core, ``RLIMIT_NOFILE`` raised to its hard
  limit); an answered long poll is renewed at once on its connection. While they are held: p50,
  p99 and max of discovery (``GET /.well-known/openid-configuration``), ticket creation
  (``POST /qr/ticket`` as the web client) and a token poll (``POST /token``, a pending ticket with
  interval 0, so always on time), each probed from its own thread and connection at up to
  ``PROBE_RATE`` a second; the resident memory of the server's process tree; and approval-to-page
  (bench/approval.py) with a few samples.
- **flood** (``--flood`` C, 1,500): C connections long-polling one ticket (made through
  ``POST /qr/ticket``, within every limit), each renewing as soon as it is answered; meanwhile the
  max and p99 of discovery and of a token poll.

Every request has a timeout (``--probe-timeout``); a probe that times out counts with the time it
waited (so p99 and max are lower bounds then) and in ``failed``. Connections the client could not
open within its opening window are counted, not waited for. The client process has a hard
deadline and is killed if it does not stop; each phase's server is stopped (SIGKILL if need be).
Whatever the server does, the phase ends and reports what it saw.

    python -m bench.longpoll client --url URL --tickets FILE --connections N [--wait 25]

is the client process (JSON lines on stdout: ``opened``, ``snapshot`` on a ``snapshot`` line on
stdin, ``done`` on ``stop`` or EOF).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import requests

from . import approval, data, load, report, servers

PROBE_RATE = 20  # probes a second per kind, at most
OPEN_RATE = 1000  # new long-poll connections a second while the client opens them
SETTLED_CORES = 0.5  # the server has taken in the long polls once it uses less CPU than this
DISCOVERY = "/.well-known/openid-configuration"


# -- the client process ------------------------------------------------------------------------
class _Stats:
    def __init__(self):
        self.connected = 0
        self.connect_failed = 0
        self.reconnects = 0
        self.sent = 0
        self.answered = 0
        self.early = 0  # answered before the wait was over (the status had not changed)
        self.errors = 0
        self.in_flight = 0
        self.codes: Counter = Counter()
        self.bodies: Counter = Counter()
        self.first_errors: list[str] = []
        self.started = time.monotonic()

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{type(exc).__name__}: {exc}"[:200])

    def as_dict(self, event: str) -> dict:
        return {"event": event, "at_s": time.monotonic() - self.started,
                "connected": self.connected, "connect_failed": self.connect_failed,
                "reconnects": self.reconnects, "sent": self.sent, "answered": self.answered,
                "early": self.early, "errors": self.errors, "in_flight": self.in_flight,
                "http_statuses": dict(self.codes), "answers": dict(self.bodies),
                "first_errors": self.first_errors}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, code = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body, close = await reader.read(), True
    return int(code), body, close


async def _client(a) -> None:
    servers.raise_open_files()
    url = urlsplit(a.url)
    host, port = url.hostname, url.port
    tickets = [t for t in Path(a.tickets).read_text().split() if t]
    stats = _Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    opening = asyncio.Semaphore(a.open_concurrency)
    open_deadline = loop.time() + a.open_seconds
    hard_deadline = loop.time() + a.max_seconds
    first_done = 0
    all_tried = asyncio.Event()

    def tried():
        nonlocal first_done
        first_done += 1
        if first_done >= a.connections:
            all_tried.set()

    def request(ticket: str) -> bytes:
        body = f"ticket={ticket}&wait={a.wait}&last_status={a.last_status}".encode()
        return (f"POST /qr/status HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    opening_started = loop.time()

    async def one(i: int) -> None:
        payload = request(tickets[i % len(tickets)])
        first = True
        # paced: connection i opens no sooner than i / open_rate seconds after the start
        await asyncio.sleep(max(0.0, opening_started + i / a.open_rate - loop.time()))
        while not stop.is_set():
            writer = None
            try:
                if first:
                    async with opening:
                        timeout = max(0.1, open_deadline - loop.time())
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(host, port), timeout)
                else:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port), a.timeout)
                    stats.reconnects += 1
                stats.connected += 1
            except (OSError, asyncio.TimeoutError) as exc:
                stats.connect_failed += 1
                if first:
                    stats.error(exc)
                    tried()
                    return  # not opened within the window: counted, not retried
                await asyncio.sleep(1.0)
                continue
            try:
                while not stop.is_set():
                    writer.write(payload)
                    stats.sent += 1
                    stats.in_flight += 1
                    if first:
                        first = False
                        tried()
                    sent = loop.time()
                    try:
                        code, body, close = await asyncio.wait_for(_read_response(reader),
                                                                   a.wait + a.timeout)
                    finally:
                        stats.in_flight -= 1
                    stats.answered += 1
                    stats.codes[str(code)] += 1
                    try:
                        answer = json.loads(body)
                        stats.bodies[str(answer.get("status") or answer.get("error"))] += 1
                    except ValueError:
                        stats.bodies["(not JSON)"] += 1
                    if loop.time() - sent < a.wait - 1:
                        stats.early += 1
                    if close:
                        break
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError, IndexError) as exc:
                stats.error(exc)
                if first:
                    first = False
                    tried()
                await asyncio.sleep(0.2)  # no hot loop against a server that closes at once
            finally:
                if writer is not None:
                    writer.close()

    def command(line: str) -> None:
        line = line.strip()
        if line == "snapshot":
            print(json.dumps(stats.as_dict("snapshot")), flush=True)
        elif line in ("stop", ""):
            stop.set()

    reader_thread_lines: asyncio.Queue = asyncio.Queue()

    def stdin_reader():
        for line in sys.stdin:
            loop.call_soon_threadsafe(reader_thread_lines.put_nowait, line)
        loop.call_soon_threadsafe(reader_thread_lines.put_nowait, "")

    threading.Thread(target=stdin_reader, daemon=True).start()

    async def commands():
        while not stop.is_set():
            command(await reader_thread_lines.get())

    async def opened():
        try:
            await asyncio.wait_for(all_tried.wait(), max(0.1, open_deadline - loop.time()) + 5)
        except asyncio.TimeoutError:
            pass
        print(json.dumps(stats.as_dict("opened")), flush=True)

    tasks = [asyncio.create_task(one(i)) for i in range(a.connections)]
    helpers = [asyncio.create_task(commands()), asyncio.create_task(opened())]
    try:
        await asyncio.wait_for(stop.wait(), max(0.1, hard_deadline - loop.time()))
    except asyncio.TimeoutError:
        pass
    stop.set()
    done = stats.as_dict("done")  # before the cancellation: what was in flight at the end
    for task in tasks + helpers:
        task.cancel()
    await asyncio.gather(*tasks, *helpers, return_exceptions=True)
    print(json.dumps(done), flush=True)


def client_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.longpoll client")
    p.add_argument("--url", required=True)
    p.add_argument("--tickets", required=True, help="file of ticket secrets, one a line; "
                   "connection i long-polls ticket i modulo their number")
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--wait", type=int, default=25)
    p.add_argument("--last-status", default="pending")
    p.add_argument("--timeout", type=float, default=30,
                   help="seconds past the wait a long poll may take before it counts as failed")
    p.add_argument("--open-seconds", type=float, default=60)
    p.add_argument("--open-concurrency", type=int, default=256)
    p.add_argument("--open-rate", type=float, default=1000,
                   help="new connections a second while opening (1000)")
    p.add_argument("--max-seconds", type=float, default=600)
    a = p.parse_args(argv)
    a.open_seconds = max(a.open_seconds, a.connections / a.open_rate + 30)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    asyncio.run(_client(a))
    return 0


# -- the driver's side -----------------------------------------------------------------------------
class Holder:
    """The client process, seen from the benchmark."""

    def __init__(self, url: str, tickets_file: Path, connections: int, folder: Path, name: str,
                 wait: int = 25, open_seconds: float = 60, max_seconds: float = 600,
                 timeout: float = 30, open_rate: float = OPEN_RATE):
        open_seconds = max(open_seconds, connections / open_rate + 30)
        self.argv = servers.pinned([
            servers.PYTHON, "-m", "bench.longpoll", "client", "--url", url, "--tickets",
            str(tickets_file), "--connections", str(connections), "--wait", str(wait),
            "--open-seconds", str(open_seconds), "--max-seconds", str(max_seconds),
            "--timeout", str(timeout), "--open-rate", str(open_rate),
        ], servers.LOAD_CORE)
        self.open_seconds, self.max_seconds = open_seconds, max_seconds
        self.log_path = folder / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()

    def start(self) -> Holder:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, start_new_session=True, text=True,
                                     cwd=servers.ROOT)
        servers.register_cleanup(self.kill)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass
        self.lines.put(None)

    def _next(self, event: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if item is None:
                return None
            if item.get("event") == event:
                return item

    def _say(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def wait_opened(self) -> dict | None:
        return self._next("opened", self.open_seconds + 30)

    def snapshot(self) -> dict | None:
        self._say("snapshot")
        return self._next("snapshot", 15)

    def stop(self) -> dict | None:
        self._say("stop")
        try:
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        done = self._next("done", 30)
        self.kill()
        return done

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None


def probe(kinds: dict, seconds: float, timeout: float) -> dict:
    """Each kind (name -> function(session, timeout) -> bool, True when answered as expected) in
    its own thread and connection, at most ``PROBE_RATE`` a second, for ``seconds``."""
    results = {name: {"ms": [], "failed": 0, "timeouts": 0, "errors": []} for name in kinds}
    end = time.monotonic() + seconds

    def run(name, fn):
        out = results[name]
        session = requests.Session()
        while time.monotonic() < end:
            started = time.perf_counter()
            ok = False
            try:
                ok = fn(session, timeout)
            except requests.Timeout as exc:
                out["timeouts"] += 1
                out["errors"].append(f"timeout: {exc}"[:200])
            except requests.RequestException as exc:
                out["errors"].append(f"{type(exc).__name__}: {exc}"[:200])
            elapsed = (time.perf_counter() - started) * 1000
            out["ms"].append(elapsed)
            if not ok:
                out["failed"] += 1
                session.close()
                session = requests.Session()
            time.sleep(max(0.0, 1 / PROBE_RATE - elapsed / 1000))
        session.close()
        del out["errors"][5:]

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in kinds.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 3 * timeout + 10)
    summary = {}
    for name, out in results.items():
        ms = out["ms"]
        summary[name] = {"count": len(ms), "p50_ms": report.percentile(ms, 50),
                         "p99_ms": report.percentile(ms, 99),
                         "max_ms": max(ms) if ms else float("nan"),
                         "failed": out["failed"], "timeouts": out["timeouts"],
                         "errors": out["errors"]}
    return summary


def _probes(url: str, web: dict, poll_tickets: list[dict], kinds: tuple[str, ...]) -> dict:
    credentials = (web["client_id"], web["client_secret"])
    cursor = [0]

    def discovery(session, timeout):
        return session.get(url + DISCOVERY, timeout=timeout).status_code == 200

    def ticket(session, timeout):
        r = session.post(url + "/qr/ticket", data={"scope": "openid profile"},
                         auth=credentials, timeout=timeout)
        return r.status_code == 201

    def token_poll(session, timeout):
        cursor[0] += 1
        secret = poll_tickets[cursor[0] % len(poll_tickets)]["ticket"]
        r = session.post(url + "/token", data={"grant_type": load.QR_GRANT, "ticket": secret},
                         auth=credentials, timeout=timeout)
        return r.status_code == 400 and b"authorization_pending" in r.content

    every = {"discovery": discovery, "ticket": ticket, "token_poll": token_poll}
    return {k: every[k] for k in kinds}


def settle(server: servers.Server, most: float) -> dict:
    """Wait (at most ``most`` seconds) until the server uses less than ``SETTLED_CORES`` of a
    core over a second: it has read and parked the long polls it was sent, and what is measured
    next is the steady state of holding them, not their arrival."""
    started = time.monotonic()
    cores = float("nan")
    while time.monotonic() - started < most and server.alive():
        before, at = server.tree_cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        cores = (server.tree_cpu_seconds() - before) / (time.monotonic() - at)
        if cores < SETTLED_CORES:
            return {"settle_s": time.monotonic() - started, "settled": True,
                    "settle_cores": cores}
    return {"settle_s": time.monotonic() - started, "settled": False, "settle_cores": cores}


def _held_count(*snapshots) -> int:
    """Long polls outstanding throughout: the smallest count seen in flight."""
    seen = [s["in_flight"] for s in snapshots if s]
    return min(seen) if seen else 0


def held(start_server, engine, web: dict, sign_in, folder: Path, a, log) -> dict:
    """Phase (a): ``a.long_polls`` long polls held while other requests are measured."""
    n = a.long_polls
    log(f"long polls: {n:,} held at once (tickets by SQL)")
    tickets = data.insert_tickets(engine, web["client_id"], n)
    polls = data.insert_tickets(engine, web["client_id"], 50)  # interval 0: always on time
    approvals = data.insert_tickets(engine, web["client_id"], a.lp_samples)
    path = folder / "held-tickets.txt"
    data.write_tickets(path, tickets)
    server = start_server("longpoll-held")
    out: dict = {"requested": n}
    holder = None
    try:
        phone_token = sign_in(server)  # before the long polls: the phone app is signed in
        rss_before = server.tree_rss_mib()
        holder = Holder(server.url, path, n, folder, "longpoll-held-client",
                        open_seconds=a.lp_open_seconds, max_seconds=a.lp_max_seconds,
                        timeout=a.probe_timeout).start()
        opened = holder.wait_opened() or {}
        settled = settle(server, a.lp_settle_seconds)
        before = holder.snapshot()
        rss = [server.tree_rss_mib()]
        log(f"long polls: {opened.get('connected', 0):,} connected in "
            f"{opened.get('at_s', float('nan')):.1f} s, {(before or {}).get('in_flight', 0):,} "
            f"waiting; server {'settled' if settled['settled'] else 'NOT settled'} after "
            f"{settled['settle_s']:.1f} s; probing {a.lp_seconds} s")
        cpu0, at0 = server.tree_cpu_seconds(), time.monotonic()
        probes = probe(_probes(server.url, web, polls, ("discovery", "ticket", "token_poll")),
                       a.lp_seconds, a.probe_timeout)
        cores = (server.tree_cpu_seconds() - cpu0) / max(1e-9, time.monotonic() - at0)
        rss.append(server.tree_rss_mib())
        worker_rss = max((servers.memory(pid).get("rss_mib", 0.0) for pid in server.workers()),
                         default=0.0)
        log(f"long polls: approval-to-page while held ({len(approvals)} samples at most)")
        pages = approval.measure(server.url, phone_token, approvals, timeout=a.approval_timeout,
                                 deadline=time.monotonic() + a.lp_seconds * 2, tolerate=True)
        after = holder.snapshot()
        rss.append(server.tree_rss_mib())
        done = holder.stop() or {}
        holder = None
        upper = [s["after_approve_request_ms"] for s in pages["samples"]]
        out.update({
            "connected": opened.get("connected", 0),
            "connect_failed": opened.get("connect_failed", 0),
            "open_s": opened.get("at_s"),
            **settled,
            "server_cores_while_probing": cores,
            "held": _held_count(before, after),
            "held_at_start": (before or {}).get("in_flight", 0),
            "held_at_end": (after or {}).get("in_flight", 0),
            "early_answers": done.get("early", 0),
            "client_errors": done.get("errors", 0),
            "client": done,
            "rss_mib": max(rss),
            "worker_rss_mib": worker_rss,
            "rss_before_mib": rss_before,
            "processes": len(server.tree()),
            "server_alive": server.alive(),
            "probes": probes,
            **{f"{k}_{m}": probes[k][m] for k in probes for m in ("p50_ms", "p99_ms", "max_ms",
                                                                   "failed")},
            "worst_p99_ms": max(probes[k]["p99_ms"] for k in probes),
            "approval_p50_ms": report.median(upper),
            "approval_p99_ms": report.percentile(upper, 99),
            "approval_samples": len(upper),
            "approval_failed": pages["failed"],
            "approval_errors": pages["errors"],
            "approval_baseline_p50_ms": report.median(pages["status_round_trip_ms"]),
        })
        return out
    finally:
        if holder is not None:
            holder.kill()
        server.stop()


def flood(start_server, engine, web: dict, folder: Path, a, log) -> dict:
    """Phase (b): ``a.flood`` connections long-polling one ticket, renewing at once."""
    c = a.flood
    server = start_server("longpoll-flood")
    holder = None
    try:
        made = requests.post(server.url + "/qr/ticket", data={"scope": "openid profile"},
                             auth=(web["client_id"], web["client_secret"]), timeout=30)
        if made.status_code == 201:
            secret, how = made.json()["ticket"], "POST /qr/ticket"
        else:  # the bench still runs: the ticket by SQL
            secret, how = data.insert_tickets(engine, web["client_id"], 1)[0]["ticket"], "SQL"
        path = folder / "flood-ticket.txt"
        path.write_text(secret + "\n")
        polls = data.insert_tickets(engine, web["client_id"], 50)
        log(f"flood: {c:,} connections long-polling one ticket; probing {a.lp_seconds} s")
        holder = Holder(server.url, path, c, folder, "longpoll-flood-client",
                        open_seconds=a.lp_open_seconds, max_seconds=a.lp_max_seconds,
                        timeout=a.probe_timeout).start()
        opened = holder.wait_opened() or {}
        time.sleep(1.0)
        before = holder.snapshot() or {}
        started = time.monotonic()
        probes = probe(_probes(server.url, web, polls, ("discovery", "token_poll")),
                       a.lp_seconds, a.probe_timeout)
        after = holder.snapshot() or {}
        elapsed = time.monotonic() - started
        rss = server.tree_rss_mib()
        done = holder.stop() or {}
        holder = None
        answered = after.get("answered", 0) - before.get("answered", 0)
        return {
            "connections": c,
            "ticket_made_by": how,
            "connected": opened.get("connected", 0),
            "connect_failed": opened.get("connect_failed", 0),
            "waiting_at_start": before.get("in_flight", 0),
            "waiting_at_end": after.get("in_flight", 0),
            "answers_per_s": answered / elapsed if elapsed > 0 else float("nan"),
            "answers": done.get("answers", {}),
            "http_statuses": done.get("http_statuses", {}),
            "client_errors": done.get("errors", 0),
            "client": done,
            "rss_mib": rss,
            "server_alive": server.alive(),
            "probes": probes,
            **{f"{k}_{m}": probes[k][m] for k in probes for m in ("p50_ms", "p99_ms", "max_ms",
                                                                   "failed")},
            "other_max_ms": max(probes[k]["max_ms"] for k in probes),
        }
    finally:
        if holder is not None:
            holder.kill()
        server.stop()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    print(__doc__)
    print("The phases run from bench/run (python -m bench); see bench/README.md.")
    return 2


if __name__ == "__main__":
    sys.exit(main())
