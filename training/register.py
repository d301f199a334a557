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
