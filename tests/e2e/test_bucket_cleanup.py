"""An operator frees the bucket: gc of deleted runs, and the retention rule's dry run and run.

Against a real tracking server whose artifacts are in a folder, in S3 (moto server) and in GCS
(gcp-storage-emulator), proxied: what the clean-up removes is looked for in the store itself,
with the store's own client.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from promotion.cli import cli as registry_cli
from tests.conftest import ServiceFactory
from tests.e2e.conftest import ArtifactStore
from tracking_server.cleanup import cli as cleanup_cli

pytestmark = pytest.mark.e2e

ONE_WORKER = {"MLFLOW_WORKERS": "1"}


def _run_with_files(client: MlflowClient, experiment_id: str, tmp_path: Path, name: str) -> str:
    run = client.create_run(experiment_id)
    folder = tmp_path / name
    (folder / "model").mkdir(parents=True)
    (folder / f"{name}.txt").write_text(name * 100)
    (folder / "model" / "weights.bin").write_bytes(name.encode() * 1000)
    client.log_artifacts(run.info.run_id, str(folder))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _keys(store: ArtifactStore, run_id: str) -> set[str]:
    return {key for key in store.objects() if f"/{run_id}/" in key}


def _invoke(command, args: list[str]) -> str:
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("artifact_store", ["local", "s3", "gcs"], indirect=True)
def test_gc_frees_deleted_runs_and_retention_removes_exactly_what_its_dry_run_listed(
    artifact_store: ArtifactStore,
    services: ServiceFactory,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path / "stack"
    tracking = services.tracking(data_dir, env=artifact_store.server_env | ONE_WORKER)
    for key, value in {
        "MLFLOW_TRACKING_URI": tracking.url,
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{data_dir / 'mlflow.db'}",
        "MODEL_NAME": unique_name,
        "SERVER_WAIT_SECONDS": "20",
    }.items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking.url, registry_uri=tracking.url)
    experiment_id = client.create_experiment(unique_name)
    live = _run_with_files(client, experiment_id, tmp_path, "live")
    doomed = _run_with_files(client, experiment_id, tmp_path, "doomed")
    registered = _run_with_files(client, experiment_id, tmp_path, "registered")
    client.create_registered_model(unique_name)
    v1 = client.create_model_version(unique_name, f"runs:/{registered}/model", registered)
    assert _keys(artifact_store, doomed), "the run's files never reached the store"

    # A deleted run's files leave the bucket; live and registered runs keep theirs.
    client.delete_run(doomed)
    before = {run: _keys(artifact_store, run) for run in (live, registered)}
    out = _invoke(cleanup_cli, ["gc", "--older-than-days", "0"])
    assert "1 removed for good" in out
    assert _keys(artifact_store, doomed) == set()
    assert {run: _keys(artifact_store, run) for run in (live, registered)} == before

    # A registered version's files are never collected: gc refuses and names the version.
    client.delete_run(registered)
    refused = CliRunner().invoke(cleanup_cli, ["gc", "--older-than-days", "0"])
    assert refused.exit_code != 0
    assert f"{unique_name} version {v1.version}" in refused.output
    assert _keys(artifact_store, registered) == before[registered]
    client.restore_run(registered)

    # Retention: aliased and recently promoted versions stay, the old rest goes.
    versions = [
        client.create_model_version(unique_name, f"runs:/{live}/model", live).version
        for _ in range(3)
    ]
    client.set_registered_model_alias(unique_name, "production", v1.version)
    time.sleep(1.0)
    client.set_model_version_tag(unique_name, versions[0], "promoted_at", _now_iso())
    window = ["--older-than-days", "0.00001", "--model-name", unique_name]  # ~0.9 s
    dry = _invoke(cleanup_cli, ["retention", *window])
    listed = {line.split()[-2] for line in dry.splitlines() if line.startswith("would delete")}
    assert listed == set(versions[1:])
    assert len(client.search_model_versions(f"name = '{unique_name}'")) == 4  # dry: nothing gone
    _invoke(cleanup_cli, ["retention", *window, "--apply"])
    left = {mv.version for mv in client.search_model_versions(f"name = '{unique_name}'")}
    assert left == {v1.version, versions[0]}

    # What the bucket holds, per experiment and per model, through the proxy.
    usage = _invoke(registry_cli, ["usage"])
    lines = [line for line in usage.splitlines() if unique_name in line]
    assert any(line.startswith("experiment") for line in lines), usage
    assert any(line.startswith("model") for line in lines), usage


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds")
