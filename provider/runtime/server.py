"""The production server: uvicorn's event loop (uvloop, httptools) in gunicorn's processes.

Each worker process (one by default: then the server is that one process, with no gunicorn
master) runs one event loop serving provider/web/events.py's ASGI app: the hot paths
(status long polls, the ticket grants' token polls and issuance, the phone's scan, approve and
deny) are coroutines on the loop, their database work in a few threads; everything else is the
Flask app, in a pool of ``THREADS`` threads behind a2wsgi. A waiting page costs a coroutine, not
a thread. gunicorn keeps what it did before: ``WORKERS`` processes, a worker that dies is
replaced, SIGTERM stops gracefully. The app is built once in the master (so a bad
configuration or a wrong key passphrase stops the server before it binds) and each worker
starts with fresh connection pools; the event loop's parts (the notifier, the database
threads) start in the worker, at the ASGI lifespan's startup. docs/performance.md compares the
servers and bridges this was chosen from.
"""

from __future__ import annotations

import gc
import os
import resource
import sys

from gunicorn.app.base import BaseApplication
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from qr_oidc.provider.metrics import ENV as METRICS_DIR
from qr_oidc.provider.runtime.deliveries import start as start_deliveries
from qr_oidc.provider.runtime.maintenance import start as start_maintenance
from qr_oidc.provider.web.events import EventApp


def _raise_open_files() -> None:
    """Every held long poll is an open socket: take the hard limit of open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class _Server(Server):
    """uvicorn's server, telling the app when it starts to stop (held long polls answer)."""

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        # what the app built at start lives as long as the process: keep the collector off it,
        # so that a full collection with ten thousand long polls held walks only theirs
        gc.freeze()

    def handle_exit(self, sig, frame):
        app = _APP[1] if len(_APP) > 1 else None
        if app is not None:
            app.shutting_down()
        super().handle_exit(sig, frame)


class Worker(UvicornWorker):
    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,  # the app logs each request by route pattern; paths carry codes
        "proxy_headers": False,  # QR_OIDC_TRUSTED_PROXIES decides (provider/web/events.py)
        "server_header": False,
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(3)  # gunicorn's WORKER_BOOT_ERROR


class _Gunicorn(BaseApplication):
    def __init__(self, app, options: dict):
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.application


def _post_fork(_server, _worker):
    parts = _APP[0].extensions["qr_oidc"]
    # connections opened in the master must not be shared by the forked workers
    parts.db.engine.dispose(close=False)
    if parts.db._autocommit is not None:
        parts.db._autocommit.dispose(close=False)


def _child_exit(_server, worker):
    """A worker ended: its live gauges (open long polls) leave the metrics' sum."""
    if os.environ.get(METRICS_DIR):
        from prometheus_client import multiprocess  # (imported only in multiprocess mode)

        multiprocess.mark_process_dead(worker.pid)


_APP: list = []


def asgi_app(app):
    """The ASGI app ``qr-oidc serve`` runs for the Flask ``app``."""
    return EventApp(app, app.extensions["qr_oidc"], on_start=[start_maintenance,
                                                                start_deliveries])


def run(app, host: str, port: int, workers: int, threads: int, long_poll_max: float) -> None:
    """Serve ``app`` (its settings give ``threads``, the Flask side's thread pool).

    One worker is one process: uvicorn's server in this process, with no supervisor (a gunicorn
    master would hold a second copy of the app, about 100 MB, for nothing but restarts; run it
    under systemd or a container runtime that restarts it). Several are gunicorn's workers."""
    _raise_open_files()
    served = asgi_app(app)
    _APP[:] = [app, served]
    if max(1, workers) == 1:
        config = Config(served, host=host, port=port, timeout_keep_alive=5, log_config=None,
                        **Worker.CONFIG_KWARGS)
        _Server(config).run()
        return
    options = {
        "bind": f"{host}:{port}",
        "workers": max(1, workers),
        "worker_class": "qr_oidc.provider.runtime.server.Worker",
        "timeout": int(long_poll_max) + 30,
        "graceful_timeout": 5,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "post_fork": _post_fork,
        "child_exit": _child_exit,
        "proc_name": "qr-oidc",
    }
    _Gunicorn(served, options).run()
