"""The serving supervisor: follows the registry alias and switches versions blue/green.

Every ``SERVING_POLL_SECONDS`` it asks the registry which version carries the alias. When the
alias moves (``stack-registry promote``/``rollback`` or the MLflow UI), the new version is
fetched through the cache, started in a fresh pool of scoring processes, checked with ``/ping``
and a real prediction of its input example, and only then does nginx send it traffic; the old
pool is retired once nginx's old workers have finished their requests. A version that fails to
load or predict is never switched to: the old one keeps serving and ``/health`` says why.

Its children are kept as gunicorn's arbiter keeps its workers (``serving/children.py``): signal
handlers only record, the loop acts; a dead scoring process is replaced alone, with a backoff
that ends in ``unhealthy`` (``serving/restarts.py``); every other exited child is reaped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Sized
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from serving.cache import CacheEntry, ModelCache
from serving.challenger import Challenger, build_challenger
from serving.children import STOP_SIGNALS, SignalQueue, reap_strays
from serving.front import Front, FrontConfig
from serving.metrics import ServingMetrics
from serving.model_source import (
    FilesDoNotMatch,
    RegistrySource,
    StartStopped,
    batching_decision,
    batching_opt_in,
)
from serving.pool import (
    BatchSettings,
    Mirror,
    PoolFailed,
    ScoringPool,
    example_request,
    interpreter_env,
)
from serving.restarts import RestartBackoff
from serving.settings import ServingSettings
from serving.shadow import SHADOW_SOCKET
from serving.spawn import WarmStart
from stack_common.errors import describe_mlflow_error, one_line, refused_status

logger = logging.getLogger(__name__)

# After a switch, how long the old pool keeps accepting what was already on its way to it.
DRAIN_S = 1.0


# -- what the supervisor works with (serving.front.Front, serving.pool.ScoringPool,
# -- serving.model_source.RegistrySource in production; small fakes in tests) ----------------


class FrontEnd(Protocol):
    """nginx: sends traffic to the fixed socket paths ("slots") a pool adopts."""

    @property
    def slots(self) -> list[Path]: ...

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def returncode(self) -> int | None: ...

    def stop(self) -> None: ...


class Pool(Protocol):
    """The scoring processes of one version (see serving.pool.ScoringPool)."""

    version: str
    model_path: Path

    @property
    def processes(self) -> Sized: ...

    started_at: float

    def wait_ready(self, timeout_s: float, fallback_example: bytes | None = None) -> None: ...

    def adopt(self, slots: list[Path]) -> None: ...

    def replace(self, index: int, timeout_s: float) -> None: ...

    def pids(self) -> list[int]: ...

    def release(self) -> None: ...

    def dead(self) -> list[int]: ...

    def stop(self, timeout_s: float = ...) -> None: ...


PoolFactory = Callable[[CacheEntry], Pool]


class ModelSource(Protocol):
    """The alias and the files of its versions (see serving.model_source.RegistrySource)."""

    def first(self, stopping: Callable[[], bool] = ...) -> tuple[CacheEntry, str]: ...

    def current_version(self) -> str | None: ...

    def fetch(self, version: str) -> CacheEntry: ...

    def remember(self, version: str) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def now(self) -> str: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def now(self) -> str:
        return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, payload: dict) -> None:
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(staged, path)


class Supervisor:
    """Keeps one version serving behind the front and follows the alias.

    It builds nothing itself: the front, the pools, the model source and the clock are given
    (:func:`build_supervisor` wires the real ones), so every decision here can be tested with
    small fakes.
    """

    def __init__(
        self,
        settings: ServingSettings,
        *,
        front: FrontEnd,
        start_pool: PoolFactory,
        models: ModelSource,
        clock: Clock,
        run_dir: Path,
        cleanup: Callable[[], None] | None = None,
        on_serving: Callable[[Pool], None] | None = None,
        signals: SignalQueue | None = None,
        nap: Callable[[float], None] | None = None,
        other_children: Callable[[], Iterable[int]] = lambda: (),
        challenger: Challenger | None = None,
    ) -> None:
        self.settings = settings
        self.front = front
        self.start_pool = start_pool
        self.models = models
        self.clock = clock
        self.run_dir = run_dir
        self.cleanup = cleanup
        self.on_serving = on_serving  # told of each new version once it serves
        self.active: Pool | None = None
        self.loaded_at = ""
        self.previous_version: str | None = None
        self.source = "registry"
        self.failed: dict[str, str] = {}  # versions never to switch to, with the reason
        self.degraded: dict[str, str] = {}  # dependency -> what is wrong
        self.stopping = False
        # Signals are recorded by their handlers and acted on by the loop; ``nap`` is how the
        # loop sleeps (the signal queue's wake-up pipe in production, the fake clock in tests).
        self.signals = signals or SignalQueue()
        self.nap = nap or clock.sleep
        self.other_children = other_children  # our children not in a pool (warm interpreter)
        self.restarts = RestartBackoff(
            settings.restart_backoff_s,
            settings.restart_backoff_max_s,
            settings.restart_max_failures,
        )
        self.unhealthy: str | None = None  # why the supervisor gave up restarting
        # The version behind SERVING_SHADOW_ALIAS, for shadow and canary (serving/challenger.py).
        self.challenger = challenger
        self._challenger_status: dict[str, Any] | None = None

    # -- metrics (serving/metrics.py; the hooks below are one line each) ---------------------

    @cached_property
    def metrics(self) -> ServingMetrics:
        return ServingMetrics(self.settings.model_name, self.settings.alias, self.run_dir)

    # -- life cycle ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (the process's main thread)."""
        self.signals.install()
        try:
            self.serve()
        finally:
            self.signals.uninstall()

    def serve(self) -> None:
        try:
            self.metrics.serve()
            if self.challenger is not None:
                self.challenger.start()
            self.start()
            while not self.stop_requested():
                self.tick()
                self._sleep(self.settings.poll_s)
        finally:
            logger.info("stopping")
            self.shutdown()

    def start(self) -> None:
        """The first version: loaded and checked, then nginx starts sending it traffic.

        A stop signal is looked at between the steps (a download or a load in progress
        finishes first, within its own timeout)."""
        try:
            entry, self.source = self.models.first(self.stop_requested)
        except StartStopped:
            return
        if self.stop_requested():
            return
        self.metrics.fetched(entry)
        pool = self.start_pool(entry)
        try:
            pool.wait_ready(self.settings.load_timeout_s)
        except BaseException:
            pool.stop()
            raise
        if self.stop_requested():
            pool.stop()
            return
        pool.adopt(self.front.slots)
        self.front.start()
        self._activate(pool)
        logger.info(
            "serving %s version %s on http://%s:%s (%d scoring processes)",
            self.settings.model_name,
            pool.version,
            self.settings.host,
            self.settings.port,
            len(pool.processes),
        )

    def request_stop(self) -> None:
        """Leave the loop after the current tick (what SIGTERM and SIGINT lead to)."""
        self.stopping = True

    def stop_requested(self) -> bool:
        """Act on the signals received since the last look; True once asked to stop."""
        for signum in self.signals.pop():
            if signum in STOP_SIGNALS:
                logger.info("%s received", signal.Signals(signum).name)
                self.request_stop()
            elif signum == signal.SIGCHLD and self.active is not None and not self.stopping:
                self.check_children()
        return self.stopping

    def shutdown(self) -> None:
        self.front.stop()
        if self.challenger is not None:
            self.challenger.stop()
        self.metrics.stop()
        if self.active is not None:
            self.active.stop()
            self.active = None
        if self.cleanup is not None:
            self.cleanup()

    def _sleep(self, seconds: float) -> None:
        deadline = self.clock.monotonic() + seconds
        while not self.stop_requested() and (left := deadline - self.clock.monotonic()) > 0:
            self.nap(left)

    def _activate(self, pool: Pool) -> None:
        new = self.active is None or self.active.version != pool.version
        if self.active is not None and new:
            self.previous_version = self.active.version
        self.active = pool
        self.loaded_at = self.clock.now()
        self._write_status()
        if new and self.on_serving is not None:
            self.on_serving(pool)

    # -- following the alias ------------------------------------------------------------------

    def tick(self) -> None:
        assert self.active is not None
        self.check_children()
        try:
            version = self.models.current_version()
        except Exception as exc:  # registry down or answering errors: keep serving
            self._degrade("tracking_server", registry_problem(exc))
            return
        self._recover("tracking_server")
        if version is None:
            self._degrade(
                "alias",
                f"no version has alias {self.settings.alias!r}; "
                f"keeping version {self.active.version}",
            )
            return
        self._recover("alias")
        if version != self.active.version and version not in self.failed:
            self._switch(version)
        self._follow_challenger()

    def _follow_challenger(self) -> None:
        if self.challenger is None or self.active is None:
            return
        model_path = self.active.model_path
        self.challenger.follow(self.active.version, lambda: example_request(model_path))
        if self.challenger.status() != self._challenger_status:
            self._write_status()

    # -- children: nginx, the scoring processes, strays -----------------------------------

    def check_children(self) -> None:
        """Start nginx again if it exited, replace each dead scoring process, reap the rest."""
        assert self.active is not None
        if not self.front.alive():
            logger.error("nginx exited (code %s); starting it again", self.front.returncode())
            self.metrics.restarted("nginx")
            self.front.start()
        dead = self.active.dead()
        if dead:
            self._replace(dead)
        reap_strays(self._owned_pids())

    def _owned_pids(self) -> set[int]:
        owned = set(self.other_children())
        if self.active is not None:
            owned.update(self.active.pids())
        if self.challenger is not None:
            owned.update(self.challenger.pids())
        return owned

    def _replace(self, dead: list[int]) -> None:
        """Only the dead processes are started again; repeated failures back off, doubling
        up to SERVING_RESTART_BACKOFF_MAX_SECONDS, and after SERVING_RESTART_MAX_FAILURES in a
        row the supervisor gives up: /health says unhealthy, and no poll retries it."""
        assert self.active is not None
        if not self.restarts.may_try(self.clock.monotonic()):
            return
        version = self.active.version
        for index in dead:
            logger.error("scoring process %d of version %s died; replacing it", index, version)
            self.metrics.restarted("scoring")
            try:
                self.active.replace(index, self.settings.load_timeout_s)
            except PoolFailed as exc:
                self._restart_failed(exc)
                return
        if self.restarts.succeeded():
            self._recover("scoring")

    def _restart_failed(self, exc: PoolFailed) -> None:
        delay = self.restarts.failed(self.clock.monotonic())
        failures, limit = self.restarts.failures, self.restarts.max_failures
        if delay is None:
            self.unhealthy = (
                f"scoring processes of version {self.active.version if self.active else '?'} "
                f"failed to restart {failures} times in a row ({exc}); no more restarts: "
                "fix the cause, then promote a version or restart the container"
            )
            logger.error("unhealthy: %s", self.unhealthy)
            self.degraded.pop("scoring", None)
            self._write_status()
            return
        self._degrade(
            "scoring",
            f"restart {failures} of {limit} failed ({exc}); next attempt in {delay:g}s",
        )

    def _reset_restarts(self) -> None:
        self.restarts.reset()
        self.unhealthy = None
        self.degraded.pop("scoring", None)

    # -- switching versions -----------------------------------------------------------------

    def _switch(self, version: str) -> None:
        assert self.active is not None
        started = self.clock.monotonic()
        logger.info(
            "%s@%s moved to version %s (serving %s); preparing it",
            self.settings.model_name,
            self.settings.alias,
            version,
            self.active.version,
        )
        try:
            entry = self.models.fetch(version)
        except FilesDoNotMatch as exc:
            # Never this version, however often the alias is polled: its files were changed
            # after registration (serving/model_source.py logged expected and found digests).
            self.failed[version] = str(exc)
            logger.error(
                "not switching to version %s: %s; version %s keeps serving",
                version,
                exc,
                self.active.version,
            )
            self._recover("artifact_download")
            self._write_status()
            return
        except Exception as exc:
            self._degrade("artifact_download", f"version {version}: {one_line(str(exc), 200)}")
            return
        self._recover("artifact_download")
        self.metrics.fetched(entry)
        pool = self.start_pool(entry)
        try:
            pool.wait_ready(self.settings.load_timeout_s, example_request(self.active.model_path))
        except PoolFailed as exc:
            pool.stop()
            self.failed[version] = str(exc)
            logger.error(
                "not switching to version %s: %s; version %s keeps serving",
                version,
                exc,
                self.active.version,
            )
            self._write_status()
            return
        old = self.active
        pool.adopt(self.front.slots)  # the switch: new connections now reach the new pool
        old.release()
        self.source = "registry"
        self._reset_restarts()  # a fresh pool: its processes start with a clean slate
        # Connections made just before the switch are accepted and read, and nginx's kept
        # connections to the old pool age out (front.UPSTREAM_KEEPALIVE_MS). Only then does
        # /served name the new version: from that moment on no new request reaches the old one.
        self.clock.sleep(DRAIN_S)
        self._activate(pool)
        old.stop(timeout_s=self.settings.request_timeout_s + 5)  # lets requests in flight end
        self.models.remember(version)
        logger.info(
            "now serving version %s (was %s), switched in %.1fs",
            version,
            old.version,
            self.clock.monotonic() - started,
        )

    # -- status -------------------------------------------------------------------------------

    def _degrade(self, dependency: str, reason: str) -> None:
        if self.degraded.get(dependency) != reason:
            logger.warning("degraded: %s %s", dependency, reason)
            self.degraded[dependency] = reason
            self._write_status()

    def _recover(self, dependency: str) -> None:
        if self.degraded.pop(dependency, None) is not None:
            logger.info("recovered: %s", dependency)
            self._write_status()

    def _write_status(self) -> None:
        if self.active is None:
            return
        name, version = self.settings.model_name, self.active.version
        served: dict[str, Any] = {
            "model_name": name,
            "alias": self.settings.alias,
            "version": version,
            "model_uri": f"models:/{name}/{version}",
            "loaded_at": self.loaded_at,
            "source": self.source,
            "previous_version": self.previous_version,
            "scoring_processes": len(self.active.processes),
        }
        batching = getattr(self.active, "batching", None)
        if batching is not None:
            served["batching"] = {"on": batching.batched, "why": batching.why}
        status = "degraded" if self.degraded or self.failed else "ok"
        health = {
            "status": "unhealthy" if self.unhealthy else status,
            "model_version": version,
            "batched": batching.batched if batching is not None else None,
            "alias": self.settings.alias,
            "degraded": self.degraded,
            "rejected_versions": self.failed,
            "unhealthy": self.unhealthy,
        }
        if self.challenger is not None:
            self._challenger_status = self.challenger.status()
            served["challenger"] = health["challenger"] = self._challenger_status
        _write_json(self.run_dir / "served.json", served)
        _write_json(self.run_dir / "health.json", health)
        self.metrics.status(served, health, self.active.started_at)


