"""What a DPoP proof (RFC 9449) costs, as ratios to a baseline measured in the same run.

    python -m bench.dpop [--rounds N] [--seconds S] [--c C] [--proofs N] [--db sqlite|postgresql]
                         [--no-server] [--json FILE] [--no-pin]

1. **In process** (no server): ``grants.dpop.DPoP.check`` of one proof made for
   ``GET /userinfo`` with an access token (``ath``), with an in-memory replay cache (a set), per
   proof algorithm (ES256, RS256 with a 2048-bit key, EdDSA with Ed25519), against signing one
   RS256 access token (``joserfc.jwt.encode`` with a 2048-bit key, the provider's access-token
   header and claims: what issuing a token costs at least). Proofs are made before the clock
   starts, each used once. Reported: the time of one check as a multiple of one signature.
2. **Against a server**: ``qr-oidc serve`` (one process, pinned to the server core) answering
   ``GET /userinfo`` under wrk (bench/userinfo.lua, on the load core), with a Bearer token and
   with a DPoP-bound token plus a fresh proof per request, per algorithm. wrk cannot sign, so the
   proofs are made before each run and read from a file, each used once (the server refuses a
   replayed jti); a run that uses them all up counts the rest as ``exhausted`` (flagged ``!!``).
   The server's replay cache is its own (the rate limiter's store, here the database), so this
   includes one counter write per proof. Reported: DPoP throughput as a fraction of Bearer's, and
   the p50/p99 latencies of both, per algorithm.

Every figure is the median of per-round values over interleaved rounds whose order rotates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from qr_oidc.grants.dpop import DPoP, token_hash

from . import data, load, servers

ALGS = ["ES256", "RS256", "EdDSA"]
LUA = Path(__file__).with_name("userinfo.lua")
QR_GRANT = load.QR_GRANT


def new_key(alg: str):
    if alg == "ES256":
        return ECKey.generate_key("P-256")
    if alg == "RS256":
        return RSAKey.generate_key(2048)
    return OKPKey.generate_key("Ed25519")


class ProofMaker:
    """A client's DPoP key and its proofs (RFC 9449 §4.2), as a client library makes them."""

    def __init__(self, alg: str):
        self.alg, self.key = alg, new_key(alg)
        self.header = {"typ": "dpop+jwt", "alg": alg, "jwk": self.key.as_dict(private=False)}
        self.jkt = self.key.thumbprint()

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        claims = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url,
                  "iat": int(time.time())}
        if access_token is not None:
            claims["ath"] = token_hash(access_token)
        return jwt.encode(self.header, claims, self.key, algorithms=[self.alg])


def access_token_shape() -> tuple[dict, dict]:
    """Header and claims like the provider's access tokens (grants/access_tokens.py)."""
    at = int(time.time())
    issuer = "http://127.0.0.1:8000"
    return ({"alg": "RS256", "typ": "at+jwt", "kid": "k" * 43}, {
        "iss": issuer, "sub": "0" * 32, "aud": issuer, "client_id": "c" * 32, "iat": at,
        "exp": at + 3600, "jti": "j" * 32, "scope": "openid profile"})


def median(values):
    return statistics.median(values) if values else float("nan")


# -- 1. in process -------------------------------------------------------------------------------
def sign_seconds(key, seconds: float) -> float:
    """Seconds per RS256 access-token signature, over ``seconds``."""
    header, claims = access_token_shape()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(8):
            jwt.encode(header, claims, key, ["RS256"])
        count += 8
        if time.perf_counter() >= deadline:
            break
    return (time.perf_counter() - start) / count


def check_seconds(maker: ProofMaker, count: int) -> float:
    """Seconds per ``DPoP.check`` of a userinfo proof, over ``count`` fresh proofs."""
    url = "http://127.0.0.1:8000/userinfo"
    token = "eyJ" + secrets.token_urlsafe(600)  # any access token: the check hashes it (ath)
    seen: set[str] = set()

    def first_use(value: str, _until: float) -> bool:
        if value in seen:
            return False
        seen.add(value)
        return True

    checker = DPoP(first_use)
    proofs = [maker.proof("GET", url, token) for _ in range(count)]
    start = time.perf_counter()
    for proof in proofs:
        checker.check(proof, "GET", url, access_token=token)
    elapsed = time.perf_counter() - start
    assert len(seen) == count
    return elapsed / count


