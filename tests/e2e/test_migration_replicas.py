"""Replicas of the tracking server against one fresh PostgreSQL database: the schema is migrated
once, by whichever launcher takes the advisory lock first, and every replica comes up.

Real PostgreSQL (the Debian server of test_postgres_backend.py), real launchers in subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from tests.e2e.test_postgres_backend import Postgres, postgres  # noqa: F401 (the fixture)
from tracking_server.backend import head_revision, schema_revision

pytestmark = pytest.mark.e2e

REPLICAS = 3


def launcher_env(pg: Postgres, tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ) | {
        "MLFLOW_BACKEND_STORE_URI": pg.uri,
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "STACK_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_AUTH": "true",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "replica-admin-secret",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "replica-flask-secret",
        "BACKEND_WAIT_SECONDS": "120",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def start_launcher(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tracking_server", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def test_three_replicas_migrating_a_fresh_database_at_once_migrate_it_once(
    postgres: Postgres,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert schema_revision(postgres.uri) is None  # fresh: no MLflow table yet
    env = launcher_env(postgres, tmp_path)
    launchers = [start_launcher(env, "--migrate-only") for _ in range(REPLICAS)]
    outputs = [proc.communicate(timeout=600)[0] for proc in launchers]

    assert [proc.returncode for proc in launchers] == [0] * REPLICAS, "\n".join(outputs)
    migrated = [out for out in outputs if "migrating the backend store schema" in out]
    skipped = [out for out in outputs if "already at head" in out]
    assert (len(migrated), len(skipped)) == (1, REPLICAS - 1), "\n".join(outputs)
    assert sum("created the auth database" in out for out in outputs) == 1
    assert schema_revision(postgres.uri) == head_revision()
    engine = sqlalchemy.create_engine(postgres.uri)
    with engine.connect() as conn:
        versions = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    assert [row[0] for row in versions] == [head_revision()]


def test_a_replica_that_may_not_migrate_waits_for_the_migration_job(
    postgres: Postgres,  # noqa: F811
    tmp_path: Path,
) -> None:
    no_migrate = launcher_env(
        postgres, tmp_path, MLFLOW_MIGRATE_ON_START="false", BACKEND_WAIT_SECONDS="60"
    )
    # Started before the job: it waits instead of migrating or failing.
    replica = start_launcher(no_migrate, "--check")
    job = start_launcher(launcher_env(postgres, tmp_path), "--migrate-only")
    job_out = job.communicate(timeout=600)[0]
    assert job.returncode == 0, job_out
    replica_out = replica.communicate(timeout=600)[0]
    assert replica.returncode == 0, replica_out
    assert "mlflow server" in replica_out
    assert "migrating the backend store schema" not in replica_out


def test_a_replica_that_may_not_migrate_gives_up_on_an_unmigrated_database(
    postgres: Postgres,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = launcher_env(
        postgres, tmp_path, MLFLOW_MIGRATE_ON_START="false", BACKEND_WAIT_SECONDS="3"
    )
    replica = start_launcher(env, "--check")
    out = replica.communicate(timeout=300)[0]
    assert replica.returncode == 1, out
    assert "MLFLOW_MIGRATE_ON_START=false" in out and "--migrate-only" in out
    assert schema_revision(postgres.uri) is None  # it did not migrate