def registry_problem(exc: Exception) -> str:
    """What /health says when the alias cannot be read. A refused login or a missing permission
    is not an outage: name it, with the fix, so an operator does not chase the network."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException) and (
        refused_status(exc.message) or exc.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED")
    ):
        return describe_mlflow_error(exc.message)
    return f"unreachable: {one_line(str(exc), 200)}"


def build_supervisor(settings: ServingSettings, cache: ModelCache) -> Supervisor:
    """The production wiring: nginx, pools of MLflow scoring processes, the registry through
    the cache, the system clock; a run folder of its own unless SERVING_RUN_DIR names one."""
    run_dir = settings.run_dir or Path(tempfile.mkdtemp(prefix="stack-serving-"))
    # Started first: its imports overlap the registry look-up and the download.
    warm = None
    if settings.warm_start:
        warm = WarmStart(interpreter_env(), settings.load_timeout_s, settings.model_name)
        warm.start()
    front = Front(
        FrontConfig(
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            max_body_mb=settings.max_body_mb,
            request_timeout_s=settings.request_timeout_s,
            alias=settings.alias,
            nginx=settings.nginx,
            njs_module=settings.njs_module,
            canary_percent=settings.canary_percent if settings.shadow_alias else 0.0,
            challenger_workers=settings.challenger_workers,
        ),
        run_dir,
    )
    mirror = None
    if settings.shadow_alias and settings.shadow_percent:
        mirror = Mirror(run_dir / SHADOW_SOCKET, settings.shadow_percent)

    def start_pool(entry: CacheEntry) -> Pool:
        opt_in = batching_opt_in(settings, entry.version)
        pool = ScoringPool.start(
            entry.version,
            entry.path,
            run_dir,
            settings.workers,
            settings.request_timeout_s,
            model_name=settings.model_name,
            batch=BatchSettings.of(settings, opt_in),
            spawner=warm.spawn if warm is not None else None,
            mirror=mirror,
            alias=settings.alias,
        )
        pool.batching = batching_decision(settings, entry.path, opt_in)
        return pool

    def other_children() -> list[int]:
        """nginx and the warm interpreter: their Popen objects reap them, with exit codes."""
        helper = warm.process if warm is not None else None
        return [p.pid for p in (front.process, helper) if p is not None]

    def cleanup() -> None:
        if warm is not None:
            warm.stop()
        if settings.run_dir is None:
            shutil.rmtree(run_dir, ignore_errors=True)

    signals = SignalQueue()
    supervisor = Supervisor(
        settings,
        front=front,
        start_pool=start_pool,
        models=RegistrySource(settings, cache),
        clock=SystemClock(),
        run_dir=run_dir,
        cleanup=cleanup,
        on_serving=(lambda pool: warm.warm(pool.model_path)) if warm is not None else None,
        signals=signals,
        nap=signals.wait,
        other_children=other_children,
    )
    if settings.shadow_alias:
        source = supervisor.models
        assert isinstance(source, RegistrySource)
        supervisor.challenger = build_challenger(
            settings, run_dir, supervisor.metrics, source, warm
        )
    return supervisor