def in_process(rounds: int, proofs: int, seconds: float) -> dict:
    signer = RSAKey.generate_key(2048)
    makers = {alg: ProofMaker(alg) for alg in ALGS}
    sign, checks = [], {alg: [] for alg in ALGS}
    with servers.pinned_here(servers.SERVER_CORE):
        for alg in ALGS:  # warm up (imports, key caches)
            check_seconds(makers[alg], 20)
        sign_seconds(signer, 0.2)
        for r in range(rounds):
            order = ALGS[r % len(ALGS):] + ALGS[:r % len(ALGS)]
            sign.append(sign_seconds(signer, seconds / 2))
            for alg in order:
                checks[alg].append(check_seconds(makers[alg], proofs))
            sign.append(sign_seconds(signer, seconds / 2))
            print(f"in process: round {r + 1} done", file=sys.stderr)
    out = {"sign_rs256_us": median(sign) * 1e6, "algorithms": {}}
    for alg in ALGS:
        # each round's checks against the mean of the signatures measured around them
        ratios = [c / ((sign[2 * i] + sign[2 * i + 1]) / 2) for i, c in enumerate(checks[alg])]
        out["algorithms"][alg] = {"check_us": median(checks[alg]) * 1e6,
                                  "check_vs_sign": median(ratios)}
    return out


# -- 2. against a server -------------------------------------------------------------------------
def wrk_userinfo(url: str, auth: str, proofs_file: str, seconds: int, connections: int) -> dict:
    assert url.startswith("http://127.0.0.1:"), "loopback only"
    argv = servers.pinned([
        load.wrk_path() or "wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
        "--timeout", "10s", "-s", str(LUA), url + "/userinfo", "--", auth, proofs_file,
    ], servers.LOAD_CORE)
    result = subprocess.run(argv, check=False, capture_output=True, text=True,
                            timeout=seconds + 60, stdin=subprocess.DEVNULL)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout}\n{result.stderr}")
    out = json.loads(line[len("BENCH_JSON "):])
    duration = out["duration_us"] / 1e6
    out["ok_rate"] = out["ok"] / duration
    for key in ("p50", "p99", "max"):
        out[f"{key}_ms"] = out.pop(f"{key}_us") / 1000
    return out


def redeem(server_url: str, client: dict, ticket: str, maker: ProofMaker | None) -> str:
    """The access token of an approved ticket, bound to ``maker``'s key when given."""
    headers = {}
    if maker is not None:
        headers["DPoP"] = maker.proof("POST", server_url + "/token")
    answer = requests.post(server_url + "/token", timeout=30, headers=headers,
                           data={"grant_type": QR_GRANT, "ticket": ticket},
                           auth=(client["client_id"], client["client_secret"]))
    answer.raise_for_status()
    body = answer.json()
    assert body["token_type"] == ("DPoP" if maker else "Bearer"), body
    return body["access_token"]


