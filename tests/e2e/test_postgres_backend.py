"""PostgreSQL as the backend store, for real: a restart of the database under a running
tracking server is survived without restarting the tracking server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from local_stack.processes import free_port
from tests.conftest import ServiceFactory
from tests.helpers import run_cli, train_and_promote

pytestmark = pytest.mark.e2e

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


@dataclass
class Postgres:
    bin: Path
    data: Path
    port: int
    log: Path

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/mlflow"

    def _as_owner(self, *args: str) -> list[str]:
        # PostgreSQL refuses to run as root; the Debian package brings a 'postgres' user.
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def ctl(self, *args: str) -> None:
        subprocess.run(
            self._as_owner(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", *args
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
        self.ctl("-o", opts, "start")


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    if PG_BIN is None:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    # Outside pytest's private tmp folder: the 'postgres' user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="stack-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = Postgres(PG_BIN, root / "data", free_port(), root / "postgres.log")
    subprocess.run(
        pg._as_owner(str(PG_BIN / "initdb"), "-D", str(pg.data), "-U", "mlflow", "--auth=trust"),
        check=True,
        capture_output=True,
    )
    pg.start()
    subprocess.run(
        pg._as_owner(
            str(PG_BIN / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(pg.port),
            "-U",
            "mlflow",
            "mlflow",
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield pg
    finally:
        pg.ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_tracking_server_recovers_from_a_postgres_restart(
    services: ServiceFactory, postgres: Postgres, unique_name: str
) -> None:
    tracking = services.tracking(env={"MLFLOW_BACKEND_STORE_URI": postgres.uri})
    env = train_and_promote(tracking.url, unique_name)

    postgres.ctl("-m", "fast", "restart")  # every pooled connection of the server is now dead
    time.sleep(1)
    client = MlflowClient(tracking.url)
    assert client.get_model_version_by_alias(unique_name, "production").version == "1"
    assert run_cli("training", env=env).code == 0
    versions = client.search_model_versions(f"name='{unique_name}'")
    assert sorted(mv.version for mv in versions) == ["1", "2"]

    # The launcher's schema upgrade is a no-op on an up-to-date PostgreSQL store.
    services.stop_all()
    again = services.tracking(env={"MLFLOW_BACKEND_STORE_URI": postgres.uri})
    assert MlflowClient(again.url).get_registered_model(unique_name).aliases == {
        "production": "1",
        "challenger": "2",
    }
