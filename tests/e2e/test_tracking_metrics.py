"""The tracking server's /metrics (MLflow's --expose-prometheus, on by default in the launcher):
requests to every worker of the server process summed in one scrape."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from local_stack.processes import Service

pytestmark = pytest.mark.e2e


def requests_counted(url: str) -> float:
    answer = requests.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    total = 0.0
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == "mlflow_http_request_total" and sample.labels["status"] == "200":
                total += sample.value
    return total


def test_metrics_count_the_requests_of_all_workers(shared_tracking_server: Service) -> None:
    url = shared_tracking_server.url
    before = requests_counted(url)
    with requests.Session() as session:
        for _ in range(20):  # new connections land on both workers
            answer = session.get(
                f"{url}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                headers={"Connection": "close"},
                timeout=10,
            )
            assert answer.status_code == 200
    assert requests_counted(url) - before == 20
