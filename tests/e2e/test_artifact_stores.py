"""The whole story against each artifact store, as real processes on loopback.

train → register → promote → serve → predict, with the tracking server's artifacts in a local
folder, in S3 (a moto server) and in GCS (gcp-storage-emulator), proxied; and S3 in direct mode,
where the clients write the bucket themselves. Each time the model's bytes are read back from the
store with the store's own client (boto3 / google-cloud-storage) and compared with what serving
downloaded into its cache.

Last, a replica restarted while the tracking server is down starts from its cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from promotion.aliases import promote
from stack_common.scoring import predict
from tests.conftest import ServiceFactory
from tests.e2e.conftest import ArtifactStore
from training.pipeline import run_training
from training.settings import TrainingSettings

pytestmark = pytest.mark.e2e

HOURS = [1.0, 5.0, 10.0]
MANIFEST = ".stack-manifest.json"
# One worker process per server: these tests send a handful of requests; startup is the cost.
ONE_WORKER = {"MLFLOW_WORKERS": "1", "SERVING_WORKERS": "1"}


def client_env(tracking_url: str, name: str, extra: dict[str, str] | None = None) -> dict:
    return {
        "MLFLOW_TRACKING_URI": tracking_url,
        "MODEL_NAME": name,
        "MLFLOW_EXPERIMENT_NAME": name,
        "SERVER_WAIT_SECONDS": "20",
        **(extra or {}),
    }


def train_and_promote(
    monkeypatch: pytest.MonkeyPatch, tracking_url: str, name: str, extra: dict[str, str]
) -> tuple[str, list[float], str]:
    """Train in this process as ``stack-train`` does; promote; (version, expected, model_id)."""
    env = client_env(tracking_url, name, extra)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = run_training(TrainingSettings.from_env(env))
    client = MlflowClient(tracking_url, registry_uri=tracking_url)
    move = promote(client, name, reason="artifact store e2e")
    assert move.version == result.version
    params = client.get_run(result.run_id).data.params
    expected = [float(params["intercept"]) + float(params["coef_hours"]) * h for h in HOURS]
    source = client.get_model_version(name, result.version).source  # models:/m-<id>
    model_id = source.removeprefix("models:/").split("/")[0]
    assert model_id.startswith("m-"), source
    return result.version, expected, model_id


def cache_entry(data_dir: Path, name: str, version: str) -> Path:
    entry = data_dir / "model-cache" / name / version
    assert (entry / MANIFEST).is_file(), f"serving cached nothing at {entry}"
    return entry


@pytest.mark.parametrize("artifact_store", ["local", "s3", "gcs", "s3-direct"], indirect=True)
def test_story_against_each_artifact_store(
    artifact_store: ArtifactStore,
    services: ServiceFactory,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracking = services.tracking(tmp_path / "stack", env=artifact_store.server_env | ONE_WORKER)
    version, expected, model_id = train_and_promote(
        monkeypatch, tracking.url, unique_name, artifact_store.client_env
    )

    serving_dir = tmp_path / "replica"
    serving = services.serving(
        tracking.url, unique_name, data_dir=serving_dir, env=artifact_store.client_env | ONE_WORKER
    )
    assert predict(serving.url, HOURS).grades == pytest.approx(expected, abs=1e-3)

    # The model's files are in the store, byte for byte what serving downloaded.
    stored = {
        key: size
        for key, size in artifact_store.objects().items()
        if f"models/{model_id}/artifacts/" in key
    }
    assert stored, f"no artifact of model {model_id} in {artifact_store.destination}"
    files = {key.split("/artifacts/", 1)[1]: key for key in stored}
    assert {"MLmodel", "model.skops", "requirements.txt"} <= set(files)
    entry = cache_entry(serving_dir, unique_name, version)
    for relative, key in files.items():
        assert artifact_store.read(key) == (entry / relative).read_bytes(), relative
    manifest = json.loads((entry / MANIFEST).read_text())
    assert set(files) <= set(manifest["files"])

    # Proxied, the server holds the only route to the bucket: the run's artifact URI says so.
    run_uri = MlflowClient(tracking.url).get_experiment_by_name(unique_name).artifact_location
    if artifact_store.client_env:
        assert run_uri.startswith(artifact_store.destination)
    else:
        assert run_uri.startswith("mlflow-artifacts:/")


def test_replica_restarted_while_tracking_server_is_down_serves_from_cache(
    services: ServiceFactory,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracking = services.tracking(tmp_path / "stack", env=ONE_WORKER)
    version, expected, _ = train_and_promote(monkeypatch, tracking.url, unique_name, {})
    replica = tmp_path / "replica"
    first = services.serving(tracking.url, unique_name, data_dir=replica, env=ONE_WORKER)
    assert predict(first.url, HOURS).grades == pytest.approx(expected, abs=1e-3)
    cache_entry(replica, unique_name, version)

    first.stop()
    tracking.stop()

    # Same disk, registry unreachable: wait briefly, then serve the last known production.
    again = services.serving(
        tracking.url,
        unique_name,
        data_dir=replica,
        env={"SERVER_WAIT_SECONDS": "1", "SERVING_START_FROM_CACHE": "false", **ONE_WORKER},
    )
    assert predict(again.url, HOURS).grades == pytest.approx(expected, abs=1e-3)
    log = again.log_path.read_text(errors="replace")
    assert "tracking server unreachable; starting from the cache" in log
    assert f"version {version}" in log
