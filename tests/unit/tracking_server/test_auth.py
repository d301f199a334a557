"""Basic auth settings: when it is on, where its database is, what the launcher passes MLflow."""

from __future__ import annotations

import configparser
import stat
from pathlib import Path

import pytest

from stack_common.errors import ConfigError
from tracking_server.auth import AuthSettings, default_database_uri, write_config
from tracking_server.bootstrap_users import UsersSettings
from tracking_server.launcher import server_command
from tracking_server.roles import ROLES
from tracking_server.settings import ServerSettings

SECRETS = {
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-static-secret-key",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123",
}


def test_auth_is_off_by_default_so_the_demo_needs_no_secret(tmp_path: Path) -> None:
    settings = ServerSettings.from_env({"STACK_DATA_DIR": str(tmp_path)})
    assert settings.auth is None
    cmd = server_command(settings)
    assert "--app-name" not in cmd
    assert "--disable-workspaces" in cmd


@pytest.mark.parametrize(
    "switch", [{"MLFLOW_AUTH": "true"}, {"MLFLOW_APP_NAME": "basic-auth"}], ids=["auth", "app"]
)
def test_auth_runs_the_stacks_auth_app_with_workspaces(tmp_path: Path, switch) -> None:
    settings = ServerSettings.from_env({"STACK_DATA_DIR": str(tmp_path), **SECRETS, **switch})
    assert settings.auth == AuthSettings(
        database_uri=f"sqlite:///{tmp_path / 'basic_auth.db'}",
        admin_username="admin",
        default_permission="NO_PERMISSIONS",
    )
    cmd = server_command(settings)
    # MLflow's basic-auth with the registry's rules in front (tracking_server/stack_auth.py).
    assert cmd[cmd.index("--app-name") + 1] == "stack-auth"
    assert "--enable-workspaces" in cmd


def test_workspaces_can_be_turned_off_with_auth(tmp_path: Path) -> None:
    env = {"STACK_DATA_DIR": str(tmp_path), "MLFLOW_AUTH": "1", **SECRETS}
    settings = ServerSettings.from_env(env | {"MLFLOW_ENABLE_WORKSPACES": "false"})
    assert "--disable-workspaces" in server_command(settings)


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"MLFLOW_FLASK_SERVER_SECRET_KEY": ""}, "MLFLOW_FLASK_SERVER_SECRET_KEY", "is not set"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": ""}, "MLFLOW_AUTH_ADMIN_PASSWORD", "is not set"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "MLFLOW_AUTH_ADMIN_PASSWORD", "default"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": "short"}, "MLFLOW_AUTH_ADMIN_PASSWORD", "at least 12"),
        ({"MLFLOW_AUTH_DEFAULT_PERMISSION": "ALL"}, "MLFLOW_AUTH_DEFAULT_PERMISSION", "one of"),
        ({"MLFLOW_APP_NAME": "custom-app"}, "MLFLOW_APP_NAME", "unset one of them"),
        ({"MLFLOW_AUTH_CACHE_TTL_SECONDS": "-1"}, "MLFLOW_AUTH_CACHE_TTL_SECONDS", "below 0"),
        ({"MLFLOW_AUTH_CACHE_TTL_SECONDS": "1m"}, "MLFLOW_AUTH_CACHE_TTL_SECONDS", "whole number"),
        (
            {"MLFLOW_AUTH_DATABASE_URI": "postgresql://u@db/mlflow"},
            "MLFLOW_AUTH_DATABASE_URI",
            "backend store itself",
        ),
    ],
)
def test_unusable_auth_settings_name_the_variable(env, variable: str, says: str) -> None:
    base = {"MLFLOW_AUTH": "true", "MLFLOW_BACKEND_STORE_URI": "postgresql://u@db/mlflow"}
    with pytest.raises(ConfigError) as err:
        ServerSettings.from_env(base | SECRETS | env)
    message = str(err.value)
    assert variable in message and says in message and "\n" not in message


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("postgresql+psycopg2://mlflow@postgres:5432/mlflow", "/mlflow_auth"),
        ("postgresql://u:p%40ss@db:5432/tracking", "u:p%40ss@db:5432/tracking_auth"),
        ("mysql+pymysql://u@db/mlflow", "db/mlflow_auth"),
    ],
)
def test_a_server_database_gets_its_auth_database_beside_it(backend: str, expected: str) -> None:
    uri = default_database_uri(backend, Path("/unused"))
    assert uri.startswith(backend.split("://")[0] + "://") and uri.endswith(expected)


