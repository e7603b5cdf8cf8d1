"""qr-oidc benchmarks: ``python -m bench [--quick] [--db sqlite|postgresql|both] [--json FILE]``.

Per database, in one run and on one server configuration (``qr-oidc serve``'s gunicorn, the same
workers and threads for every server):

1. pending poll: wrk against POST /token with P distinct pending tickets, round robin, each
   written with poll interval 0 so every poll is on time (bench/data.py; any ``slow_down`` is
   counted and flagged), vs the bare Flask endpoint (bench/bare.py) with the same requests;
   throughput and latency at C connections, and latency at 1 connection;
2. the same pending poll on a second server whose table holds 10^6 tickets (P polled + filler);
3. token issuance: wrk redeems approved tickets (each once) vs the raw RS256 signing rate of the
   same two signatures on one core, with the server's own key;
4. approval-to-page: a parked status long poll, the phone approves, time to the page's answer;
5. resident memory of each gunicorn worker.
Rounds interleave the servers, so the machine's noise hits target and baseline alike; every
figure is the median over rounds of the per-round value or ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from provider import config as provider_config

from . import approval, data, load, report, servers, signing

QR_GRANT = "urn:qr-oidc:params:oauth:grant-type:qr-ticket"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                           if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        mem_kib = 0
    wrk_version = ""
    try:
        wrk_version = subprocess.run([load.wrk_path() or "wrk", "-v"], check=False,
                                     capture_output=True,
                                     text=True, timeout=10).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": mem_kib / 1024 / 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version,
        "loadavg_at_start": os.getloadavg()[0],
    }


class Bench:
    def __init__(self, args, backend: str):
        self.args = args
        self.backend = backend
        self.folder = servers.scratch_folder() / backend
        self.folder.mkdir()
        self.scratch = servers.Scratch(backend, self.folder)
        self.cursor: dict[str, int] = {}

    # -- set up --------------------------------------------------------------------------------
    def provider(self, label: str) -> tuple[servers.Server, dict, dict]:
        url = self.scratch.url(label)
        port = servers.free_port()
        env = {
            **os.environ,
            "QR_OIDC_DATABASE_URL": url,
            "QR_OIDC_HOST": "127.0.0.1",
            "QR_OIDC_PORT": str(port),
            "QR_OIDC_POLL_INTERVAL": "1",  # the smallest the server allows: the hardest case
            "QR_OIDC_TICKET_TTL": "7200",  # no ticket expires during a run
            "QR_OIDC_WORKERS": str(self.args.workers),
            "QR_OIDC_THREADS": str(self.args.threads),
        }
        people = data.seed_people(env)  # also creates the schema
        server = servers.Server(f"qr-oidc-{label}", [servers.QR_OIDC, "serve"], env,
                                self.folder, port, "/.well-known/openid-configuration")
        return server, people, {"url": url, "engine": data.engine_for(url)}

    def run(self) -> dict:
        a = self.args
        P = a.poll_tickets
        log(f"[{self.backend}] preparing databases ({P:,} and {a.large_tickets:,} tickets)")
        with ThreadPoolExecutor(2) as pool:
            (small, people, small_db), (large, people_l, large_db) = pool.map(
                self.provider, ["small", "large"])
        web = people["web"]
        auth, auth_l = load.basic(web), load.basic(people_l["web"])
        poll_file = self.folder / "poll-small.txt"
        data.write_tickets(poll_file, data.insert_tickets(small_db["engine"], web["client_id"], P))
        poll_file_l = self.folder / "poll-large.txt"
        data.write_tickets(poll_file_l, data.insert_tickets(
            large_db["engine"], people_l["web"]["client_id"], P))
        started = time.monotonic()
        data.insert_filler(large_db["engine"], people_l["web"]["client_id"], a.large_tickets - P)
        log(f"[{self.backend}] {a.large_tickets - P:,} filler tickets in "
            f"{time.monotonic() - started:.1f} s; starting servers")

        body_file = self.folder / "pending.json"
        bare_port = servers.free_port()
        bare = servers.Server("bare-flask", [
            servers.PYTHON, "-m", "bench.bare", "--port", str(bare_port), "--workers",
            str(a.workers), "--threads", str(a.threads), "--long-poll-max",
            str(provider_config.DEFAULTS["LONG_POLL_MAX"]), "--body-file", str(body_file),
        ], dict(os.environ), self.folder, bare_port, "/ping")
        for server in (small, large, bare):
            server.start()
        for server in (small, large, bare):
            server.wait_ready()

        # the body the real endpoint answers, for the bare endpoint to answer byte for byte
        first = poll_file.read_text().split()[0]
        answer = requests.post(small.url + "/token", data={"grant_type": QR_GRANT,
                                                          "ticket": first},
                               auth=(web["client_id"], web["client_secret"]), timeout=30)
        if answer.json().get("error") != "authorization_pending":
            raise RuntimeError(f"a pending poll answered {answer.status_code} {answer.text}")
        body_file.write_bytes(answer.content)
        self.cursor = {"small": 1, "large": 0, "bare": 0}

        targets = {"bare": (bare, poll_file, auth), "small": (small, poll_file, auth),
                   "large": (large, poll_file_l, auth_l)}

        def poll(name: str, seconds: int, connections: int) -> dict:
            server, tickets, credentials = targets[name]
            out = load.wrk(server.url, tickets, credentials, "cycle", seconds, connections,
                           start=self.cursor[name])
            # skip the requests still in flight when wrk stopped: those tickets were just polled
            self.cursor[name] = (self.cursor[name] + out["requests"] + connections) % P
            return out

        if not a.quick:
            log(f"[{self.backend}] warm-up")
            for name in targets:
                poll(name, 1, a.connections)

        # -- 1, 2: pending poll, bare Flask, 10^6 table -----------------------------------------
        rounds = []
        order = ["bare", "small", "large"]
        for r in range(a.rounds):
            log(f"[{self.backend}] pending poll round {r + 1}/{a.rounds}")
            runs = {}
            for name in order[r % 3:] + order[:r % 3]:
                runs[name] = poll(name, a.seconds, a.connections)
            for name in ("bare", "small"):
                runs[f"{name}_c1"] = poll(name, a.latency_seconds, 1)
            rounds.append(runs)
        pending = summarize_polls(rounds)
        large_table = {
            "small_tickets": P,
            "large_tickets": a.large_tickets,
            "small_rps": report.median([r["small"]["pending_rate"] for r in rounds]),
            "large_rps": report.median([r["large"]["pending_rate"] for r in rounds]),
            "ratio": report.median([r["large"]["pending_rate"] / r["small"]["pending_rate"]
                                    for r in rounds]),
            "slow_down": sum(r["large"]["slow_down"] for r in rounds),
        }

        # -- 3: token issuance --------------------------------------------------------------------
        kid, pem = signing.active_key_pem(small_db["engine"])
        engine = small_db["engine"]
        uid = data.user_id(engine, people["username"])
        log(f"[{self.backend}] token issuance: preparing approved tickets (SQL)")
        if a.quick:
            per_round = 2000
        else:  # a first run tells how many approved tickets a round may use up
            warm = self.folder / "issue-warm.txt"
            data.write_tickets(warm, data.insert_tickets(engine, web["client_id"], 2000,
                                                         "approved", uid))
            first_rate = load.wrk(small.url, warm, auth, "once", 1, a.connections)["ok_rate"]
            per_round = int(first_rate * a.seconds * 2 + 500)
        files = []
        for r in range(a.rounds):
            path = self.folder / f"issue-{r}.txt"
            data.write_tickets(path, data.insert_tickets(engine, web["client_id"], per_round,
                                                         "approved", uid))
            files.append(path)
        issue_rounds = []
        for r in range(a.rounds):
            log(f"[{self.backend}] token issuance round {r + 1}/{a.rounds}")
            # the ceiling is measured half before and half after the wrk run, so that the
            # machine's noise during the round weighs on both alike
            raw_before = signing.raw_rate(pem, kid, a.sign_seconds / 2)
            run = load.wrk(small.url, files[r], auth, "once", a.seconds, a.connections)
            raw = (raw_before + signing.raw_rate(pem, kid, a.sign_seconds / 2)) / 2
            jose = signing.joserfc_rate(pem, kid, a.sign_seconds / 2)
            issue_rounds.append({"wrk": run, "raw": raw, "joserfc": jose})
        issuance = {
            "tokens_per_s": report.median([r["wrk"]["ok_rate"] for r in issue_rounds]),
            "baseline_signing_per_s": report.median([r["raw"] for r in issue_rounds]),
            "joserfc_signing_per_s": report.median([r["joserfc"] for r in issue_rounds]),
            "ratio": report.median([r["wrk"]["ok_rate"] / r["raw"] for r in issue_rounds]),
            "joserfc_ratio": report.median([r["wrk"]["ok_rate"] / r["joserfc"]
                                            for r in issue_rounds]),
            "p50_ms": report.median([r["wrk"]["p50_ms"] for r in issue_rounds]),
            "p99_ms": report.median([r["wrk"]["p99_ms"] for r in issue_rounds]),
            "exhausted": sum(r["wrk"]["exhausted"] for r in issue_rounds),
            "failed": sum(r["wrk"]["other"] + r["wrk"]["socket_errors"] for r in issue_rounds),
            "tickets_prepared_per_round": per_round,
            "tickets_prepared_by": "SQL insert of approved rows (the phone API is not timed here)",
            "rounds": [{"tokens_per_s": r["wrk"]["ok_rate"], "raw_pairs_per_s": r["raw"],
                        "joserfc_pairs_per_s": r["joserfc"], "p50_ms": r["wrk"]["p50_ms"],
                        "p99_ms": r["wrk"]["p99_ms"]} for r in issue_rounds],
        }

        # -- 4: approval-to-page ------------------------------------------------------------------
        log(f"[{self.backend}] approval-to-page ({a.rounds} x {a.samples} samples)")
        token = approval.sign_in_phone(small.url, people["phone"], people["username"],
                                       people["password"])
        tickets = data.insert_tickets(engine, web["client_id"], a.rounds * a.samples)
        approval_rounds = []
        for r in range(a.rounds):
            approval_rounds.append(approval.measure(
                small.url, token, tickets[r * a.samples:(r + 1) * a.samples]))
        def pooled(key):
            return [s[key] for r in approval_rounds for s in r["samples"]]

        def per_round(key):
            return [report.median([s[key] for s in r["samples"]]) for r in approval_rounds]

        # The approval commits somewhere between the approve request and its response, so the
        # page's wait lies between the two figures; the target is judged on the larger one.
        upper, after = per_round("after_approve_request_ms"), per_round("after_approve_response_ms")
        per_round_base = [report.median(r["status_round_trip_ms"]) for r in approval_rounds]
        to_page = {
            "p50_ms": report.median(upper),
            "p99_ms": report.percentile(pooled("after_approve_request_ms"), 99),
            "after_response_p50_ms": report.median(after),
            "after_response_p99_ms": report.percentile(pooled("after_approve_response_ms"), 99),
            "approve_round_trip_p50_ms": report.median(pooled("approve_round_trip_ms")),
            "baseline_p50_ms": report.median(per_round_base),
            "ratio": report.median([u / b for u, b in zip(upper, per_round_base)]),
            "count": len(pooled("after_approve_request_ms")),
            "measured_from": "approve request sent (upper bound); after_response_*: from the "
                             "approve response received (negative: the page knew first)",
        }

        # -- 5: memory ------------------------------------------------------------------------------
        mem = {name: [servers.memory(pid) for pid in server.workers()]
               for name, (server, _t, _a) in targets.items()}
        rss = report.median([m["rss_mib"] for m in mem["small"]])
        bare_rss = report.median([m["rss_mib"] for m in mem["bare"]])
        memory = {
            "worker_rss_mib": rss,
            "worker_pss_mib": report.median([m.get("pss_mib") for m in mem["small"]]),
            "large_table_worker_rss_mib": report.median([m["rss_mib"] for m in mem["large"]]),
            "baseline_rss_mib": bare_rss,
            "ratio": rss / bare_rss,
            "workers": mem,
        }

        for server in (bare, small, large):
            server.stop()
        for db in (small_db, large_db):
            db["engine"].dispose()
        self.scratch.drop_all()
        pending["rounds"] = [{k: slim(v) for k, v in r.items()} for r in rounds]
        return {"pending_poll": pending, "token_issuance": issuance,
                "approval_to_page": to_page, "large_table": large_table, "memory": memory}


def slim(run: dict) -> dict:
    keys = ("rate", "pending_rate", "p50_ms", "p99_ms", "requests", "slow_down", "other")
    return {k: run[k] for k in keys}


def summarize_polls(rounds: list[dict]) -> dict:
    def med(name, key):
        return report.median([r[name][key] for r in rounds])

    def ratio(name, base, key):
        return report.median([r[name][key] / r[base][key] for r in rounds])

    return {
        "rps": med("small", "pending_rate"),
        "baseline_rps": med("bare", "pending_rate"),
        "ratio": ratio("small", "bare", "pending_rate"),
        "p50_ms": med("small", "p50_ms"),
        "p99_ms": med("small", "p99_ms"),
        "baseline_p50_ms": med("bare", "p50_ms"),
        "baseline_p99_ms": med("bare", "p99_ms"),
        "p50_ratio": ratio("small", "bare", "p50_ms"),
        "p99_ratio": ratio("small", "bare", "p99_ms"),
        "c1_rps": med("small_c1", "pending_rate"),
        "c1_baseline_rps": med("bare_c1", "pending_rate"),
        "c1_p50_ms": med("small_c1", "p50_ms"),
        "c1_p99_ms": med("small_c1", "p99_ms"),
        "c1_baseline_p50_ms": med("bare_c1", "p50_ms"),
        "c1_baseline_p99_ms": med("bare_c1", "p99_ms"),
        "c1_p50_ratio": ratio("small_c1", "bare_c1", "p50_ms"),
        "slow_down": sum(r["small"]["slow_down"] + r["small_c1"]["slow_down"] for r in rounds),
        "other_answers": sum(r[n]["other"] for r in rounds for n in ("small", "small_c1")),
    }


def parse(argv=None):
    defaults = provider_config.load()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds per database: 1 round of 1 s runs, 10^4 tickets for the "
                             "large table (smoke test; the figures are not meaningful)")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, help="rounds per measurement (5; quick 1)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (4; quick 1)")
    parser.add_argument("--connections", type=int, default=16,
                        help="wrk connections for throughput runs (16)")
    parser.add_argument("--poll-tickets", type=int, default=1000,
                        help="distinct pending tickets polled round robin; also the small table")
    parser.add_argument("--large-tickets", type=int, help="tickets in the large table "
                        "(1000000; quick 10000)")
    parser.add_argument("--samples", type=int, help="approval samples per round (20; quick 5)")
    parser.add_argument("--workers", type=int, default=int(defaults["WORKERS"]),
                        help="gunicorn workers of every server (QR_OIDC_WORKERS, default %(default)s)")
    parser.add_argument("--threads", type=int, default=int(defaults["THREADS"]),
                        help="threads per worker (QR_OIDC_THREADS, default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 5)
    args.seconds = args.seconds or (1 if quick else 4)
    args.latency_seconds = 1 if quick else 2
    args.sign_seconds = 0.5 if quick else 3
    args.large_tickets = args.large_tickets or (10_000 if quick else 1_000_000)
    args.samples = args.samples or (5 if quick else 20)
    if args.large_tickets < args.poll_tickets:
        parser.error("--large-tickets must be at least --poll-tickets")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if not load.wrk_path():
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if "postgresql" in backends and not servers.postgres_available():
        print(f"bench: PostgreSQL is not reachable at {servers.PG_ADMIN_URL} "
              "(set QR_OIDC_BENCH_PG_URL)", file=sys.stderr)
        return 2
    servers.install_cleanup()
    started = time.monotonic()
    results = {
        "machine": machine(),
        "config": {
            "quick": args.quick, "rounds": args.rounds, "seconds": args.seconds,
            "latency_seconds": args.latency_seconds, "connections": args.connections,
            "poll_tickets": args.poll_tickets, "large_tickets": args.large_tickets,
            "samples_per_round": args.samples, "workers": args.workers, "threads": args.threads,
            "poll_interval": 1, "log_level": provider_config.load()["LOG_LEVEL"],
        },
        "databases": {},
    }
    try:
        for backend in backends:
            results["databases"][backend] = Bench(args, backend).run()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        servers.stop_all()
    results["targets"] = report.targets(results)
    results["elapsed_s"] = time.monotonic() - started
    print(report.text(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
