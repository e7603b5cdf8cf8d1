"""Medians, the figures, the targets, and the text report."""

from __future__ import annotations

import math
import statistics

LEVELS = (1, 8, 32)  # the default --levels: FIGURES and TARGETS name these

# (section, key): every figure the report must carry, per database; the smoke test checks them.
FIGURES = [
    *[("pending_poll", f"c{c}_{k}") for c in LEVELS
      for k in ("ratio", "rps", "node_rps", "p50_ms", "p99_ms", "node_p50_ms", "node_p99_ms")],
    *[("token_issuance", f"c{c}_{k}") for c in LEVELS
      for k in ("node_ratio", "tokens_per_s", "node_tokens_per_s", "ceiling_ratio",
                "node_one_signature_ratio", "p50_ms", "p99_ms", "node_p50_ms", "node_p99_ms")],
    ("token_issuance", "ceiling_ratio"),
    ("token_issuance", "ceiling_pairs_per_s"),
    ("token_issuance", "joserfc_pairs_per_s"),
    ("token_issuance", "tokens_per_s"),
    ("token_issuance", "node_tokens_per_s"),
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
    ("memory", "worker_pss_mib"),
    ("memory", "worker_rss_at_start_mib"),
    ("memory", "node_rss_mib"),
    ("long_polls", "requested"),
    ("long_polls", "held"),
    ("long_polls", "rss_mib"),
    ("long_polls", "discovery_p99_ms"),
    ("long_polls", "ticket_p99_ms"),
    ("long_polls", "token_poll_p99_ms"),
    ("long_polls", "worst_p99_ms"),
    ("long_polls", "approval_p50_ms"),
    ("flood", "connections"),
    ("flood", "answers_per_s"),
    ("flood", "discovery_max_ms"),
    ("flood", "discovery_p99_ms"),
    ("flood", "token_poll_max_ms"),
    ("flood", "token_poll_p99_ms"),
    ("flood", "other_max_ms"),
]

# name, section, key, comparison, threshold (issue 15's targets)
TARGETS = [
    *[(f"pending poll c={c} >= 1.0x node", "pending_poll", f"c{c}_ratio", ">=", 1.0)
      for c in LEVELS],
    ("issuance >= 0.6 of 2 signatures/core", "token_issuance", "ceiling_ratio", ">=", 0.60),
    ("10^6-ticket throughput >= 0.9x of 10^3", "large_table", "ratio", ">=", 0.90),
    ("worker RSS idle <= 100 MB", "memory", "worker_rss_mib", "<=", 100.0),
    ("long polls held: server RSS <= 300 MB", "long_polls", "rss_mib", "<=", 300.0),
    ("long polls held: other p99 < 100 ms", "long_polls", "worst_p99_ms", "<", 100.0),
    ("long polls held: approval p50 <= 10 ms", "long_polls", "approval_p50_ms", "<=", 10.0),
    ("flood: no other request > 100 ms", "flood", "other_max_ms", "<=", 100.0),
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


def _met(value, op: str, threshold: float) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold,
            ">": value > threshold}[op]


def targets(results: dict) -> list[dict]:
    """Every target per database (a figure a run did not measure, e.g. another --levels, is
    left out)."""
    out = []
    for db, figures in results["databases"].items():
        for name, section, key, op, threshold in TARGETS:
            if key not in figures.get(section, {}):
                continue
            value = figures[section][key]
            out.append({"database": db, "target": name, "value": value, "threshold": threshold,
                        "met": bool(_met(value, op, threshold))})
    return out


def _f(value, digits=2):
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _flag(count, what: str) -> str:
    return f"   !! {count} {what}" if count else ""


