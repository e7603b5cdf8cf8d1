"""Prometheus metrics (``GET /metrics``, SPEC.md "Operating it"), made with prometheus-client.

Off unless ``QR_OIDC_METRICS_TOKEN`` is set: then every serving process counts, and the endpoint
answers only ``Authorization: Bearer <that token>``. With several worker processes the counts
live in prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, a fresh folder per
``qr-oidc serve`` made before the workers fork, see ``prepare``), so one scrape sees every
worker's. Off, each function here returns at once: the hot paths pay one attribute read.

What is counted (names and labels are the contract operators build dashboards on):

- ``qr_oidc_tickets_total{client, kind, event}``: the login funnel. ``kind`` is qr, device,
  authorize (the hosted page's QR) or push; ``event`` created, scanned, approved, denied,
  expired (counted once, when the background upkeep marks it), redeemed;
- ``qr_oidc_ticket_seconds{kind, step}``: seconds from a ticket's creation to its ``scan``, its
  ``decision`` and its ``redemption`` (histograms);
- ``qr_oidc_token_requests_total{grant, outcome}``: token requests by grant type and by outcome
  (``issued`` or the OAuth error code);
- ``qr_oidc_rate_limited_total{limit}``: 429 answers by the limit that gave them;
- ``qr_oidc_long_polls_open{kind}``: long polls held now (status, inbox), summed over workers;
- ``qr_oidc_request_seconds{endpoint}``: request durations by endpoint (histogram).

This module is the base layer's: it knows no framework and nothing of ours.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
_STEP_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Metrics:
    enabled = False

    def start(self) -> None:
        """Make the metrics (once per process, after ``prepare``)."""
        if self.enabled:
            return
        from prometheus_client import Counter, Gauge, Histogram  # (after prepare: see below)

        multi = bool(os.environ.get(ENV))
        self.tickets = Counter("qr_oidc_tickets", "Tickets by client, kind and funnel event.",
                               ["client", "kind", "event"])
        self.ticket_seconds = Histogram(
            "qr_oidc_ticket_seconds", "Seconds from a ticket's creation to a step.",
            ["kind", "step"], buckets=_STEP_BUCKETS)
        self.token_requests = Counter("qr_oidc_token_requests",
                                      "Token requests by grant type and outcome.",
                                      ["grant", "outcome"])
        self.rate_limited = Counter("qr_oidc_rate_limited",
                                    "Requests refused with 429, by limit.", ["limit"])
        self.long_polls = Gauge("qr_oidc_long_polls_open", "Long polls held now.", ["kind"],
                                **({"multiprocess_mode": "livesum"} if multi else {}))
        self.request_seconds = Histogram(
            "qr_oidc_request_seconds", "Request durations by endpoint.", ["endpoint"],
            buckets=_REQUEST_BUCKETS)
        self.enabled = True

    # -- what the code calls (each a no-op while off) ---------------------------------------------
    def ticket(self, client_id: str, kind: str, event: str) -> None:
        if self.enabled:
            self.tickets.labels(client_id, kind, event).inc()

    def step(self, kind: str, step: str, seconds: float | None) -> None:
        if self.enabled and seconds is not None:
            self.ticket_seconds.labels(kind, step).observe(max(0.0, seconds))

    def token_request(self, grant: str | None, outcome: str) -> None:
        if self.enabled:
            self.token_requests.labels(grant or "none", outcome).inc()

    def limited(self, limit: str) -> None:
        if self.enabled:
            self.rate_limited.labels(limit).inc()

    def long_poll(self, kind: str, change: int) -> None:
        if self.enabled:
            self.long_polls.labels(kind).inc(change)

    def request(self, endpoint: str, seconds: float) -> None:
        if self.enabled:
            self.request_seconds.labels(endpoint).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type: every worker's counts."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            REGISTRY,
            CollectorRegistry,
            generate_latest,
            multiprocess,
        )

        if os.environ.get(ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        return generate_latest(registry), CONTENT_TYPE_LATEST


metrics = _Metrics()


def prepare(workers: int) -> None:
    """Before the server's processes fork: with several workers, a fresh folder for the
    multiprocess counts (prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` when first
    imported, which is why nothing imports it before this), removed when the server ends."""
    if workers > 1 and not os.environ.get(ENV):
        folder = tempfile.mkdtemp(prefix="qr-oidc-metrics-")
        os.environ[ENV] = folder
        atexit.register(shutil.rmtree, folder, True)
