"""A framework's no-op: a bare Flask app whose POST /token only returns the token endpoint's
``authorization_pending`` answer (the same body, status and headers), served by gunicorn's gthread
worker with the options ``qr-oidc serve`` used up to issue 15 (``WORKERS`` processes of
``THREADS`` threads). It no longer follows the provider's server (``provider.server``), which
issue 15 changes: it is a fixed, informational yardstick for bench.cpu and bench.ab. The
benchmark's targets are ratios to node-oidc-provider and to the signing ceiling (bench/README.md).

    python -m bench.bare --port P --workers W --threads T --body-file F

``F`` holds the JSON body to answer (bench.cpu and bench.ab write the one the real endpoint
answers).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def make_app(body_file: Path):
    from flask import Flask, Response

    app = Flask("bare")
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    body: list[bytes] = []  # read at the first request: the file is written once the server runs

    @app.post("/token")
    def token():
        if not body:
            body.append(body_file.read_bytes())
        return Response(body[0], status=400, mimetype="application/json", headers=headers)

    @app.get("/ping")
    def ping():
        return "ok"

    return app


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--long-poll-max", type=int, default=25)
    parser.add_argument("--body-file", required=True)
    args = parser.parse_args(argv)

    app = make_app(Path(args.body_file))
    _gunicorn(app, "127.0.0.1", args.port, args.workers, args.threads, args.long_poll_max)


def _gunicorn(app, host: str, port: int, workers: int, threads: int, long_poll_max: int):
    """gunicorn's gthread worker as ``qr-oidc serve`` ran it up to issue 15."""
    from gunicorn.app.base import BaseApplication

    class Bare(BaseApplication):
        def load_config(self):
            for key, value in {
                "bind": f"{host}:{port}", "workers": max(1, workers), "threads": max(1, threads),
                "worker_connections": max(1, threads) + 100, "worker_class": "gthread",
                "timeout": long_poll_max + 30, "graceful_timeout": 5, "keepalive": 5,
                "accesslog": None, "errorlog": "-", "loglevel": "warning",
            }.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    Bare().run()


if __name__ == "__main__":
    main()
