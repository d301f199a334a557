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
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from stack_common.errors import StackError
from stack_common.model_digest import DIGEST_TAG, files_digest
from stack_common.tracking import CLIENT_ENV_DEFAULTS, HttpBudget, wait_for_tracking_server
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


# MLflow's REST endpoint behind ``MlflowClient.get_model_version_by_alias``.
ALIAS_ENDPOINT = "/api/2.0/mlflow/registered-models/alias"

# The supervisor's polls: fail fast while the registry is down (one retry, 10 s per try, about
# 22 s at worst), so that the loop soon gets back to repairing nginx or a scoring process.
POLL_BUDGET = HttpBudget(max_retries=1, backoff_factor=1.0, timeout_s=10.0)

_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def resolve_version(settings: ServingSettings, budget: HttpBudget) -> str | None:
    """The version the alias points to (None: no such alias or model), asked within ``budget``.

    MLflow's client takes its retries and timeout from process-wide variables only, so the
    request is made here with MLflow's own ``http_request`` and the budget passed explicitly.
    """
    from mlflow.exceptions import MlflowException

    try:
        if settings.tracking_uri.startswith(("http://", "https://")):
            return _alias_over_http(settings, budget)
        from mlflow import MlflowClient  # a local store (tests): no network, no budget

        client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
        return str(client.get_model_version_by_alias(settings.model_name, settings.alias).version)
    except MlflowException as exc:
        if exc.error_code in _ABSENT:
            return None
        raise


def _alias_over_http(settings: ServingSettings, budget: HttpBudget) -> str:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = http_request(
        get_default_host_creds(settings.tracking_uri),
        ALIAS_ENDPOINT,
        "GET",
        max_retries=budget.max_retries,
        backoff_factor=budget.backoff_factor,
        timeout=budget.timeout_s,
        params={"name": settings.model_name, "alias": settings.alias},
    )
    verify_rest_response(response, ALIAS_ENDPOINT)  # MLflow's errors, as its client raises them
    return str(response.json()["model_version"]["version"])


class StartStopped(Exception):
    """Asked to stop (SIGTERM, SIGINT) while waiting for a version to start with."""


def _never() -> bool:
    return False


def wait_for_version(settings: ServingSettings, stopping: Callable[[], bool] = _never) -> str:
    """Resolve the alias; wait up to SERVING_ALIAS_WAIT_SECONDS for someone to promote, unless
    ``stopping`` says to give up (StartStopped): Compose waits a day for the first promotion,
    and a ``docker compose down`` must not have to wait for it."""
    deadline = time.monotonic() + settings.alias_wait_s
    announced = False
    while True:
        version = resolve_version(settings, settings.registry_budget)
        if version is not None:
            return version
        if time.monotonic() >= deadline:
            raise NoProductionVersion(promote_hint(settings))
        if not announced:
            logger.info("waiting for a production version: %s", promote_hint(settings))
            announced = True
        until = time.monotonic() + min(5.0, max(0.5, deadline - time.monotonic()))
        while time.monotonic() < until:
            if stopping():
                raise StartStopped
            time.sleep(0.2)


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
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def client_env(settings: ServingSettings, env: Mapping[str, str]) -> dict[str, str]:
    """MLflow's client settings for the serving process, set once at its start.

    The stack's client defaults where the operator set nothing. MLflow's own HTTP calls here are
    downloads (the alias look-ups pass their budgets explicitly), so its read timeout is the
    download's. Through the proxy, the tracking server fetches a whole file from the bucket
    before it sends the first byte, and the timeout must cover that (about 70 s for 1 GB in
    bench/model_fetch.py against moto): ``SERVING_DOWNLOAD_TIMEOUT_SECONDS`` (default 600),
    unless ``MLFLOW_HTTP_REQUEST_TIMEOUT`` is longer. MLflow's per-file bars only clutter logs;
    the cache draws a byte bar on a TTY.
    """
    wanted = {**CLIENT_ENV_DEFAULTS, PROGRESS_BAR_ENV: "false"}
    values = {name: value for name, value in wanted.items() if not env.get(name, "").strip()}
    registry_timeout = math.ceil(settings.registry_budget.timeout_s)
    values[TIMEOUT_ENV] = str(max(settings.download_timeout_s, registry_timeout))
    return values


def configure_client(settings: ServingSettings) -> None:
    """Apply :func:`client_env` to this process: once, at start, before any MLflow call."""
    os.environ.update(client_env(settings, os.environ))


