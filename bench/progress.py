"""What bench/run shows while it runs: "step n of N" lines, and a bar for each timed run when
standard error is a terminal (nothing more in a log: the step lines are plain text)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import click


def terminal() -> bool:
    return sys.stderr.isatty()


class Steps:
    """Numbered steps over the whole run (every database's steps counted together)."""

    def __init__(self, total: int, log):
        self.total = total
        self.done = 0
        self.log = log

    def __call__(self, message: str) -> None:
        self.done += 1
        self.log(f"step {self.done} of {self.total}: {message}")


@contextlib.contextmanager
def timed(label: str, seconds: float):
    """A bar filling over ``seconds`` on a terminal while the block runs (a wrk run of that
    length); no output otherwise."""
    if not terminal() or seconds <= 0:
        yield
        return
    stop = threading.Event()
    ticks = max(1, int(seconds * 10))

    def draw():
        started = time.monotonic()
        with click.progressbar(length=ticks, label=f"  {label}", file=sys.stderr, width=30,
                               show_eta=False, show_percent=False,
                               item_show_func=lambda item: item) as bar:
            done = 0
            while not stop.wait(0.1):
                elapsed = time.monotonic() - started
                now = min(ticks, int(elapsed * 10))
                bar.update(now - done, f"{elapsed:4.1f}/{seconds:g} s")
                done = now
            bar.update(ticks - done, "done")

    thread = threading.Thread(target=draw, name="bench-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
