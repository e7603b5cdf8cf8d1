"""A log handler that hands records to a thread of its own: the access log's.

With one line per request and a thread per request, a plain ``StreamHandler`` makes every request
queue for the handler's lock while another writes and flushes; on the fast poll path that was a
fifth of the worker's thread time (docs/performance.md). Here a request only puts the record on
a queue; one thread per process formats and writes, in order, as fast as it comes. The thread is
started in the process that first logs (so after gunicorn's fork, in each worker), and what is
queued is written out when the process exits normally.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading


class BackgroundHandler(logging.Handler):
    def __init__(self, target: logging.Handler):
        super().__init__()
        self.target = target
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pid: int | None = None
        self._start_lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: the queue is safe
        if self._pid != os.getpid():
            self._start()
        self._queue.put(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()  # (a forked child's copy may hold the parent's)
            threading.Thread(target=self._run, name="qr-oidc-log", daemon=True).start()
            atexit.register(self.drain)
            self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            self.target.handle(record)

    def drain(self) -> None:
        """Write what is queued now (at exit)."""
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                break
            if record is not None:
                self.target.handle(record)
        self.target.flush()
