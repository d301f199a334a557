"""The challenger's live figures and the gate's verdict on them, kept free of HTTP and MLflow.

Serving counts what the challenger did on live traffic (shadow: mirrored requests and how its
answers compared with production's; canary: the requests it answered) in the metrics of
docs/monitoring.md. :mod:`promotion.live_source` reads them, summed over every replica, as
:class:`Sample` rows; this module turns those rows into one version's :class:`Figures` and judges
them against the ``PROMOTION_*`` settings, so the arithmetic has unit tests of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from promotion.gate import GateDecision

CHALLENGER_REQUESTS = "serving_challenger_requests_total"
CHALLENGER_DURATION = "serving_challenger_request_duration_seconds_bucket"
SHADOW_PREDICTIONS = "serving_shadow_predictions_total"
DIFFERENCE_SUM = "serving_shadow_absolute_difference_sum"
DIFFERENCE_COUNT = "serving_shadow_absolute_difference_count"
CANARY_ACTIVE = "serving_canary_active"
CANARY_STOPPED = "serving_canary_stopped_total"
CANARY_FALLBACKS = "serving_canary_fallbacks_total"
REQUESTS = "serving_requests_total"
DURATION = "serving_request_duration_seconds_bucket"


@dataclass(frozen=True)
class Sample:
    """One series of a metric, summed over every replica, with the labels the gate reads."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Figures:
    """What one version did on live traffic (production's answers, or the challenger's)."""

    requests: float = 0.0
    errors: float = 0.0
    # (upper bound in seconds, cumulative count), as a Prometheus histogram's buckets.
    buckets: tuple[tuple[float, float], ...] = ()
    agree: float = 0.0
    disagree: float = 0.0
    difference_sum: float = 0.0
    difference_count: float = 0.0
    canary: str = "off"  # active, stopped (reason), off
    fallbacks: float = 0.0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def compared_labels(self) -> float:
        return self.agree + self.disagree

    @property
    def disagreement(self) -> float | None:
        """Share of label predictions that differed from production's (None: none compared)."""
        return self.disagree / self.compared_labels if self.compared_labels else None

    @property
    def mean_abs_difference(self) -> float | None:
        """Mean |challenger - production| of numeric predictions (None: none compared)."""
        return self.difference_sum / self.difference_count if self.difference_count else None

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative buckets: linear within the bucket the
    rank falls in; a rank in the +Inf bucket gives the highest finite bound (None: no data)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in ordered:
        if cumulative >= rank and cumulative > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = (upper if not math.isinf(upper) else lower), cumulative
    return lower


def _select(samples: Iterable[Sample], name: str, **labels: str | None) -> list[Sample]:
    return [
        s
        for s in samples
        if s.name == name
        and all(value is None or s.labels.get(key) == value for key, value in labels.items())
    ]


def _total(samples: Iterable[Sample], name: str, **labels: str | None) -> float:
    return sum(s.value for s in _select(samples, name, **labels))


def _buckets(samples: Iterable[Sample], name: str, **labels: str | None) -> tuple:
    summed: dict[float, float] = {}
    for s in _select(samples, name, **labels):
        bound = float(s.labels["le"])
        summed[bound] = summed.get(bound, 0.0) + s.value
    return tuple(sorted(summed.items()))


def canary_state(samples: Iterable[Sample], version: str) -> str:
    samples = list(samples)
    if _total(samples, CANARY_ACTIVE, version=version) > 0:
        return "active"
    reasons = sorted(
        {s.labels.get("reason", "?") for s in _select(samples, CANARY_STOPPED, version=version)}
    )
    return f"stopped ({', '.join(reasons)})" if reasons else "off"


def challenger_figures(samples: Iterable[Sample], version: str, mode: str | None = None) -> Figures:
    """Version ``version`` as the challenger: ``mode`` shadow, canary, or None for both."""
    samples = list(samples)
    compared = mode in (None, "shadow")
    return Figures(
        requests=_total(samples, CHALLENGER_REQUESTS, version=version, mode=mode),
        errors=_total(samples, CHALLENGER_REQUESTS, version=version, mode=mode, result="error"),
        buckets=_buckets(samples, CHALLENGER_DURATION, version=version, mode=mode),
        agree=_total(samples, SHADOW_PREDICTIONS, version=version, agreement="agree")
        if compared
        else 0.0,
        disagree=_total(samples, SHADOW_PREDICTIONS, version=version, agreement="disagree")
        if compared
        else 0.0,
        difference_sum=_total(samples, DIFFERENCE_SUM, version=version) if compared else 0.0,
        difference_count=_total(samples, DIFFERENCE_COUNT, version=version) if compared else 0.0,
        canary=canary_state(samples, version),
        fallbacks=_total(samples, CANARY_FALLBACKS, version=version),
    )


