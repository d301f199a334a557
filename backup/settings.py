"""The backup service's configuration: the same variables as the tracking server, plus where
backups go (``BACKUP_DIR`` or ``BACKUP_URI``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from stack_common.errors import ConfigError
from stack_common.settings import env
from tracking_server.settings import StoreSettings

_URI_SCHEMES = ("s3://", "gs://", "file://")


class BackupSettings(StoreSettings):
    """``stack-backup``: the tracking server's stores (StoreSettings, the same variables and
    defaults), the PostgreSQL client tools, and where backups go."""

    # libpq reads it too; here it reaches pg_dump/pg_restore's environment only, never argv.
    pgpassword: SecretStr | None = env("PGPASSWORD", None)
    """The PostgreSQL password, passed to pg_dump/pg_restore's environment only."""
    # Where backups go: a folder on the host (default ./backups), or a bucket/folder URI.
    backup_dir: Path = env("BACKUP_DIR", Path("backups"))
    """Where backups go on the host."""
    backup_uri: str | None = env("BACKUP_URI", None)
    """A bucket/folder URI for backups instead of backup_dir."""
    # The PostgreSQL client tools (their major version must be >= the server's).
    pg_dump: str = env("PG_DUMP", "pg_dump")
    """The pg_dump binary (its major version >= the server's)."""
    pg_restore: str = env("PG_RESTORE", "pg_restore")
    """The pg_restore binary."""
    psql: str = env("PSQL", "psql")
    """The psql binary."""

    @property
    def target(self) -> str:
        """Where backups live, as a path or URI MLflow's artifact repositories understand."""
        if self.backup_uri:
            return self.backup_uri.rstrip("/")
        return str(self.backup_dir.expanduser().resolve())

    def check(self) -> None:
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
        endpoint = self.s3_endpoint_url
        if endpoint and "://" not in endpoint:
            raise ConfigError(
                f"MLFLOW_S3_ENDPOINT_URL={endpoint!r} has no scheme; set it to a URL such as "
                "http://minio:9000"
            )
