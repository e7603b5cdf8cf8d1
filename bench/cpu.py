"""Where an issuance's CPU goes: in the provider's own code, or in the HTTP server around it.

    python -m bench.cpu [--db sqlite|postgresql|both] [--seconds S] [--quick]

Two measurements per database, each against a baseline from the same run:

- **in process**: the provider's WSGI app (``create_app``, fast path on) called directly, one
  thread, no HTTP server: milliseconds (wall and this thread's CPU) per pending poll and per
  token issuance (approved ticket -> tokens), against milliseconds per RS256 signature pair of
  the same key (bench/signing.py). This is the provider's own cost; the signatures are inside
  the issuance figure.
- **under load**: ``qr-oidc serve`` (one worker unless ``--workers``) and the bare Flask endpoint
  (bench/bare.py) with wrk at 16 connections; CPU time read from ``/proc`` over the middle of
  each run: of the server's workers, of wrk, of the database server's processes (PostgreSQL) and
  of the whole machine, as milliseconds of CPU per answered request. The same work in process vs
  under the server says how much the server and its threads add.

Not timed in tests (tests/test_bench_smoke.py runs ``--quick`` to keep it working).
Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time

from . import data, load, servers, signing

TICK = os.sysconf("SC_CLK_TCK")

# the body the token endpoint answers a pending poll (RFC 8628 §3.5), for the bare endpoint
PENDING = {"error": "authorization_pending", "error_description": "The user has not approved yet."}


def _cpu(pids) -> float:
    """CPU seconds (user + system) the processes have used so far; gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def _named(name: str) -> list[str]:
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == name:
                        pids.append(pid)
            except OSError:
                pass
    return pids


