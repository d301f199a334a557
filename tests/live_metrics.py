"""A serving replica's live metrics as the contract of docs/monitoring.md names them, in a real
``prometheus_client`` registry served over real HTTP on 127.0.0.1, for the gate's tests.

Serving's own process is tested for what it counts (tests/e2e/test_challenger.py); the gate's
tests only need its ``/metrics`` text, so they fill the same metric names by hand and can say
exactly how many requests each replica saw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_wsgi_server

SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
DIFFERENCES = (0.0, 0.01, 0.1, 0.5, 1.0, 5.0)


class Replica:
    """One serving replica's /metrics (``url``), counted with :meth:`answer` and friends."""

    def __init__(self, model: str) -> None:
        self.model = model
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "serving_requests_total", "answers", ["model", "version", "alias", "status"], registry=r
        )
        self.duration = Histogram(
            "serving_request_duration_seconds",
            "s",
            ["model", "version"],
            buckets=SECONDS,
            registry=r,
        )
        self.challenger = Counter(
            "serving_challenger_requests_total",
            "challenger requests",
            ["model", "alias", "version", "mode", "result"],
            registry=r,
        )
        self.challenger_duration = Histogram(
            "serving_challenger_request_duration_seconds",
            "s",
            ["model", "alias", "version", "mode"],
            buckets=SECONDS,
            registry=r,
        )
        self.predictions = Counter(
            "serving_shadow_predictions_total",
            "labels",
            ["model", "alias", "version", "agreement"],
            registry=r,
        )
        self.difference = Histogram(
            "serving_shadow_absolute_difference",
            "diff",
            ["model", "alias", "version"],
            buckets=DIFFERENCES,
            registry=r,
        )
        self.canary_active = Gauge(
            "serving_canary_active", "canary", ["model", "alias", "version"], registry=r
        )
        self.canary_stopped = Counter(
            "serving_canary_stopped_total",
            "stops",
            ["model", "alias", "version", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "serving_canary_fallbacks_total", "fallbacks", ["model", "alias", "version"], registry=r
        )
        self.dropped = Counter(
            "serving_shadow_dropped_total", "drops", ["model", "reason"], registry=r
        )
        self.server, self.thread = start_wsgi_server(0, addr="127.0.0.1", registry=r)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"

    def answer(self, version: str, n: int, seconds: float, status: str = "200") -> None:
        """``n`` answers of production (alias production) to clients."""
        for _ in range(n):
            self.requests.labels(self.model, version, "production", status).inc()
            self.duration.labels(self.model, version).observe(seconds)

    def challenge(self, version: str, mode: str, n: int, seconds: float, errors: int = 0) -> None:
        """``n`` requests to the challenger (``errors`` of them failed)."""
        for i in range(n):
            result = "error" if i < errors else "ok"
            self.challenger.labels(self.model, "challenger", version, mode, result).inc()
            self.challenger_duration.labels(self.model, "challenger", version, mode).observe(
                seconds
            )

    def compare(self, version: str, differences: list[float]) -> None:
        for value in differences:
            self.difference.labels(self.model, "challenger", version).observe(value)

    def labels(self, version: str, agree: int, disagree: int) -> None:
        if agree:
            self.predictions.labels(self.model, "challenger", version, "agree").inc(agree)
        if disagree:
            self.predictions.labels(self.model, "challenger", version, "disagree").inc(disagree)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@contextlib.contextmanager
def two_replicas(model: str) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas of one model, stopped afterwards (the gate sums them)."""
    first, second = Replica(model), Replica(model)
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()
