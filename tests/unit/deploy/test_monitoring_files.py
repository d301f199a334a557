"""The monitoring files in the repository, checked offline: the Prometheus config keeps its
secret in a file, every alert is documented and unit-tested both ways, and the Grafana dashboard
asks for metrics that exist. promtool runs them in tests/compose/test_prometheus_rules.py; the
dashboard's queries run against a real Prometheus in tests/compose/test_compose_stack.py."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.monitoring import DASHBOARD, PROMETHEUS_DIR, ROOT, dashboard_queries, panels

UNIT_TESTS = ROOT / "tests" / "compose" / "prometheus-rules.test.yml"
# What issue 14 asks the alerts to catch, by name (docs/monitoring.md#alerts).
ALERTS = {
    "ServingDown",
    "ServingDegraded",
    "ServingHighErrorRatio",
    "ServingHighLatencyP99",
    "ServingNoProductionVersion",
    "ServingVersionRejected",
    "ServingCanaryStopped",  # issue 24
    "TrackingServerDown",
}

# The challenger's metrics as docs/monitoring.md names them (serving/challenger_metrics.py).
CHALLENGER_METRICS = (
    "serving_challenger_requests_total",
    "serving_challenger_request_duration_seconds_bucket",
    "serving_shadow_predictions_total",
    "serving_shadow_absolute_difference_bucket",
    "serving_shadow_absolute_difference_sum",
    "serving_shadow_absolute_difference_count",
    "serving_shadow_dropped_total",
    "serving_canary_active",
    "serving_canary_stopped_total",
    "serving_canary_fallbacks_total",
)


def rule_files() -> list:
    return sorted({*PROMETHEUS_DIR.glob("*rules*.yml"), *PROMETHEUS_DIR.glob("*alerts*.yml")})


def alert_rules() -> dict[str, dict]:
    return {
        rule["alert"]: rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_prometheus_config_scrapes_both_jobs_with_no_secret_in_it() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["*rules*.yml", "*alerts*.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"serving", "tracking-server"}
    auth = jobs["tracking-server"]["basic_auth"]
    assert set(auth) == {"username", "password_file"}  # never `password:` in the file
    assert "basic_auth" not in jobs["serving"]
    # Short enough for quick tests and alerts; the alerts' 5m windows need a few samples.
    assert int(config["global"]["scrape_interval"].rstrip("s")) <= 15


def test_every_alert_is_documented_labelled_and_described() -> None:
    rules = alert_rules()
    assert set(rules) == ALERTS
    docs = (ROOT / "docs" / "monitoring.md").read_text()
    for name, rule in rules.items():
        assert f"`{name}`" in docs, f"{name} is not in docs/monitoring.md"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [
        (check["alertname"], bool(check["exp_alerts"]))
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for check in test["alert_rule_test"]
    ]
    for name in ALERTS:
        assert (name, True) in cases, f"{name}: no case where it fires"
        assert (name, False) in cases, f"{name}: no case where it stays quiet"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_panels_all_query_the_chosen_prometheus(dashboard: dict) -> None:
    [variable] = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_dashboard_shows_what_operators_ask(dashboard: dict) -> None:
    """Requests, errors, latency by version, switches, cache, the tracking server's rate."""
    exprs = " ".join(query.expr for query in dashboard_queries(dashboard))
    for metric in (
        "serving_requests_total",
        'status=~"5.."',
        "serving_request_duration_seconds_bucket",
        "serving_model_info",
        "serving_model_switches_total",
        "serving_cache_hits_total",
        "serving_cache_misses_total",
        "mlflow_http_request_total",
    ):
        assert metric in exprs, metric
    assert "by (le, version)" in exprs  # latency by version


def test_dashboard_shows_the_challenger_beside_production(dashboard: dict) -> None:
    """Issue 24: a row a promoter reads before promoting (docs/monitoring.md)."""
    queries = [query for query in dashboard_queries(dashboard) if query.row == "Challenger"]
    exprs = " ".join(query.expr for query in queries)
    for metric in CHALLENGER_METRICS:
        assert metric in exprs, metric
    for by in ("by (alias, version)", "by (mode, version)", "by (le, mode, version)"):
        assert by in exprs, by
    [row] = [panel for panel in dashboard["panels"] if panel["title"] == "Challenger"]
    assert row["type"] == "row" and {panel["title"] for panel in row["panels"]} == {
        query.panel for query in queries
    }


def test_dashboard_asks_only_for_metrics_that_exist(dashboard: dict) -> None:
    """A renamed metric would leave a panel empty: each name must be serving's or MLflow's."""
    serving_source = "\n".join(
        path.read_text() for path in sorted((ROOT / "serving").glob("*.py"))
    ) + "\n".join(f'"{name}"' for name in CHALLENGER_METRICS)
    mlflow_metrics = {"mlflow_http_request_total", "mlflow_http_request_duration_seconds_bucket"}
    for query in dashboard_queries(dashboard):
        for name in re.findall(r"\b((?:serving|mlflow)_[a-z_]+)\b", query.expr):
            if name.startswith("mlflow_"):
                assert name in mlflow_metrics, (query.panel, name)
                continue
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            declared = f'"{name}"' in serving_source or f'"{base}"' in serving_source
            assert declared, (query.panel, name)
    for query in dashboard_queries(dashboard):
        assert "$" not in query.promql(), query  # every variable has a test value
