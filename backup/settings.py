"""The backup service's configuration: the same variables as the tracking server, plus where
backups go (``BACKUP_DIR`` or ``BACKUP_URI``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stack_common.errors import ConfigError

_URI_SCHEMES = ("s3://", "gs://", "file://")


class BackupSettings(BaseSettings):
    """Read once from the environment; empty variables count as unset (``.env`` templates)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    # Where the stack keeps its state: defaults of the local stack (tracking_server/settings.py).
    stack_data_dir: Path = Path(".stack")
    mlflow_backend_store_uri: str | None = None
    mlflow_artifacts_destination: str | None = None
    mlflow_auth_database_uri: str | None = None
    # libpq reads it too; here it reaches pg_dump/pg_restore's environment only, never argv.
    pgpassword: SecretStr | None = None
    # Only validated here: MLflow's S3 client reads it from the environment itself.
    mlflow_s3_endpoint_url: str | None = None
    # Where backups go: a folder on the host (default ./backups), or a bucket/folder URI.
    backup_dir: Path = Path("backups")
    backup_uri: str | None = None
    # The PostgreSQL client tools (their major version must be >= the server's).
    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    psql: str = "psql"

    @property
    def data_dir(self) -> Path:
        return self.stack_data_dir.expanduser().resolve()

    @property
    def backend_store_uri(self) -> str:
        return self.mlflow_backend_store_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def artifacts_destination(self) -> str:
        return self.mlflow_artifacts_destination or str(self.data_dir / "artifacts")

    @property
    def auth_database_uri(self) -> str:
        from tracking_server.auth import default_database_uri

        return self.mlflow_auth_database_uri or default_database_uri(
            self.backend_store_uri, self.data_dir
        )

    @property
    def target(self) -> str:
        """Where backups live, as a path or URI MLflow's artifact repositories understand."""
        if self.backup_uri:
            return self.backup_uri.rstrip("/")
        return str(self.backup_dir.expanduser().resolve())

    def validate_all(self) -> BackupSettings:
        backend = self.backend_store_uri
        if not backend.startswith(("sqlite", "postgresql")):
            raise ConfigError(
                f"MLFLOW_BACKEND_STORE_URI={backend.split('://')[0]}://… is not supported by "
                "stack-backup; use sqlite:///path/mlflow.db or postgresql://user@host:5432/db"
            )
        if self.backup_uri and not self.backup_uri.startswith(_URI_SCHEMES):
            raise ConfigError(
                f"BACKUP_URI={self.backup_uri!r} is not supported; use s3://bucket/prefix, "
                "gs://bucket/prefix or file:///path (or unset it and set BACKUP_DIR)"
            )
        dest = self.artifacts_destination
        if "://" in dest and not dest.startswith(_URI_SCHEMES):
            raise ConfigError(
                f"MLFLOW_ARTIFACTS_DESTINATION={dest!r} is not supported; use a folder, "
                "s3://bucket/prefix or gs://bucket/prefix"
            )
        endpoint = self.mlflow_s3_endpoint_url
        if endpoint and "://" not in endpoint:
            raise ConfigError(
                f"MLFLOW_S3_ENDPOINT_URL={endpoint!r} has no scheme; set it to a URL such as "
                "http://minio:9000"
            )
        return self
