"""The gate's live evidence: the arithmetic on summed series, the refusal lines, the settings'
URL forms, the Prometheus queries, and the reading of two real replicas' /metrics over HTTP."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from promotion import evidence as ev
from promotion.live import rows, table
from promotion.live_source import (
    LiveMetricsError,
    from_prometheus_answer,
    prometheus_queries,
    read_samples,
    split_urls,
)
from tests.live_metrics import Replica, two_replicas

MODEL = "grades-regressor"
RULES = ev.EvidenceRules(min_requests=200, max_error_rate=0.01, max_disagreement=0.05)


def s(name: str, value: float, **labels: str) -> ev.Sample:
    return ev.Sample(name, labels, value)


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.1, 0), (0.2, 10), (math.inf, 10)], 0.15),  # halfway into (0.1, 0.2]
        (0.99, [(0.1, 50), (0.2, 100), (math.inf, 100)], 0.198),
        (0.5, [(0.1, 10), (math.inf, 10)], 0.05),  # the first bucket starts at 0
        (0.99, [(0.1, 1), (0.2, 1), (math.inf, 100)], 0.2),  # in +Inf: highest finite bound
        (0.5, [(0.1, 0), (math.inf, 0)], None),
        (0.5, [], None),
    ],
)
def test_quantile_is_prometheus_histogram_quantile(q, buckets, expected) -> None:
    found = ev.histogram_quantile(q, buckets)
    assert found == (None if expected is None else pytest.approx(expected))


SAMPLES = [
    s(ev.CHALLENGER_REQUESTS, 150, version="3", mode="shadow", result="ok"),
    s(ev.CHALLENGER_REQUESTS, 2, version="3", mode="shadow", result="error"),
    s(ev.CHALLENGER_REQUESTS, 46, version="3", mode="canary", result="ok"),
    s(ev.CHALLENGER_REQUESTS, 2, version="3", mode="canary", result="error"),
    s(ev.CHALLENGER_REQUESTS, 999, version="2", mode="shadow", result="ok"),  # an older one
    s(ev.SHADOW_PREDICTIONS, 97, version="3", agreement="agree"),
    s(ev.SHADOW_PREDICTIONS, 3, version="3", agreement="disagree"),
    s(ev.DIFFERENCE_SUM, 12.5, version="3"),
    s(ev.DIFFERENCE_COUNT, 50, version="3"),
    s(ev.CHALLENGER_DURATION, 100, version="3", mode="shadow", le="0.01"),
    s(ev.CHALLENGER_DURATION, 152, version="3", mode="shadow", le="+Inf"),
    s(ev.CANARY_ACTIVE, 1, version="3"),
    s(ev.CANARY_STOPPED, 1, version="2", reason="p99"),
    s(ev.REQUESTS, 990, version="1", status="200"),
    s(ev.REQUESTS, 10, version="1", status="503"),
    s(ev.REQUESTS, 5, version="1", status="400"),
    s(ev.REQUESTS, 48, version="3", status="200"),  # the canary's answers are not production's
]


def test_evidence_of_a_version_is_both_modes_and_its_comparisons() -> None:
    figures = ev.challenger_figures(SAMPLES, "3")
    assert (figures.requests, figures.errors) == (200, 4)
    assert figures.error_rate == pytest.approx(0.02)
    assert figures.disagreement == pytest.approx(0.03)
    assert figures.mean_abs_difference == pytest.approx(0.25)
    assert figures.canary == "active"
    shadow = ev.challenger_figures(SAMPLES, "3", "shadow")
    assert shadow.requests == 152 and shadow.quantile(0.5) == pytest.approx(0.0076)
    canary = ev.challenger_figures(SAMPLES, "3", "canary")
    assert canary.requests == 48 and canary.disagreement is None
    assert ev.challenger_figures(SAMPLES, "2").canary == "stopped (p99)"
    assert ev.challenger_figures(SAMPLES, "4") == ev.Figures()
    production = ev.production_figures(SAMPLES, "1")
    assert (production.requests, production.errors) == (1005, 10)
    assert ev.challenger_versions(SAMPLES) == ["3", "2"]


@pytest.mark.parametrize(
    ("figures", "rules", "line"),
    [
        (
            ev.Figures(requests=12),
            RULES,
            "version 3 has 12 live requests (shadow and canary), the gate asks for 200 "
            "(PROMOTION_MIN_LIVE_REQUESTS): let it see more traffic",
        ),
        (
            ev.Figures(requests=400, errors=20),
            RULES,
            "version 3 failed 5% of its 400 live requests, the gate allows 1% "
            "(PROMOTION_MAX_LIVE_ERROR_RATE)",
        ),
        (
            ev.Figures(requests=400, agree=270, disagree=30),
            RULES,
            "version 3 disagreed with production on 10% of 300 label predictions, the gate "
            "allows 5% (PROMOTION_MAX_LIVE_DISAGREEMENT)",
        ),
        (
            ev.Figures(requests=400, difference_sum=100, difference_count=40),
            ev.EvidenceRules(200, max_mean_abs_difference=1.0),
            "version 3's predictions differ from production's by 2.5 on average over 40 "
            "values, the gate allows 1 (PROMOTION_MAX_LIVE_MEAN_ABS_DIFFERENCE)",
        ),
    ],
)
def test_each_broken_rule_refuses_in_one_line_naming_its_setting(figures, rules, line) -> None:
    decision = ev.judge("3", figures, rules)
    assert not decision.passed
    assert decision.reason.startswith(line)
    assert "\n" not in decision.reason


def test_enough_good_evidence_passes_and_names_it() -> None:
    good = ev.Figures(requests=400, errors=1, agree=297, disagree=3)
    decision = ev.judge("3", good, RULES)
    assert decision == ev.GateDecision(
        True, "400 live requests, error rate 0.25%, disagreement 1% of 300 labels"
    )
    numeric = ev.Figures(requests=200, difference_sum=5, difference_count=100)
    assert ev.judge("3", numeric, RULES).reason.endswith("mean abs difference 0.05")
    # Unset, the mean difference is shown but not judged.
    assert ev.judge("3", ev.Figures(200, difference_sum=1e6, difference_count=1), RULES).passed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://serving:8080/metrics", ("metrics", ["http://serving:8080/metrics"])),
        (
            "http://a:8080/metrics, http://b:8080/metrics/",
            ("metrics", ["http://a:8080/metrics", "http://b:8080/metrics"]),
        ),
        ("http://prometheus:9090/", ("prometheus", ["http://prometheus:9090"])),
        ("https://mon.example/prometheus", ("prometheus", ["https://mon.example/prometheus"])),
    ],
)
def test_the_url_says_which_source(value: str, expected: tuple) -> None:
    assert split_urls(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "PROMOTION_LIVE_METRICS_URL is not set"),
        ("serving:8080/metrics", "is not an http(s) URL"),
        ("http://a:9090,http://b:8080/metrics", "mixes several URLs"),
    ],
)
def test_bad_urls_are_one_line(value: str | None, fragment: str) -> None:
    with pytest.raises(LiveMetricsError, match="PROMOTION_LIVE_METRICS_URL") as raised:
        split_urls(value)
    assert fragment in str(raised.value)


def test_prometheus_is_asked_for_the_model_summed_by_the_kept_labels() -> None:
    queries = prometheus_queries('odd "name" \\')
    assert queries[ev.CHALLENGER_REQUESTS] == (
        "sum by (alias, version, mode, result) "
        '(serving_challenger_requests_total{model="odd \\"name\\" \\\\"})'
    )
    assert queries[ev.CANARY_ACTIVE].startswith("max by (alias, version) (serving_canary_active{")
    assert queries[ev.DURATION].startswith("sum by (version, le) (")
    body = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"version": "3", "le": "+Inf"}, "value": [1.0, "7"]}],
        },
    }
    [sample] = from_prometheus_answer(ev.DURATION, body)
    assert sample == ev.Sample(ev.DURATION, {"version": "3", "le": "+Inf"}, 7.0)
    with pytest.raises(LiveMetricsError, match="Prometheus refused"):
        from_prometheus_answer(ev.DURATION, {"status": "error", "error": "parse error"})


@pytest.fixture
def replicas() -> Iterator[tuple[Replica, Replica]]:
    with two_replicas(MODEL) as both:
        yield both


def test_two_replicas_are_read_over_http_and_summed(replicas: tuple[Replica, Replica]) -> None:
    first, second = replicas
    first.answer("1", 90, 0.004)
    second.answer("1", 10, 0.2, status="500")
    first.challenge("2", "shadow", 30, 0.003, errors=1)
    second.challenge("2", "canary", 20, 0.02)
    first.compare("2", [0.0, 0.5])
    second.compare("2", [1.0])
    second.canary_active.labels(MODEL, "challenger", "2").set(1)
    # Another model's series on the same replica are left out.
    first.challenger.labels("another-model", "challenger", "2", "shadow", "ok").inc(1000)

    samples = read_samples(f"{first.url},{second.url}", MODEL)
    figures = ev.challenger_figures(samples, "2")
    assert (figures.requests, figures.errors) == (50, 1)
    assert figures.mean_abs_difference == pytest.approx(0.5)
    assert figures.canary == "active"
    production = ev.production_figures(samples, "1")
    assert (production.requests, production.errors) == (100, 10)
    assert production.quantile(0.5) == pytest.approx(0.001 + 0.004 * 50 / 90)  # in (1, 5] ms

    found = rows(samples, "1")
    assert [(r["who"], r["version"], r["mode"]) for r in found] == [
        ("production", "1", "answers"),
        ("challenger", "2", "both"),
        ("challenger", "2", "shadow"),
        ("challenger", "2", "canary"),
    ]
    lines = table(found)
    assert lines[0].split()[:4] == ["who", "version", "mode", "requests"]
    assert lines[1].split()[:5] == ["production", "1", "answers", "100", "10%"]


def test_an_unreachable_replica_is_one_line_naming_it(replicas: tuple[Replica, Replica]) -> None:
    first, second = replicas
    second.stop()
    with pytest.raises(LiveMetricsError) as raised:
        read_samples(f"{first.url},{second.url}", MODEL)
    message = str(raised.value)
    assert second.url in message and "PROMOTION_LIVE_METRICS_URL" in message
    assert "\n" not in message


def test_the_promote_command_checks_live_evidence_only_when_asked() -> None:
    from mlflow.entities.model_registry import ModelVersion

    from promotion.live import live_check
    from promotion.settings import PromotionSettings

    mv = ModelVersion(MODEL, "3", creation_timestamp=0)
    assert live_check(PromotionSettings.from_env({})) is None  # default: no live evidence

    asked = PromotionSettings.from_env(
        {"PROMOTION_MIN_LIVE_REQUESTS": "200", "PROMOTION_LIVE_METRICS_URL": "http://x/metrics"}
    )

    def unreadable(url: str | None, model: str) -> list[ev.Sample]:
        raise LiveMetricsError(f"the live metrics at {url} could not be read")

    check = live_check(asked, read=unreadable)
    assert check is not None
    assert check(mv) == ev.GateDecision(
        False, "the live metrics at http://x/metrics could not be read"
    )

    def plenty(url: str | None, model: str) -> list[ev.Sample]:
        assert model == MODEL
        return [s(ev.CHALLENGER_REQUESTS, 250, version="3", mode="shadow", result="ok")]

    check = live_check(asked, read=plenty)
    assert check is not None and check(mv).passed
