"""Wake long polls when a ticket changes.

A change made in this process wakes its waiters at once. Waiters also re-read the database at least
every ``recheck`` seconds, so a change made by another process (another worker or instance) is seen
within that bound even without a cross-process channel.
"""

from __future__ import annotations

import threading
import time


class LocalNotifier:
    def __init__(self, recheck: float = 1.0):
        self.recheck = recheck
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}

    def version(self, key: str) -> int:
        with self._cond:
            return self._versions.get(key, 0)

    def publish(self, key: str) -> None:
        with self._cond:
            if len(self._versions) > 10000:
                # forget old tickets; a waiter that loses its entry just re-reads the database
                self._versions.clear()
            self._versions[key] = self._versions.get(key, 0) + 1
            self._cond.notify_all()

    def wait(self, key: str, seen: int, timeout: float) -> None:
        """Return when ``key`` moves past version ``seen``, or after at most ``timeout``/``recheck``."""
        deadline = time.monotonic() + min(timeout, self.recheck)
        with self._cond:
            while self._versions.get(key, 0) == seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