@dataclass
class DownloadRoute:
    """Whether downloads may use the presigned bucket URLs the tracking server offers.

    MLflow (3.17+) reads S3 objects through presigned URLs when the server offers them: the
    bucket's endpoint must then be reachable from here. After one failed attempt, every later
    download of the process (the supervisor keeps one route) goes through the tracking server,
    which needs no route to the bucket. ``MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD``, when the
    operator sets it, decides instead.
    """

    through_server: bool = False


def proxy_only(repo: object) -> None:
    """Make a ``models:/`` repository download through the tracking server, never through
    presigned URLs, without touching the process's environment.

    MLflow decides from ``MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD`` or, when that is unset, from
    the server's capabilities, which each repository fetches once and keeps; none known means
    no presigned downloads (mlflow/store/artifact/mlflow_artifacts_repo.py; checked by
    tests/unit/serving/test_model_cache.py against the installed MLflow).
    """
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    from stack_common.mlflow_internals import download_through_server_only

    inner = getattr(repo, "repo", repo)  # ModelsArtifactRepository wraps the version's own
    if isinstance(inner, MlflowArtifactsRepository):
        download_through_server_only(inner)


def download_version(
    tracking_uri: str, name: str, version: str, folder: Path, through_server: bool = False
) -> None:
    """One attempt: every file of ``models:/name/version`` into ``folder`` (what
    ``mlflow.artifacts.download_artifacts`` does, with the repository in hand)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(
        f"models:/{name}/{version}", tracking_uri=tracking_uri, registry_uri=tracking_uri
    )
    if through_server:
        proxy_only(repo)
    repo.download_artifacts("", dst_path=str(folder))


def download_with_retry(
    tracking_uri: str,
    name: str,
    version: str,
    folder: Path,
    attempts: int,
    max_wait_s: float,
    route: DownloadRoute | None = None,
) -> None:
    """:func:`download_version`, tried again with exponential backoff on transient errors
    (``SERVING_DOWNLOAD_ATTEMPTS``, at most ``SERVING_DOWNLOAD_MAX_WAIT_SECONDS`` apart); after
    a failed attempt, through the tracking server (see :class:`DownloadRoute`)."""
    route = DownloadRoute() if route is None else route
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=1, max=max_wait_s),  # 1 s, 2 s, 4 s... capped
        retry=retry_if_exception(is_transient),
        before_sleep=before_sleep_log(logger, logging.WARNING),
        reraise=True,
    )

    def attempt() -> None:
        _empty(folder)  # nothing of a failed attempt may end up in the entry
        failed_before = retrying.statistics.get("attempt_number", 1) > 1
        if failed_before and not route.through_server and PRESIGNED_ENV not in os.environ:
            logger.warning(
                "downloading through the tracking server from now on; set %s=false yourself "
                "if the bucket endpoint is not reachable from this host",
                PRESIGNED_ENV,
            )
            route.through_server = True
        download_version(tracking_uri, name, version, folder, route.through_server)

    retrying(attempt)


def artifact_bytes(tracking_uri: str, name: str, version: str) -> int | None:
    """Total size of the version's files as the registry lists them (for the progress bar)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        repo = get_artifact_repository(
            f"models:/{name}/{version}", tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
        total = 0
        pending: list[str | None] = [None]  # None: the model's root
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


def fetch_production(
    settings: ServingSettings,
    cache: ModelCache,
    route: DownloadRoute | None = None,
    stopping: Callable[[], bool] = _never,
) -> CacheEntry:
    try:
        wait_for_tracking_server(settings.tracking_uri, settings.server_wait_s)
        version = wait_for_version(settings, stopping)
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
    return fetch_version(settings, cache, version, route)


def fetch_version(
    settings: ServingSettings,
    cache: ModelCache,
    version: str,
    route: DownloadRoute | None = None,
) -> CacheEntry:
    """Get ``version`` into the cache (download once, verify on reuse) and tidy the cache."""
    show_progress = stderr_is_tty() if cache.progress is None else cache.progress
    expected = None
    if show_progress and not cache.entry_path(settings.model_name, version).exists():
        expected = artifact_bytes(settings.tracking_uri, settings.model_name, version)
    entry = cache.fetch(
        settings.model_name,
        version,
        check=digest_check(settings, version),
        download=lambda folder: download_with_retry(
            settings.tracking_uri,
            settings.model_name,
            version,
            folder,
            settings.download_attempts,
            settings.download_max_wait_s,
            route,
        ),
        source=f"{settings.tracking_uri} (models:/{settings.model_name}/{version})",
        expected_bytes=expected,
    )
    cache.remember_alias(settings.model_name, settings.alias, version)
    cache.evict(settings.model_name, protect=version)
    return entry


