"""Serving's /metrics against real processes: every answer counted once, by the version that
gave it, across a blue/green switch; the switch itself shows in the served-version metrics."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from local_stack.processes import wait_until_up
from tests.conftest import STARTUP_TIMEOUT_S, ServiceFactory
from tests.helpers import (
    LoadGenerator,
    run_cli,
    train_and_promote,
    write_grades,
)

pytestmark = pytest.mark.e2e

ROW = {"dataframe_split": {"columns": ["hours"], "data": [[5.0]]}}


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    answer = requests.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def counted(metrics: dict) -> Counter:
    """serving_requests_total as {(version, status): count}."""
    return Counter(
        {
            (labels["version"], labels["status"]): int(value)
            for labels, value in metrics.get("serving_requests_total", [])
        }
    )


def one(metrics: dict, name: str, **labels: str) -> float:
    matching = [v for found, v in metrics[name] if labels.items() <= found.items()]
    assert len(matching) == 1, (name, labels, metrics.get(name))
    return matching[0]


def settle(url: str, expected: Counter, timeout_s: float = 5.0) -> dict:
    """nginx logs an answer right after sending it: give the last lines a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = scrape(url)
        if counted(metrics) == expected or time.monotonic() > deadline:
            return metrics
        time.sleep(0.2)


def test_every_answer_counted_once_by_version_across_a_switch(
    services: ServiceFactory, unique_name: str, tmp_path: Path
) -> None:
    tracking = services.tracking()
    env = train_and_promote(tracking.url, unique_name)
    serving = services.serving(
        tracking.url,
        unique_name,
        env={
            "SERVING_POLL_SECONDS": "1",
            "SERVING_WORKERS": "2",
            "SERVING_MAX_BODY_MB": "1",
            "LOG_FORMAT": "json",
        },
        wait=False,
    )
    # Version 2 is trained while serving starts with version 1; it is promoted under load below.
    better = write_grades(tmp_path / "better.csv", intercept=20, slope=6, noise_sd=2)
    trained = run_cli("training", "--print-version", "--data", str(better), env=env)
    assert trained.code == 0, trained.stderr
    assert trained.stdout.strip() == "2"
    wait_until_up(serving, "/ping", STARTUP_TIMEOUT_S)
    url = serving.url

    metrics = scrape(url)
    assert counted(metrics) == Counter()
    assert one(metrics, "serving_model_info", version="1", alias="production") == 1
    assert one(metrics, "serving_model_switches_total", result="switched") == 0
    assert one(metrics, "serving_cache_misses_total", model=unique_name) == 1
    assert one(metrics, "serving_download_bytes_total", model=unique_name) > 0
    assert one(metrics, "serving_tracking_server_up") == 1
    assert one(metrics, "serving_model_load_seconds", model=unique_name) > 0

    # Predictions, and answers nginx and MLflow refuse: each counted with version 1.
    expected: Counter = Counter()
    request_ids = set()
    with requests.Session() as session:
        for _ in range(25):
            answer = session.post(f"{url}/invocations", json=ROW, timeout=10)
            expected[(answer.headers["X-Model-Version"], str(answer.status_code))] += 1
            request_ids.add(answer.headers["X-Request-ID"])
        too_large = session.post(
            f"{url}/invocations",
            data=b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert too_large.status_code == 413
        assert "X-Model-Version" not in too_large.headers  # nginx's own answer
        request_ids.add(too_large.headers["X-Request-ID"])
        expected[("1", "413")] += 1
        wrong_type = session.post(
            f"{url}/invocations",
            data="hours\n5",
            headers={"Content-Type": "text/html"},
            timeout=10,
        )
        assert wrong_type.status_code == 415
        expected[(wrong_type.headers["X-Model-Version"], "415")] += 1
        # A client's own request id comes back, and names the refusal in the log (below).
        bad_column = session.post(
            f"{url}/invocations",
            json={"dataframe_records": [{"minutes": 5}]},
            headers={"X-Request-ID": "client-request-7"},
            timeout=10,
        )
        assert bad_column.status_code == 400
        assert bad_column.headers["X-Request-ID"] == "client-request-7"
        expected[(bad_column.headers["X-Model-Version"], "400")] += 1
    # nginx names every other answer with an id of its own, one per request.
    assert len(request_ids) == 26
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in request_ids)
    assert expected == Counter(
        {("1", "200"): 25, ("1", "413"): 1, ("1", "415"): 1, ("1", "400"): 1}
    )
    metrics = settle(url, expected)
    assert counted(metrics) == expected
    assert one(metrics, "serving_request_duration_seconds_count", version="1") == 28
    assert one(metrics, "serving_in_flight_requests") == 0

    # Under continuous load, version 2 is promoted and switched to.
    with LoadGenerator(url, concurrency=4) as load:
        MlflowClient(tracking.url).set_registered_model_alias(unique_name, "production", "2")
        deadline = time.monotonic() + 120
        while load.versions_seen() != {"1", "2"} and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # more answers from version 2, under load
    assert load.errors == []
    expected += Counter((version, str(status)) for status, version in load.answers)
    metrics = settle(url, expected)
    assert counted(metrics) == expected
    assert {v for v, _ in expected} == {"1", "2"}
    assert expected[("2", "200")] > 1

    assert one(metrics, "serving_model_info", version="2") == 1
    assert [labels["version"] for labels, _ in metrics["serving_model_info"]] == ["2"]
    assert one(metrics, "serving_model_switches_total", result="switched") == 1
    assert one(metrics, "serving_model_switches_total", result="rejected") == 0
    assert one(metrics, "serving_cache_misses_total", model=unique_name) == 2
    for version in ("1", "2"):
        total = sum(n for (v, _), n in expected.items() if v == version)
        assert one(metrics, "serving_request_duration_seconds_count", version=version) == total

    # LOG_FORMAT=json: the supervisor's, nginx's and the scoring processes' lines are JSON
    # objects naming the model and the version served.
    deadline = time.monotonic() + 60  # logged once the old pool has finished its requests
    while "now serving version 2" not in serving.log_path.read_text():
        assert time.monotonic() < deadline, serving.log_tail()
        time.sleep(0.5)
    entries = [json.loads(line) for line in serving.log_path.read_text().splitlines() if line]
    assert {"serving.supervisor", "serving.nginx", "uvicorn.error"} <= {
        e["logger"] for e in entries
    }
    assert {e.get("model") for e in entries} == {unique_name}
    switched = next(e for e in entries if e["message"].startswith("now serving version 2"))
    assert switched["version"] == "2"
    assert {e["version"] for e in entries if e["logger"] == "uvicorn.error"} == {"1", "2"}
    refused = [e for e in entries if e.get("request_id") == "client-request-7"]
    assert [(e["logger"], e["version"]) for e in refused] == [("serving.batching", "1")]
    assert refused[0]["message"].startswith("prediction refused (400")
