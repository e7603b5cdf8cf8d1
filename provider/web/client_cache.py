"""The event path's copy of client rows (provider/web/events.py): what client authentication,
the token core and CORS need of a client, at most half a second old, so a token poll does not
read the client's row each time (grants/client_auth.py authenticates against it)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientRecord:
    """What client authentication, the token core and CORS need of a client row."""

    client_id: str
    secret_hash: str | None
    public: bool
    grant_types: frozenset
    id_token_signed_response_alg: str | None
    auth_method: str
    redirect_uris: tuple
    require_dpop: bool = False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


class ClientCache:
    """Client rows, kept per process for ``ttl`` seconds: a secret or setting changed by the
    operator is seen by every process within a second. An unknown id is never cached."""

    def __init__(self, tickets, ttl: float = 0.5):
        self.tickets, self.ttl = tickets, ttl
        self._rows: dict[str, tuple[float, ClientRecord]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: str) -> ClientRecord | None:
        hit = self._rows.get(client_id)
        at = time.monotonic()
        if hit is not None and hit[0] > at:
            return hit[1]
        row = self.tickets.client_for_poll(client_id)
        if row is None:
            return None
        record = ClientRecord(client_id, *row)
        with self._lock:
            if len(self._rows) > 10_000:
                self._rows.clear()
            self._rows[client_id] = (at + self.ttl, record)
        return record
