"""A relying party's (or push gateway's) HTTP endpoint on loopback that records what it receives:
for CIBA pings and push gateway notices. It can be down (answer 503) or slow for the next few
requests, to see the provider retry."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers import free_port


class Receiver:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[dict] = []  # every request, in order: path, headers, body, status
        self._lock = threading.Condition()
        self._fail = 0
        self._slow = 0
        self._delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    status = 200
                    delay = 0.0
                    if receiver._fail:
                        receiver._fail -= 1
                        status = 503
                    elif receiver._slow:
                        receiver._slow -= 1
                        delay = receiver._delay
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender gave up waiting
                    status = None
                with receiver._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append({"path": self.path, "headers": headers,
                                              "body": body, "status": status,
                                              "at": time.time()})
                    receiver._lock.notify_all()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._fail = count

    def slow_next(self, count: int, seconds: float) -> None:
        with self._lock:
            self._slow, self._delay = count, seconds

    def wait_for(self, count: int, timeout: float) -> list[dict]:
        """The first ``count`` requests received, waiting at most ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"received {len(self.received)} of {count}: "
                                         f"{self.received}")
                self._lock.wait(left)
            return list(self.received[:count])
