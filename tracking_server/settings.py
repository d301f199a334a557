"""The tracking server's configuration (``stack-tracking-server``), read once at start.

Every field is an environment variable, documented in ``.env.example``; the defaults run the
local stack (SQLite and artifacts in ``STACK_DATA_DIR``, no authentication).
"""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from typing import Any

from pydantic import SecretStr, field_validator

from stack_common.errors import ConfigError
from stack_common.settings import (
    DEFAULT_ADMIN_USERNAME,
    DEFAULT_TRACKING_PORT,
    DataDirSettings,
    StackSettings,
    env,
)
from tracking_server.auth import APP_NAME as AUTH_APP_NAME
from tracking_server.auth import (
    BASIC_AUTH_APP_NAME,
    DEFAULT_CACHE_TTL_SECONDS,
    LEGACY_DEFAULT_PASSWORD,
    MIN_PASSWORD_LENGTH,
    PERMISSIONS,
    AuthSettings,
    default_database_uri,
)

_BUCKET_SCHEMES = ("s3://", "gs://")
# uvicorn's options for every worker. With more than one worker, uvicorn binds the socket
# itself without TCP_NODELAY, and asyncio then leaves it off on every connection: each
# keep-alive answer waits ~40 ms for the client's delayed ACK. uvloop sets TCP_NODELAY on every
# connection it accepts, and httptools parses faster than h11: bench/tracking_server.py.
DEFAULT_UVICORN_OPTS = "--loop uvloop --http httptools"


def _sqlite_in_data_dir(data: dict[str, Any]) -> str:
    return f"sqlite:///{data['stack_data_dir'] / 'mlflow.db'}"


def _artifacts_in_data_dir(data: dict[str, Any]) -> str:
    return str(data["stack_data_dir"] / "artifacts")


class StoreSettings(DataDirSettings):
    """Where the tracking server keeps its state: shared with stack-backup, which reads the
    same stores (backup/settings.py)."""

    backend_store_uri: str = env("MLFLOW_BACKEND_STORE_URI", default_factory=_sqlite_in_data_dir)
    """The database of runs and models (SQLAlchemy URI)."""
    artifacts_destination: str = env(
        "MLFLOW_ARTIFACTS_DESTINATION", default_factory=_artifacts_in_data_dir
    )
    """Where the server stores artifacts (folder, s3:// or gs:// URI)."""
    # Users and permissions (basic auth); default: beside the backend store (auth.py).
    auth_database_uri_setting: str | None = env("MLFLOW_AUTH_DATABASE_URI", None)
    """The users and permissions database; unset: beside the backend store."""
    # S3-compatible stores (MinIO): the endpoint, with its scheme. MLflow's S3 client reads it
    # from the environment itself; only checked here.
    s3_endpoint_url: str | None = env("MLFLOW_S3_ENDPOINT_URL", None)
    """An S3-compatible store's endpoint, with its scheme (MinIO)."""

    @property
    def auth_database_uri(self) -> str:
        return self.auth_database_uri_setting or default_database_uri(
            self.backend_store_uri, self.data_dir
        )

    def check(self) -> None:
        endpoint = self.s3_endpoint_url
        if self.artifacts_destination.startswith("s3://") and endpoint and "://" not in endpoint:
            raise ConfigError(
                f"MLFLOW_S3_ENDPOINT_URL={endpoint!r} has no scheme; set it to a URL such as "
                "http://minio:9000"
            )


DEFAULT_PROTECTED_ALIASES = ("production", "previous")


