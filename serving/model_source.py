"""Finding the version behind the alias and getting its files into the cache.

The registry is asked first; if it cannot be reached within the wait window and the alias's
last known version is in the cache, serving starts from the cache and says so.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from serving.cache import CacheEntry, ModelCache
from serving.settings import ServingSettings
from stack_common.errors import StackError
from stack_common.tracking import connect
from stack_common.wait import ServerUnreachable

logger = logging.getLogger(__name__)


class NoProductionVersion(StackError):
    pass


def promote_hint(settings: ServingSettings) -> str:
    return (
        f"no version of {settings.model_name!r} has the alias {settings.alias!r}; promote one "
        f"with 'stack-registry promote' or set the alias in the MLflow UI "
        f"({settings.tracking_uri}/#/models/{settings.model_name})"
    )


def resolve_version(client, settings: ServingSettings) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(settings.model_name, settings.alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    return str(mv.version)


def wait_for_version(client, settings: ServingSettings) -> str:
    """Resolve the alias; wait up to SERVING_ALIAS_WAIT_SECONDS for someone to promote."""
    deadline = time.monotonic() + settings.alias_wait_s
    announced = False
    while True:
        version = resolve_version(client, settings)
        if version is not None:
            return version
        if time.monotonic() >= deadline:
            raise NoProductionVersion(promote_hint(settings))
        if not announced:
            logger.info("waiting for a production version: %s", promote_hint(settings))
            announced = True
        time.sleep(min(5.0, max(0.5, deadline - time.monotonic())))


def download_version(name: str, version: str, folder: Path) -> None:
    import mlflow

    mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}", dst_path=str(folder)
    )


def fetch_production(settings: ServingSettings, cache: ModelCache) -> CacheEntry:
    try:
        client = connect(settings.tracking_uri, settings.server_wait_s)
        version = wait_for_version(client, settings)
    except ServerUnreachable:
        cached = cache.cached_alias(settings.model_name, settings.alias)
        if cached is None:
            raise
        logger.warning(
            "tracking server unreachable; starting from the cache with %s version %s, the last "
            "known %r",
            settings.model_name,
            cached,
            settings.alias,
        )
        return cache.fetch(settings.model_name, cached, lambda _: None)
    logger.info("%s resolves to version %s", settings.model_uri, version)
    entry = cache.fetch(
        settings.model_name,
        version,
        lambda folder: download_version(settings.model_name, version, folder),
        source=f"{settings.tracking_uri} (models:/{settings.model_name}/{version})",
    )
    cache.remember_alias(settings.model_name, settings.alias, version)
    cache.evict(settings.model_name, protect=version)
    return entry
