"""The gate's Prometheus mode, and the dashboard's Challenger row, against a real Prometheus.

Prometheus (the ``prometheus`` binary on PATH; the test skips, saying so, without it) scrapes two
serving replicas' real ``prometheus_client`` registries (tests/live_metrics.py) every second.
Read through its HTTP API (``sum by``), the gate must see exactly what it sees when it sums the
replicas' ``/metrics`` itself; and every query of the dashboard's Challenger row must return data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from local_stack.processes import Service, free_port, wait_until_up
from promotion import evidence as ev
from promotion.live_source import read_samples
from tests.live_metrics import Replica, two_replicas
from tests.monitoring import DASHBOARD, Prometheus, dashboard_queries, has_data

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="no prometheus binary on PATH (apt-get install prometheus); the Prometheus "
        "mode's queries are unit-tested in tests/unit/promotion/test_evidence.py",
    ),
]


@pytest.fixture
def replicas(unique_name: str) -> Iterator[tuple[Replica, Replica]]:
    with two_replicas(unique_name) as both:
        yield both


@pytest.fixture
def prometheus(tmp_path: Path, replicas: tuple[Replica, Replica]) -> Iterator[Service]:
    targets = [r.url.removeprefix("http://").removesuffix("/metrics") for r in replicas]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "serving", "static_configs": [{"targets": targets}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), tmp_path / "prometheus.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    service = Service("prometheus", process, log, f"http://127.0.0.1:{port}")
    try:
        wait_until_up(service, "/-/ready", 60)
        yield service
    finally:
        service.stop()


def _traffic(first: Replica, second: Replica, version: str) -> None:
    """One round of every kind of series, on both replicas."""
    first.answer("1", 40, 0.004)
    second.answer("1", 10, 0.03, status="503")
    first.challenge(version, "shadow", 20, 0.003, errors=1)
    second.challenge(version, "canary", 10, 0.02, errors=1)
    second.fallbacks.labels(first.model, "challenger", version).inc()
    first.compare(version, [0.0, 0.25, 0.5, 1.0])
    first.labels(version, agree=9, disagree=1)
    second.canary_active.labels(second.model, "challenger", version).set(1)
    first.dropped.labels(first.model, "queue_full").inc()


def test_prometheus_sees_what_the_replicas_say_and_the_challenger_row_has_data(
    prometheus: Service, replicas: tuple[Replica, Replica], unique_name: str
) -> None:
    first, second = replicas
    api = Prometheus(prometheus.url)
    counted = f'sum(serving_challenger_requests_total{{model="{unique_name}"}})'
    second.canary_stopped.labels(unique_name, "challenger", "2", "p99").inc()
    for round_ in range(1, 4):  # rates need a change between scrapes
        _traffic(first, second, "3")
        api.wait(
            f"{counted} == {30 * round_}",
            lambda round_=round_: api.value(counted) == 30 * round_,
            timeout_s=30,
            every_s=0.2,
        )

    # Once both targets' last scrape followed the last change, both ways see the same figures.
    direct = read_samples(f"{first.url},{second.url}", unique_name)

    def seen(samples: list[ev.Sample]) -> tuple:
        return (
            ev.challenger_figures(samples, "2"),
            ev.challenger_figures(samples, "3"),
            ev.production_figures(samples, "1"),
        )

    api.wait(
        "the gate's figures through Prometheus == summed /metrics",
        lambda: seen(read_samples(prometheus.url, unique_name)) == seen(direct),
        timeout_s=30,
        every_s=0.5,
    )
    through = read_samples(prometheus.url, unique_name)
    figures = ev.challenger_figures(through, "3")
    assert (figures.requests, figures.errors, figures.canary) == (90, 6, "active")
    assert figures.disagreement == pytest.approx(0.1)
    assert ev.challenger_figures(through, "2").canary == "stopped (p99)"

    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    row = [query for query in queries if query.row == "Challenger"]
    assert len(row) >= 10
    for query in row:
        assert has_data(api.query(query.promql())), (query.panel, query.ref, query.promql())