class ProtectionSettings(StackSettings):
    """The registry's and /metrics' rules (tracking_server/stack_auth.py), read again by each
    server worker."""

    # Aliases only admins and promoters may move (comma list, case-insensitive).
    protected_aliases: frozenset[str] = env(
        "MLFLOW_PROTECTED_ALIASES", frozenset(DEFAULT_PROTECTED_ALIASES)
    )
    """Aliases only admins and promoters may move (comma list, case-insensitive)."""
    # The user Prometheus logs in as (create-users makes it with STACK_METRICS_PASSWORD): it may
    # GET /metrics and nothing else. Unset: nobody but admins reads /metrics.
    metrics_username: str | None = env("STACK_METRICS_USERNAME", None)
    """The user Prometheus logs in as: it may GET /metrics and nothing else."""
    presigned_transfers: bool = env("STACK_PRESIGNED_TRANSFERS", False)
    """Let clients move large artifacts straight to/from the bucket by presigned URLs (true
    only when every client reaches the bucket's endpoint); false: through the server."""

    @field_validator("protected_aliases", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            # Aliases compare case-insensitively, like MLflow's reserved 'latest'.
            return frozenset(a.strip().lower() for a in value.split(",") if a.strip())
        return value


class ServerSettings(StoreSettings, ProtectionSettings):
    """``stack-tracking-server``: what ``mlflow server`` is started with (the launcher checks
    the registry's rules too, so a bad one stops the start, not every worker)."""

    # Proxy artifacts through the server (clients need no bucket credentials); false = direct.
    serve_artifacts: bool = env("MLFLOW_SERVE_ARTIFACTS", True)
    """Proxy artifacts through the server, so clients need no bucket credentials."""
    host: str = env("MLFLOW_HOST", "127.0.0.1")
    """The address the tracking server listens on."""
    port: int = env("MLFLOW_PORT", DEFAULT_TRACKING_PORT, ge=1)
    """The port the tracking server listens on."""
    workers: int = env("MLFLOW_WORKERS", 2, ge=1)
    """Server worker processes."""
    # Host headers the server accepts (MLflow 3.5+), and origins allowed by CORS.
    allowed_hosts: str = env("MLFLOW_SERVER_ALLOWED_HOSTS", "")
    """Host headers the server accepts (MLflow 3.5+), comma-separated."""
    cors_allowed_origins: str = env("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "")
    """Origins allowed by CORS, comma-separated."""
    # How long to wait for the backend database (and, without migrating, for its schema).
    backend_wait_s: int = env("BACKEND_WAIT_SECONDS", 60, ge=0)
    """Seconds to wait for the backend database (and for its schema, without migrating)."""
    job_execution: bool = env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", False)
    """MLflow's server-side job execution (off by default)."""
    # How long the launcher waits for the artifact bucket to answer (0 = do not check).
    artifacts_wait_s: int = env("ARTIFACTS_WAIT_SECONDS", 30, ge=0)
    """Seconds the launcher waits for the artifact bucket to answer (0: no check)."""
    # False: never migrate, wait (up to backend_wait_s) for a migration job to bring the schema
    # to head. True: migrate under a PostgreSQL advisory lock (replicas migrate once).
    migrate_on_start: bool = env("MLFLOW_MIGRATE_ON_START", True)
    """Migrate the database schema at start, under a lock; false: wait for a migration job."""
    # The worker layout: uvicorn's options, or gunicorn's when MLFLOW_GUNICORN_OPTS is set
    # (MLflow's Flask app only: no --allowed-hosts, no FastAPI routes).
    uvicorn_opts: str = env("MLFLOW_UVICORN_OPTS", DEFAULT_UVICORN_OPTS)
    """uvicorn's options for the server's workers."""
    gunicorn_opts: str = env("MLFLOW_GUNICORN_OPTS", "")
    """gunicorn's options; set: MLflow's Flask app under gunicorn instead of uvicorn."""
    # MLflow's Prometheus exporter (--expose-prometheus): GET /metrics of this server process,
    # its workers' counts shared through prometheus_dir (None: a fresh temporary folder).
    prometheus: bool = env("MLFLOW_PROMETHEUS", True)
    """MLflow's Prometheus exporter: GET /metrics of the server."""
    prometheus_dir: Path | None = env("MLFLOW_PROMETHEUS_DIR", None)
    """Where the workers share their metrics (unset: a fresh folder)."""
    # GCS emulator (tests, local development): a URL; google-cloud-storage reads it itself.
    storage_emulator_host: str | None = env("STORAGE_EMULATOR_HOST", None)
    """A GCS emulator's URL (tests, local development)."""
    # --app-name as given; MLFLOW_AUTH=true (or basic-auth) runs the stack's auth app instead.
    app_name_setting: str = env("MLFLOW_APP_NAME", "")
    """MLflow's --app-name, as given."""
    auth_on: bool = env("MLFLOW_AUTH", False)
    """Basic auth: the stack's auth app (tracking_server/auth.py)."""
    # MLflow's workspaces: with auth, only users granted a workspace may create experiments
    # and models in it (docs/security.md). Unset: on exactly when auth is.
    workspaces_setting: bool | None = env("MLFLOW_ENABLE_WORKSPACES", None)
    """MLflow's workspaces; unset: on exactly when auth is on."""
    # Basic auth (tracking_server/auth.py). The secrets reach MLflow through the environment;
    # they are read here only to refuse a start without them.
    auth_admin_username: str = env("MLFLOW_AUTH_ADMIN_USERNAME", DEFAULT_ADMIN_USERNAME)
    """The admin user basic auth creates."""
    auth_admin_password: SecretStr | None = env("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    """The admin's password; required with auth."""
    flask_secret_key: SecretStr | None = env("MLFLOW_FLASK_SERVER_SECRET_KEY", None)
    """Flask's secret key (CSRF); required with auth."""
    auth_default_permission: str = env("MLFLOW_AUTH_DEFAULT_PERMISSION", "NO_PERMISSIONS")
    """What a user may do on resources nobody granted them."""
    # How long a worker trusts a password it has checked (MLflow's credential cache).
    auth_cache_ttl_seconds: int = env(
        "MLFLOW_AUTH_CACHE_TTL_SECONDS", DEFAULT_CACHE_TTL_SECONDS, ge=0
    )
    """Seconds a worker trusts a password it has checked."""

    @property
    def app_name(self) -> str:
        """``--app-name``: auth (MLFLOW_AUTH=true or basic-auth) always runs the stack's app,
        MLflow's basic-auth with the registry's rules."""
        if self.auth_on or self.app_name_setting == BASIC_AUTH_APP_NAME:
            return AUTH_APP_NAME
        return self.app_name_setting

    @property
    def auth(self) -> AuthSettings | None:
        """MLflow's basic-auth app's settings when it runs; None = open."""
        if self.app_name != AUTH_APP_NAME:
            return None
        return AuthSettings(
            database_uri=self.auth_database_uri,
            admin_username=self.auth_admin_username,
            default_permission=self.auth_default_permission,
            cache_ttl_seconds=self.auth_cache_ttl_seconds,
        )

    @property
    def workspaces(self) -> bool:
        if self.workspaces_setting is None:
            return self.auth is not None
        return self.workspaces_setting

    def check(self) -> None:
        scheme = self.backend_store_uri.split(":", 1)[0]
        if not scheme.startswith(("sqlite", "postgresql", "mysql", "mssql")):
            raise ConfigError(
                f"MLFLOW_BACKEND_STORE_URI={self.backend_store_uri!r} is not a database URI; "
                "use sqlite:///path/mlflow.db or postgresql://user:pass@host:5432/db"
            )
        if "://" in self.artifacts_destination and not self.artifacts_destination.startswith(
            (*_BUCKET_SCHEMES, "file://")
        ):
            raise ConfigError(
                f"MLFLOW_ARTIFACTS_DESTINATION={self.artifacts_destination!r} is not supported; "
                "use a local folder, s3://bucket/prefix or gs://bucket/prefix"
            )
        if self.gunicorn_opts and (self.allowed_hosts or self.cors_allowed_origins):
            raise ConfigError(
                "MLFLOW_GUNICORN_OPTS cannot be combined with MLFLOW_SERVER_ALLOWED_HOSTS or "
                "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS (MLflow checks hosts under uvicorn only); "
                "unset MLFLOW_GUNICORN_OPTS"
            )
        if not self.gunicorn_opts:
            check_uvicorn_opts(self.uvicorn_opts)
        if self.artifacts_destination.startswith(_BUCKET_SCHEMES) and not bucket_name(
            self.artifacts_destination
        ):
            raise ConfigError(
                f"MLFLOW_ARTIFACTS_DESTINATION={self.artifacts_destination!r} names no bucket; "
                "use s3://bucket/prefix or gs://bucket/prefix"
            )
        if self.auth_on and self.app_name_setting not in ("", AUTH_APP_NAME, BASIC_AUTH_APP_NAME):
            raise ConfigError(
                f"MLFLOW_AUTH=true asks for the {AUTH_APP_NAME} app but MLFLOW_APP_NAME="
                f"{self.app_name_setting!r}; unset one of them"
            )
        if self.auth is not None:
            self.check_auth()
        super().check()
        emulator = self.storage_emulator_host
        if self.artifacts_destination.startswith("gs://") and emulator and "://" not in emulator:
            raise ConfigError(
                f"STORAGE_EMULATOR_HOST={emulator!r} has no scheme; set it to a URL such as "
                "http://127.0.0.1:9023"
            )

    def check_auth(self) -> None:
        """One line naming the variable for each auth setting that is missing or unusable."""
        if self.flask_secret_key is None:
            raise ConfigError(
                "MLFLOW_FLASK_SERVER_SECRET_KEY is not set; basic auth needs a static secret key "
                "(the same for every worker): set it, e.g. to the output of `openssl rand -hex 32`"
            )
        check_admin_password(self.auth_admin_password)
        if self.auth_default_permission not in PERMISSIONS:
            raise ConfigError(
                f"MLFLOW_AUTH_DEFAULT_PERMISSION={self.auth_default_permission!r} is not a "
                f"permission; use one of {', '.join(PERMISSIONS)} (default NO_PERMISSIONS)"
            )
        if self.auth_database_uri == self.backend_store_uri:
            raise ConfigError(
                "MLFLOW_AUTH_DATABASE_URI is the backend store itself; give the users their own "
                "database (default: sqlite beside it, or '<database>_auth' on PostgreSQL)"
            )

    @property
    def artifact_store(self) -> str:
        """``s3``, ``gcs`` or ``local``: where the artifact bytes end up."""
        if self.artifacts_destination.startswith("s3://"):
            return "s3"
        if self.artifacts_destination.startswith("gs://"):
            return "gcs"
        return "local"

    @property
    def is_sqlite(self) -> bool:
        return self.backend_store_uri.startswith("sqlite")

    @property
    def local_artifacts(self) -> Path | None:
        dest = self.artifacts_destination
        if dest.startswith(_BUCKET_SCHEMES):
            return None
        return Path(dest.removeprefix("file://"))


def check_admin_password(password: SecretStr | None) -> None:
    """MLflow creates the admin from it: set, not MLflow's old default, long enough."""
    value = password.get_secret_value() if password is not None else ""
    if not value:
        raise ConfigError(
            "MLFLOW_AUTH_ADMIN_PASSWORD is not set; basic auth needs the admin's password: set "
            "it (12+ characters), e.g. to the output of `openssl rand -hex 16`"
        )
    if value == LEGACY_DEFAULT_PASSWORD:
        raise ConfigError(
            f"MLFLOW_AUTH_ADMIN_PASSWORD is MLflow's old default {LEGACY_DEFAULT_PASSWORD!r}, "
            "known to everyone; set another one, e.g. the output of `openssl rand -hex 16`"
        )
    if len(value) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            f"MLFLOW_AUTH_ADMIN_PASSWORD has {len(value)} characters, MLflow needs at least "
            f"{MIN_PASSWORD_LENGTH}; set a longer one, e.g. the output of `openssl rand -hex 16`"
        )


def check_uvicorn_opts(opts: str) -> None:
    """uvicorn exits from every worker, without naming the variable, when the event loop or
    HTTP parser it is asked for is not installed: say so at start instead."""
    words = shlex.split(opts)
    for flag, modules in (("--loop", {"uvloop": "uvloop"}), ("--http", {"httptools": "httptools"})):
        if flag not in words[:-1]:
            continue
        module = modules.get(words[words.index(flag) + 1])
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"MLFLOW_UVICORN_OPTS={opts!r} asks for {module}, which is not installed: "
                f"pip install {module} (requirements.lock pins it) or set MLFLOW_UVICORN_OPTS="
                "'--loop asyncio --http h11' (slower: see bench/README.md)"
            )


def bucket_name(uri: str) -> str:
    """``bucket`` of ``s3://bucket/prefix`` or ``gs://bucket/prefix``."""
    return uri.split("://", 1)[1].split("/", 1)[0]