def test_the_ini_is_private_and_says_what_mlflow_reads(tmp_path: Path) -> None:
    settings = AuthSettings(
        database_uri="postgresql://u:p%40ss@db/mlflow_auth",
        admin_username="root",
        default_permission="READ",
    )
    path = write_config(settings, str(tmp_path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = configparser.ConfigParser()
    config.read(path)
    assert dict(config["mlflow"]) == {
        "default_permission": "READ",
        "database_uri": "postgresql://u:p%40ss@db/mlflow_auth",  # '%' survives interpolation
        "admin_username": "root",
        "auth_cache_ttl_seconds": "60",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
    }
    assert "admin-password" not in path.read_text()  # the password stays in the environment


@pytest.mark.parametrize(("value", "ttl"), [("", 60), ("5", 5), ("0", 0)])
def test_the_credential_cache_ttl_reaches_mlflows_ini(tmp_path: Path, value: str, ttl: int) -> None:
    env = {"STACK_DATA_DIR": str(tmp_path), "MLFLOW_AUTH": "true", **SECRETS}
    settings = ServerSettings.from_env(env | {"MLFLOW_AUTH_CACHE_TTL_SECONDS": value})
    assert settings.auth is not None and settings.auth.cache_ttl_seconds == ttl
    config = configparser.ConfigParser()
    config.read(write_config(settings.auth, str(tmp_path)))
    assert config.getint("mlflow", "auth_cache_ttl_seconds") == ttl


def test_users_come_from_the_environment_with_their_role_as_default_name() -> None:
    env = {
        "STACK_TRAINER_PASSWORD": "trainer-password-1",
        "STACK_SERVING_USERNAME": "model-server",
        "STACK_SERVING_PASSWORD": "serving-password-1",
    }
    accounts = UsersSettings.from_env(env | {"MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123"})
    accounts = accounts.accounts()
    assert [(a.role, a.username) for a in accounts] == [
        ("trainer", "trainer"),
        ("serving", "model-server"),
    ]
    assert ROLES["serving"].model == "READ" and ROLES["serving"].experiment == "READ"
    assert ROLES["promoter"].model == "MANAGE"
    # Prometheus' user: no grant at all (stack-auth lets it read /metrics only).
    assert ROLES["metrics"].model is None and ROLES["metrics"].experiment is None
    admin = {"MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123"}
    scraper = UsersSettings.from_env({"STACK_METRICS_PASSWORD": "metrics-password-1"} | admin)
    scraper = scraper.accounts()
    assert [(a.role, a.username) for a in scraper] == [("metrics", "metrics")]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "no user to create"),
        ({"STACK_PROMOTER_PASSWORD": "short"}, "STACK_PROMOTER_PASSWORD has 5 characters"),
    ],
)
def test_bad_user_settings_name_the_variable(env, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        UsersSettings.from_env(env | {"MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123"})


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("401", "refused the credentials (401 on /api/2.0/mlflow/runs/create); set "),
        ("403", "permission denied (403 on /api/2.0/mlflow/runs/create): 'serving' may not"),
    ],
)
def test_refused_requests_tell_the_user_what_to_do(monkeypatch, code: str, says: str) -> None:
    from stack_common.errors import describe_mlflow_error

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "serving")
    message = (
        f"API request to endpoint /api/2.0/mlflow/runs/create failed with error code {code} "
        "!= 200. Response body: 'Permission denied'"
    )
    described = describe_mlflow_error(message)
    assert says in described and "docs/security.md" in described and "\n" not in described
