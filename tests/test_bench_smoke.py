"""The benchmark still runs: ``python -m bench --quick`` end to end, on SQLite and PostgreSQL,
and its JSON carries every figure for every database. No timing is asserted: benchmarks are not
tests (docs/performance.md has the figures)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import FIGURES, TARGETS


def test_quick_benchmark_runs_and_reports_every_figure(tmp_path):
    databases = ["sqlite", "postgresql"]  # the suite needs PostgreSQL anyway (.ci/run starts it)
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--db", "both", "--json", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())

    assert set(results["databases"]) == set(databases)
    for db in databases:
        figures = results["databases"][db]
        for section, key in FIGURES:
            value = figures[section][key]
            assert isinstance(value, (int, float)) and math.isfinite(value), (db, section, key)
        # the workload was what it claims: pending polls answered authorization_pending, each
        # approved ticket gave tokens
        assert figures["pending_poll"]["other_answers"] == 0
        assert figures["token_issuance"]["failed"] == 0
        assert figures["approval_to_page"]["count"] >= 1
        assert figures["memory"]["worker_rss_mib"] > 0
    assert len(results["targets"]) == len(TARGETS) * len(databases)
    for target in results["targets"]:
        assert isinstance(target["met"], bool)
    # the text report names every database and every target
    for db in databases:
        assert f"[{db}]" in result.stdout
    for name, *_ in TARGETS:
        assert name in result.stdout
