"""The tracking server's configuration, read once from the environment."""

from __future__ import annotations

import importlib.util
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from stack_common.env import data_dir, env_bool, env_int, env_str
from stack_common.errors import ConfigError
from tracking_server.auth import APP_NAME as AUTH_APP_NAME
from tracking_server.auth import BASIC_AUTH_APP_NAME, AuthSettings

_BUCKET_SCHEMES = ("s3://", "gs://")
# uvicorn's options for every worker. With more than one worker, uvicorn binds the socket
# itself without TCP_NODELAY, and asyncio then leaves it off on every connection: each
# keep-alive answer waits ~40 ms for the client's delayed ACK. uvloop sets TCP_NODELAY on every
# connection it accepts, and httptools parses faster than h11: bench/tracking_server.py.
DEFAULT_UVICORN_OPTS = "--loop uvloop --http httptools"


@dataclass(frozen=True)
class ServerSettings:
    backend_store_uri: str
    artifacts_destination: str
    serve_artifacts: bool
    host: str
    port: int
    workers: int
    allowed_hosts: str
    cors_allowed_origins: str
    backend_wait_s: int
    job_execution: bool
    app_name: str
    # How long the launcher waits for the artifact bucket to answer (0 = do not check).
    artifacts_wait_s: int = 30
    # MLflow's basic-auth app (MLFLOW_AUTH=true or MLFLOW_APP_NAME=basic-auth); None = open.
    auth: AuthSettings | None = None
    # MLflow's workspaces: with auth, only users granted a workspace may create experiments
    # and models in it (docs/security.md). On by default when auth is.
    workspaces: bool = False
    # False: never migrate, wait (up to backend_wait_s) for a migration job to bring the schema
    # to head. True: migrate under a PostgreSQL advisory lock (replicas migrate once).
    migrate_on_start: bool = True
    # The worker layout: uvicorn's options (MLFLOW_UVICORN_OPTS), or gunicorn's when
    # MLFLOW_GUNICORN_OPTS is set (MLflow's Flask app only: no --allowed-hosts, no FastAPI routes).
    uvicorn_opts: str = DEFAULT_UVICORN_OPTS
    gunicorn_opts: str = ""
    # MLflow's Prometheus exporter (--expose-prometheus): GET /metrics of this server process,
    # its workers' counts shared through prometheus_dir (None: a fresh temporary folder).
    prometheus: bool = True
    prometheus_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        root = data_dir(env)
        backend_store_uri = env_str(
            env, "MLFLOW_BACKEND_STORE_URI", f"sqlite:///{root / 'mlflow.db'}"
        )
        app_name = app_name_from_env(env)
        settings = cls(
            backend_store_uri=backend_store_uri,
            artifacts_destination=env_str(
                env, "MLFLOW_ARTIFACTS_DESTINATION", str(root / "artifacts")
            ),
            serve_artifacts=env_bool(env, "MLFLOW_SERVE_ARTIFACTS", True),
            host=env_str(env, "MLFLOW_HOST", "127.0.0.1"),
            port=env_int(env, "MLFLOW_PORT", 5000, minimum=1),
            workers=env_int(env, "MLFLOW_WORKERS", 2, minimum=1),
            allowed_hosts=env_str(env, "MLFLOW_SERVER_ALLOWED_HOSTS", ""),
            cors_allowed_origins=env_str(env, "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", ""),
            backend_wait_s=env_int(env, "BACKEND_WAIT_SECONDS", 60),
            job_execution=env_bool(env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", False),
            app_name=app_name,
            artifacts_wait_s=env_int(env, "ARTIFACTS_WAIT_SECONDS", 30),
            migrate_on_start=env_bool(env, "MLFLOW_MIGRATE_ON_START", True),
            uvicorn_opts=env_str(env, "MLFLOW_UVICORN_OPTS", DEFAULT_UVICORN_OPTS),
            gunicorn_opts=env_str(env, "MLFLOW_GUNICORN_OPTS", ""),
            prometheus=env_bool(env, "MLFLOW_PROMETHEUS", True),
            prometheus_dir=Path(env["MLFLOW_PROMETHEUS_DIR"])
            if env.get("MLFLOW_PROMETHEUS_DIR")
            else None,
        )
        settings.validate()
        if app_name == AUTH_APP_NAME:
            settings = replace(settings, auth=AuthSettings.from_env(env, backend_store_uri, root))
        settings = replace(
            settings,
            workspaces=env_bool(env, "MLFLOW_ENABLE_WORKSPACES", settings.auth is not None),
        )
        validate_bucket_endpoints(settings.artifacts_destination, env)
        return settings

    def validate(self) -> None:
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


def app_name_from_env(env: Mapping[str, str]) -> str:
    """``--app-name``: MLFLOW_APP_NAME as given, except that auth (MLFLOW_AUTH=true or
    basic-auth) always runs the stack's app, MLflow's basic-auth with the registry's rules."""
    app_name = env_str(env, "MLFLOW_APP_NAME", "")
    if app_name == BASIC_AUTH_APP_NAME:
        app_name = AUTH_APP_NAME
    if env_bool(env, "MLFLOW_AUTH", False):
        if app_name not in ("", AUTH_APP_NAME):
            raise ConfigError(
                f"MLFLOW_AUTH=true asks for the {AUTH_APP_NAME} app but MLFLOW_APP_NAME="
                f"{app_name!r}; unset one of them"
            )
        return AUTH_APP_NAME
    return app_name


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


def validate_bucket_endpoints(destination: str, env: Mapping[str, str]) -> None:
    """Endpoint overrides must be URLs: boto3 and google-cloud-storage fail obscurely otherwise."""
    checks = {
        "s3://": ("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000"),
        "gs://": ("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023"),
    }
    for scheme, (name, example) in checks.items():
        value = env.get(name, "").strip()
        if destination.startswith(scheme) and value and "://" not in value:
            raise ConfigError(f"{name}={value!r} has no scheme; set it to a URL such as {example}")
