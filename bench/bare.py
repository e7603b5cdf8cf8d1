"""The framework's ceiling: a bare Flask app whose POST /token only returns the token endpoint's
``authorization_pending`` answer (the same body, status and headers), served by the very gunicorn
configuration ``qr-oidc serve`` uses (``provider.server.run``, same options, same workers and
threads), minus the provider's per-worker start-up hook, which needs the provider's parts.

    python -m bench.bare --port P --workers W --threads T --body-file F

``F`` holds the JSON body the real endpoint answered (bench/__main__.py captures it before the
first request to this server).
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

    from provider import server

    # the provider's post_fork opens its database listener and maintenance thread: not ours
    server._post_fork = lambda _server, _worker: None
    app = make_app(Path(args.body_file))
    server.run(app, "127.0.0.1", args.port, args.workers, args.threads, args.long_poll_max)


if __name__ == "__main__":
    main()
