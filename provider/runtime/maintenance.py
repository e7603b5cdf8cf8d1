"""Background upkeep in every serving process: purge expired tickets (and the risk hints'
denials older than a day, grants/signals.py), rotate keys when due, remove retired keys whose
tokens have all expired. It never blocks a request: it runs in its own daemon thread with its
own database sessions, and every step it takes is safe to race with the same step on another
instance (conditional UPDATEs and DELETEs by time)."""

from __future__ import annotations

import logging
import threading
import time

from qr_oidc.grants.authorization_code import purge_redeemed
from qr_oidc.grants.signals import DAY
from qr_oidc.keys.keyset import ALGORITHMS
from qr_oidc.keys.rotation import NotReady, due, remove_expired, rotate
from qr_oidc.provider.settings import Settings
from qr_oidc.provider.storage.notify import purge_events
from qr_oidc.provider.web.sessions import purge as purge_sessions

log = logging.getLogger("qr_oidc.maintenance")


def run_once(parts) -> None:
    settings = parts.settings
    parts.tickets.mark_expired()
    purged = parts.tickets.purge()
    if purged:
        log.info("purged %d expired tickets", purged)
    parts.limiter.purge()
    purge_events(parts.db)
    purge_sessions(parts.db)
    purge_redeemed(parts.db)
    parts.tickets.signals.purge(time.time() - DAY)  # denials older than the hints count
    period = settings.key_rotation_period
    if period:
        for alg in ALGORITHMS:
            if due(parts.db, alg, period):
                try:
                    kid = rotate(parts.db, alg, settings.key_passphrase,
                                 min_published=min_publication(settings))
                except NotReady:
                    continue
                if kid:
                    log.info("rotated %s: %s signs now", alg, kid)
    longest = max(settings.access_token_ttl, settings.id_token_ttl)
    removed = remove_expired(parts.db, longest)
    if removed:
        log.info("removed %d retired keys", removed)


def min_publication(settings: Settings) -> float:
    """How long a next key must be published before it may sign: longer than any JWKS cache."""
    return settings.jwks_max_age + 2 * settings.key_refresh


def start(parts) -> threading.Thread:
    interval = max(1, parts.settings.maintenance_interval)
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