def batching_opt_in(settings: ServingSettings, version: str) -> bool | None:
    """The version's (else the registered model's) ``serving.batching`` tag; None when neither
    has one or the registry cannot say (the flavour then decides: serving/batch_policy.py)."""
    from mlflow import MlflowClient

    from serving.batch_policy import opt_in_from_tags

    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        version_tags = client.get_model_version(settings.model_name, version).tags
        model_tags = client.get_registered_model(settings.model_name).tags
    except Exception as exc:
        logger.warning("could not read the serving.batching tags of version %s: %s", version, exc)
        return None
    return opt_in_from_tags(version_tags, model_tags)


def batching_decision(settings: ServingSettings, model_path: Path, opt_in: bool | None) -> Any:
    """What the scoring processes will decide for this version (they decide the same way)."""
    from mlflow.models import Model

    from serving.batch_policy import Decision, decide

    if settings.engine == "mlflow":
        return Decision(False, "SERVING_ENGINE=mlflow: MLflow's own scoring server")
    model = Model.load(str(model_path))
    return decide(model.flavors, model.get_input_schema(), opt_in)


class FilesDoNotMatch(StackError):
    """The downloaded files are not the ones the tracking server saw at registration."""


def recorded_digest(settings: ServingSettings, version: str) -> str | None:
    """The digest the tracking server recorded for the version's files (None: none recorded,
    e.g. a version registered before the stack recorded digests)."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    return client.get_model_version(settings.model_name, version).tags.get(DIGEST_TAG)


def digest_check(settings: ServingSettings, version: str) -> Callable[[dict[str, str]], None]:
    """What the cache runs on a download before keeping it: its files' digest against the one
    recorded at registration."""
    label = f"{settings.model_name} version {version}"

    def check(checksums: dict[str, str]) -> None:
        expected = recorded_digest(settings, version)
        found = files_digest(checksums)
        if expected is None:
            logger.warning(
                "%s has no %s tag (registered before digests were recorded?): its files are "
                "served unverified",
                label,
                DIGEST_TAG,
            )
            return
        if found != expected:
            logger.error(
                "refusing %s: its files do not match the digest recorded at registration "
                "(expected %s, found %s); changed in the bucket after registration?",
                label,
                expected,
                found,
            )
            raise FilesDoNotMatch(
                f"{label}: files do not match the digest recorded at registration (expected "
                f"{expected[:12]}, found {found[:12]}); restore them or register a new version"
            )
        logger.info("%s: files match the digest recorded at registration", label)

    return check


class RegistrySource:
    """Where the supervisor gets its versions: the registry's alias, files through the cache."""

    def __init__(
        self, settings: ServingSettings, cache: ModelCache, poll_budget: HttpBudget = POLL_BUDGET
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.poll_budget = poll_budget
        self.route = DownloadRoute()  # shared by every download of this process

    def first(self, stopping: Callable[[], bool] = _never) -> tuple[CacheEntry, str]:
        """The version to start with and where it came from ("cache" or "registry"); raises
        StartStopped when ``stopping`` says so while it waits for a promotion.

        The alias's last known version from the cache if there is one (fast restart), else the
        registry's. The first poll right after start-up corrects a stale cache.
        """
        name, alias = self.settings.model_name, self.settings.alias
        if self.settings.start_from_cache:
            cached = self.cache.cached_alias(name, alias)
            if cached is not None:
                logger.info(
                    "starting from the cache: %s version %s was %r when last seen; "
                    "checking the registry right after start-up",
                    name,
                    cached,
                    alias,
                )
                return self.cache.fetch(name, cached, lambda _: None), "cache"
        return fetch_production(self.settings, self.cache, self.route, stopping), "registry"

    def current_version(self) -> str | None:
        """The alias's version now, within the poll's own short budget (raises if unreadable)."""
        return resolve_version(self.settings, self.poll_budget)

    def version_of(self, alias: str) -> str | None:
        """Another alias's version now (the challenger's), within the same budget."""
        return resolve_version(self.settings.model_copy(update={"alias": alias}), self.poll_budget)

    def fetch(self, version: str) -> CacheEntry:
        return fetch_version(self.settings, self.cache, version, self.route)

    def remember(self, version: str) -> None:
        """Note the version now served, for the next start from the cache."""
        self.cache.remember_alias(self.settings.model_name, self.settings.alias, version)
