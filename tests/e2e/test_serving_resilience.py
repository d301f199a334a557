"""Serving keeps answering with the model it has: a broken new version is never switched to,
and a tracking server that goes away only degrades /health until it is back."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from tests.conftest import Service, ServiceFactory
from tests.helpers import LoadGenerator, processes, run_cli, train_and_promote, wait_for

pytestmark = pytest.mark.e2e

BROKEN_MODEL = Path(__file__).with_name("broken_model.py")


def health(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=5).json()


def register_broken_version(tracking_uri: str, name: str) -> str:
    """A version that loads but fails every prediction (MLflow 'model from code'), logged
    without an input example: serving tests it on the served version's example."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(BROKEN_MODEL), pip_requirements=["mlflow"]
        )
    client = MlflowClient(tracking_uri)
    mv = client.create_model_version(name, info.model_uri, model_id=info.model_id)
    return str(mv.version)


def test_broken_version_is_never_switched_to(services: ServiceFactory, unique_name: str) -> None:
    tracking = services.tracking()
    env = train_and_promote(tracking.url, unique_name)
    serving = services.serving(tracking.url, unique_name, env={"SERVING_POLL_SECONDS": "0.5"})

    broken = register_broken_version(tracking.url, unique_name)
    with LoadGenerator(serving.url, concurrency=4) as load:
        forced = run_cli("promotion", "promote", "--version", broken, "--force", env=env)
        assert forced.code == 0, forced.stderr
        rejected = wait_for(
            lambda: health(serving.url)["rejected_versions"], what="the broken version rejected"
        )
    assert list(rejected) == [broken]
    assert health(serving.url)["status"] == "degraded"
    assert load.failures == []
    assert load.versions_seen() == {"1"}
    assert requests.get(f"{serving.url}/served", timeout=5).json()["version"] == "1"

    # Rolling back to a good version clears the alarm about the alias.
    assert run_cli("promotion", "rollback", env=env).code == 0


def test_tracking_server_outage_degrades_health_but_not_answers(
    services: ServiceFactory, unique_name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "stack"
    tracking = services.tracking(data_dir=data_dir)
    port = tracking.port
    train_and_promote(tracking.url, unique_name)
    serving = services.serving(tracking.url, unique_name, env={"SERVING_POLL_SECONDS": "0.5"})

    with LoadGenerator(serving.url, concurrency=4) as load:
        tracking.stop()
        degraded = wait_for(
            lambda: health(serving.url)["degraded"].get("tracking_server"),
            what="/health to report the tracking server",
        )
        assert "unreachable" in degraded
        time.sleep(2)
        services.tracking(data_dir=data_dir, port=port)
        wait_for(lambda: health(serving.url)["status"] == "ok", what="/health to recover")
    assert load.failures == []
    assert len(load.answers) > 50


def test_nginx_or_a_scoring_process_dying_is_repaired(
    services: ServiceFactory, unique_name: str, tmp_path: Path
) -> None:
    """nginx and a dead scoring process are restarted (only the dead one); when the restarts
    keep failing they back off and end in an unhealthy /health, the live process serving."""
    import os
    import signal

    tracking = services.tracking()
    train_and_promote(tracking.url, unique_name)
    cache = tmp_path / "model-cache"
    serving = services.serving(
        tracking.url,
        unique_name,
        env={
            "SERVING_POLL_SECONDS": "0.5",
            "SERVING_WORKERS": "2",
            "SERVING_CACHE_DIR": str(cache),
            "SERVING_RESTART_BACKOFF_SECONDS": "0.2",
            "SERVING_RESTART_BACKOFF_MAX_SECONDS": "0.4",
            "SERVING_RESTART_MAX_FAILURES": "3",
        },
    )

    def children(pattern: str) -> list[int]:
        return [
            p.pid
            for p in processes()
            if p.ppid == serving.process.pid
            and (pattern in p.command or p.name.startswith(pattern))
        ]

    [nginx] = children("nginx")
    os.kill(nginx, signal.SIGKILL)
    wait_for(lambda: children("nginx") and children("nginx") != [nginx], what="nginx restarted")
    # Forked from the warm interpreter, named for ps and top, and the supervisor's own children.
    scoring = children("scoring-v1-")
    assert scoring
    os.kill(scoring[0], signal.SIGKILL)
    wait_for(
        lambda: (
            len(children("scoring-v1-")) == len(scoring)
            and scoring[0] not in children("scoring-v1-")
        ),
        what="the dead scoring process replaced",
    )
    assert set(scoring[1:]) <= set(children("scoring-v1-")), "the live processes were restarted"
    response = wait_for(
        lambda: _answer(serving.url), what="serving to answer again after the repairs"
    )
    assert response.headers["X-Model-Version"] == "1"

    # The model's files go missing: a restart cannot load it. The supervisor backs off, gives
    # up after 3 failures, and says so; the live process goes on answering.
    [model_file] = cache.rglob("MLmodel")
    model_file.rename(model_file.with_name("MLmodel.away"))
    live = children("scoring-v1-")
    os.kill(live[0], signal.SIGKILL)
    unhealthy = wait_for(
        lambda: health(serving.url)["status"] == "unhealthy" and health(serving.url),
        what="/health to say unhealthy",
    )
    assert "failed to restart 3 times" in unhealthy["unhealthy"], unhealthy
    assert children("scoring-v1-") == live[1:]
    assert "serving_unhealthy 1.0" in requests.get(f"{serving.url}/metrics", timeout=5).text
    for _ in range(5):
        assert _answer(serving.url) is not None


def _answer(url: str) -> requests.Response | None:
    try:
        response = requests.post(f"{url}/invocations", json={"inputs": {"hours": [5.0]}}, timeout=5)
    except requests.RequestException:
        return None
    return response if response.status_code == 200 else None


def test_sigterm_while_waiting_for_a_first_promotion_stops_at_once(
    services: ServiceFactory, shared_tracking_server: Service, unique_name: str
) -> None:
    """Signal handlers only record the signal now; the wait for a first promotion (a day in
    Compose) still ends at once on SIGTERM, cleanly, with exit code 0."""
    import signal

    serving = services.serving(
        shared_tracking_server.url,
        unique_name,
        env={"SERVING_ALIAS_WAIT_SECONDS": "600"},
        wait=False,
    )
    wait_for(
        lambda: "waiting for a production version" in serving.log_path.read_text(),
        what="serving to wait for a promotion",
    )
    began = time.monotonic()
    serving.process.send_signal(signal.SIGTERM)
    assert serving.process.wait(timeout=10) == 0
    assert time.monotonic() - began < 3, "the stop waited for something"
