"""Reading the stack's monitoring from the tests: the Grafana dashboard's queries, and a real
Prometheus's answers to them.

The dashboard (deploy/grafana/mlflow-stack.json) is what operators look at, so its every query
is run against the Compose stack's Prometheus after traffic (tests/compose/test_compose_stack.py)
and must return data; its structure is checked offline (tests/unit/deploy/test_monitoring_files.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "mlflow-stack.json"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"

# What Grafana puts in for its built-in variables when it runs a query; values for a test
# against a Prometheus scraping every 5 s that has run for minutes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str
    row: str = ""  # the title of the row the panel is in ("" above the first row)

    def promql(self) -> str:
        """The query as Prometheus gets it from Grafana, built-in variables filled in."""
        expr = self.expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        return expr


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    found, row = [], ""
    for top in dashboard.get("panels", []):
        if top.get("type") == "row":
            row = top["title"]
        for panel in [top, *top.get("panels", [])]:
            for target in panel.get("targets", []):
                found.append(PanelQuery(panel["title"], target["refId"], target["expr"], row))
    return found


class Prometheus:
    """The HTTP API of a running Prometheus."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``promql`` gives now."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=30)
        body = answer.json()
        if answer.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {promql!r}: {body.get('error', body)}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, promql: str) -> float | None:
        """The one sample's value, or None when the query returns nothing."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, f"{promql!r} returned {len(result)} series"
        return float(result[0]["value"][1])

    def wait(
        self, what: str, check: Callable[[], bool], timeout_s: float = 60, every_s: float = 1
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {what} not within {timeout_s:g}s")
            time.sleep(every_s)


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (a histogram_quantile of no traffic is NaN)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)
