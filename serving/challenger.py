"""The challenger beside production: the version behind ``SERVING_SHADOW_ALIAS``, followed.

The supervisor calls ``follow`` on every poll, after production's own alias: when the
challenger's alias moves, the new version is downloaded (its digest checked, as production's
is), started in its own pool (``SERVING_CHALLENGER_WORKERS`` processes, checked on its input
example) and only then takes the shadow and the canary over; the old challenger stops. When the
alias is deleted, or names the version production serves, no challenger runs: mirrors are
dropped (counted) and the canary's share goes to production. Nothing here can stop production
from serving: a challenger that fails to load is logged, shown in ``/health``, and not retried
until its alias moves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from serving.canary import Canary, Limits, canary_slot_paths
from serving.model_source import RegistrySource, batching_opt_in
from serving.pool import BatchSettings, ScoringPool
from serving.shadow import SHADOW_SOCKET, ShadowDispatcher
from stack_common.errors import one_line

if TYPE_CHECKING:
    from pathlib import Path

    from serving.metrics import ServingMetrics
    from serving.settings import ServingSettings
    from serving.spawn import WarmStart

logger = logging.getLogger(__name__)

# The challenger's scoring processes when they only shadow (``nice``: lower priority).
CHALLENGER_NICE = 10


class ChallengerPool(Protocol):
    version: str
    sockets: list[Any]

    def wait_ready(self, timeout_s: float, fallback_example: bytes | None = None) -> None: ...

    def dead(self) -> list[int]: ...

    def pids(self) -> list[int]: ...

    def stop(self, timeout_s: float = ...) -> None: ...


class Challenger:
    def __init__(
        self,
        alias: str,
        version_of: Callable[[str], str | None],
        start_pool: Callable[[str], ChallengerPool],
        load_timeout_s: float,
        dispatcher: ShadowDispatcher | None,
        canary: Canary | None,
    ) -> None:
        self.alias = alias
        self.version_of = version_of  # the alias's version now (raises when unreadable)
        self.start_pool = start_pool  # download, check and start a version's pool
        self.load_timeout_s = load_timeout_s
        self.dispatcher = dispatcher
        self.canary = canary
        self.pool: ChallengerPool | None = None
        self.failed: dict[str, str] = {}  # versions that did not load, with the reason
        self.problem: str | None = None  # why the alias could not be read, if it could not

    @property
    def version(self) -> str | None:
        return self.pool.version if self.pool is not None else None

    def pids(self) -> list[int]:
        return self.pool.pids() if self.pool is not None else []

    def follow(self, production_version: str, fallback_example: Callable[[], bytes | None]) -> None:
        """One look at the alias; ``fallback_example`` is production's input example, read only
        when a version without one of its own is loaded."""
        try:
            wanted = self.version_of(self.alias)
        except Exception as exc:  # registry unreachable: keep what runs
            self.problem = f"alias {self.alias!r} unreadable: {one_line(str(exc), 160)}"
            return
        self.problem = None
        if wanted == production_version:
            wanted = None  # nothing to compare: production answers as itself
        if self.pool is not None and self.pool.dead():
            logger.error("a scoring process of challenger version %s died", self.pool.version)
            self._unload()
        if wanted == self.version or wanted in self.failed:
            return
        if wanted is None:
            if self.pool is not None:
                logger.info("%r no longer names a challenger; unloading it", self.alias)
                self._unload()
            return
        self._load(wanted, fallback_example)

    def _load(self, version: str, fallback_example: Callable[[], bytes | None]) -> None:
        logger.info("challenger %r moved to version %s; preparing it", self.alias, version)
        pool = None
        try:
            pool = self.start_pool(version)
            pool.wait_ready(self.load_timeout_s, fallback_example())
        except Exception as exc:
            if pool is not None:
                pool.stop()
            self.failed[version] = one_line(str(exc), 300)
            logger.error(
                "challenger version %s not loaded: %s; %s",
                version,
                self.failed[version],
                "the previous challenger keeps running" if self.pool else "no challenger runs",
            )
            return
        self._unload()
        self.pool = pool
        sockets = list(pool.sockets)
        if self.dispatcher is not None:
            self.dispatcher.aim(version, sockets)
        if self.canary is not None:
            self.canary.start(version, sockets)
        logger.info("challenger %r: version %s loaded beside production", self.alias, version)

    def _unload(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.aim(None)
        if self.canary is not None:
            self.canary.end()
        if self.pool is not None:
            self.pool.stop()
            self.pool = None

    def start(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.start()

    def stop(self) -> None:
        self._unload()
        if self.dispatcher is not None:
            self.dispatcher.stop()

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"alias": self.alias, "version": self.version}
        if self.failed:
            status["rejected_versions"] = dict(self.failed)
        if self.problem:
            status["problem"] = self.problem
        if self.canary is not None:
            status["canary"] = self.canary.status()
        return status


def build_challenger(
    settings: ServingSettings,
    run_dir: Path,
    metrics: ServingMetrics,
    source: RegistrySource,
    warm: WarmStart | None,
) -> Challenger:
    """The version behind SERVING_SHADOW_ALIAS, its shadow dispatcher and its canary."""
    assert settings.shadow_alias is not None
    alias = settings.shadow_alias
    dispatcher = canary = None
    if settings.shadow_percent:
        dispatcher = ShadowDispatcher(
            run_dir / SHADOW_SOCKET,
            metrics.challenger,
            alias,
            settings.shadow_timeout_s,
            settings.shadow_max_queued,
            settings.challenger_workers,
        )
    if settings.canary_percent:
        canary = Canary(
            canary_slot_paths(run_dir, settings.challenger_workers),
            alias,
            Limits(
                settings.canary_min_requests,
                settings.canary_error_rate_margin,
                settings.canary_p99_margin_ms / 1000,
            ),
            metrics.challenger,
        )
        metrics.canary = canary

    def start_pool(version: str) -> ScoringPool:
        entry = source.fetch(version)
        metrics.fetched(entry)
        opt_in = batching_opt_in(settings, version)
        pool = ScoringPool.start(
            version,
            entry.path,
            run_dir,
            settings.challenger_workers,
            settings.request_timeout_s,
            model_name=settings.model_name,
            batch=BatchSettings.of(settings, opt_in),
            spawner=warm.spawn if warm is not None else None,
            # Shadow only: the challenger's work yields the cores to production's answers. A
            # canary answers clients, so it runs as production does.
            nice=0 if canary is not None else CHALLENGER_NICE,
            alias=alias,
            role="challenger",  # ps shows challenger-v<version>-<n>
        )
        return pool

    return Challenger(
        alias,
        source.version_of,
        start_pool,
        settings.load_timeout_s,
        dispatcher,
        canary,
    )
