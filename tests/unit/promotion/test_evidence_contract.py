"""The gate reads what serving really writes: serving's own ChallengerMetrics, filled through
its own methods, parsed by the gate (tests/live_metrics.py writes the same names by hand)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from promotion import evidence as ev
from promotion.live_source import from_metrics_text
from serving.agreement import Comparison
from serving.challenger_metrics import ChallengerMetrics
from serving.metrics import DURATION_BUCKETS

MODEL = "grades-regressor"


def test_the_gate_reads_servings_own_challenger_metrics() -> None:
    registry = CollectorRegistry()
    served = ChallengerMetrics(registry, MODEL, DURATION_BUCKETS)
    served.shadow_answered("challenger", "4", True, 0.003, Comparison([0.5, 1.5], 0, 0))
    served.shadow_answered("challenger", "4", True, 0.004, Comparison([], agree=3, disagree=1))
    served.shadow_answered("challenger", "4", False, 0.2, None)
    served.canary_running("challenger", "4", True)
    served.canary_answered("challenger", "4", True, 0.01)
    served.canary_answered("challenger", "4", False, None)
    served.canary_stopped_for("challenger", "4", "p99")

    samples = from_metrics_text(generate_latest(registry).decode(), MODEL)
    figures = ev.challenger_figures(samples, "4")
    assert (figures.requests, figures.errors) == (5, 2)
    assert figures.mean_abs_difference == pytest.approx(1.0)
    assert figures.disagreement == pytest.approx(0.25)
    assert (figures.canary, figures.fallbacks) == ("stopped (p99)", 1)
    assert ev.challenger_figures(samples, "4", "shadow").quantile(0.5) is not None
