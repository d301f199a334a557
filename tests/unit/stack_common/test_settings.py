"""Configuration: defaults that work locally, and one clear line for a bad value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backup.settings import BackupSettings
from local_stack.settings import LocalStackSettings
from promotion.settings import PromotionSettings
from serving.settings import ServingSettings
from stack_common.errors import ConfigError
from stack_common.settings import StackSettings
from tracking_server.bootstrap_users import UsersSettings
from tracking_server.create_bucket import BucketSettings
from tracking_server.launcher import server_command, server_environment
from tracking_server.settings import ProtectionSettings, ServerSettings
from training.settings import TrainingSettings

CLASSES: list[type[StackSettings]] = [
    ServerSettings,
    ProtectionSettings,
    BucketSettings,
    ServingSettings,
    TrainingSettings,
    PromotionSettings,
    BackupSettings,
    LocalStackSettings,
]


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
    ("raw", "expected"), [("1", True), ("TRUE", True), ("no", False), (" off ", False)]
)
def test_booleans_read_the_usual_words(raw: str, expected: bool) -> None:
    assert ServerSettings.from_env({"MLFLOW_SERVE_ARTIFACTS": raw}).serve_artifacts is expected


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_boolean_is_unset_not_false(blank: str) -> None:
    # A `.env` template's `MLFLOW_SERVE_ARTIFACTS=` used to turn the artifact proxy off.
    env = {"MLFLOW_SERVE_ARTIFACTS": blank, "MLFLOW_PROMETHEUS": blank}
    settings = ServerSettings.from_env(env)
    assert settings.serve_artifacts is True and settings.prometheus is True
    assert ServingSettings.from_env({"SERVING_START_FROM_CACHE": blank}).start_from_cache is True


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("blank", ["", " "], ids=["empty", "blank"])
def test_every_empty_variable_means_unset(cls: type[StackSettings], blank: str) -> None:
    """Every variable of every class, set to nothing (a `.env` template), gives the default."""
    blanks = dict.fromkeys(cls.env_names().values(), blank)
    assert cls.from_env(blanks) == cls.from_env({})


def test_the_users_jobs_empty_variables_mean_unset() -> None:
    # Its check needs the admin's password and one user: the other variables blank.
    needed = {
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123",
        "STACK_TRAINER_PASSWORD": "t" * 12,
    }
    blanks = dict.fromkeys(UsersSettings.env_names().values(), "") | needed
    assert UsersSettings.from_env(blanks) == UsersSettings.from_env(needed)


def test_every_field_is_an_environment_variable() -> None:
    for cls in [*CLASSES, UsersSettings]:
        assert set(cls.env_names()) == set(cls.model_fields), cls.__name__


@pytest.mark.parametrize(
    ("cls", "env", "message"),
    [
        (ServerSettings, {"MLFLOW_PORT": "5000x"}, "MLFLOW_PORT='5000x' is not a whole number"),
        (ProtectionSettings, {"MLFLOW_PROTECTED_ALIASES": "[1"}, None),
        (BucketSettings, {"BUCKET_WAIT_SECONDS": "soon"}, "BUCKET_WAIT_SECONDS='soon' is not a"),
        (ServingSettings, {"SERVING_POLL_SECONDS": "0.1"}, "SERVING_POLL_SECONDS=0.1 is below 0.2"),
        (ServingSettings, {"SERVING_START_FROM_CACHE": "sure"}, "SERVING_START_FROM_CACHE='sure'"),
        (TrainingSettings, {"TRAINING_SEED": "4.5"}, "TRAINING_SEED='4.5' is not a whole number"),
        (PromotionSettings, {"SERVER_WAIT_SECONDS": "-1"}, "SERVER_WAIT_SECONDS=-1 is below 0"),
        (BackupSettings, {"BACKUP_URI": "ftp://x"}, "BACKUP_URI='ftp://x' is not supported"),
        (LocalStackSettings, {"SERVING_PORT": "0"}, "SERVING_PORT=0 is below 1"),
        (UsersSettings, {"STACK_TRAINER_PASSWORD": "x"}, "MLFLOW_AUTH_ADMIN_PASSWORD is not set"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    cls: type[StackSettings], env: dict[str, str], message: str | None
) -> None:
    if message is None:  # no value is wrong for this class: it must still read
        cls.from_env(env)
        return
    with pytest.raises(ConfigError) as err:
        cls.from_env(env)
    text = str(err.value)
    assert message in text and "\n" not in text and "pydantic" not in text


def test_serving_defaults_follow_the_machine() -> None:
    settings = ServingSettings.from_env({})
    assert settings.workers == (os.cpu_count() or 1)
    assert settings.poll_s == 1.0
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