def production_figures(samples: Iterable[Sample], version: str) -> Figures:
    """Version ``version`` answering clients (``serving_requests_total``; errors are 5xx)."""
    samples = list(samples)
    answers = _select(samples, REQUESTS, version=version)
    return Figures(
        requests=sum(s.value for s in answers),
        errors=sum(s.value for s in answers if s.labels.get("status", "").startswith("5")),
        buckets=_buckets(samples, DURATION, version=version),
    )


def challenger_versions(samples: Iterable[Sample]) -> list[str]:
    """Every version the metrics show as a challenger, newest (highest number) first."""
    names = (CHALLENGER_REQUESTS, CANARY_ACTIVE, CANARY_STOPPED)
    found = {s.labels["version"] for s in samples if s.name in names and "version" in s.labels}
    return sorted(found, key=lambda v: (not v.isdigit(), -int(v) if v.isdigit() else 0, v))


@dataclass(frozen=True)
class EvidenceRules:
    """The gate's live thresholds (``PROMOTION_*`` settings)."""

    min_requests: int
    max_error_rate: float = 0.01
    max_disagreement: float = 0.05
    max_mean_abs_difference: float | None = None


# The setting behind each rule, named in a refusal.
SETTING = {
    "min_requests": "PROMOTION_MIN_LIVE_REQUESTS",
    "max_error_rate": "PROMOTION_MAX_LIVE_ERROR_RATE",
    "max_disagreement": "PROMOTION_MAX_LIVE_DISAGREEMENT",
    "max_mean_abs_difference": "PROMOTION_MAX_LIVE_MEAN_ABS_DIFFERENCE",
}


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.2g}%" if share < 0.1 else f"{share:.0%}"


def summary(figures: Figures) -> str:
    """The evidence in a few words, for the success line and the promoted_reason tag."""
    parts = [f"{figures.requests:.0f} live requests", f"error rate {percent(figures.error_rate)}"]
    if figures.disagreement is not None:
        parts.append(
            f"disagreement {percent(figures.disagreement)} of {figures.compared_labels:.0f} labels"
        )
    if figures.mean_abs_difference is not None:
        parts.append(f"mean abs difference {figures.mean_abs_difference:.4g}")
    if figures.disagreement is None and figures.mean_abs_difference is None:
        parts.append("no shadow answers compared")
    return ", ".join(parts)


def judge(version: str, figures: Figures, rules: EvidenceRules) -> GateDecision:
    """Pass, with the evidence in a few words; or the first rule broken, as one line that says
    what to do."""
    name = SETTING
    if figures.requests < rules.min_requests:
        return GateDecision(
            False,
            f"version {version} has {figures.requests:.0f} live requests (shadow and canary), "
            f"the gate asks for {rules.min_requests} ({name['min_requests']}): let it see more "
            "traffic (serving's SERVING_SHADOW_ALIAS on it, SERVING_SHADOW_PERCENT or "
            "SERVING_CANARY_PERCENT above 0)",
        )
    rate = figures.error_rate
    if rate is not None and rate > rules.max_error_rate:
        return GateDecision(
            False,
            f"version {version} failed {percent(rate)} of its {figures.requests:.0f} live "
            f"requests, the gate allows {percent(rules.max_error_rate)} "
            f"({name['max_error_rate']}): find why in serving's log before promoting it",
        )
    disagreement = figures.disagreement
    if disagreement is not None and disagreement > rules.max_disagreement:
        return GateDecision(
            False,
            f"version {version} disagreed with production on {percent(disagreement)} of "
            f"{figures.compared_labels:.0f} label predictions, the gate allows "
            f"{percent(rules.max_disagreement)} ({name['max_disagreement']}): check that the "
            "change is wanted",
        )
    difference, limit = figures.mean_abs_difference, rules.max_mean_abs_difference
    if difference is not None and limit is not None and difference > limit:
        return GateDecision(
            False,
            f"version {version}'s predictions differ from production's by {difference:.4g} on "
            f"average over {figures.difference_count:.0f} values, the gate allows {limit:g} "
            f"({name['max_mean_abs_difference']}): check that the change is wanted",
        )
    return GateDecision(True, summary(figures))
