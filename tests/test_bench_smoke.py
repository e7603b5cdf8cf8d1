"""The benchmarks still run: ``python -m bench --quick`` end to end, on SQLite and PostgreSQL,
against node-oidc-provider (bench/node_anchor, installed by ``npm ci`` on first use), with the
long-poll phases (bench/longpoll.py), and its JSON carries every figure for every database; so does
``python -m bench.cpu --quick``. No timing is asserted: benchmarks are not tests
(docs/performance.md has the figures)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import FIGURES, TARGETS  # noqa: E402  (bench/ is not installed: the path above)


def _quick(module: str, out: Path, *extra: str):
    """``python -m <module> --quick --db both --json out``: the finished process and the JSON."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--db", "both", "--json", str(out), *extra],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=480,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(out.read_text())


def test_quick_benchmark_runs_and_reports_every_figure(tmp_path):
    databases = ["sqlite", "postgresql"]  # the suite needs PostgreSQL anyway (.ci/run starts it)
    result, results = _quick("bench", tmp_path / "bench.json")

    assert set(results["databases"]) == set(databases)
    for db in databases:
        figures = results["databases"][db]
        for section, key in FIGURES:
            value = figures[section][key]
            assert isinstance(value, (int, float)) and math.isfinite(value), (db, section, key)
        # the workload was what it claims: pending polls answered authorization_pending (ours
        # and node-oidc-provider's), each approved ticket and device code gave tokens
        assert figures["pending_poll"]["other_answers"] == 0
        assert figures["pending_poll"]["node_other_answers"] == 0
        assert figures["token_issuance"]["failed"] == 0
        assert figures["token_issuance"]["node_failed"] == 0
        assert figures["token_issuance"]["exhausted"] == 0
        assert figures["approval_to_page"]["count"] >= 1
        assert figures["memory"]["worker_rss_mib"] > 0
        # the long polls reached the server and the probes were answered; the flood ran
        held = figures["long_polls"]
        assert held["connected"] == held["requested"] == results["config"]["long_polls"]
        assert held["approval_samples"] >= 1 and held["rss_mib"] > 0
        for kind in ("discovery", "ticket", "token_poll"):
            assert held["probes"][kind]["count"] >= 1, (db, kind)
        flood = figures["flood"]
        assert flood["connected"] == flood["connections"] == results["config"]["flood"]
        assert flood["probes"]["discovery"]["count"] >= 1
    assert len(results["targets"]) == len(TARGETS) * len(databases)
    for target in results["targets"]:
        assert isinstance(target["met"], bool)
    # the text report names every database and every target
    for db in databases:
        assert f"[{db}]" in result.stdout
    for name, *_ in TARGETS:
        assert name in result.stdout


def test_quick_cpu_accounting_runs_and_reports_both_sides(tmp_path):
    """``python -m bench.cpu --quick``: the in-process costs and the CPU read from /proc under
    load come out for both databases, and the workloads were what they claim (each run answered
    requests, CPU was seen being used by the server). No timing is asserted."""
    # one second per wrk run (--quick's default is two): enough for every figure to be made
    result, results = _quick("bench.cpu", tmp_path / "cpu.json", "--seconds", "1")
    assert set(results) == {"sqlite", "postgresql"}
    for db, figures in results.items():
        inproc = figures["in_process"]
        for key in ("issue_ms", "issue_cpu_ms", "poll_ms", "poll_cpu_ms", "sign_pair_ms"):
            assert math.isfinite(inproc[key]) and inproc[key] > 0, (db, key)
        for workload in ("bare", "poll", "issue"):
            run = figures["under_load"][workload]
            assert run["rate"] > 0, (db, workload)
            assert run["server_ms_per_request"] > 0, (db, workload)
            assert 0 < run["machine_busy_cores"] <= (os.cpu_count() or 1) + 0.5, (db, workload)
        # PostgreSQL's own processes are counted on PostgreSQL, and only there
        pg_ms = figures["under_load"]["issue"]["database_ms_per_request"]
        assert (pg_ms > 0) if db == "postgresql" else (pg_ms == 0), (db, pg_ms)
        assert f"[{db}]" in result.stdout
