"""The user story of the README, against real processes: a tracking server and serving.

train → register → promote → predict over HTTP → train again → promote → serving switches to
the new version by itself → rollback → it switches back; clients under continuous load see no
failed request throughout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from stack_common.scoring import predict
from tests.conftest import ServiceFactory
from tests.helpers import LoadGenerator, cli_env, run_cli, wait_for_version, write_grades

pytestmark = pytest.mark.e2e

HOURS = [1.0, 5.0, 10.0]


def expected_grades(client: MlflowClient, name: str, version: str) -> list[float]:
    """What a version must answer, from the coefficients its run logged."""
    params = client.get_run(client.get_model_version(name, version).run_id).data.params
    return [float(params["intercept"]) + float(params["coef_hours"]) * h for h in HOURS]


def assert_serves(url: str, grades: list[float]) -> None:
    assert predict(url, HOURS).grades == pytest.approx(grades, abs=1e-3)


def test_train_promote_serve_retrain_promote_rollback(
    services: ServiceFactory, unique_name: str, tmp_path: Path
) -> None:
    tracking = services.tracking()
    env = cli_env(tracking.url, unique_name)
    client = MlflowClient(tracking.url)

    # A data scientist trains the first version; it is registered as the challenger.
    trained = run_cli("training", "--print-version", env=env)
    assert trained.code == 0, trained.stderr
    assert trained.stdout.strip() == "1"
    assert client.get_model_version_by_alias(unique_name, "challenger").version == "1"

    # Promotion through the champion/challenger gate: nothing in production yet, so it passes.
    promoted = run_cli("promotion", "promote", "--reason", "first model", env=env)
    assert promoted.code == 0, promoted.stderr
    assert f"{unique_name}@production -> version 1" in promoted.stdout
    v1 = client.get_model_version(unique_name, "1")
    assert v1.tags["promoted_reason"].startswith("first model")
    assert v1.tags["promoted_by"]

    # Serving pulls models:/<name>@production and answers predictions over HTTP.
    serving = services.serving(tracking.url, unique_name, env={"SERVING_POLL_SECONDS": "1"})
    v1_grades = expected_grades(client, unique_name, "1")
    assert_serves(serving.url, v1_grades)
    assert requests.get(f"{serving.url}/served", timeout=5).json()["version"] == "1"

    with LoadGenerator(serving.url, concurrency=8) as load:
        # A better model on new data (less noise) becomes version 2 and passes the gate.
        better = write_grades(tmp_path / "better.csv", intercept=20, slope=6, noise_sd=2)
        retrained = run_cli("training", "--print-version", "--data", str(better), env=env)
        assert retrained.code == 0, retrained.stderr
        assert retrained.stdout.strip() == "2"
        assert run_cli("promotion", "promote", env=env).code == 0
        assert client.get_model_version_by_alias(unique_name, "previous").version == "1"

        # Serving notices the moved alias and switches by itself.
        wait_for_version(serving.url, "2")
        v2_grades = expected_grades(client, unique_name, "2")
        assert v2_grades[0] == pytest.approx(26, abs=3)  # really another model than version 1
        assert_serves(serving.url, v2_grades)

        # Something is wrong with version 2 after all: roll back.
        rolled = run_cli("promotion", "rollback", "--reason", "complaints", env=env)
        assert rolled.code == 0, rolled.stderr
        assert "version 1 (was 2)" in rolled.stdout
        assert client.get_model_version_by_alias(unique_name, "production").version == "1"
        assert client.get_model_version_by_alias(unique_name, "previous").version == "2"
        wait_for_version(serving.url, "1")
        assert_serves(serving.url, v1_grades)

    assert load.failures == []
    assert load.versions_seen() == {"1", "2"}
    assert len(load.answers) > 100
    served = requests.get(f"{serving.url}/served", timeout=5).json()
    assert (served["version"], served["previous_version"]) == ("1", "2")
