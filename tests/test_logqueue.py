"""The access log's writer thread (provider/runtime/logqueue.py): every line, in order; a bounded
queue that drops and counts rather than grow when the log stalls; what is queued written at exit.
(That every request of a real server gets its line is in test_audit.py.)"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qr_oidc.provider.runtime.logqueue import BackgroundHandler


class Collect(logging.Handler):
    def __init__(self, gate: threading.Event | None = None):
        super().__init__()
        self.lines: list[str] = []
        self.gate = gate
        self.flushed = 0

    def emit(self, record):
        if self.gate is not None:
            self.gate.wait(30)
        self.lines.append(record.getMessage())

    def flush(self):
        self.flushed += 1


def logger_with(handler, name):
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_every_line_is_written_in_order_from_many_threads_and_drained_at_exit():
    target = Collect()
    handler = BackgroundHandler(target)
    log = logger_with(handler, "test.logqueue.order")

    def work(n):
        for i in range(500):
            log.info("t%d %d", n, i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.drain()  # what atexit does
    assert len(target.lines) == 8 * 500
    for n in range(8):  # each thread's lines in the order it logged them
        mine = [line for line in target.lines if line.startswith(f"t{n} ")]
        assert mine == [f"t{n} {i}" for i in range(500)]
    assert target.flushed >= 1
    assert not handler._thread.is_alive()


def test_a_stalled_log_drops_and_counts_lines_instead_of_growing_without_bound():
    gate = threading.Event()
    target = Collect(gate)
    handler = BackgroundHandler(target, max_queued=100)
    log = logger_with(handler, "test.logqueue.stall")
    for i in range(1000):  # the writer is stuck on the first line; the queue holds 100
        log.info("line %d", i)
    assert handler._queue.qsize() <= 100
    assert handler.dropped >= 1000 - 100 - 1
    dropped = handler.dropped
    gate.set()
    handler.drain()
    assert target.lines[0] == "line 0"
    assert f"{dropped} access log lines dropped: the log could not keep up" in target.lines
    assert len(target.lines) == 1000 - dropped + 1
