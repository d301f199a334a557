"""``.env.example`` against the settings classes: every variable a service reads is documented
there, and every entry there is read by a service or listed below with who reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backup.settings import BackupSettings
from local_stack.settings import LocalStackSettings
from promotion.settings import PromotionSettings
from serving.settings import ScoringSettings, ServingSettings
from stack_common.settings import StackSettings
from tracking_server.bootstrap_users import UsersSettings
from tracking_server.cleanup import CleanupSettings
from tracking_server.create_bucket import BucketSettings
from tracking_server.oidc_settings import OidcSettings
from tracking_server.settings import ServerSettings
from tracking_server.users_cli import PeopleSettings
from training.settings import TrainingSettings

ENV_EXAMPLE = Path(__file__).resolve().parents[3] / ".env.example"

SETTINGS_CLASSES: list[type[StackSettings]] = [
    ServerSettings,
    BucketSettings,
    UsersSettings,
    ServingSettings,
    ScoringSettings,
    TrainingSettings,
    PromotionSettings,
    BackupSettings,
    LocalStackSettings,
    CleanupSettings,
    PeopleSettings,
    OidcSettings,
]

# Entries of .env.example that no settings class reads, and who does.
NOT_SETTINGS = {
    # Docker Compose only: substituted into docker-compose.yml and its overlays.
    "POSTGRES_USER",  # the postgres container, and the backend store URI Compose builds
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "MINIO_ROOT_USER",  # the minio container; the tracking server's S3 keys
    "MINIO_ROOT_PASSWORD",
    "ARTIFACTS_BUCKET",  # Compose builds MLFLOW_ARTIFACTS_DESTINATION from it
    "ARTIFACTS_PREFIX",
    "MLFLOW_UI_PORT",  # host ports
    "SERVING_API_PORT",
    "PROMETHEUS_PORT",
    "COMPOSE_PROFILES",  # Docker Compose itself: which profiles `up` starts (monitoring)
    "BACKUP_HOST_DIR",  # the backup container's bind mount and user
    "BACKUP_UID",
    "BACKUP_GID",
    "PYTHON_IMAGE",  # image builds
    "STACK_IMAGE_TAG",
    "GCP_SA_KEY_FILE",  # mounted into the containers as GOOGLE_APPLICATION_CREDENTIALS
    "STACK_DOMAIN",  # the HTTPS front (docker-compose.tls.yml, deploy/caddy/Caddyfile)
    "STACK_TLS",
    "STACK_TLS_CERTS_DIR",
    "STACK_HTTPS_BIND",
    "STACK_HTTPS_PORT",
    "STACK_HTTP_PORT",
    # Read by the libraries themselves, never by the stack's code.
    "AWS_ACCESS_KEY_ID",  # boto3
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE",  # MLflow's S3 client
    "MLFLOW_TRACKING_USERNAME",  # MLflow's client
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD",
    # Logging, set up before any settings are read (stack_common/logs.py).
    "LOG_LEVEL",
    "LOG_FORMAT",
}

_ENTRY = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=")


def documented() -> set[str]:
    """Every ``NAME=`` line of .env.example, set or commented out."""
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ENTRY.match(line)
        if match:
            names.add(match.group(1))
    return names


def read_by_settings() -> dict[str, list[str]]:
    """Variable -> the classes that read it."""
    readers: dict[str, list[str]] = {}
    for cls in SETTINGS_CLASSES:
        for name in cls.env_names().values():
            readers.setdefault(name, []).append(cls.__name__)
    return readers


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_every_setting_is_documented_in_env_example(cls: type[StackSettings]) -> None:
    missing = sorted(set(cls.env_names().values()) - documented())
    assert not missing, f"{cls.__name__} reads {missing}: document them in .env.example"


def test_every_env_example_entry_is_read_by_a_service() -> None:
    stale = sorted(documented() - set(read_by_settings()) - NOT_SETTINGS)
    assert not stale, f"{stale} in .env.example: no settings class reads them"


def test_the_list_of_other_variables_holds_no_setting_and_nothing_stale() -> None:
    assert not NOT_SETTINGS & set(read_by_settings())
    assert documented() >= NOT_SETTINGS


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_every_setting_has_a_description(cls: type[StackSettings]) -> None:
    """The docstring under each field (or ``description=``): what the variable is for, for
    whoever reads the class rather than .env.example."""
    bare = sorted(
        alias for name, alias in cls.env_names().items() if not cls.model_fields[name].description
    )
    assert not bare, f"{cls.__name__}: give {bare} a docstring under the field"
