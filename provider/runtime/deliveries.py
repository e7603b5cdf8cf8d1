"""The sender: every serving process sends what the outbox owes (provider/storage/deliveries.py).

One daemon thread per process looks for due notices when this process added one, and at least
every ``ROUND`` seconds for the other instances'; it claims a few at a time (a claim is a
conditional ``UPDATE``, so two instances never send one notice at once) and posts them from a
small pool of threads, each attempt bounded by ``DELIVERY_TIMEOUT``, so a slow or dead endpoint
holds one of them for a few seconds and nothing else. A notice that fails (no answer, an error,
a status other than 2xx) is tried again after 1, 2, 4 ... 60 seconds until ``DELIVERY_TTL``.

A push gateway notice is signed: ``X-QR-OIDC-Signature: sha256=<hex HMAC-SHA256 of the body
under QR_OIDC_PUSH_WEBHOOK_SECRET>``; the body carries its own ``id`` and ``sent_at`` so a gateway
can refuse a replay. A CIBA ping carries ``Authorization: Bearer <client_notification_token>``
(CIBA Core §10.2). Redirects are not followed. Nothing here logs a body or a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from qr_oidc.provider.storage.deliveries import FORM_KINDS

log = logging.getLogger("qr_oidc.deliveries")

ROUND = 1.0  # seconds between looks for other instances' notices
SENDERS = 4  # notices posted at once per process
BATCH = 16


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a 3xx is an answer that is not 2xx: the notice is tried again


_OPENER = urllib.request.build_opener(_NoRedirects)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(delivery: dict, secret: str, timeout: float) -> int | None:
    """POST one notice; the HTTP status, or None when no answer came."""
    form = delivery["kind"] in FORM_KINDS
    headers = {"Content-Type": "application/x-www-form-urlencoded" if form
               else "application/json", "User-Agent": "qr-oidc"}
    if delivery["authorization"]:
        headers["Authorization"] = "Bearer " + delivery["authorization"]
    if delivery["kind"] == "push":
        headers["X-QR-OIDC-Signature"] = signature(secret, delivery["body"])
    request = urllib.request.Request(delivery["url"], data=delivery["body"], headers=headers,
                                     method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(65536)
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):  # refused, timed out, reset, a URL that cannot be posted to
        return None


class Sender:
    """The sending thread of one process (``start``)."""

    def __init__(self, outbox, settings):
        self.outbox = outbox
        self.secret = settings.push_webhook_secret
        self.timeout = settings.delivery_timeout
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="qr-oidc-delivery")
        self.busy = threading.BoundedSemaphore(SENDERS)
        self.sent = self.failed = 0

    def run(self) -> None:
        added = self.outbox.added
        while not self.stopping.is_set():
            added.wait(ROUND)
            added.clear()
            try:
                self.round()
            except Exception:  # the database may be restarting: the next round tries again
                log.exception("delivery round failed")

    def round(self) -> None:
        free = 0
        while self.busy.acquire(blocking=False):
            free += 1
        if not free:
            return
        claimed = self.outbox.claim(min(free, BATCH), hold=self.timeout + 5)
        for _ in range(free - len(claimed)):
            self.busy.release()
        for delivery in claimed:
            self.pool.submit(self._send, delivery)

    def _send(self, delivery: dict) -> None:
        try:
            status = post(delivery, self.secret, self.timeout)
            if status is not None and 200 <= status < 300:
                self.sent += 1
                self.outbox.delivered(delivery["id"])
            else:
                self.failed += 1
                again = self.outbox.failed(delivery)
                log.warning("%s notice not delivered (attempt %d, %s)%s", delivery["kind"],
                            delivery["attempts"], status or "no answer",
                            "" if again else "; dropped")
        except Exception:
            log.exception("delivery failed")
        finally:
            self.busy.release()
            self.outbox.added.set()  # a free sender: look again

    def stop(self) -> None:
        self.stopping.set()
        self.outbox.added.set()


def start(parts) -> Sender:
    sender = Sender(parts.outbox, parts.settings)
    threading.Thread(target=sender.run, name="qr-oidc-deliveries", daemon=True).start()
    return sender
