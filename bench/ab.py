"""A/B: server variants side by side, interleaved rounds, each against the bare Flask endpoint.

    python -m bench.ab [--db sqlite|postgresql] [--rounds N] [--seconds S] [--workers W]
                       [--no-issue] NAME=TREE[:VAR=VALUE,VAR,...] ...

Each variant is ``qr-oidc serve`` run with TREE's code first on its path (a checkout of the
repository: compare a branch with main before and after a change) and the extra environment
variables given
(``VAR`` alone means ``VAR=1``). Per round, every variant takes a pending-poll run (3000 tickets,
round robin) and, unless ``--no-issue``, a token-issuance run; the raw RS256 signing rate is
measured once per round. Prints medians of rates and of per-round ratios. Used for the prototype
measurements in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from . import data, load, servers, signing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab")
    ap.add_argument("--db", default="sqlite")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--c", type=int, default=16)
    ap.add_argument("--workers", default="1")
    ap.add_argument("--no-issue", action="store_true")
    ap.add_argument("variants", nargs="+")  # name=TREE:FLAG1,FLAG2
    a = ap.parse_args(argv)
    servers.install_cleanup()
    try:
        return _run(a)
    finally:
        servers.stop_all()


def import_root(tree: str, folder) -> str:
    """A folder for PYTHONPATH in which ``qr_oidc`` is ``tree``'s code: the checkout's
    provider/, grants/ and keys/ under the one namespace, as pyproject.toml's package-dir maps
    them (the installed editable finder comes after PYTHONPATH, so the variant's code wins).
    A checkout from before the namespace (top-level ``provider``) is its own import root."""
    if not Path(tree, "qr_oidc").is_dir():
        return tree
    root = folder / f"import-{abs(hash(tree))}"
    package = root / "qr_oidc"
    package.mkdir(parents=True, exist_ok=True)
    for name in ("__init__.py", "provider", "grants", "keys"):
        source = Path(tree, "qr_oidc", name) if name == "__init__.py" else Path(tree, name)
        if not (package / name).exists():
            (package / name).symlink_to(source.resolve())
    return str(root)


def _variant(a, folder, sc, spec: str) -> dict:
    name, rest = spec.split("=", 1)
    tree, _, flags = rest.partition(":")
    url = sc.url(name.replace("-", "_"))
    port = servers.free_port()
    env = {**os.environ, "PYTHONPATH": import_root(tree, folder), "QR_OIDC_DATABASE_URL": url,
           "QR_OIDC_HOST": "127.0.0.1", "QR_OIDC_PORT": str(port),
           "QR_OIDC_POLL_INTERVAL": "1", "QR_OIDC_TICKET_TTL": "7200",
           "QR_OIDC_WORKERS": a.workers}
    for flag in filter(None, flags.split(",")):
        key, _, value = flag.partition("=")
        env[key] = value or "1"
    # the variant's own qr-oidc, for the server and for the clients and users it needs (so the
    # database gets that variant's schema); a checkout from before the namespace has no console
    # script of its own
    program = [servers.QR_OIDC] if Path(tree, "qr_oidc").is_dir() else [
        servers.PYTHON, "-c", f"import sys; sys.path.insert(0, {str(Path(tree).resolve())!r}); "
        "from provider.cli import main; sys.exit(main())"]
    people = data.seed_people(env, program)
    eng = data.engine_for(url)
    client_id = people["web"]["client_id"]
    poll_file = folder / f"{name}-poll.txt"
    data.write_tickets(poll_file, data.insert_tickets(eng, client_id, 3000))
    uid = data.user_id(eng, "bench")
    files = []
    if not a.no_issue:
        for r in range(a.rounds):
            f = folder / f"{name}-issue-{r}.txt"
            approved = data.insert_tickets(eng, client_id, 3000 * a.seconds, "approved", uid)
            data.write_tickets(f, approved)
            files.append(f)
    server = servers.Server(name, [*program, "serve"], env, folder, port,
                            "/.well-known/openid-configuration").start()
    return dict(server=server, auth=load.basic(people["web"]), poll=poll_file, issue=files,
                cursor=0, eng=eng, res=[])


def _median(values) -> float:
    return statistics.median(values)


def _run(a) -> int:
    folder = servers.scratch_folder()
    sc = servers.Scratch(a.db, folder)
    variants = {spec.split("=", 1)[0]: _variant(a, folder, sc, spec) for spec in a.variants}
    body = folder / "body.json"
    body.write_text('{"error": "authorization_pending", '
                    '"error_description": "The user has not approved yet."}')
    bp = servers.free_port()
    bare = servers.Server("bare", [servers.PYTHON, "-m", "bench.bare", "--port", str(bp),
                                   "--workers", a.workers, "--body-file", str(body)],
                          {**os.environ}, folder, bp, "/ping").start()
    for v in variants.values():
        v["server"].wait_ready()
    bare.wait_ready()
    variants["bare"] = dict(server=bare, auth="Basic eA==",
                            poll=variants[next(iter(variants))]["poll"], issue=[], cursor=0,
                            res=[])
    names = list(variants)
    kid, pem = signing.active_key_pem(variants[names[0]]["eng"])
    raw = []
    for r in range(a.rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            v = variants[n]
            out = load.wrk(v["server"].url, v["poll"], v["auth"], "cycle", a.seconds, a.c,
                           start=v["cursor"])
            v["cursor"] = (v["cursor"] + out["requests"] + a.c) % 3000
            res = {"poll": out["pending_rate"], "p50": out["p50_ms"], "p99": out["p99_ms"],
                   "slow": out["slow_down"]}
            if v["issue"]:
                o2 = load.wrk(v["server"].url, v["issue"][r], v["auth"], "once", a.seconds, a.c)
                res.update(issue=o2["ok_rate"], ip50=o2["p50_ms"], ip99=o2["p99_ms"],
                           exh=o2["exhausted"], bad=o2["other"])
            v["res"].append(res)
        if not a.no_issue:
            raw.append(signing.raw_rate(pem, kid, 2))
        print(f"round {r+1} done", file=sys.stderr)
    print(f"db={a.db} workers={a.workers} c={a.c} rounds={a.rounds}x{a.seconds}s "
          f"raw_sign={_median(raw) if raw else 0:.0f}/s")
    bare_res = variants["bare"]["res"]
    for n in names:
        rs = variants[n]["res"]
        vs_bare = _median([x["poll"] / b["poll"] for x, b in zip(rs, bare_res, strict=True)])
        line = (f"  {n:14} poll {_median([x['poll'] for x in rs]):6.0f}/s "
                f"ratio-vs-bare {vs_bare:.2f} p50 {_median([x['p50'] for x in rs]):6.1f} "
                f"p99 {_median([x['p99'] for x in rs]):7.1f} slow {sum(x['slow'] for x in rs)}")
        if "issue" in rs[0]:
            vs_raw = _median([x["issue"] / s for x, s in zip(rs, raw, strict=True)])
            line += (f" | issue {_median([x['issue'] for x in rs]):5.0f}/s "
                     f"ratio-vs-raw {vs_raw:.2f} p50 {_median([x['ip50'] for x in rs]):6.1f} "
                     f"p99 {_median([x['ip99'] for x in rs]):7.1f} "
                     f"exh {sum(x['exh'] for x in rs)} bad {sum(x['bad'] for x in rs)}")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
