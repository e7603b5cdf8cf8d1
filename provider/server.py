"""The production server: gunicorn with threaded workers.

Why threads: a status long poll holds its request open for up to ``LONG_POLL_MAX`` seconds while
doing nothing (it waits on a condition variable, holding no database connection), so a worker
needs many cheap concurrent slots rather than processes. gunicorn's gthread worker starts threads
on demand up to ``THREADS`` (default 1000), so 500 open long polls leave plenty for token polls
and discovery; an idle thread costs a few tens of KiB. Processes (``WORKERS``) add CPU
parallelism for signing; they share state only through the database.
The app is built once in the master (so a bad configuration or a wrong key passphrase stops the
server before it binds) and each worker starts with a fresh connection pool.
"""

from __future__ import annotations

from gunicorn.app.base import BaseApplication


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
    from .maintenance import start
    from .notify import PgListener, SqliteWatcher

    parts = _APP[0].extensions["qr_oidc"]
    # connections opened in the master must not be shared by the forked workers
    parts.db.engine.dispose(close=False)
    if parts.db._autocommit is not None:
        parts.db._autocommit.dispose(close=False)
    parts.keys.start_refresher()
    if parts.db.engine.dialect.name == "postgresql":
        PgListener(parts.db.engine.url, parts.notifier).start()
    elif parts.db.is_sqlite:
        SqliteWatcher(parts.db.engine, parts.notifier).start()
    start(parts)


_APP: list = []


def run(app, host: str, port: int, workers: int, threads: int, long_poll_max: int) -> None:
    _APP[:] = [app]
    options = {
        "bind": f"{host}:{port}",
        "workers": max(1, workers),
        "threads": max(1, threads),
        "worker_connections": max(1, threads) + 100,
        "worker_class": "gthread",
        "timeout": long_poll_max + 30,
        "graceful_timeout": 5,
        "keepalive": 5,
        # room for long bearer tokens: the app answers an oversized one with JSON itself
        "limit_request_field_size": 32768,
        "accesslog": None,  # the app logs each request by route pattern; paths carry scan codes
        "errorlog": "-",
        "loglevel": "warning",
        "post_fork": _post_fork,
        "proc_name": "qr-oidc",
    }
    _Gunicorn(app, options).run()
