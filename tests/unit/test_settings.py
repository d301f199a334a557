"""Configuration: defaults that work locally, and one clear line for a bad value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.settings import ServingSettings
from stack_common.env import env_bool, env_float, env_int
from stack_common.errors import ConfigError
from tracking_server.launcher import server_command, server_environment
from tracking_server.settings import ServerSettings
from training.settings import TrainingSettings


def test_embedded_defaults_live_in_one_data_folder(tmp_path: Path) -> None:
    env = {"STACK_DATA_DIR": str(tmp_path)}
    server = ServerSettings.from_env(env)
    assert server.backend_store_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert server.artifacts_destination == str(tmp_path / "artifacts")
    assert (server.host, server.port, server.serve_artifacts) == ("127.0.0.1", 5000, True)
    serving = ServingSettings.from_env(env)
    assert serving.cache_dir == tmp_path / "model-cache"
    assert serving.model_uri == "models:/grades-regressor@production"
    assert TrainingSettings.from_env(env).tracking_uri == "http://127.0.0.1:5000"


def test_server_proxies_artifacts_by_default() -> None:
    cmd = server_command(ServerSettings.from_env({"MLFLOW_ARTIFACTS_DESTINATION": "s3://b/p"}))
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://b/p"
    assert "--serve-artifacts" in cmd
    assert "--default-artifact-root" not in cmd


def test_direct_mode_uses_the_bucket_as_default_artifact_root() -> None:
    env = {"MLFLOW_ARTIFACTS_DESTINATION": "gs://b", "MLFLOW_SERVE_ARTIFACTS": "false"}
    cmd = server_command(ServerSettings.from_env(env))
    assert cmd[cmd.index("--default-artifact-root") + 1] == "gs://b"
    assert "--no-serve-artifacts" in cmd


def test_allowed_hosts_reach_mlflow() -> None:
    env = {"MLFLOW_SERVER_ALLOWED_HOSTS": "tracking-server:5000,localhost:5000"}
    cmd = server_command(ServerSettings.from_env(env))
    assert cmd[cmd.index("--allowed-hosts") + 1] == "tracking-server:5000,localhost:5000"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLFLOW_BACKEND_STORE_URI": "mongodb://x"}, "MLFLOW_BACKEND_STORE_URI='mongodb://x'"),
        ({"MLFLOW_ARTIFACTS_DESTINATION": "ftp://x"}, "MLFLOW_ARTIFACTS_DESTINATION='ftp://x'"),
        ({"MLFLOW_PORT": "five"}, "MLFLOW_PORT='five' is not a whole number"),
        ({"MLFLOW_WORKERS": "0"}, "MLFLOW_WORKERS=0 is below 1"),
        ({"MLFLOW_SERVE_ARTIFACTS": "maybe"}, "MLFLOW_SERVE_ARTIFACTS='maybe' is not a boolean"),
    ],
)
def test_bad_server_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ServerSettings.from_env(env)
    assert message in str(err.value)


def test_postgres_backend_is_accepted() -> None:
    uri = "postgresql://mlflow:secret@db:5432/mlflow"
    assert ServerSettings.from_env({"MLFLOW_BACKEND_STORE_URI": uri}).backend_store_uri == uri


def test_training_test_size_is_bounded() -> None:
    with pytest.raises(ConfigError, match=r"TRAINING_TEST_SIZE=0\.9"):
        TrainingSettings.from_env({"TRAINING_TEST_SIZE": "0.9"})


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("TRUE", True), ("no", False), ("", False)]
)
def test_env_bool(raw: str, expected: bool) -> None:
    assert env_bool({"X": raw}, "X", not expected) is expected


def test_unset_values_take_defaults() -> None:
    assert env_int({}, "X", 3) == 3
    assert env_float({"X": " "}, "X", 1.5) == 1.5


def test_serving_defaults_follow_the_machine() -> None:
    settings = ServingSettings.from_env({})
    assert settings.workers == (os.cpu_count() or 1)
    assert settings.poll_s == 3.0
    assert settings.max_body_mb == 10


def test_workers_run_uvicorn_with_uvloop_and_httptools_by_default() -> None:
    cmd = server_command(ServerSettings.from_env({}))
    assert cmd[cmd.index("--workers") + 1] == "2"
    assert cmd[cmd.index("--uvicorn-opts") + 1] == "--loop uvloop --http httptools"
    assert "--gunicorn-opts" not in cmd


def test_gunicorn_opts_replace_uvicorn_and_reach_mlflow_once() -> None:
    env = {"MLFLOW_GUNICORN_OPTS": "-k gthread --threads 8", "MLFLOW_UVICORN_OPTS": "--loop uvloop"}
    settings = ServerSettings.from_env(env)
    cmd = server_command(settings)
    assert cmd[cmd.index("--gunicorn-opts") + 1] == "-k gthread --threads 8"
    assert "--uvicorn-opts" not in cmd
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        passed = server_environment(settings)
    # MLflow reads both variables too and refuses two server option sets.
    assert "MLFLOW_GUNICORN_OPTS" not in passed and "MLFLOW_UVICORN_OPTS" not in passed


def test_gunicorn_cannot_check_hosts() -> None:
    env = {"MLFLOW_GUNICORN_OPTS": "-k gthread", "MLFLOW_SERVER_ALLOWED_HOSTS": "localhost"}
    with pytest.raises(ConfigError, match="MLFLOW_GUNICORN_OPTS cannot be combined"):
        ServerSettings.from_env(env)


def test_a_missing_event_loop_is_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"MLFLOW_UVICORN_OPTS=.* asks for uvloop"):
        ServerSettings.from_env({})
    assert ServerSettings.from_env({"MLFLOW_UVICORN_OPTS": "--loop asyncio"}).uvicorn_opts == (
        "--loop asyncio"
    )
