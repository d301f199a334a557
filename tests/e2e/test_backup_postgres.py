"""stack-backup against a real PostgreSQL backend store and auth database (pg_dump and the
psql-run restore script): a restore brings back both databases after they were dropped, replaces
them atomically when they hold something else, and refuses while the tracking server is
connected."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
from mlflow import MlflowClient

from tests.backup_drill import full_snapshot
from tests.conftest import ServiceFactory
from tests.e2e.test_postgres_backend import PG_BIN, Postgres, postgres
from tests.helpers import cli_env, run_cli

pytestmark = pytest.mark.e2e
__all__ = ["postgres"]  # the fixture

ADMIN_PASSWORD = "admin-pg-drill-secret"
PASSWORDS = {u: f"{u}-pg-drill-secret" for u in ("trainer", "promoter", "serving")}
AUTH = {
    "MLFLOW_AUTH": "true",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "pg-drill-flask-secret-key",
    "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
}


def backup_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backup", *args],
        env=dict(os.environ) | {"LOG_LEVEL": "WARNING"} | env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def drop_databases(pg: Postgres, *names: str) -> None:
    admin = sqlalchemy.engine.make_url(pg.uri).set(database="postgres")
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in names:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.mark.timeout(900)
def test_postgres_backup_restores_dropped_and_replaced_databases(
    services: ServiceFactory,
    postgres: Postgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert PG_BIN is not None
    model = "pg-drill"
    artifacts = tmp_path / "artifacts"
    stack_env = {
        "MLFLOW_BACKEND_STORE_URI": postgres.uri,
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "STACK_DATA_DIR": str(tmp_path / "stack"),
    }
    backup_env = {**stack_env, "BACKUP_DIR": str(tmp_path / "backups")}
    tracking = services.tracking(env={**stack_env, **AUTH})
    users = cli_env(tracking.url, model, MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
    users |= {f"STACK_{u.upper()}_PASSWORD": pw for u, pw in PASSWORDS.items()}
    assert run_cli("tracking_server.bootstrap_users", env=users).code == 0
    for user, args in (("trainer", ()), ("promoter", ("promote",)), ("trainer", ())):
        env = cli_env(
            tracking.url,
            model,
            MLFLOW_TRACKING_USERNAME=user,
            MLFLOW_TRACKING_PASSWORD=PASSWORDS[user],
        )
        done = run_cli("training" if not args else "promotion", *args, env=env)
        assert done.code == 0, done.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    before = full_snapshot(tracking.url, model, model, tmp_path / "before")

    made = backup_cli("create", env=backup_env)
    assert made.returncode == 0, made.stderr
    backup_id = made.stdout.strip().splitlines()[-1]
    assert "auth database included" in made.stdout

    # The server still holds connections: restore refuses, naming the fix.
    busy = backup_cli("restore", "--yes", backup_id, env=backup_env)
    assert busy.returncode == 1 and "stop the tracking server" in busy.stderr, busy.stderr

    # Something else in the databases (a run made after the backup): --yes replaces it all.
    client = MlflowClient(tracking.url)
    extra = client.create_run(client.get_experiment_by_name(model).experiment_id).info.run_id
    services.stop_all()
    refused = backup_cli("restore", backup_id, env=backup_env)
    assert refused.returncode == 1 and "3 runs" in refused.stderr, refused.stderr
    replaced = backup_cli("restore", "--yes", backup_id, env=backup_env)
    assert replaced.returncode == 0, replaced.stderr
    tracking = services.tracking(env={**stack_env, **AUTH})
    assert full_snapshot(tracking.url, model, model, tmp_path / "replaced") == before
    assert extra not in full_snapshot(tracking.url, model, model, tmp_path / "x")["runs"]

    # Both databases and every artifact gone: the restore creates them again.
    services.stop_all()
    drop_databases(postgres, "mlflow", "mlflow_auth")
    shutil.rmtree(artifacts)
    restored = backup_cli("restore", backup_id, env=backup_env)
    assert restored.returncode == 0, restored.stderr
    tracking = services.tracking(env={**stack_env, **AUTH})
    assert full_snapshot(tracking.url, model, model, tmp_path / "after") == before
