"""The load generator: Debian's ``wrk`` with bench/token.lua, over loopback only, on its own core
(``servers.LOAD_CORE``) when pinning is on."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

from . import servers

QR_GRANT = "urn:qr-oidc:params:oauth:grant-type:qr-ticket"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
LUA = Path(__file__).with_name("token.lua")


def wrk_path() -> str | None:
    return shutil.which("wrk")


def basic(client: dict) -> str:
    raw = f"{client['client_id']}:{client['client_secret']}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def wrk(url: str, tickets_file: Path, auth: str, mode: str, seconds: int, connections: int,
        threads: int = 1, start: int = 0, grant: str = QR_GRANT, param: str = "ticket") -> dict:
    """One wrk run against ``url``/token; returns what token.lua's done() printed, plus rates.

    ``rate`` counts every answer; ``ok_rate`` only 200s (tokens issued); ``pending_rate`` only
    ``authorization_pending`` answers (what a pending poll must answer). ``grant``/``param``:
    the grant type and the parameter carrying the ticket (``DEVICE_GRANT``/``device_code`` for
    node-oidc-provider's device codes).
    """
    assert url.startswith("http://127.0.0.1:"), "loopback only"
    argv = servers.pinned([
        wrk_path() or "wrk", "-t", str(threads), "-c", str(max(connections, threads)),
        "-d", f"{seconds}s", "--timeout", "10s", "-s", str(LUA), url + "/token",
        "--", str(tickets_file), auth, mode, str(threads), str(start), grant, param,
    ], servers.LOAD_CORE)
    result = subprocess.run(argv, check=False, capture_output=True, text=True,
                            timeout=seconds + 60,
                            stdin=subprocess.DEVNULL)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout}\n{result.stderr}")
    out = json.loads(line[len("BENCH_JSON "):])
    duration = out["duration_us"] / 1e6
    out["rate"] = out["requests"] / duration
    out["ok_rate"] = out["ok"] / duration
    out["pending_rate"] = out["pending"] / duration
    for key in ("p50", "p90", "p99", "max"):
        out[f"{key}_ms"] = out.pop(f"{key}_us") / 1000
    return out
