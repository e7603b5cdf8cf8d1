"""Background upkeep in every serving process: purge expired tickets, rotate keys when due,
remove retired keys whose tokens have all expired. It never blocks a request: it runs in its own
daemon thread with its own database sessions, and every step it takes is safe to race with the
same step on another instance (conditional UPDATEs and DELETEs by time)."""

from __future__ import annotations

import logging
import threading

from qr_oidc.grants.authorization_code import purge_redeemed
from qr_oidc.keys.keyset import ALGORITHMS
from qr_oidc.keys.rotation import NotReady, due, remove_expired, rotate
from qr_oidc.provider.storage.notify import purge_events
from qr_oidc.provider.web.sessions import purge as purge_sessions

log = logging.getLogger("qr_oidc.maintenance")


def run_once(parts) -> None:
    settings = parts.settings
    purged = parts.tickets.purge()
    if purged:
        log.info("purged %d expired tickets", purged)
    parts.limiter.purge()
    purge_events(parts.db)
    purge_sessions(parts.db)
    purge_redeemed(parts.db)
    period = int(settings["KEY_ROTATION_PERIOD"])
    if period:
        for alg in ALGORITHMS:
            if due(parts.db, alg, period):
                try:
                    kid = rotate(parts.db, alg, settings["KEY_PASSPHRASE"],
                                 min_published=min_publication(settings))
                except NotReady:
                    continue
                if kid:
                    log.info("rotated %s: %s signs now", alg, kid)
    longest = max(int(settings["ACCESS_TOKEN_TTL"]), int(settings["ID_TOKEN_TTL"]))
    removed = remove_expired(parts.db, longest)
    if removed:
        log.info("removed %d retired keys", removed)


def min_publication(settings: dict) -> float:
    """How long a next key must be published before it may sign: longer than any JWKS cache."""
    return int(settings["JWKS_MAX_AGE"]) + 2 * int(settings["KEY_REFRESH"])


def start(parts) -> threading.Thread:
    interval = max(1, int(parts.settings["MAINTENANCE_INTERVAL"]))
    stop = threading.Event()

    def loop():
        while not stop.wait(interval):
            try:
                run_once(parts)
            except Exception:  # keep going: the next round may succeed (database restarting)
                log.exception("maintenance round failed")

    thread = threading.Thread(target=loop, name="qr-oidc-maintenance", daemon=True)
    thread.start()
    return thread
