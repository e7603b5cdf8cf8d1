"""Where the time of a pending poll and of a token issuance goes: py-spy on the server's worker
(its event loop and database threads) while wrk runs the benchmark's workload.

    python -m bench.profile [--db sqlite|postgresql] [--workload poll|issue|both] [--seconds N]
                            [--raw-dir DIR]

Needs ``py-spy`` (``.venv/bin/pip install py-spy``; not a dependency of qr-oidc) and wrk. It
samples the worker with ``--gil`` (only the thread holding the GIL: with one worker the GIL is
what every request queues for, so this is the serial cost per request) and without it (every
thread that is not idle, so also time in C with the GIL released: SQLite, libpq, OpenSSL, socket
I/O). The buckets name the event path's parts (provider/web/events.py, grants/token_core.py).
It prints, for each, the inclusive share of samples of the parts of a request named in BUCKETS,
and the functions with the most samples of their own.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import data, load, servers

# Buckets of a request, first match wins (so they add up to 100%): name -> regular expression on
# the whole stack, frames "function (path:line)" joined by ";", outermost first.
BUCKETS = [
    ("logging: access log line, audit log", r"logging/__init__\.py"),
    ("access token JWT (new_access_token)", r"new_access_token "),
    ("ID token (id_token)", r"id_token \(grants/openid"),
    ("redeem + token row (Tickets.redeem_with_token)", r"redeem_with_token "),
    ("on-time poll UPDATE (Tickets.record_poll)", r"record_poll "),
    ("ticket SELECT (Tickets.load_for_poll)", r"load_for_poll "),
    ("slow_down UPDATE", r"(Tickets|TicketStore)\.slow_down "),
    ("client authentication (client_auth, cached row)", r"client_auth\.py"),
    ("rest of the token core (TokenCore.poll)", r"TokenCore\.poll "),
    ("database thread hand-off (concurrent.futures, threading)",
     r"concurrent/futures|threading\.py"),
    ("body parse (provider/web/body.py)", r"body\.py"),
    ("answer: headers, JSON, errors (EventApp._send)", r"EventApp\._send "),
    ("rest of the event path (EventApp, TokenPolls, LongPolls, ClientCache)",
     r"(EventApp|TokenPolls|LongPolls|ClientCache)\."),
    ("outside the app: uvicorn, httptools, uvloop (accept, parse, write)", r"."),
]

# Inclusive shares across buckets.
ACROSS = [
    ("SQLAlchemy, all of it", r"sqlalchemy/"),
    ("  DBAPI execute (sqlite3 / psycopg, C)", r"do_execute "),
    ("  DBAPI commit", r"do_commit "),
    ("  SQLAlchemy's own Python (own samples in sqlalchemy/, DBAPI calls excepted)",
     r"leaf:^(?!.*do_(execute|commit) ).*sqlalchemy/"),
    ("joserfc, all of it", r"joserfc/"),
    ("  RSA signature (cryptography, C)", r"_RSAAlgModel\.sign "),
]


def _frames(line: str) -> tuple[str, str, int]:
    stack, _, count = line.rpartition(" ")
    frames = stack.split(";")
    return stack, frames[-1], int(count)


def summarize(raw_file: Path, top: int = 20) -> str:
    lines = [ln for ln in raw_file.read_text().splitlines() if ln.strip()]
    total = 0
    buckets: collections.Counter = collections.Counter()
    across: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    compiled = [(name, re.compile(rx)) for name, rx in BUCKETS]
    compiled_across = [(name, re.compile(rx)) for name, rx in ACROSS
                       if not rx.startswith("leaf:")]
    compiled_leaf = [(name, re.compile(rx[5:])) for name, rx in ACROSS if rx.startswith("leaf:")]
    for line in lines:
        stack, leaf, count = _frames(line)
        total += count
        for name, rx in compiled:
            if rx.search(stack):
                buckets[name] += count
                break
        for name, rx in compiled_across:
            if rx.search(stack):
                across[name] += count
        for name, rx in compiled_leaf:
            if rx.search(leaf):
                across[name] += count
        own[re.sub(r":\d+\)$", ")", leaf)] += count
    def pct(n: int) -> str:
        return f"{100 * n / max(total, 1):5.1f}%"
    out = [f"{total} samples; where they are (first match):"]
    out += [f"  {pct(buckets[name])}  {name}" for name, _ in compiled if buckets[name]]
    out.append("  across those:")
    out += [f"  {pct(across[name])}  {name}" for name, _ in ACROSS]
    out.append(f"  top {top} functions by own samples:")
    out += [f"  {pct(count)}  {leaf}" for leaf, count in own.most_common(top)]
    return "\n".join(out)


def record(pid: int, seconds: int, out: Path, gil: bool) -> subprocess.Popen:
    argv = [shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy", "record",
            "-p", str(pid), "-d", str(seconds), "-r", "97", "--nonblocking", "--format", "raw",
            "-o", str(out)]
    if gil:
        argv.append("--gil")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workload", choices=["poll", "issue", "both"], default="both")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--raw-dir", type=Path, help="keep py-spy's raw stacks here")
    args = parser.parse_args(argv)
    if not shutil.which("py-spy", path=str(Path(sys.executable).parent)) and \
            not shutil.which("py-spy"):
        print("bench.profile: needs py-spy (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2
    servers.install_cleanup()
    folder = servers.scratch_folder()
    raw_dir = args.raw_dir or folder
    raw_dir.mkdir(parents=True, exist_ok=True)
    try:
        scratch = servers.Scratch(args.db, folder)
        url = scratch.url("profile")
        port = servers.free_port()
        env = {**os.environ, "QR_OIDC_DATABASE_URL": url, "QR_OIDC_HOST": "127.0.0.1",
               "QR_OIDC_PORT": str(port), "QR_OIDC_POLL_INTERVAL": "1",
               "QR_OIDC_TICKET_TTL": "7200"}
        people = data.seed_people(env)
        engine = data.engine_for(url)
        client_id = people["web"]["client_id"]
        auth = load.basic(people["web"])
        server = servers.Server("qr-oidc", [servers.QR_OIDC, "serve"], env, folder, port,
                                "/.well-known/openid-configuration").start()
        server.wait_ready()
        worker = server.workers()[0]
        uid = data.user_id(engine, people["username"])
        workloads = ["poll", "issue"] if args.workload == "both" else [args.workload]
        for workload in workloads:
            for gil in (True, False):
                if workload == "poll":
                    # enough tickets that none is polled twice within its 1 s interval
                    tickets = data.insert_tickets(engine, client_id, 5000)
                    mode = "cycle"
                else:
                    tickets = data.insert_tickets(engine, client_id, 1500 * args.seconds,
                                                  "approved", uid)
                    mode = "once"
                path = folder / f"{workload}.txt"
                data.write_tickets(path, tickets)
                raw = raw_dir / f"{args.db}-{workload}-{'gil' if gil else 'all'}.raw"
                spy = record(worker, args.seconds, raw, gil)
                run = load.wrk(server.url, path, auth, mode, args.seconds + 2, args.connections)
                spy.wait(60)
                rate = run["ok_rate"] if workload == "issue" else run["pending_rate"]
                print(f"\n== {args.db} {workload} ({'GIL holder' if gil else 'all active threads'})"
                      f": {rate:.0f}/s under py-spy --nonblocking, slow_down {run['slow_down']}")
                print(summarize(raw))
        engine.dispose()
    finally:
        servers.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
