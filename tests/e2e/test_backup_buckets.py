"""stack-backup with buckets on both sides, for real (moto S3 and the GCS emulator): artifacts
in a bucket, backups in another bucket (BACKUP_URI). The disaster takes the data folder and the
bucket: the backup is restored into a new data folder and a new, empty bucket, and a tracking
server on them shows everything again. A restore over it rewrites only the object that differs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from backup.storage import Store
from tests.backup_drill import full_snapshot
from tests.buckets import create_bucket, list_objects
from tests.conftest import ServiceFactory
from tests.e2e.conftest import ArtifactStore
from tests.helpers import train_and_promote

pytestmark = pytest.mark.e2e


def backup_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backup", *args],
        env=dict(os.environ) | {"LOG_LEVEL": "WARNING"} | env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("artifact_store", ["s3", "gcs"], indirect=True)
def test_bucket_backup_restores_into_a_new_bucket(
    services: ServiceFactory,
    artifact_store: ArtifactStore,
    tmp_path: Path,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = artifact_store.bucket_service
    assert service is not None
    scheme = artifact_store.destination.split("://")[0]
    backups, replacement = (f"e2e-{uuid.uuid4().hex[:12]}" for _ in range(2))
    create_bucket(service, backups)
    create_bucket(service, replacement)

    first = {**artifact_store.server_env, "STACK_DATA_DIR": str(tmp_path / "first")}
    tracking = services.tracking(data_dir=tmp_path / "first", env=first)
    env = train_and_promote(tracking.url, unique_name)
    train = subprocess.run(
        [sys.executable, "-m", "training"], env=dict(os.environ) | env, capture_output=True
    )
    assert train.returncode == 0, train.stderr
    before = full_snapshot(tracking.url, unique_name, unique_name, tmp_path / "b", auth=False)

    target = {**first, "BACKUP_URI": f"{scheme}://{backups}/stack"}
    made = backup_cli("create", env=target)
    assert made.returncode == 0, made.stderr
    backup_id = made.stdout.strip().splitlines()[-1]
    assert any(k.startswith(f"stack/{backup_id}/") for k in list_objects(service, backups))
    assert backup_cli("verify", backup_id, env=target).returncode == 0
    services.stop_all()

    # A new data folder and a new, empty bucket.
    second_dest = f"{scheme}://{replacement}/mlflow"
    second = {
        **target,
        "STACK_DATA_DIR": str(tmp_path / "second"),
        "MLFLOW_ARTIFACTS_DESTINATION": second_dest,
    }
    restored = backup_cli("restore", backup_id, env=second)
    assert restored.returncode == 0, restored.stderr
    assert "0 already intact" in restored.stdout

    # One object changed in the new bucket: a second restore rewrites that one only.
    for key, value in service.env.items():
        monkeypatch.setenv(key, value)
    store = Store(second_dest, "test")
    keys = [key for key, _ in store.walk()]
    tampered = tmp_path / "MLmodel"
    tampered.write_text("not the model\n")
    victim = next(k for k in keys if k.endswith("/MLmodel"))
    store.put(tampered, victim)
    again = backup_cli("restore", "--yes", backup_id, env=second)
    assert again.returncode == 0, again.stderr
    assert f"1 objects written, {len(keys) - 1} already intact" in again.stdout

    server_env = {**second, "MLFLOW_ARTIFACTS_DESTINATION": second_dest}
    tracking = services.tracking(data_dir=tmp_path / "second", env=server_env)
    after = full_snapshot(tracking.url, unique_name, unique_name, tmp_path / "a", auth=False)
    assert after == before
