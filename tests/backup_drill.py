"""What a restore must bring back, read through the tracking server's API (local and Compose
drills share it): runs with status, metrics, params and tags; versions with sources and tags;
aliases; the users with their permissions; the sha256 of every artifact file."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import stack_snapshot

USERS = ("trainer", "promoter", "serving")


def full_snapshot(
    tracking_uri: str, model: str, experiment: str, scratch: Path, auth: bool = True
) -> dict:
    """stack_snapshot plus params, tags, run artifacts and the auth database's contents.

    Needs admin credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."""
    import hashlib
    import time

    import mlflow
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    snapshot = stack_snapshot(tracking_uri, model, experiment, scratch)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    snapshot["run_details"] = {
        r.info.run_id: {
            "params": dict(r.data.params),
            "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.log-model")},
        }
        for r in runs
    }
    registered = client.get_registered_model(model)
    snapshot["model_tags"] = dict(registered.tags)
    snapshot["version_tags"] = {
        mv.version: dict(mv.tags) for mv in client.search_model_versions(f"name='{model}'")
    }
    run_files = {}
    for run in runs:
        target = scratch / f"run-{run.info.run_id}-{time.monotonic_ns()}"
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(target))
        for path in sorted(target.rglob("*")):
            if path.is_file():
                key = f"{run.info.run_id}/{path.relative_to(target)}"
                run_files[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    snapshot["run_artifacts"] = run_files

    if not auth:
        return snapshot
    client_auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    users = {}
    for name in USERS:
        user = client_auth.get_user(name)
        users[name] = {
            "id": user.id,
            "is_admin": user.is_admin,
            "experiment": client_auth.get_user_permission(
                name, "experiment", found.experiment_id
            ).permission,
            "model": client_auth.get_user_permission(name, "registered_model", model).permission,
        }
    snapshot["users"] = users
    return snapshot


def corrupt_largest_artifact(backup: Path) -> str:
    """Flip one byte in the middle of the backup's largest artifact file; its manifest key."""
    victim = max(
        (p for p in (backup / "artifacts").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    return victim.relative_to(backup).as_posix()
