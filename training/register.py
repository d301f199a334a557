"""Registering a logged model as a new version, all or nothing.

A version without its ``challenger`` alias would be invisible to promotion, so if any step after
the version is created fails, the version is deleted again before the error propagates.
"""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

CHALLENGER = "challenger"


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(
            name, description="Exam grade (0-100) predicted from study hours."
        )
        logger.info("created registered model %r", name)


def ensure_digest(client: MlflowClient, name: str, version: str) -> None:
    """The digest of the version's files as a version tag, which serving checks what it
    downloads against. The stack's tracking server records it itself at registration (with
    auth on, only it and admins may); a plain server (the embedded default, no auth) does not,
    so the registration records it here from the files as the registry serves them."""
    import tempfile
    from pathlib import Path

    import mlflow.artifacts

    from stack_common.model_digest import DIGEST_TAG, folder_digest

    if DIGEST_TAG in client.get_model_version(name, version).tags:
        return
    with tempfile.TemporaryDirectory(prefix="stack-digest-") as scratch:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=scratch,
            tracking_uri=client.tracking_uri,
            registry_uri=client.tracking_uri,
        )
        client.set_model_version_tag(name, version, DIGEST_TAG, folder_digest(Path(local)))


def register_version(
    client: MlflowClient,
    name: str,
    model_uri: str,
    model_id: str,
    run_id: str,
    tags: dict[str, str],
) -> str:
    """Create a version of ``name`` from ``model_uri`` and point ``challenger`` at it."""
    ensure_registered_model(client, name)
    mv = client.create_model_version(
        name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id
    )
    try:
        ensure_digest(client, name, str(mv.version))
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
    except BaseException:
        logger.error(
            "setting alias %r failed; deleting version %s of %r", CHALLENGER, mv.version, name
        )
        try:
            client.delete_model_version(name, mv.version)
        except MlflowException:
            logger.exception("could not delete half-registered version %s of %r", mv.version, name)
        raise
    logger.info("registered %r version %s with alias %r", name, mv.version, CHALLENGER)
    return str(mv.version)