def text(results: dict) -> str:
    lines = []
    m = results["machine"]
    c = results["config"]
    pin = (f"servers on core {c['cores']['servers']}, load on core {c['cores']['load']}"
           if c.get("pinned") else "not pinned")
    lines.append(f"qr-oidc benchmark ({'quick' if c['quick'] else 'full'}): {m['nproc']} cores, "
                 f"{m['cpu']}, {m['mem_gib']:.1f} GiB; {pin}; {c['rounds']} rounds x "
                 f"{c['seconds']} s; qr-oidc serve --workers {c['workers']} --threads "
                 f"{c['threads']}; anchor node-oidc-provider {m.get('oidc_provider')} on node "
                 f"{m.get('node')}; figures are medians of per-round values and ratios")
    for db, f in results["databases"].items():
        p, i, a, t, mem = (f["pending_poll"], f["token_issuance"], f["approval_to_page"],
                           f["large_table"], f["memory"])
        lines.append(f"\n[{db}]")
        lines.append("  pending poll (authorization_pending answers/s; ratio to node-oidc-provider"
                     " device-code polls)")
        for lv in p["levels"]:
            lines.append(
                f"    c={lv:<3} {p[f'c{lv}_rps']:7.0f}/s vs node {p[f'c{lv}_node_rps']:7.0f}/s  "
                f"ratio {p[f'c{lv}_ratio']:.2f}   p50 {p[f'c{lv}_p50_ms']:.2f} ms (node "
                f"{p[f'c{lv}_node_p50_ms']:.2f}), p99 {p[f'c{lv}_p99_ms']:.2f} ms (node "
                f"{p[f'c{lv}_node_p99_ms']:.2f})")
        if p.get("slow_down"):
            lines.append(f"    !! {p['slow_down']} slow_down answers: polls came faster than the "
                         "tickets' interval")
        if p.get("other_answers") or p.get("node_other_answers"):
            lines.append(f"    !! other answers: ours {p['other_answers']}, node "
                         f"{p['node_other_answers']}")
        lines.append(
            f"  token issuance (tokens/s; ceiling: RS256 signing on one core "
            f"{i['ceiling_pairs_per_s']:.0f} pairs/s, joserfc {i['joserfc_pairs_per_s']:.0f}/s;"
            f" node signs one signature per token)")
        for lv in i["levels"]:
            lines.append(
                f"    c={lv:<3} {i[f'c{lv}_tokens_per_s']:7.0f}/s vs node "
                f"{i[f'c{lv}_node_tokens_per_s']:7.0f}/s  ratio {i[f'c{lv}_node_ratio']:.2f}   "
                f"of 2 signatures/core {i[f'c{lv}_ceiling_ratio']:.2f} (node of 1/core "
                f"{i[f'c{lv}_node_one_signature_ratio']:.2f})   p50 {i[f'c{lv}_p50_ms']:.1f} ms "
                f"(node {i[f'c{lv}_node_p50_ms']:.1f}), p99 {i[f'c{lv}_p99_ms']:.1f} ms (node "
                f"{i[f'c{lv}_node_p99_ms']:.1f})")
        lines.append(f"    best: {i['ceiling_ratio']:.2f} of the ceiling at c={i['best_level']}"
                     + _flag(i.get("exhausted"), "requests past the prepared tickets")
                     + _flag(i.get("failed"), "failed redemptions (ours)")
                     + _flag(i.get("node_failed"), "failed redemptions (node)"))
        lines.append(
            f"  table size        {t['large_tickets']:,} tickets {t['large_rps']:.0f}/s vs "
            f"{t['small_tickets']:,} tickets {t['small_rps']:.0f}/s at c={t['connections']}  "
            f"ratio {t['ratio']:.2f}" + _flag(t.get("slow_down"), "slow_down answers"))
        lines.append(
            f"  memory            worker RSS idle {mem['worker_rss_mib']:.1f} MiB (PSS "
            f"{mem['worker_pss_mib']:.1f}; {mem['worker_rss_at_start_mib']:.1f} at start); node "
            f"{mem['node_rss_mib']:.1f} MiB")
        lines.append(
            f"  approval-to-page  idle: p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms from "
            f"the approve request (after its response: p50 {a['after_response_p50_ms']:.1f} ms; "
            f"{a['count']} samples) vs a status round trip {a['baseline_p50_ms']:.1f} ms")
        lp = f.get("long_polls")
        if lp:
            lines.append(
                f"  long polls held   {lp['held']:,} of {lp['requested']:,} waiting throughout "
                f"({lp['connected']:,} connected, {lp['connect_failed']:,} could not connect, "
                f"{lp['early_answers']:,} answered before their wait); server RSS "
                f"{lp['rss_mib']:.1f} MiB ({lp['processes']} processes; worker "
                f"{lp['worker_rss_mib']:.1f}), {lp['server_cores_while_probing']:.2f} cores "
                f"while probed" + ("" if lp["settled"] else
                                   f"   !! the server was still busy {lp['settle_s']:.0f} s "
                                   f"after the long polls were sent "
                                   f"({lp['settle_cores']:.2f} cores)"))
            lines.append(
                f"    meanwhile p50/p99/max: discovery {lp['discovery_p50_ms']:.1f}/"
                f"{lp['discovery_p99_ms']:.1f}/{lp['discovery_max_ms']:.1f} ms, ticket "
                f"{lp['ticket_p50_ms']:.1f}/{lp['ticket_p99_ms']:.1f}/{lp['ticket_max_ms']:.1f} ms,"
                f" token poll {lp['token_poll_p50_ms']:.1f}/{lp['token_poll_p99_ms']:.1f}/"
                f"{lp['token_poll_max_ms']:.1f} ms; approval-to-page p50 "
                f"{lp['approval_p50_ms']:.1f} ms ({lp['approval_samples']} samples)"
                + _flag(lp["discovery_failed"] + lp["ticket_failed"] + lp["token_poll_failed"],
                        "probes failed or timed out")
                + _flag(lp["approval_failed"], "approval samples failed")
                + ("" if lp["server_alive"] else "   !! the server died"))
            if lp["held"] < lp["requested"]:
                lines.append(f"    !! {lp['requested'] - lp['held']:,} long polls were not held "
                             "(refused, not connected or answered early)")
        fl = f.get("flood")
        if fl:
            lines.append(
                f"  flood             {fl['connections']:,} connections on one ticket, "
                f"{fl['answers_per_s']:.0f} answers/s, {fl['waiting_at_end']:,} waiting; "
                f"discovery p99 {fl['discovery_p99_ms']:.1f} ms max {fl['discovery_max_ms']:.1f} "
                f"ms, token poll p99 {fl['token_poll_p99_ms']:.1f} ms max "
                f"{fl['token_poll_max_ms']:.1f} ms"
                + _flag(fl["discovery_failed"] + fl["token_poll_failed"],
                        "probes failed or timed out")
                + ("" if fl["server_alive"] else "   !! the server died"))
    lines.append("\ntargets:")
    for t in results["targets"]:
        lines.append(f"  {'MET   ' if t['met'] else 'MISSED'} {t['database']:10} {t['target']:40} "
                     f"{_f(t['value'])}")
    return "\n".join(lines)
