"""Finding the version behind the alias and getting its files into the cache.

The registry is asked first; if it cannot be reached within the wait window and the alias's
last known version is in the cache, serving starts from the cache and says so.

A download that fails on something transient (the tracking server restarting, the bucket behind
it briefly unreachable, a connection reset) is tried again with exponential backoff
(``SERVING_DOWNLOAD_ATTEMPTS``, default 4), each attempt into an emptied folder; what is
permanent (no such model, no permission) fails at once. With an S3 store, MLflow downloads
through presigned bucket URLs when the tracking server offers them; after a failed attempt the
retries go through the tracking server itself, which needs no route to the bucket.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from serving.cache import CacheEntry, ModelCache, stderr_is_tty
from serving.settings import ServingSettings
from stack_common.env import env_float, env_int
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


PRESIGNED_ENV = "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"

# MLflow error codes that another attempt cannot fix.
PERMANENT_ERROR_CODES = frozenset(
    {
        "RESOURCE_DOES_NOT_EXIST",
        "NOT_FOUND",
        "INVALID_PARAMETER_VALUE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed download is worth another attempt."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, requests.RequestException | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, MlflowException):
        return exc.error_code not in PERMANENT_ERROR_CODES
    return False


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
_download_lock = threading.Lock()


@contextmanager
def download_timeout() -> Iterator[None]:
    """Raise MLflow's HTTP read timeout for the length of a download.

    Through the proxy, the tracking server fetches a whole file from the bucket before it sends
    the first byte, so the client's read timeout must cover that (about 70 s for 1 GB in
    bench/model_fetch.py against moto). The short timeouts that suit registry calls (60 s for
    clients, 10 s for the supervisor's polls) would cut large models off: a download gets
    ``SERVING_DOWNLOAD_TIMEOUT_SECONDS`` (default 600) unless the timeout set is already longer.
    """
    wanted = env_int(os.environ, "SERVING_DOWNLOAD_TIMEOUT_SECONDS", 600, minimum=1)
    with _download_lock:
        before = os.environ.get(TIMEOUT_ENV)
        try:
            current = int(before) if before else 0
        except ValueError:
            current = 0
        if current < wanted:
            os.environ[TIMEOUT_ENV] = str(wanted)
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(TIMEOUT_ENV, None)
            else:
                os.environ[TIMEOUT_ENV] = before


def download_version(name: str, version: str, folder: Path) -> None:
    """One attempt: every file of ``models:/name/version`` into ``folder``."""
    import mlflow

    # MLflow's own per-file bars only clutter logs; the cache draws a byte bar on a TTY.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with download_timeout():
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(folder)
        )


def download_with_retry(
    name: str,
    version: str,
    folder: Path,
    attempts: int | None = None,
    max_wait_s: float | None = None,
) -> None:
    """:func:`download_version`, tried again with exponential backoff on transient errors."""
    attempts = attempts or env_int(os.environ, "SERVING_DOWNLOAD_ATTEMPTS", 4, minimum=1)
    if max_wait_s is None:
        max_wait_s = env_float(os.environ, "SERVING_DOWNLOAD_MAX_WAIT_SECONDS", 30.0)
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=1, max=max_wait_s),  # 1 s, 2 s, 4 s... capped
        retry=retry_if_exception(is_transient),
        before_sleep=before_sleep_log(logger, logging.WARNING),
        reraise=True,
    )

    def attempt() -> None:
        _empty(folder)  # nothing of a failed attempt may end up in the entry
        if retrying.statistics.get("attempt_number", 1) > 1 and PRESIGNED_ENV not in os.environ:
            # MLflow (3.17+) reads S3 objects through presigned URLs when the server offers them:
            # the bucket's endpoint must then be reachable from here. After a failure, take the
            # path that needs only the tracking server.
            logger.warning(
                "downloading through the tracking server from now on (%s=false); set it "
                "yourself if the bucket endpoint is not reachable from this host",
                PRESIGNED_ENV,
            )
            os.environ[PRESIGNED_ENV] = "false"
        download_version(name, version, folder)

    retrying(attempt)


def artifact_bytes(name: str, version: str) -> int | None:
    """Total size of the version's files as the registry lists them (for the progress bar)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        repo = get_artifact_repository(f"models:/{name}/{version}")
        total, pending = 0, [None]
        while pending:
            for info in repo.list_artifacts(pending.pop()):
                if info.is_dir:
                    pending.append(info.path)
                else:
                    total += info.file_size or 0
        return total or None
    except Exception:
        logger.debug("could not size models:/%s/%s", name, version, exc_info=True)
        return None


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
    return fetch_version(settings, cache, version)


def fetch_version(settings: ServingSettings, cache: ModelCache, version: str) -> CacheEntry:
    """Get ``version`` into the cache (download once, verify on reuse) and tidy the cache."""
    show_progress = stderr_is_tty() if cache.progress is None else cache.progress
    expected = None
    if show_progress and not cache.entry_path(settings.model_name, version).exists():
        expected = artifact_bytes(settings.model_name, version)
    entry = cache.fetch(
        settings.model_name,
        version,
        lambda folder: download_with_retry(settings.model_name, version, folder),
        source=f"{settings.tracking_uri} (models:/{settings.model_name}/{version})",
        expected_bytes=expected,
    )
    cache.remember_alias(settings.model_name, settings.alias, version)
    cache.evict(settings.model_name, protect=version)
    return entry
