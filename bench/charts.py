"""SVG charts of a bench/run's results (matplotlib, the optional ``bench`` extra):

- ``ratios``: one horizontal bar per ratio figure (ours / node-oidc-provider, ours / the signing
  ceiling), per database, with a line at 1.0;
- ``latency``: p50 and p99 against the number of connections, ours and node's, for the pending
  poll and token issuance, per database.

``python -m bench.charts results.json [--out DIR]`` draws them again from a run's ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

INSTALL = ("matplotlib is not installed: .venv/bin/pip install -e '.[bench]' "
           "(or .venv/bin/pip install 'matplotlib>=3.8')")

OURS, NODE = "#1f5fa8", "#c8553d"
DB_COLORS = {"sqlite": "#1f5fa8", "postgresql": "#4d9a5b"}


class Unavailable(RuntimeError):
    """matplotlib is missing."""


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise Unavailable(INSTALL) from None
    matplotlib.use("Agg")
    matplotlib.rcParams.update({
        "svg.hashsalt": "qr-oidc-bench",  # the same run draws the same file
        "svg.fonttype": "none",  # text stays text: smaller, searchable
        "font.size": 9,
    })
    import matplotlib.pyplot as plt

    return plt


def _ok(value) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def _when(results: dict) -> str:
    c = results.get("config", {})
    return (f"{'quick run: ' if c.get('quick') else ''}{c.get('rounds')} rounds x "
            f"{c.get('seconds')} s, {results.get('machine', {}).get('nproc')} cores")


def ratio_rows(results: dict) -> list[tuple[str, str, float]]:
    """(database, label, ratio) for every ratio against node or a ceiling the run measured."""
    rows = []
    for db, f in results["databases"].items():
        p, i = f.get("pending_poll", {}), f.get("token_issuance", {})
        for c in p.get("levels", []):
            rows.append((db, f"pending poll, {c} conn. / node", p.get(f"c{c}_ratio")))
        for c in i.get("levels", []):
            rows.append((db, f"tokens/s, {c} conn. / node", i.get(f"c{c}_node_ratio")))
        for c in i.get("levels", []):
            rows.append((db, f"tokens/s, {c} conn. / 2 signatures per core",
                         i.get(f"c{c}_ceiling_ratio")))
    return [r for r in rows if _ok(r[2])]


def ratios(results: dict, path: Path) -> Path:
    plt = _pyplot()
    rows = ratio_rows(results)
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(rows) + 1.3))
    ys = list(range(len(rows)))[::-1]
    values = [r[2] for r in rows]
    ax.barh(ys, values, height=0.7, color=[DB_COLORS.get(r[0], OURS) for r in rows])
    ax.set_yticks(ys, [f"{r[0]}: {r[1]}" for r in rows])
    ax.axvline(1.0, color="black", linewidth=1)
    top = max([1.0, *values]) * 1.15
    ax.set_xlim(0, top)
    for y, v in zip(ys, values, strict=True):
        ax.text(v + top * 0.01, y, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("ratio (1.0: as fast as node-oidc-provider / as the signing ceiling)")
    ax.set_title(f"qr-oidc: ratios measured in one run\n({_when(results)}; medians of "
                 "per-round ratios)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def latency(results: dict, path: Path) -> Path:
    plt = _pyplot()
    dbs = list(results["databases"])
    panels = (("pending_poll", "pending poll"), ("token_issuance", "token issuance"))
    fig, axes = plt.subplots(len(dbs), 2, figsize=(8, 3.0 * len(dbs)), squeeze=False)
    for row, db in enumerate(dbs):
        for col, (section, title) in enumerate(panels):
            ax = axes[row][col]
            f = results["databases"][db].get(section, {})
            levels = f.get("levels", [])
            for who, prefix, color in (("qr-oidc", "", OURS), ("node", "node_", NODE)):
                for q, style in (("p50", "-"), ("p99", "--")):
                    ys = [f.get(f"c{c}_{prefix}{q}_ms") for c in levels]
                    points = [(c, y) for c, y in zip(levels, ys, strict=True) if _ok(y)]
                    if points:
                        ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3,
                                color=color, label=f"{who} {q}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(levels, [str(c) for c in levels])
            ax.minorticks_off()
            ax.set_xlabel("connections")
            ax.set_ylabel("latency (ms)")
            ax.set_title(f"{db}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"qr-oidc vs node-oidc-provider: latency against connections "
                 f"({_when(results)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def paths(json_path: Path | None, folder: Path | None) -> dict[str, Path] | None:
    """Where a run's charts go: ``DIR/bench-ratios.svg`` with ``--charts DIR``, else next to
    ``--json FILE`` (``FILE-ratios.svg``); None if neither was given."""
    if folder is not None:
        return {"ratios": folder / "bench-ratios.svg", "latency": folder / "bench-latency.svg"}
    if json_path is not None:
        stem = json_path.with_suffix("")
        return {name: stem.with_name(f"{stem.name}-{name}.svg") for name in ("ratios", "latency")}
    return None


def write(results: dict, where: dict[str, Path]) -> list[Path]:
    for path in where.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    return [ratios(results, where["ratios"]), latency(results, where["latency"])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__)
    parser.add_argument("json", type=Path, help="a bench/run --json file")
    parser.add_argument("--out", type=Path, help="folder for bench-ratios.svg and "
                        "bench-latency.svg (default: next to the JSON file)")
    args = parser.parse_args(argv)
    try:
        written = write(json.loads(args.json.read_text()), paths(args.json, args.out))
    except Unavailable as exc:
        print(f"bench: no charts: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
