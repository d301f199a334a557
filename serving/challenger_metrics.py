"""The challenger's figures on live traffic, beside production's (``GET /metrics``).

Production's answers are counted from nginx's log as before (``serving_requests_total``, whose
``alias`` label says whether production or the canary answered). These count what only the
supervisor sees: the mirrored requests it sent the challenger and how their answers compared
with production's, and the canary's own outcomes, fallbacks and stop. ``stack-registry
promote`` reads them as the gate's live evidence (docs/monitoring.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.agreement import Comparison

# |challenger - production| of one numeric prediction, in the model's own unit.
DIFFERENCE_BUCKETS = (
    0.0, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0, 1000.0,
)  # fmt: skip
DROP_REASONS = ("queue_full", "too_large", "no_challenger")


class ChallengerMetrics:
    def __init__(
        self, registry: CollectorRegistry, model: str, duration_buckets: Sequence[float]
    ) -> None:
        """``duration_buckets``: production's (serving/metrics.py), so both sides compare."""
        self.model = model
        r = registry
        self.requests = Counter(
            "serving_challenger_requests_total",
            "Requests the challenger was sent: mirrored (mode=shadow) or answered for clients "
            "(mode=canary); result=error: not a 2xx/4xx answer in time (canary: production "
            "answered instead).",
            ["model", "alias", "version", "mode", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "serving_challenger_request_duration_seconds",
            "Time the challenger took to answer (shadow: measured by the supervisor; canary: "
            "nginx's upstream time).",
            ["model", "alias", "version", "mode"],
            buckets=duration_buckets,
            registry=r,
        )
        self.predictions = Counter(
            "serving_shadow_predictions_total",
            "Label predictions of mirrored requests: the challenger's agreed with production's "
            "or not (a different number of predictions: all disagree).",
            ["model", "alias", "version", "agreement"],
            registry=r,
        )
        self.difference = Histogram(
            "serving_shadow_absolute_difference",
            "|challenger - production| of each numeric prediction of mirrored requests.",
            ["model", "alias", "version"],
            buckets=DIFFERENCE_BUCKETS,
            registry=r,
        )
        self.dropped = Counter(
            "serving_shadow_dropped_total",
            "Requests sampled for the shadow but not sent to the challenger: its queue was full, "
            "the request was too large for one datagram, or no challenger was loaded.",
            ["model", "reason"],
            registry=r,
        )
        self.canary_active = Gauge(
            "serving_canary_active",
            "1 while the challenger version answers a share of requests (the canary), else 0.",
            ["model", "alias", "version"],
            registry=r,
        )
        self.canary_stopped = Counter(
            "serving_canary_stopped_total",
            "Canaries stopped by themselves: error rate or p99 beyond production's by the margin.",
            ["model", "alias", "version", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "serving_canary_fallbacks_total",
            "Canary requests the challenger failed (5xx or no answer) that production answered.",
            ["model", "alias", "version"],
            registry=r,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(model, reason)

    def shadow_answered(
        self, alias: str, version: str, ok: bool, seconds: float, comparison: Comparison | None
    ) -> None:
        labels = (self.model, alias, version)
        self.requests.labels(*labels, "shadow", "ok" if ok else "error").inc()
        self.duration.labels(*labels, "shadow").observe(seconds)
        if comparison is None:
            return
        for difference in comparison.absolute_differences:
            self.difference.labels(*labels).observe(difference)
        if comparison.agree:
            self.predictions.labels(*labels, "agree").inc(comparison.agree)
        if comparison.disagree:
            self.predictions.labels(*labels, "disagree").inc(comparison.disagree)

    def shadow_dropped(self, reason: str, count: int = 1) -> None:
        self.dropped.labels(self.model, reason).inc(count)

    def canary_answered(self, alias: str, version: str, ok: bool, seconds: float | None) -> None:
        labels = (self.model, alias, version)
        self.requests.labels(*labels, "canary", "ok" if ok else "error").inc()
        if seconds is not None:
            self.duration.labels(*labels, "canary").observe(seconds)
        if not ok:
            self.fallbacks.labels(*labels).inc()

    def canary_running(self, alias: str, version: str, running: bool) -> None:
        self.canary_active.labels(self.model, alias, version).set(1 if running else 0)

    def canary_stopped_for(self, alias: str, version: str, reason: str) -> None:
        self.canary_stopped.labels(self.model, alias, version, reason).inc()
        self.canary_running(alias, version, False)
