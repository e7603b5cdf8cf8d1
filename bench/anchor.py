"""node-oidc-provider, the same-run anchor (bench/node_anchor/server.js).

Installed on first use with ``npm ci`` from bench/node_anchor/package-lock.json (the exact
version package.json pins; npm's offline cache is used when it has the packages) into
bench/node_anchor/node_modules (not committed). Started as one node process pinned to the
server core like ``qr-oidc serve``; fed device codes through its bench-only port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import requests

from . import servers

FOLDER = Path(__file__).with_name("node_anchor")


class AnchorUnavailable(RuntimeError):
    """node or npm is missing, or the pinned package could not be installed."""


def pinned_version() -> str:
    return json.loads((FOLDER / "package.json").read_text())["dependencies"]["oidc-provider"]


def installed_version() -> str | None:
    try:
        meta = FOLDER / "node_modules" / "oidc-provider" / "package.json"
        return json.loads(meta.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def node_version() -> str:
    try:
        return subprocess.run([shutil.which("node") or "node", "--version"], check=False,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def ensure_installed(log=print) -> str:
    """The pinned oidc-provider in node_modules (``npm ci`` when it is not there yet)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise AnchorUnavailable("node and npm are needed for the node-oidc-provider anchor "
                                "(Node 20 or later)")
    want = pinned_version()
    if installed_version() == want:
        return want
    log(f"installing oidc-provider {want} into {FOLDER / 'node_modules'} (npm ci)")
    result = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=FOLDER, check=False, capture_output=True, text=True, timeout=900,
        stdin=subprocess.DEVNULL)
    if result.returncode != 0 or installed_version() != want:
        raise AnchorUnavailable(f"npm ci failed ({result.returncode}):\n"
                                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return want


class Anchor:
    """One node-oidc-provider process: its token endpoint at ``url``/token, its bench routes on
    a second port."""

    def __init__(self, folder: Path):
        port, self.bench_port = servers.free_port(), servers.free_port()
        self.bench_url = f"http://127.0.0.1:{self.bench_port}"
        self.server = servers.Server(
            "node-oidc-provider",
            [shutil.which("node") or "node", str(FOLDER / "server.js"), "--port", str(port),
             "--bench-port", str(self.bench_port)],
            {**os.environ, "NODE_ENV": "production"}, folder, port,
            "/bench/ping", ready_port=self.bench_port)
        self.url = self.server.url
        self._client: dict | None = None

    def start(self) -> Anchor:
        self.server.start()
        return self

    def wait_ready(self) -> None:
        self.server.wait_ready()
        self._client = requests.get(self.bench_url + "/bench/client", timeout=30).json()

    @property
    def client(self) -> dict:
        assert self._client is not None, "wait_ready first"
        return self._client

    def codes(self, count: int, state: str = "pending") -> list[str]:
        """``count`` device codes made through the provider's models (``pending`` or
        ``approved``: accountId and an openid grant, ready to redeem once)."""
        out: list[str] = []
        while len(out) < count:
            n = min(5000, count - len(out))
            response = requests.post(self.bench_url + "/bench/device-codes",
                                     params={"n": n, "state": state}, timeout=300)
            response.raise_for_status()
            out.extend(response.json()["device_codes"])
        return out

    def forget(self) -> int:
        """Drop the approved codes made so far and what redeeming them stored."""
        response = requests.post(self.bench_url + "/bench/forget", timeout=300)
        response.raise_for_status()
        return response.json()["forgotten"]

    def rss_mib(self) -> float:
        return self.server.tree_rss_mib()

    def stop(self) -> None:
        self.server.stop()


def write_codes(path: Path, codes: list[str]) -> None:
    path.write_text("".join(c + "\n" for c in codes))
