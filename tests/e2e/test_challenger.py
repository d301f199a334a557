"""A promoter sees the challenger on live traffic before promoting it, and clients never notice.

Real tracking server, real serving (nginx, scoring processes, the challenger's own pool), real
HTTP clients. The challenger follows its alias (``challenger``) as production follows its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServiceFactory
from tests.helpers import LoadGenerator, run_cli, train_and_promote, wait_for

pytestmark = pytest.mark.e2e

CHALLENGER_MODEL = Path(__file__).with_name("challenger_model.py")
ROWS = {"dataframe_split": {"columns": ["hours"], "data": [[1.0], [4.0], [9.0]]}}


def register_challenger(tracking_uri: str, name: str, mode: str) -> str:
    """A version of tests/e2e/challenger_model.py behaving as ``mode``, with alias challenger."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    with mlflow.start_run():
        mlflow.log_metric("test_rmse", 0.1)  # the offline gate's figure: it passes
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(CHALLENGER_MODEL),
            model_config={"mode": mode},
            pip_requirements=["mlflow"],
        )
    client = MlflowClient(tracking_uri)
    version = str(client.create_model_version(name, info.model_uri, model_id=info.model_id).version)
    client.set_registered_model_alias(name, "challenger", version)
    return version


def samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    found = []
    for family in text_string_to_metric_families(text):
        found += [(s.labels, s.value) for s in family.samples if s.name == name]
    return found


def total(url: str, name: str, **labels: str) -> float:
    return sum(v for found, v in samples(url, name) if labels.items() <= found.items())


def challenger_health(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=5).json().get("challenger", {})


def wait_for_challenger(url: str, version: str | None) -> None:
    wait_for(
        lambda: challenger_health(url).get("version") == version,
        timeout_s=120,
        what=f"challenger version {version}",
    )


def test_the_shadow_counts_every_mirrored_request_and_never_touches_a_client_answer(
    services: ServiceFactory, unique_name: str
) -> None:
    tracking = services.tracking()
    env = train_and_promote(tracking.url, unique_name)
    fair = register_challenger(tracking.url, unique_name, "fair")
    serving = services.serving(
        tracking.url,
        unique_name,
        env={
            "SERVING_SHADOW_ALIAS": "challenger",
            "SERVING_SHADOW_PERCENT": "100",
            "SERVING_POLL_SECONDS": "0.5",
            "SERVING_WORKERS": "2",
        },
    )
    wait_for_challenger(serving.url, fair)
    production = requests.post(f"{serving.url}/invocations", json=ROWS, timeout=10)
    assert production.headers["X-Model-Version"] == "1"
    assert production.headers["X-Model-Alias"] == "production"

    # Every answered request is mirrored once, after its answer: the counts are exact.
    for _ in range(29):
        answer = requests.post(f"{serving.url}/invocations", json=ROWS, timeout=10)
        assert answer.status_code == 200 and answer.json() == production.json()
    shadow = {"mode": "shadow", "version": fair}
    wait_for(
        lambda: total(serving.url, "serving_challenger_requests_total", **shadow) == 30,
        timeout_s=30,
        what="30 mirrored requests",
    )
    time.sleep(1)
    assert total(serving.url, "serving_challenger_requests_total", **shadow) == 30
    assert total(serving.url, "serving_challenger_requests_total", result="error") == 0
    # Three numeric predictions per request: the distribution of |challenger - production|.
    assert total(serving.url, "serving_shadow_absolute_difference_count", version=fair) == 90
    assert total(serving.url, "serving_shadow_absolute_difference_sum", version=fair) > 0
    assert total(serving.url, "serving_requests_total", version="1") == 30
    assert total(serving.url, "serving_requests_total", version=fair) == 0

    # The gate can ask for live evidence: 30 mirrored requests are not the 31 it asks for.
    gate = env | {"PROMOTION_LIVE_METRICS_URL": f"{serving.url}/metrics"}
    refused = run_cli(
        "promotion", "promote", "--version", fair, env=gate | {"PROMOTION_MIN_LIVE_REQUESTS": "31"}
    )
    assert refused.code != 0
    assert f"version {fair} has 30 live requests" in refused.stderr.strip()
    assert len(refused.stderr.strip().splitlines()) == 1
    client = MlflowClient(tracking.url)
    assert client.get_model_version_by_alias(unique_name, "production").version == "1"

    # Under load, the challenger turns slow, then fails every request, then is deleted: the
    # clients' answers, statuses and version never change.
    with LoadGenerator(serving.url, concurrency=6) as load:
        slow = register_challenger(tracking.url, unique_name, "slow")
        wait_for_challenger(serving.url, slow)
        time.sleep(2)
        breaks = register_challenger(tracking.url, unique_name, "breaks")
        wait_for_challenger(serving.url, breaks)
        time.sleep(2)
        client.delete_registered_model_alias(unique_name, "challenger")
        wait_for_challenger(serving.url, None)
        time.sleep(1)
    assert load.failures == []
    assert load.versions_seen() == {"1"}
    assert len(load.bodies) == 1 and len(load.answers) > 100
    assert total(serving.url, "serving_challenger_requests_total", version=slow) > 0
    assert total(serving.url, "serving_shadow_dropped_total", reason="queue_full") > 0
    assert (
        total(serving.url, "serving_challenger_requests_total", version=breaks, result="error") > 0
    )
    assert total(serving.url, "serving_shadow_dropped_total", reason="no_challenger") > 0
    assert requests.get(f"{serving.url}/health", timeout=5).json()["status"] == "ok"

    # With the evidence it asks for (version 2 has seen more since), the gate promotes it.
    promoted = run_cli(
        "promotion", "promote", "--version", fair, env=gate | {"PROMOTION_MIN_LIVE_REQUESTS": "30"}
    )
    assert promoted.code == 0, promoted.stderr
    assert client.get_model_version_by_alias(unique_name, "production").version == fair