def _machine() -> tuple[float, float]:
    """(all CPU seconds, idle CPU seconds) of the machine so far."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) / TICK, (values[3] + values[4]) / TICK


def under_load(server: servers.Server, tickets, auth: str, mode: str, seconds: int,
               connections: int, database: bool) -> dict:
    """One wrk run; CPU per answered request over its middle part. ``mode``: ``issue`` (each
    approved ticket once, counting tokens), ``poll`` (round robin, counting pending answers) or
    ``any`` (every answer counts: the bare endpoint)."""
    result: dict = {}

    def run():
        result["wrk"] = load.wrk(server.url, tickets, auth, "once" if mode == "issue" else "cycle",
                                 seconds, connections)

    thread = threading.Thread(target=run)
    thread.start()
    margin = min(1.0, seconds / 4)
    time.sleep(margin)
    groups = {"server": server.workers(), "wrk": _named("wrk"),
              "database": _named("postgres") if database else []}
    before = {k: _cpu(v) for k, v in groups.items()}
    machine0, at0 = _machine(), time.monotonic()
    time.sleep(seconds - 2 * margin)
    after = {k: _cpu(v) for k, v in groups.items()}
    machine1, at1 = _machine(), time.monotonic()
    thread.join()
    out = result["wrk"]
    done = {"issue": out["ok"], "poll": out["pending"]}.get(mode, out["requests"])
    rate = done / (out["duration_us"] / 1e6)
    elapsed = at1 - at0
    answered = rate * elapsed  # requests answered while the CPU was read
    all_cpu = machine1[0] - machine0[0]
    busy = all_cpu - (machine1[1] - machine0[1])
    figures = {"rate": rate, "machine_busy_cores": busy / all_cpu * os.cpu_count()}
    for name in groups:
        used = after[name] - before[name]
        figures[f"{name}_cores"] = used / elapsed
        figures[f"{name}_ms_per_request"] = used / answered * 1000 if answered else 0.0
    figures["machine_ms_per_request"] = busy / answered * 1000 if answered else 0.0
    return figures


def in_process(url: str, env: dict, issue_tickets: list[dict], poll_tickets: list[dict],
               auth: str) -> dict:
    """ms per pending poll and per issuance, calling the WSGI app in this thread."""
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("QR_OIDC_")})
    try:
        from qr_oidc.provider.web.app import create_app

        app = create_app()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    wsgi = app.wsgi_app
    from qr_oidc.provider.storage.models import QR_GRANT_TYPE

    def call(ticket: str) -> str:
        body = f"grant_type={QR_GRANT_TYPE}&ticket={ticket}".encode()
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/token", "QUERY_STRING": "",
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                   "wsgi.errors": sys.stderr, "CONTENT_TYPE": "application/x-www-form-urlencoded",
                   "CONTENT_LENGTH": str(len(body)), "HTTP_AUTHORIZATION": auth,
                   "REMOTE_ADDR": "127.0.0.1"}
        status: list[str] = []
        b"".join(wsgi(environ, lambda s, _h, _e=None: status.append(s)))
        return status[0]

    def timed(tickets: list[dict], expect: str) -> tuple[float, float]:
        """(wall ms, this thread's CPU ms) per call."""
        warm, rest = tickets[:len(tickets) // 10], tickets[len(tickets) // 10:]
        for t in warm:
            call(t["ticket"])
        started, cpu = time.perf_counter(), time.thread_time()
        for t in rest:
            status = call(t["ticket"])
            if not status.startswith(expect):
                raise RuntimeError(f"in-process call answered {status}, expected {expect}")
        wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
        return wall / len(rest) * 1000, cpu / len(rest) * 1000

    try:
        (issue_ms, issue_cpu_ms), (poll_ms, poll_cpu_ms) = (timed(issue_tickets, "200"),
                                                            timed(poll_tickets, "400"))
        return {"issue_ms": issue_ms, "issue_cpu_ms": issue_cpu_ms, "poll_ms": poll_ms,
                "poll_cpu_ms": poll_cpu_ms}
    finally:
        parts = app.extensions["qr_oidc"]
        parts.db.engine.dispose()
        if getattr(parts.db, "_autocommit", None) is not None:
            parts.db._autocommit.dispose()


def run_db(db: str, a) -> dict:
    folder = servers.scratch_folder()
    scratch = servers.Scratch(db, folder)
    url = scratch.url("cpu")
    port, bare_port = servers.free_port(), servers.free_port()
    env = {**os.environ, "QR_OIDC_DATABASE_URL": url, "QR_OIDC_HOST": "127.0.0.1",
           "QR_OIDC_PORT": str(port), "QR_OIDC_TICKET_TTL": "7200",
           "QR_OIDC_WORKERS": str(a.workers)}
    people = data.seed_people(env)
    engine = data.engine_for(url)
    client_id, user = people["web"]["client_id"], data.user_id(engine, "bench")
    auth = load.basic(people["web"])

    count = 300 if a.quick else 3000
    print(f"bench.cpu: [{db}] in process ({count} issuances, {count} polls)", file=sys.stderr)
    inproc = in_process(url, env,
                        data.insert_tickets(engine, client_id, count, "approved", user),
                        data.insert_tickets(engine, client_id, count, "pending"), auth)
    kid, pem = signing.active_key_pem(engine)  # the app made its key at start
    pair_ms = 1000 / signing.raw_rate(pem, kid, 1 if a.quick else 3)

    poll_file, issue_file = folder / "poll.txt", folder / "issue.txt"
    data.write_tickets(poll_file, data.insert_tickets(engine, client_id, 1000, "pending"))
    data.write_tickets(issue_file, data.insert_tickets(
        engine, client_id, (500 if a.quick else 3000) * a.seconds, "approved", user))
    body = folder / "body.json"
    body.write_text(json.dumps(PENDING))
    server = servers.Server("cpu", [servers.QR_OIDC, "serve"], env, folder, port,
                            "/.well-known/openid-configuration").start()
    bare = servers.Server("bare", [servers.PYTHON, "-m", "bench.bare", "--port", str(bare_port),
                                   "--workers", str(a.workers), "--body-file", str(body)],
                          dict(os.environ), folder, bare_port, "/ping").start()
    server.wait_ready()
    bare.wait_ready()
    print(f"bench.cpu: [{db}] under load ({a.seconds} s each)", file=sys.stderr)
    pg = db == "postgresql"
    loaded = {
        "bare": under_load(bare, poll_file, "Basic eA==", "any", a.seconds, a.connections, pg),
        "poll": under_load(server, poll_file, auth, "poll", a.seconds, a.connections, pg),
        "issue": under_load(server, issue_file, auth, "issue", a.seconds, a.connections, pg),
    }
    server.stop()
    bare.stop()
    return {"in_process": {**inproc, "sign_pair_ms": pair_ms}, "under_load": loaded}


def report(db: str, r: dict) -> str:
    ip, ul = r["in_process"], r["under_load"]
    lines = [f"[{db}]",
             f"  in process, one thread: issuance {ip['issue_ms']:.3f} ms vs an RS256 signature "
             f"pair {ip['sign_pair_ms']:.3f} ms (ratio {ip['sign_pair_ms'] / ip['issue_ms']:.2f}; "
             f"the rest {ip['issue_ms'] - ip['sign_pair_ms']:.3f} ms); pending poll "
             f"{ip['poll_ms']:.3f} ms; CPU of this thread: issuance {ip['issue_cpu_ms']:.3f} ms, "
             f"poll {ip['poll_cpu_ms']:.3f} ms (the rest of the wall time waits for the database)",
             "  under load (CPU ms per answered request; cores busy):"]
    for name, label in (("bare", "bare Flask no-op"), ("poll", "pending poll"),
                        ("issue", "token issuance")):
        f = ul[name]
        line = (f"    {label:17} {f['rate']:6.0f}/s  server {f['server_ms_per_request']:.3f} ms"
                f" ({f['server_cores']:.2f} cores)  wrk {f['wrk_ms_per_request']:.3f} ms")
        if db == "postgresql":
            line += f"  postgres {f['database_ms_per_request']:.3f} ms"
        line += (f"  machine {f['machine_ms_per_request']:.3f} ms"
                 f" ({f['machine_busy_cores']:.2f} of {os.cpu_count()} cores)")
        lines.append(line)
    issue = ul["issue"]
    per_issuance = issue['server_ms_per_request'] / ip['issue_cpu_ms']
    lines.append(f"  the server's CPU per issuance is {per_issuance:.1f}"
                 f" x the in-process CPU; issued/s vs one core's signing: "
                 f"{issue['rate'] * ip['sign_pair_ms'] / 1000:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--seconds", type=int, default=None, help="seconds per wrk run (5; quick 2)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="small and short: a smoke test")
    ap.add_argument("--json", help="also write the results as JSON here")
    a = ap.parse_args(argv)
    a.seconds = a.seconds or (2 if a.quick else 5)
    if load.wrk_path() is None:
        print("bench.cpu: needs Debian's wrk (./scripts/test installs it)", file=sys.stderr)
        return 2
    dbs = ["sqlite", "postgresql"] if a.db == "both" else [a.db]
    servers.install_cleanup()
    results = {}
    try:
        for db in dbs:
            results[db] = run_db(db, a)
    finally:
        servers.stop_all()
    print(f"qr-oidc CPU accounting: {os.cpu_count()} cores, {a.workers} worker(s), "
          f"{a.connections} connections, {a.seconds} s per run")
    for db in dbs:
        print(report(db, results[db]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
