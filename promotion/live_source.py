"""Reading the challenger's live figures: serving's ``/metrics`` or Prometheus' HTTP API.

``PROMOTION_LIVE_METRICS_URL`` is either serving's ``/metrics`` URL, or several comma-separated
(one per replica: their counters are summed), or a Prometheus base URL (no ``/metrics`` at the
end), asked with ``sum by (...)`` so it sees every replica it scrapes. Both give the same
:class:`~promotion.evidence.Sample` rows: the series the gate reads, for one model, summed over
replicas and reduced to the labels below. Counters are totals since each replica started.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from promotion import evidence as ev
from stack_common.errors import StackError, one_line

logger = logging.getLogger(__name__)

TIMEOUT_S = 10.0
SETTING = "PROMOTION_LIVE_METRICS_URL"

# Series the gate and `stack-registry live` read -> (labels kept, how replicas combine).
SERIES: dict[str, tuple[tuple[str, ...], str]] = {
    ev.CHALLENGER_REQUESTS: (("alias", "version", "mode", "result"), "sum"),
    ev.CHALLENGER_DURATION: (("alias", "version", "mode", "le"), "sum"),
    ev.SHADOW_PREDICTIONS: (("alias", "version", "agreement"), "sum"),
    ev.DIFFERENCE_SUM: (("alias", "version"), "sum"),
    ev.DIFFERENCE_COUNT: (("alias", "version"), "sum"),
    ev.CANARY_ACTIVE: (("alias", "version"), "max"),
    ev.CANARY_STOPPED: (("alias", "version", "reason"), "sum"),
    ev.CANARY_FALLBACKS: (("alias", "version"), "sum"),
    ev.REQUESTS: (("alias", "version", "status"), "sum"),
    ev.DURATION: (("version", "le"), "sum"),
}


class LiveMetricsError(StackError):
    """The live figures could not be read (not configured, unreachable, not understood)."""


def split_urls(value: str | None) -> tuple[str, list[str]]:
    """``("metrics", [urls])`` or ``("prometheus", [base])`` from the setting's value."""
    urls = [url.strip().rstrip("/") for url in (value or "").split(",") if url.strip()]
    if not urls:
        raise LiveMetricsError(
            f"{SETTING} is not set: set it to serving's /metrics URL(s), comma-separated, or "
            "to Prometheus' URL (docs/monitoring.md)"
        )
    for url in urls:
        if urlsplit(url).scheme not in ("http", "https"):
            raise LiveMetricsError(f"{SETTING}: {url!r} is not an http(s) URL; fix it")
    metrics = [urlsplit(url).path.endswith("/metrics") for url in urls]
    if all(metrics):
        return "metrics", urls
    if len(urls) == 1:
        return "prometheus", urls
    raise LiveMetricsError(
        f"{SETTING}={value!r} mixes several URLs that are not serving's /metrics: give every "
        "replica's /metrics URL, or one Prometheus URL"
    )


def _get(url: str, **params: str) -> requests.Response:
    try:
        answer = requests.get(url, params=params or None, timeout=TIMEOUT_S)
        answer.raise_for_status()
    except requests.RequestException as exc:
        raise LiveMetricsError(
            f"the live metrics at {url} could not be read ({one_line(str(exc), 160)}): check "
            f"{SETTING} and that serving (or Prometheus) runs"
        ) from None
    return answer


def combine(samples: Iterable[ev.Sample]) -> list[ev.Sample]:
    """Samples of the same name and kept labels as one: summed (counters) or max (gauges)."""
    combined: dict[tuple, ev.Sample] = {}
    for sample in samples:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        before = combined.get(key)
        if before is not None:
            how = SERIES[sample.name][1]
            value = max(before.value, sample.value) if how == "max" else before.value + sample.value
            sample = ev.Sample(sample.name, sample.labels, value)
        combined[key] = sample
    return list(combined.values())


def from_metrics_text(text: str, model: str) -> list[ev.Sample]:
    """The gate's series of ``model`` in one replica's Prometheus text, labels reduced."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kept = SERIES.get(sample.name)
            if kept is None or sample.labels.get("model") != model:
                continue
            labels = {name: sample.labels.get(name, "") for name in kept[0]}
            found.append(ev.Sample(sample.name, labels, float(sample.value)))
    return combine(found)


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal holding ``value``."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def prometheus_queries(model: str) -> dict[str, str]:
    """One instant query per series: the model's series summed (or maxed) by the kept labels."""
    return {
        name: f"{how} by ({', '.join(labels)}) ({name}{{model={promql_string(model)}}})"
        for name, (labels, how) in SERIES.items()
    }


def from_prometheus_answer(name: str, body: dict) -> list[ev.Sample]:
    """Samples from an ``/api/v1/query`` answer (an instant vector)."""
    if body.get("status") != "success" or body["data"]["resultType"] != "vector":
        raise LiveMetricsError(
            f"Prometheus refused the query for {name}: {one_line(str(body.get('error', body)))}"
        )
    labels = SERIES[name][0]
    return [
        ev.Sample(name, {key: row["metric"].get(key, "") for key in labels}, float(row["value"][1]))
        for row in body["data"]["result"]
    ]


def read_samples(setting: str | None, model: str) -> list[ev.Sample]:
    """Every series the gate reads for ``model``, summed over serving's replicas."""
    kind, urls = split_urls(setting)
    if kind == "metrics":
        found = []
        for url in urls:
            found += from_metrics_text(_get(url).text, model)
        logger.info("read live figures of %r from %d /metrics URL(s)", model, len(urls))
        return combine(found)
    samples = []
    for name, query in prometheus_queries(model).items():
        answer = _get(f"{urls[0]}/api/v1/query", query=query)
        try:
            body = answer.json()
        except ValueError:
            raise LiveMetricsError(
                f"{urls[0]} did not answer like Prometheus (no JSON at /api/v1/query): check "
                f"{SETTING}; serving's own URL ends with /metrics"
            ) from None
        samples += from_prometheus_answer(name, body)
    return samples
