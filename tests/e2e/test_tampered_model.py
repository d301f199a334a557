"""A model's files changed in the bucket behind the stack's back are never served.

On a real tracking server with auth: the server records the digest of each new version's files
at registration; the trainer can neither forge nor erase it; serving refuses a version whose
files no longer match, keeps answering with the version it has and says why in /health; a new
replica with an empty cache refuses to start on tampered files instead of serving them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from stack_common.model_digest import DIGEST_TAG, folder_digest
from stack_common.scoring import predict
from tests.conftest import ServiceFactory
from tests.e2e import test_security
from tests.e2e.test_security import ADMIN_PASSWORD, PASSWORDS, Secured
from tests.helpers import run_cli, wait_for_version

pytestmark = pytest.mark.e2e

secured = test_security.secured  # a module-scoped server with auth and the stack's users


def version_tags(secured: Secured, version: str) -> dict[str, str]:
    answer = requests.get(
        secured.api("model-versions/get"),
        params={"name": secured.model, "version": version},
        auth=("admin", ADMIN_PASSWORD),
        timeout=10,
    )
    answer.raise_for_status()
    return {t["key"]: t["value"] for t in answer.json()["model_version"].get("tags", [])}


def model_folder(secured: Secured, version: str) -> Path:
    """The version's files in the server's artifact folder (what a bucket holds)."""
    answer = requests.get(
        secured.api("model-versions/get"),
        params={"name": secured.model, "version": version},
        auth=("admin", ADMIN_PASSWORD),
        timeout=10,
    ).json()["model_version"]
    model_id = answer["source"].removeprefix("models:/").split("/")[0]
    [mlmodel] = (secured.root / "stack" / "artifacts").rglob(f"models/{model_id}/**/MLmodel")
    return mlmodel.parent


def tamper(folder: Path) -> None:
    """A change that still loads: without the digest, serving would serve it."""
    with (folder / "MLmodel").open("a") as handle:
        handle.write("# changed in the bucket after registration\n")


def serving_env(**extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_USERNAME": "serving",
        "MLFLOW_TRACKING_PASSWORD": PASSWORDS["serving"],
        "SERVING_POLL_SECONDS": "1",
        "SERVING_WORKERS": "1",
        **extra,
    }


def health(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=5).json()


def test_files_changed_after_registration_are_never_served(
    secured: Secured, services: ServiceFactory, tmp_path: Path
) -> None:
    for expected in ("1", "2"):
        trained = run_cli("training", "--print-version", env=secured.env("trainer"))
        assert trained.code == 0, trained.stderr
        assert trained.stdout.strip() == expected

    # The server recorded each version's digest, over exactly the files it stores.
    for version in ("1", "2"):
        assert version_tags(secured, version)[DIGEST_TAG] == folder_digest(
            model_folder(secured, version)
        )

    # The trainer can neither forge nor erase it, nor smuggle a stack.* tag into a new version.
    trainer = ("trainer", PASSWORDS["trainer"])
    tag = {"name": secured.model, "version": "1", "key": DIGEST_TAG}
    forged = requests.post(
        secured.api("model-versions/set-tag"), json=tag | {"value": "0" * 64}, auth=trainer
    )
    erased = requests.delete(secured.api("model-versions/delete-tag"), json=tag, auth=trainer)
    smuggled = requests.post(
        secured.api("model-versions/create"),
        json={
            "name": secured.model,
            "source": version_tags_source(secured),
            "tags": [{"key": "stack.promoted_at", "value": "9999999999999"}],
        },
        auth=trainer,
    )
    for refused in (forged, erased, smuggled):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
    assert version_tags(secured, "1")[DIGEST_TAG] != "0" * 64

    # Version 1 is promoted and served.
    promoted = run_cli("promotion", "promote", "--version", "1", env=secured.env("promoter"))
    assert promoted.code == 0, promoted.stderr
    serving = services.serving(
        secured.url, secured.model, data_dir=tmp_path / "replica-a", env=serving_env()
    )
    v1_grades = predict(serving.url, [5.0]).grades

    # Version 2's files are changed in the store, then it is promoted: serving refuses it,
    # says why in /health and keeps answering with version 1.
    tamper(model_folder(secured, "2"))
    promoted = run_cli(
        "promotion", "promote", "--version", "2", "--force", env=secured.env("promoter")
    )
    assert promoted.code == 0, promoted.stderr
    deadline = time.monotonic() + 60
    while "2" not in health(serving.url)["rejected_versions"] and time.monotonic() < deadline:
        time.sleep(0.5)
    reason = health(serving.url)["rejected_versions"].get("2", "")
    assert "files do not match the digest recorded at registration" in reason, health(serving.url)
    answer = predict(serving.url, [5.0])
    assert answer.model_version == "1" and answer.grades == v1_grades
    assert "refusing" in serving.log_path.read_text() and "expected" in reason
    # ... and counts it: the rejected switch on serving's /metrics.
    scraped = requests.get(f"{serving.url}/metrics", timeout=10).text
    assert 'serving_model_switches_total{result="rejected"} 1.0' in scraped, scraped[-2000:]

    # A new replica, empty cache, production on the tampered version 2: it does not serve it.
    fresh = services.serving(
        secured.url,
        secured.model,
        data_dir=tmp_path / "replica-b",
        env=serving_env(SERVING_ALIAS_WAIT_SECONDS="5"),
        wait=False,
    )
    assert fresh.process.wait(timeout=120) != 0
    assert "files do not match the digest recorded at registration" in fresh.log_path.read_text()
    assert not any((tmp_path / "replica-b").rglob("MLmodel")), "tampered files were cached"
    assert wait_for_version(serving.url, "1", timeout_s=10) >= 0


def version_tags_source(secured: Secured) -> str:
    answer = requests.get(
        secured.api("model-versions/get"),
        params={"name": secured.model, "version": "1"},
        auth=("admin", ADMIN_PASSWORD),
        timeout=10,
    )
    return answer.json()["model_version"]["source"]


def test_an_admin_may_still_set_stack_tags(secured: Secured) -> None:
    """The repair path: an admin restores a digest after restoring files, for instance."""
    done = requests.post(
        secured.api("registered-models/create"),
        json={"name": f"{secured.model}-admin"},
        auth=("admin", ADMIN_PASSWORD),
    )
    assert done.status_code == 200, done.text
    tagged = requests.post(
        secured.api("registered-models/set-tag"),
        json={"name": f"{secured.model}-admin", "key": "stack.note", "value": json.dumps({})},
        auth=("admin", ADMIN_PASSWORD),
    )
    assert tagged.status_code == 200, tagged.text