def against_server(a, folder: Path) -> dict:
    sc = servers.Scratch(a.db, folder)
    db_url = sc.url("dpop")
    port = servers.free_port()
    env = {**os.environ, "QR_OIDC_DATABASE_URL": db_url, "QR_OIDC_HOST": "127.0.0.1",
           "QR_OIDC_PORT": str(port), "QR_OIDC_TICKET_TTL": "7200",
           "QR_OIDC_WORKERS": a.workers}
    people = data.seed_people(env)
    client = people["web"]
    eng = data.engine_for(db_url)
    uid = data.user_id(eng, "bench")
    server = servers.Server("qr-oidc", [servers.QR_OIDC, "serve"], env, folder, port,
                            "/.well-known/openid-configuration").start()
    server.wait_ready()
    userinfo = requests.get(server.url + "/.well-known/openid-configuration",
                            timeout=10).json()["userinfo_endpoint"]
    makers = {alg: ProofMaker(alg) for alg in ALGS}
    variants = ["Bearer", *ALGS]
    tickets = data.insert_tickets(eng, client["client_id"], len(variants) * a.rounds + 1,
                                  "approved", uid)
    # a short Bearer run to size the proof files: DPoP answers no faster than Bearer
    warm = wrk_userinfo(server.url, "Bearer " + redeem(server.url, client, tickets.pop()["ticket"],
                                                       None), "-", 2, a.c)
    per_run = a.proofs or int(math.ceil(warm["ok_rate"] * a.seconds * 1.3)) + 100
    results = {v: [] for v in variants}
    for r in range(a.rounds):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            maker = makers.get(v)
            token = redeem(server.url, client, tickets.pop()["ticket"], maker)
            proofs_file = "-"
            if maker is not None:
                path = folder / f"proofs-{v}-{r}.txt"
                path.write_text("".join(maker.proof("GET", userinfo, token) + "\n"
                                        for _ in range(per_run)))
                proofs_file = str(path)
            auth = ("DPoP " if maker else "Bearer ") + token
            out = wrk_userinfo(server.url, auth, proofs_file, a.seconds, a.c)
            results[v].append(out)
            if maker is not None:
                os.unlink(proofs_file)
        print(f"server: round {r + 1} done", file=sys.stderr)
    server.stop()
    bearer = results["Bearer"]
    out = {"db": a.db, "connections": a.c, "proofs_per_run": per_run,
           "bearer": {"rate": median([x["ok_rate"] for x in bearer]),
                      "p50_ms": median([x["p50_ms"] for x in bearer]),
                      "p99_ms": median([x["p99_ms"] for x in bearer]),
                      "other": sum(x["other"] for x in bearer)},
           "algorithms": {}}
    for alg in ALGS:
        rs = results[alg]
        out["algorithms"][alg] = {
            "rate": median([x["ok_rate"] for x in rs]),
            "vs_bearer": median([x["ok_rate"] / b["ok_rate"] for x, b in zip(rs, bearer,
                                                                            strict=True)]),
            "p50_ms": median([x["p50_ms"] for x in rs]),
            "p99_ms": median([x["p99_ms"] for x in rs]),
            "p50_vs_bearer": median([x["p50_ms"] / b["p50_ms"] for x, b in zip(rs, bearer,
                                                                              strict=True)]),
            "exhausted": sum(x["exhausted"] for x in rs),
            "other": sum(x["other"] - x["exhausted"] for x in rs),
        }
    return out


def report(result: dict) -> None:
    ip = result["in_process"]
    print(f"in process: one RS256 access-token signature {ip['sign_rs256_us']:.0f} us "
          "(baseline)")
    for alg, x in ip["algorithms"].items():
        print(f"  check of one {alg:5} proof: {x['check_vs_sign']:.2f}x a signature "
              f"({x['check_us']:.0f} us)")
    sv = result.get("server")
    if sv:
        b = sv["bearer"]
        flag = "  !!" if b["other"] else ""
        print(f"userinfo on {sv['db']}, {sv['connections']} connections: Bearer "
              f"{b['rate']:.0f}/s p50 {b['p50_ms']:.2f} ms p99 {b['p99_ms']:.2f} ms "
              f"(baseline; non-200: {b['other']}){flag}")
        for alg, x in sv["algorithms"].items():
            flag = "  !!" if x["exhausted"] or x["other"] else ""
            print(f"  DPoP {alg:5}: {x['vs_bearer']:.2f}x Bearer's throughput, p50 "
                  f"{x['p50_vs_bearer']:.2f}x ({x['p50_ms']:.2f} ms), p99 {x['p99_ms']:.2f} ms"
                  f" (exhausted {x['exhausted']}, other non-200 {x['other']}){flag}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dpop")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--c", type=int, default=8, help="wrk connections")
    ap.add_argument("--proofs", type=int, default=0,
                    help="proofs per wrk run (default: sized from a Bearer run)")
    ap.add_argument("--check-proofs", type=int, default=2000,
                    help="proofs checked per algorithm and round, in process")
    ap.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    ap.add_argument("--workers", default="1")
    ap.add_argument("--no-server", action="store_true", help="the in-process part only")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    servers.set_pinning(not a.no_pin)
    servers.install_cleanup()
    try:
        result = {"pinned": servers.pinning(),
                  "in_process": in_process(a.rounds, a.check_proofs, a.seconds / 2)}
        if not a.no_server:
            if not load.wrk_path():
                print("bench.dpop: wrk is not installed; the server part is skipped",
                      file=sys.stderr)
            else:
                result["server"] = against_server(a, servers.scratch_folder())
        report(result)
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=2))
        return 0
    finally:
        servers.stop_all()


if __name__ == "__main__":
    sys.exit(main())
