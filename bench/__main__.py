"""qr-oidc benchmarks: ``python -m bench [--quick] [--db sqlite|postgresql|both] [--json FILE]``.

Per database, in one run, every server pinned to core 0 and every load generator to core 1
(``taskset``, when there are two cores), against node-oidc-provider started in the same run
(bench/node_anchor, bench/anchor.py):

1. pending poll at 1, 8 and 32 connections (``--levels``): wrk against our POST /token with P
   distinct pending tickets, round robin, each written with poll interval 0 so every poll is on
   time (bench/data.py; any ``slow_down`` is counted and flagged), and against node's POST /token
   with P pending device codes (node never answers slow_down); ratio ours / node per level;
2. the same pending poll on a second server whose table holds 10^6 tickets (P polled + filler),
   at the middle level;
3. token issuance at every level: wrk redeems approved tickets (each once) on ours, approved
   device codes (each once) on node; ratio to node, and to the physical ceiling: two RS256
   signatures per core (bench/signing.py, the server's own key, measured on the server's core);
4. approval-to-page on an idle server (informational);
5. resident memory of our server's worker, idle after the load;
6. long polls (bench/longpoll.py): 10^4 held at once while discovery, ticket creation and a token
   poll are measured, the server's memory and approval-to-page; then the one-ticket flood.
Rounds interleave the servers, so the machine's noise hits ours and node alike; every figure is
the median over rounds of the per-round value or ratio. Steps are numbered on standard error (a
bar per timed run on a terminal, bench/progress.py); with ``--json`` or ``--charts`` the ratios
and latencies are also drawn as SVG charts (bench/charts.py, matplotlib: the ``bench`` extra).
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

from qr_oidc.provider import settings as provider_config

from . import anchor, approval, charts, data, load, longpoll, progress, report, servers, signing

QR_GRANT = load.QR_GRANT


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
        "node": anchor.node_version(),
        "oidc_provider": anchor.installed_version(),
        "pinned": servers.pinning(),
        "loadavg_at_start": os.getloadavg()[0],
    }


class Bench:
    def __init__(self, args, backend: str, steps: progress.Steps | None = None):
        self.args = args
        self.steps = steps
        self.backend = backend
        self.folder = servers.scratch_folder() / backend
        self.folder.mkdir()
        self.scratch = servers.Scratch(backend, self.folder)
        self.cursor: dict[str, int] = {}

    def log(self, message: str) -> None:
        log(f"[{self.backend}] {message}")

    def step(self, message: str) -> None:
        """A numbered step ("step n of N") of the whole run."""
        if self.steps is None:
            self.log(message)
        else:
            self.steps(f"[{self.backend}] {message}")

    @staticmethod
    def steps_per_database(args) -> int:
        """What ``run`` counts as steps: prepare, warm-up (full runs), pending poll, issuance,
        approval-to-page, memory, long polls held, flood."""
        return 7 if args.quick else 8

    # -- set up --------------------------------------------------------------------------------
    def env(self, url: str, port: int, **extra) -> dict:
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
        for item in self.args.server_env:
            key, _, value = item.partition("=")
            env[key] = value
        env.update(extra)
        return env

    def serve(self, label: str, url: str, port: int | None = None, **extra) -> servers.Server:
        """A ``qr-oidc serve`` on ``url`` (through the CLI, pinned to the server core)."""
        port = port or servers.free_port()
        return servers.Server(f"qr-oidc-{label}", [servers.QR_OIDC, "serve"],
                              self.env(url, port, **extra), self.folder, port,
                              "/.well-known/openid-configuration")

    def provider(self, label: str) -> tuple[servers.Server, dict, dict]:
        url = self.scratch.url(label)
        port = servers.free_port()
        people = data.seed_people(self.env(url, port))  # also creates the schema
        return self.serve(label, url, port), people, {"url": url, "engine": data.engine_for(url)}

    def run(self) -> dict:
        a = self.args
        P = a.poll_tickets
        levels = a.levels
        mid = a.large_level
        self.step(f"preparing databases ({P:,} and {a.large_tickets:,} tickets)")
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
        self.log(f"{a.large_tickets - P:,} filler tickets in {time.monotonic() - started:.1f} s; "
                 "starting servers")

        node = anchor.Anchor(self.folder)
        for server in (small, large, node):
            server.start()
        for server in (small, large, node):
            server.wait_ready()
        start_rss = [servers.memory(pid)["rss_mib"] for pid in small.workers()]
        node_file = self.folder / "poll-node.txt"
        anchor.write_codes(node_file, node.codes(P, "pending"))
        node_auth = load.basic(node.client)

        # the body our endpoint answers a pending poll (and node's), checked once
        first = poll_file.read_text().split()[0]
        answer = requests.post(small.url + "/token", data={"grant_type": QR_GRANT,
                                                          "ticket": first},
                               auth=(web["client_id"], web["client_secret"]), timeout=30)
        if answer.json().get("error") != "authorization_pending":
            raise RuntimeError(f"a pending poll answered {answer.status_code} {answer.text}")
        code = node_file.read_text().split()[0]
        answer = requests.post(node.url + "/token", data={"grant_type": load.DEVICE_GRANT,
                                                         "device_code": code},
                               auth=(node.client["client_id"], node.client["client_secret"]),
                               timeout=30)
        if answer.json().get("error") != "authorization_pending":
            raise RuntimeError(f"node's pending poll answered {answer.status_code} {answer.text}")
        self.cursor = {"small": 1, "large": 0, "node": 1}

        targets = {"small": (small.url, poll_file, auth, load.QR_GRANT, "ticket"),
                   "large": (large.url, poll_file_l, auth_l, load.QR_GRANT, "ticket"),
                   "node": (node.url, node_file, node_auth, load.DEVICE_GRANT, "device_code")}

        def poll(name: str, seconds: int, connections: int) -> dict:
            url, tickets, credentials, grant, param = targets[name]
            with progress.timed(f"{name} c={connections}", seconds):
                out = load.wrk(url, tickets, credentials, "cycle", seconds, connections,
                               start=self.cursor[name], grant=grant, param=param)
            # skip the requests still in flight when wrk stopped: those tickets were just polled
            self.cursor[name] = (self.cursor[name] + out["requests"] + connections) % P
            return out

        if not a.quick:
            self.step("warm-up")
            for name in targets:
                poll(name, 1, max(levels))

        # -- 1, 2: pending poll against node, 10^6 table ----------------------------------------
        self.step(f"pending poll: {a.rounds} rounds at {', '.join(map(str, levels))} "
                  f"connections against node, and the {a.large_tickets:,}-ticket table")
        rounds = []
        plan = [(name, c) for c in levels for name in ("small", "node")] + [("large", mid)]
        for r in range(a.rounds):
            self.log(f"pending poll round {r + 1}/{a.rounds}")
            runs = {}
            shift = r % len(plan)
            for name, c in plan[shift:] + plan[:shift]:
                runs[f"{name}_c{c}"] = poll(name, a.seconds, c)
            rounds.append(runs)
        pending = summarize_polls(rounds, levels)
        large_table = {
            "connections": mid,
            "small_tickets": P,
            "large_tickets": a.large_tickets,
            "small_rps": report.median([r[f"small_c{mid}"]["pending_rate"] for r in rounds]),
            "large_rps": report.median([r[f"large_c{mid}"]["pending_rate"] for r in rounds]),
            "ratio": report.median([r[f"large_c{mid}"]["pending_rate"]
                                    / r[f"small_c{mid}"]["pending_rate"] for r in rounds]),
            "slow_down": sum(r[f"large_c{mid}"]["slow_down"] for r in rounds),
        }

        # -- 3: token issuance --------------------------------------------------------------------
        kid, pem = signing.active_key_pem(small_db["engine"])
        engine = small_db["engine"]
        uid = data.user_id(engine, people["username"])
        top = max(levels)
        self.step("token issuance: preparing approved tickets (SQL) and device codes (node), "
                  f"then {a.rounds} rounds")
        if a.quick:
            ours_per_run, node_per_run = 2000, 4000
        else:  # a first run of each tells how many approved tickets a run may use up
            warm = self.folder / "issue-warm.txt"
            data.write_tickets(warm, data.insert_tickets(engine, web["client_id"], 2000,
                                                         "approved", uid))
            rate = load.wrk(small.url, warm, auth, "once", 1, top)["ok_rate"]
            ours_per_run = int(rate * a.seconds * 2 + 500)
            anchor.write_codes(warm, node.codes(4000, "approved"))
            rate = load.wrk(node.url, warm, node_auth, "once", 1, top, grant=load.DEVICE_GRANT,
                            param="device_code")["ok_rate"]
            node.forget()
            node_per_run = int(rate * a.seconds * 2 + 500)
        files = {}
        for r in range(a.rounds):
            for c in levels:
                path = self.folder / f"issue-{r}-c{c}.txt"
                data.write_tickets(path, data.insert_tickets(engine, web["client_id"],
                                                             ours_per_run, "approved", uid))
                files[r, c] = path
        node_issue = self.folder / "issue-node.txt"
        issue_rounds = []
        for r in range(a.rounds):
            self.log(f"token issuance round {r + 1}/{a.rounds}")
            # the ceiling is measured half before and half after the round, on the server's
            # core, so that the machine's noise during the round weighs on both alike
            with servers.pinned_here(servers.SERVER_CORE):
                raw_before = signing.raw_rate(pem, kid, a.sign_seconds / 2)
            runs = {}
            order = [(name, c) for c in levels for name in ("ours", "node")]
            if r % 2:
                order = [(name, c) for c in levels for name in ("node", "ours")]
            for name, c in order:
                if name == "ours":
                    with progress.timed(f"issue ours c={c}", a.seconds):
                        runs[f"ours_c{c}"] = load.wrk(small.url, files[r, c], auth, "once",
                                                      a.seconds, c)
                else:
                    anchor.write_codes(node_issue, node.codes(node_per_run, "approved"))
                    with progress.timed(f"issue node c={c}", a.seconds):
                        runs[f"node_c{c}"] = load.wrk(node.url, node_issue, node_auth, "once",
                                                      a.seconds, c, grant=load.DEVICE_GRANT,
                                                      param="device_code")
                    node.forget()
            with servers.pinned_here(servers.SERVER_CORE):
                raw = (raw_before + signing.raw_rate(pem, kid, a.sign_seconds / 2)) / 2
                jose = signing.joserfc_rate(pem, kid, a.sign_seconds / 2)
            issue_rounds.append({"runs": runs, "raw": raw, "joserfc": jose})
        issuance = summarize_issuance(issue_rounds, levels, ours_per_run, node_per_run)

        # -- 4: approval-to-page (idle) ------------------------------------------------------------
        self.step(f"approval-to-page ({a.rounds} x {a.samples} samples)")
        token = approval.sign_in_phone(small.url, people["phone"], people["username"],
                                       people["password"])
        tickets = data.insert_tickets(engine, web["client_id"], a.rounds * a.samples)
        approval_rounds = []
        for r in range(a.rounds):
            approval_rounds.append(approval.measure(
                small.url, token, tickets[r * a.samples:(r + 1) * a.samples]))
        to_page = summarize_approval(approval_rounds)

        # -- 5: memory, idle after the load --------------------------------------------------------
        self.step("memory, idle after the load")
        time.sleep(1.0)
        mem = {"small": [servers.memory(pid) for pid in small.workers()],
               "large": [servers.memory(pid) for pid in large.workers()]}
        memory = {
            "worker_rss_mib": report.median([m["rss_mib"] for m in mem["small"]]),
            "worker_pss_mib": report.median([m.get("pss_mib") for m in mem["small"]]),
            "worker_rss_at_start_mib": report.median(start_rss),
            "server_tree_rss_mib": small.tree_rss_mib(),
            "large_table_worker_rss_mib": report.median([m["rss_mib"] for m in mem["large"]]),
            "node_rss_mib": node.rss_mib(),
            "workers": mem,
        }
        for server in (small, large, node):
            server.stop()
        large_db["engine"].dispose()

        # -- 6: long polls (fresh servers over the small database) ---------------------------------
        def start_server(label: str) -> servers.Server:
            server = self.serve(label, small_db["url"], QR_OIDC_RATE_TICKET_CLIENT="off")
            server.start()
            server.wait_ready()
            return server

        def sign_in(server: servers.Server) -> str:  # tokens name their issuer: its own
            return approval.sign_in_phone(server.url, people["phone"], people["username"],
                                          people["password"])

        self.step(f"{a.long_polls:,} long polls held")
        long_polls = longpoll.held(start_server, engine, web, sign_in, self.folder, a, self.log)
        self.step(f"the flood: {a.flood:,} connections on one ticket")
        flood = longpoll.flood(start_server, engine, web, self.folder, a, self.log)

        engine.dispose()
        self.scratch.drop_all()
        pending["rounds"] = [{k: slim(v) for k, v in r.items()} for r in rounds]
        return {"pending_poll": pending, "token_issuance": issuance,
                "approval_to_page": to_page, "large_table": large_table, "memory": memory,
                "long_polls": long_polls, "flood": flood}


def slim(run: dict) -> dict:
    keys = ("rate", "ok_rate", "pending_rate", "p50_ms", "p99_ms", "requests", "slow_down",
            "other")
    return {k: run[k] for k in keys}


def summarize_polls(rounds: list[dict], levels: list[int]) -> dict:
    def med(name, key):
        return report.median([r[name][key] for r in rounds])

    out = {"levels": levels}
    for c in levels:
        ours, node = f"small_c{c}", f"node_c{c}"
        out.update({
            f"c{c}_rps": med(ours, "pending_rate"),
            f"c{c}_node_rps": med(node, "pending_rate"),
            f"c{c}_ratio": report.median([r[ours]["pending_rate"] / r[node]["pending_rate"]
                                          for r in rounds]),
            f"c{c}_p50_ms": med(ours, "p50_ms"),
            f"c{c}_p99_ms": med(ours, "p99_ms"),
            f"c{c}_node_p50_ms": med(node, "p50_ms"),
            f"c{c}_node_p99_ms": med(node, "p99_ms"),
        })
    out["slow_down"] = sum(r[f"small_c{c}"]["slow_down"] for r in rounds for c in levels)
    out["other_answers"] = sum(r[f"small_c{c}"]["other"] for r in rounds for c in levels)
    out["node_other_answers"] = sum(r[f"node_c{c}"]["other"] + r[f"node_c{c}"]["slow_down"]
                                    for r in rounds for c in levels)
    return out


def summarize_issuance(rounds: list[dict], levels: list[int], ours_per_run: int,
                       node_per_run: int) -> dict:
    out = {"levels": levels,
           "ceiling_pairs_per_s": report.median([r["raw"] for r in rounds]),
           "joserfc_pairs_per_s": report.median([r["joserfc"] for r in rounds])}
    best = None
    for c in levels:
        ours, node = f"ours_c{c}", f"node_c{c}"
        ratio = report.median([r["runs"][ours]["ok_rate"] / r["raw"] for r in rounds])
        out.update({
            f"c{c}_tokens_per_s": report.median([r["runs"][ours]["ok_rate"] for r in rounds]),
            f"c{c}_node_tokens_per_s": report.median([r["runs"][node]["ok_rate"]
                                                      for r in rounds]),
            f"c{c}_node_ratio": report.median([r["runs"][ours]["ok_rate"]
                                               / r["runs"][node]["ok_rate"] for r in rounds]),
            f"c{c}_ceiling_ratio": ratio,
            f"c{c}_node_one_signature_ratio": report.median(
                [r["runs"][node]["ok_rate"] / (2 * r["raw"]) for r in rounds]),
            f"c{c}_p50_ms": report.median([r["runs"][ours]["p50_ms"] for r in rounds]),
            f"c{c}_p99_ms": report.median([r["runs"][ours]["p99_ms"] for r in rounds]),
            f"c{c}_node_p50_ms": report.median([r["runs"][node]["p50_ms"] for r in rounds]),
            f"c{c}_node_p99_ms": report.median([r["runs"][node]["p99_ms"] for r in rounds]),
        })
        if best is None or ratio > out[f"c{best}_ceiling_ratio"]:
            best = c
    out.update({
        # the target: issuance at the level where it does best, against two signatures per core
        "ceiling_ratio": out[f"c{best}_ceiling_ratio"],
        "best_level": best,
        "tokens_per_s": out[f"c{best}_tokens_per_s"],
        "node_tokens_per_s": max(out[f"c{c}_node_tokens_per_s"] for c in levels),
        "exhausted": sum(run["exhausted"] for r in rounds for run in r["runs"].values()),
        "failed": sum(r["runs"][f"ours_c{c}"]["other"] + r["runs"][f"ours_c{c}"]["socket_errors"]
                      for r in rounds for c in levels),
        "node_failed": sum(r["runs"][f"node_c{c}"]["other"]
                           + r["runs"][f"node_c{c}"]["socket_errors"]
                           for r in rounds for c in levels),
        "tickets_prepared_per_run": ours_per_run,
        "node_codes_prepared_per_run": node_per_run,
        "tickets_prepared_by": "SQL insert of approved rows; node: DeviceCode and Grant saved "
                               "through the provider's models (bench/node_anchor/server.js)",
        "rounds": [{"ceiling_pairs_per_s": r["raw"], "joserfc_pairs_per_s": r["joserfc"],
                    **{k: slim(v) for k, v in r["runs"].items()}} for r in rounds],
    })
    return out


def summarize_approval(approval_rounds: list[dict]) -> dict:
    def pooled(key):
        return [s[key] for r in approval_rounds for s in r["samples"]]

    def per_round(key):
        return [report.median([s[key] for s in r["samples"]]) for r in approval_rounds]

    # The approval commits somewhere between the approve request and its response, so the
    # page's wait lies between the two figures; the figure is the larger one.
    upper, after = per_round("after_approve_request_ms"), per_round("after_approve_response_ms")
    per_round_base = [report.median(r["status_round_trip_ms"]) for r in approval_rounds]
    return {
        "p50_ms": report.median(upper),
        "p99_ms": report.percentile(pooled("after_approve_request_ms"), 99),
        "after_response_p50_ms": report.median(after),
        "after_response_p99_ms": report.percentile(pooled("after_approve_response_ms"), 99),
        "approve_round_trip_p50_ms": report.median(pooled("approve_round_trip_ms")),
        "baseline_p50_ms": report.median(per_round_base),
        "ratio": report.median([u / b for u, b in zip(upper, per_round_base, strict=True)]),
        "count": len(pooled("after_approve_request_ms")),
        "measured_from": "approve request sent (upper bound); after_response_*: from the "
                         "approve response received (negative: the page knew first)",
    }


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("levels: connection counts, comma-separated") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("levels: connection counts of 1 or more")
    return levels


def parse(argv=None):
    defaults = provider_config.load()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="about a minute per database: 1 round of 1 s runs, 10^4 tickets for "
                             "the large table, 200 held long polls, a flood of 100 (smoke test; "
                             "the figures are not meaningful)")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, help="rounds per measurement (5; quick 1)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (4; quick 1)")
    parser.add_argument("--levels", type=_levels, default=[1, 8, 32],
                        help="wrk connections of the pending-poll and issuance runs (1,8,32)")
    parser.add_argument("--poll-tickets", type=int, default=1000,
                        help="distinct pending tickets (and node device codes) polled round "
                             "robin; also the small table")
    parser.add_argument("--large-tickets", type=int, help="tickets in the large table "
                        "(1000000; quick 10000)")
    parser.add_argument("--samples", type=int, help="approval samples per round (20; quick 5)")
    parser.add_argument("--long-polls", type=int,
                        help="status long polls held at once (10000; quick 200)")
    parser.add_argument("--flood", type=int,
                        help="connections long-polling one ticket (1500; quick 100)")
    parser.add_argument("--long-poll-seconds", dest="lp_seconds", type=int,
                        help="seconds of probing while long polls are held / flooding (10; "
                             "quick 2)")
    parser.add_argument("--probe-timeout", type=float,
                        help="seconds a probe may take before it counts as failed (30; quick 10)")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="qr-oidc serve --workers (QR_OIDC_WORKERS, default %(default)s)")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="qr-oidc serve --threads (QR_OIDC_THREADS, default %(default)s)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for every qr-oidc server (repeatable)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin servers and load generators to their cores")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here, and "
                        "the charts next to it (FILE-ratios.svg, FILE-latency.svg)")
    parser.add_argument("--charts", type=Path, metavar="DIR",
                        help="write the charts as DIR/bench-ratios.svg and DIR/bench-latency.svg "
                             "(needs matplotlib: the bench extra)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 5)
    args.seconds = args.seconds or (1 if quick else 4)
    args.sign_seconds = 0.5 if quick else 3
    args.large_tickets = args.large_tickets or (10_000 if quick else 1_000_000)
    args.samples = args.samples or (5 if quick else 20)
    args.long_polls = args.long_polls or (200 if quick else 10_000)
    args.flood = args.flood or (100 if quick else 1500)
    args.lp_seconds = args.lp_seconds or (2 if quick else 10)
    args.probe_timeout = args.probe_timeout or (10 if quick else 30)
    args.approval_timeout = min(10.0, args.probe_timeout)
    args.lp_samples = 5 if quick else 20
    args.lp_open_seconds = 20 if quick else 60
    args.lp_settle_seconds = 10 if quick else 30
    args.lp_max_seconds = 300 if quick else 900
    args.large_level = args.levels[len(args.levels) // 2]
    if args.large_tickets < args.poll_tickets:
        parser.error("--large-tickets must be at least --poll-tickets")
    for item in args.server_env:
        if "=" not in item:
            parser.error(f"--server-env {item!r}: KEY=VALUE")
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
    try:
        anchor.ensure_installed(log)
    except anchor.AnchorUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if args.no_pin:
        servers.set_pinning(False)
    # 10^4 held long polls are 10^4 sockets in the server: the servers inherit this limit
    open_files = servers.raise_open_files()
    servers.install_cleanup()
    chart_paths = charts.paths(args.json, args.charts)
    if chart_paths and not charts.available():
        log(f"!! no charts at the end: {charts.INSTALL}; the text report is written all the same")
    steps = progress.Steps(Bench.steps_per_database(args) * len(backends), log)
    started = time.monotonic()
    results = {
        "machine": {**machine(), "open_files_limit": open_files},
        "config": {
            "quick": args.quick, "rounds": args.rounds, "seconds": args.seconds,
            "levels": args.levels, "large_level": args.large_level,
            "poll_tickets": args.poll_tickets, "large_tickets": args.large_tickets,
            "samples_per_round": args.samples, "workers": args.workers, "threads": args.threads,
            "long_polls": args.long_polls, "flood": args.flood,
            "long_poll_seconds": args.lp_seconds, "probe_timeout": args.probe_timeout,
            "server_env": args.server_env, "poll_interval": 1,
            "pinned": servers.pinning(),
            "cores": ({"servers": servers.SERVER_CORE, "load": servers.LOAD_CORE}
                      if servers.pinning() else None),
            "log_level": provider_config.load().log_level,
        },
        "databases": {},
    }
    if args.long_polls + 200 > results["machine"]["open_files_limit"]:
        log(f"!! {args.long_polls:,} long polls need more open files than the limit "
            f"({results['machine']['open_files_limit']:,}); connections past it will fail")
    try:
        for backend in backends:
            results["databases"][backend] = Bench(args, backend, steps).run()
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
    if chart_paths:
        try:
            written = charts.write(results, chart_paths)
        except charts.Unavailable as exc:
            log(f"no charts: {exc}")
        else:
            log("charts: " + ", ".join(str(p) for p in written))
    else:
        log("no charts: give --json FILE (charts next to it) or --charts DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
