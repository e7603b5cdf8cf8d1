"""Medians, the figures, the targets, and the text report."""

from __future__ import annotations

import math
import statistics

# (section, key): every figure the report must carry, per database; the smoke test checks them.
FIGURES = [
    ("pending_poll", "ratio"),
    ("pending_poll", "rps"),
    ("pending_poll", "baseline_rps"),
    ("pending_poll", "p50_ms"),
    ("pending_poll", "p99_ms"),
    ("pending_poll", "baseline_p50_ms"),
    ("pending_poll", "baseline_p99_ms"),
    ("pending_poll", "p50_ratio"),
    ("pending_poll", "p99_ratio"),
    ("pending_poll", "c1_p50_ms"),
    ("pending_poll", "c1_p99_ms"),
    ("pending_poll", "c1_baseline_p50_ms"),
    ("pending_poll", "c1_baseline_p99_ms"),
    ("pending_poll", "c1_p50_ratio"),
    ("token_issuance", "ratio"),
    ("token_issuance", "tokens_per_s"),
    ("token_issuance", "baseline_signing_per_s"),
    ("token_issuance", "joserfc_signing_per_s"),
    ("token_issuance", "joserfc_ratio"),
    ("token_issuance", "p50_ms"),
    ("token_issuance", "p99_ms"),
    ("approval_to_page", "p50_ms"),
    ("approval_to_page", "p99_ms"),
    ("approval_to_page", "after_response_p50_ms"),
    ("approval_to_page", "after_response_p99_ms"),
    ("approval_to_page", "baseline_p50_ms"),
    ("approval_to_page", "ratio"),
    ("large_table", "ratio"),
    ("large_table", "small_tickets"),
    ("large_table", "large_tickets"),
    ("large_table", "small_rps"),
    ("large_table", "large_rps"),
    ("memory", "worker_rss_mib"),
    ("memory", "baseline_rss_mib"),
    ("memory", "ratio"),
    ("memory", "worker_pss_mib"),
]

# name, section, key, comparison, threshold
TARGETS = [
    ("pending poll >= 60% of bare Flask", "pending_poll", "ratio", ">=", 0.60),
    ("token issuance >= 60% of raw signing", "token_issuance", "ratio", ">=", 0.60),
    ("approval-to-page p50 < 50 ms", "approval_to_page", "p50_ms", "<", 50.0),
    ("10^6-ticket throughput >= 90% of 10^3", "large_table", "ratio", ">=", 0.90),
]


def median(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else float("nan")


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def targets(results: dict) -> list[dict]:
    out = []
    for db, figures in results["databases"].items():
        for name, section, key, op, threshold in TARGETS:
            value = figures[section][key]
            met = value >= threshold if op == ">=" else value < threshold
            out.append({"database": db, "target": name, "value": value, "threshold": threshold,
                        "met": bool(met)})
    return out


def _f(value, digits=2):
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def text(results: dict) -> str:
    lines = []
    m = results["machine"]
    c = results["config"]
    lines.append(f"qr-oidc benchmark ({'quick' if c['quick'] else 'full'}): {m['nproc']} cores, "
                 f"{m['cpu']}, {m['mem_gib']:.1f} GiB; {c['rounds']} rounds x {c['seconds']} s, "
                 f"{c['connections']} connections, {c['workers']} worker(s) x {c['threads']} "
                 f"threads; figures are medians of per-round ratios")
    for db, f in results["databases"].items():
        p, i, a, t, mem = (f["pending_poll"], f["token_issuance"], f["approval_to_page"],
                           f["large_table"], f["memory"])
        lines.append(f"\n[{db}]")
        lines.append(
            f"  pending poll      {p['rps']:.0f}/s vs bare Flask {p['baseline_rps']:.0f}/s"
            f"  ratio {p['ratio']:.2f}   latency at c={c['connections']}: p50 {p['p50_ms']:.1f} ms "
            f"(x{p['p50_ratio']:.1f} bare), p99 {p['p99_ms']:.1f} ms (x{p['p99_ratio']:.1f} bare);"
            f" at c=1: p50 {p['c1_p50_ms']:.2f} ms (x{p['c1_p50_ratio']:.1f} bare), "
            f"p99 {p['c1_p99_ms']:.2f} ms"
            + (f"   !! {p['slow_down']} slow_down answers: polls came faster than the "
               f"tickets' interval" if p.get("slow_down") else ""))
        lines.append(
            f"  token issuance    {i['tokens_per_s']:.0f}/s vs raw RS256 signing "
            f"{i['baseline_signing_per_s']:.0f} pairs/s on one core  ratio {i['ratio']:.2f}"
            f"   (vs joserfc encode {i['joserfc_signing_per_s']:.0f}/s: {i['joserfc_ratio']:.2f};"
            f" p50 {i['p50_ms']:.1f} ms, p99 {i['p99_ms']:.1f} ms)"
            + (f"   !! {i['exhausted']} requests past the prepared tickets" if i.get("exhausted")
               else ""))
        lines.append(
            f"  approval-to-page  p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms from the "
            f"approve request (after its response: p50 {a['after_response_p50_ms']:.1f} ms, "
            f"p99 {a['after_response_p99_ms']:.1f} ms; {a['count']} samples) vs a status round "
            f"trip {a['baseline_p50_ms']:.1f} ms  ratio {a['ratio']:.1f}")
        lines.append(
            f"  table size        {t['large_tickets']:,} tickets {t['large_rps']:.0f}/s vs "
            f"{t['small_tickets']:,} tickets {t['small_rps']:.0f}/s  ratio {t['ratio']:.2f}"
            + (f"   !! {t['slow_down']} slow_down answers" if t.get("slow_down") else ""))
        lines.append(
            f"  memory            worker RSS {mem['worker_rss_mib']:.1f} MiB (PSS "
            f"{mem['worker_pss_mib']:.1f}) vs bare Flask worker {mem['baseline_rss_mib']:.1f} MiB"
            f"  ratio {mem['ratio']:.2f}")
    lines.append("\ntargets:")
    for t in results["targets"]:
        lines.append(f"  {'MET   ' if t['met'] else 'MISSED'} {t['database']:10} {t['target']:40} "
                     f"{_f(t['value'])}")
    return "\n".join(lines)
