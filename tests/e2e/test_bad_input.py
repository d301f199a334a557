"""Bad input gets one clear line and a non-zero exit, and changes nothing in the registry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from local_stack.processes import Service, free_port
from tests.conftest import ServiceFactory
from tests.helpers import CliResult, cli_env, run_cli, write_grades

pytestmark = pytest.mark.e2e


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    assert result.code != 0
    assert len(result.error_lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.error_lines[0]


def versions(client: MlflowClient, name: str) -> list[str]:
    return [mv.version for mv in client.search_model_versions(f"name='{name}'")]


def runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_bad_csv_creates_no_run_and_no_version(
    shared_tracking_server: Service, unique_name: str, tmp_path: Path
) -> None:
    bad = tmp_path / "grades.csv"
    bad.write_text("hours,grade\n1,50\n2,sixty\n")
    env = cli_env(shared_tracking_server.url, unique_name)
    result = run_cli("training", "--data", str(bad), env=env)
    assert_one_line_error(result, str(bad), "line 3", "'grade'", "'sixty'")
    client = MlflowClient(shared_tracking_server.url)
    assert runs(client, unique_name) == []
    with pytest.raises(MlflowException):
        client.get_registered_model(unique_name)


def test_model_failing_its_checks_is_not_registered_and_its_run_is_failed(
    shared_tracking_server: Service, unique_name: str, tmp_path: Path
) -> None:
    upside_down = write_grades(tmp_path / "odd.csv", intercept=90, slope=-5, noise_sd=2)
    env = cli_env(shared_tracking_server.url, unique_name)
    result = run_cli("training", "--data", str(upside_down), env=env)
    assert_one_line_error(result, "behaviour check failed", "lower grade")
    client = MlflowClient(shared_tracking_server.url)
    [run] = runs(client, unique_name)
    assert run.info.status == "FAILED"
    assert "test_rmse" in run.data.metrics  # the evidence is kept
    assert versions(client, unique_name) == []


def test_unreachable_tracking_server_fails_fast_with_the_uri() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_cli("training", env=cli_env(uri, "nobody", SERVER_WAIT_SECONDS="2"))
    assert_one_line_error(result, uri, "did not answer", "MLFLOW_TRACKING_URI")
    assert time.monotonic() - started < 60
    result = run_cli("promotion", "promote", env=cli_env(uri, "nobody", SERVER_WAIT_SECONDS="2"))
    assert_one_line_error(result, uri)


def test_promotion_mistakes_change_nothing(
    shared_tracking_server: Service, unique_name: str, tmp_path: Path
) -> None:
    env = cli_env(shared_tracking_server.url, unique_name)
    client = MlflowClient(shared_tracking_server.url)

    assert_one_line_error(
        run_cli("promotion", "promote", env=env), f"{unique_name!r} does not exist"
    )
    assert run_cli("training", env=env).code == 0
    assert_one_line_error(
        run_cli("promotion", "promote", "--version", "99", env=env), "no version '99'"
    )
    assert_one_line_error(run_cli("promotion", "rollback", env=env), "nothing to roll back")
    assert run_cli("promotion", "promote", env=env).code == 0
    assert_one_line_error(
        run_cli("promotion", "promote", env=env), "no version with alias 'challenger'"
    )

    # A worse challenger (noisier data) is refused by the gate; production stays.
    noisy = write_grades(tmp_path / "noisy.csv", intercept=35, slope=5, noise_sd=15)
    assert run_cli("training", "--data", str(noisy), env=env).code == 0
    refused = run_cli("promotion", "promote", env=env)
    assert_one_line_error(refused, "not promoted", "worse than production", "--force")
    assert client.get_model_version_by_alias(unique_name, "production").version == "1"

    forced = run_cli("promotion", "promote", "--force", "--reason", "hotfix", env=env)
    assert forced.code == 0, forced.stderr
    v2 = client.get_model_version(unique_name, "2")
    assert v2.tags["promoted_reason"].startswith("forced: hotfix")
    assert client.get_model_version_by_alias(unique_name, "production").version == "2"

    status = run_cli("promotion", "status", env=env)
    assert status.code == 0
    assert "production" in status.stdout and "previous" in status.stdout
    assert run_cli("promotion", "production-version", env=env).stdout.strip() == "2"


def test_serving_without_production_version_says_how_to_promote(
    services: ServiceFactory, shared_tracking_server: Service, unique_name: str
) -> None:
    env = cli_env(shared_tracking_server.url, unique_name)
    assert run_cli("training", env=env).code == 0
    serving = services.serving(
        shared_tracking_server.url, unique_name, env={"SERVER_WAIT_SECONDS": "10"}, wait=False
    )
    assert serving.process.wait(timeout=120) != 0
    log = serving.log_tail()
    assert "Error:" in log and "stack-registry promote" in log and "Traceback" not in log
