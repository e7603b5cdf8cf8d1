"""A log handler that hands records to a thread of its own: the access log's.

With one line per request and a thread per request, a plain ``StreamHandler`` makes every request
queue for the handler's lock while another writes and flushes; on the token poll path that was a
fifth of the worker's thread time (docs/performance.md). Here a request only puts the record on
a queue; one thread per process formats and writes, in order, as fast as it comes. The thread is
started in the process that first logs (so after gunicorn's fork, in each worker), and what is
queued is written out when the process exits normally. The queue is bounded: should whatever reads
the log stall, lines beyond ``MAX_QUEUED`` are dropped and counted (a line says how many once the
writer catches up) rather than held until the worker runs out of memory.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading

MAX_QUEUED = 100_000


class BackgroundHandler(logging.Handler):
    def __init__(self, target: logging.Handler, max_queued: int = MAX_QUEUED):
        super().__init__()
        self.target = target
        self.max_queued = max_queued
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # (C, no lock to queue for)
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.dropped = 0

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: the queue is safe
        if self._pid != os.getpid():
            self._start()
        if self._queue.qsize() < self.max_queued:  # (a bound give or take a few threads)
            self._queue.put(record)
        else:
            self.dropped += 1  # (a lost count under a race costs one in the tally, no more)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()  # (a forked child's copy is the parent's)
            self._thread = threading.Thread(target=self._run, name="qr-oidc-log", daemon=True)
            self._thread.start()
            atexit.register(self.drain)
            self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is not None:
                    self.target.handle(record)
                if self.dropped and (record is None or self._queue.empty()):
                    dropped, self.dropped = self.dropped, 0  # caught up: say what was lost
                    self.target.handle(logging.makeLogRecord({
                        "name": "qr_oidc.access", "levelno": logging.WARNING,
                        "levelname": "WARNING", "args": (dropped,),
                        "msg": "%d access log lines dropped: the log could not keep up"}))
            except Exception:
                pass
            if record is None:
                return

    def drain(self, timeout: float = 5.0) -> None:
        """At exit: let the writer finish what is queued, in order, then flush."""
        if self._thread is None or self._pid != os.getpid():
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self.target.flush()