def test_a_canary_that_fails_live_is_answered_by_production_and_stops_itself(
    services: ServiceFactory, unique_name: str
) -> None:
    tracking = services.tracking()
    train_and_promote(tracking.url, unique_name)
    breaks = register_challenger(tracking.url, unique_name, "breaks")
    serving = services.serving(
        tracking.url,
        unique_name,
        env={
            "SERVING_SHADOW_ALIAS": "challenger",
            "SERVING_CANARY_PERCENT": "30",
            "SERVING_CANARY_MIN_REQUESTS": "20",
            "SERVING_POLL_SECONDS": "0.5",
            "SERVING_WORKERS": "2",
        },
    )
    wait_for_challenger(serving.url, breaks)
    with LoadGenerator(serving.url, concurrency=4) as load:
        wait_for(
            lambda: total(serving.url, "serving_canary_stopped_total", reason="error_rate") == 1,
            timeout_s=60,
            what="the canary to stop itself",
        )
        stopped_at = len(load.answers)
        wait_for(lambda: len(load.answers) > stopped_at + 50, what="answers after the stop")
    # Its one good answer reached a client, named as the canary's; every failure of it was
    # answered by production.
    assert load.failures == []
    assert load.versions_seen() == {"1", breaks}
    assert total(serving.url, "serving_requests_total", alias="challenger", version=breaks) == 1
    fallbacks = total(serving.url, "serving_canary_fallbacks_total", version=breaks)
    assert fallbacks >= 20
    assert total(serving.url, "serving_canary_active", version=breaks) == 0
    # /health says so from the supervisor's next look (SERVING_POLL_SECONDS).
    canary = wait_for(lambda: challenger_health(serving.url)["canary"]["stopped"], what="/health")
    assert canary[breaks].startswith("error_rate")
    assert challenger_health(serving.url)["canary"]["version"] is None
    log = serving.log_path.read_text(errors="replace")
    assert f"canary of version {breaks} (challenger) stopped by itself: error rate" in log
