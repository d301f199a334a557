"""The serving supervisor's decisions, with small fakes instead of nginx, MLflow and processes.

The fakes record what the supervisor did to them in one shared ``events`` list, so the tests
can check the order that matters (a new pool takes the slots before the old one stops).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from serving.cache import CacheEntry
from serving.model_source import StartStopped
from serving.pool import PoolFailed
from serving.settings import ServingSettings
from serving.supervisor import DRAIN_S, Supervisor, SystemClock

MODEL = "grades"
REQUEST_TIMEOUT_S = 7


class FakeFront:
    def __init__(self, run_dir: Path, events: list[str]) -> None:
        self.slots = [run_dir / "slot-0.sock", run_dir / "slot-1.sock"]
        self.events = events
        self.running = False
        self.starts = 0

    def start(self) -> None:
        self.running = True
        self.starts += 1
        self.events.append("front start")

    def alive(self) -> bool:
        return self.running

    def returncode(self) -> int | None:
        return None if self.running else -9

    def stop(self) -> None:
        self.running = False
        self.events.append("front stop")


@dataclass
class FakePool:
    version: str
    model_path: Path
    events: list[str]
    failure: str | None = None
    processes: list[int] = field(default_factory=lambda: [1, 2])
    died: list[int] = field(default_factory=list)
    slots: list[Path] = field(default_factory=list)
    checked_with: bytes | None = None
    stopped_with: float | None = None
    started_at: float = 0.0
    replace_failure: str | None = None  # why restarting a dead process fails, if it does

    def replace(self, index: int, timeout_s: float) -> None:
        self.events.append(f"v{self.version} replace {index}")
        if self.replace_failure is not None:
            raise PoolFailed(f"version {self.version}: {self.replace_failure}")
        self.died.remove(index)

    def pids(self) -> list[int]:
        return []  # not real processes: the reap sweep owns none of the test's children

    def wait_ready(self, timeout_s: float, fallback_example: bytes | None = None) -> None:
        self.checked_with = fallback_example
        if self.failure is not None:
            raise PoolFailed(f"version {self.version}: {self.failure}")

    def adopt(self, slots: list[Path]) -> None:
        self.slots = list(slots)
        self.events.append(f"v{self.version} adopt")

    def release(self) -> None:
        self.slots = []

    def dead(self) -> list[int]:
        return self.died

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stopped_with = timeout_s
        self.events.append(f"v{self.version} stop")


class FakeModels:
    """The registry's alias and the cache: ``alias`` is what the registry says now; set
    ``outage`` to an exception to make the registry unreadable."""

    def __init__(self, tmp_path: Path, first: str = "1", source: str = "registry") -> None:
        self.tmp_path = tmp_path
        self.first_version, self.first_source = first, source
        self.alias: str | None = first
        self.outage: Exception | None = None
        self.download_error: Exception | None = None
        self.remembered: list[str] = []

    def entry(self, version: str) -> CacheEntry:
        path = self.tmp_path / "cache" / version
        path.mkdir(parents=True, exist_ok=True)
        return CacheEntry(path=path, version=version, size_bytes=1, hit=True, seconds=0.0)

    def first(self, stopping: Callable[[], bool] = lambda: False) -> tuple[CacheEntry, str]:
        self.stopping = stopping  # what the supervisor asks it to look at while it waits
        return self.entry(self.first_version), self.first_source

    def current_version(self) -> str | None:
        if self.outage is not None:
            raise self.outage
        return self.alias

    def fetch(self, version: str) -> CacheEntry:
        if self.download_error is not None:
            raise self.download_error
        return self.entry(version)

    def remember(self, version: str) -> None:
        self.remembered.append(version)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []
        self.on_sleep = lambda: None

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        self.on_sleep()

    def now(self) -> str:
        return (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)).isoformat()


class Harness:
    """A supervisor wired to fakes, and what it did to them."""

    def __init__(
        self, tmp_path: Path, models: FakeModels | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.events: list[str] = []
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir()
        self.front = FakeFront(self.run_dir, self.events)
        self.models = models or FakeModels(tmp_path)
        self.clock = FakeClock()
        self.pools: list[FakePool] = []
        self.failing: dict[str, str] = {}  # version -> why its pool fails its checks
        self.cleaned = False
        self.warmed: list[str] = []  # versions the supervisor reported serving (warm start)
        settings = ServingSettings.from_env(
            {
                "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
                "MODEL_NAME": MODEL,
                "SERVING_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_S),
                "SERVING_POLL_SECONDS": "3",
            }
            | (env or {})
        )
        self.supervisor = Supervisor(
            settings,
            front=self.front,
            start_pool=self.start_pool,
            models=self.models,
            clock=self.clock,
            run_dir=self.run_dir,
            cleanup=self.cleanup,
            on_serving=lambda pool: self.warmed.append(pool.version),
        )

    def start_pool(self, entry: CacheEntry) -> FakePool:
        pool = FakePool(entry.version, entry.path, self.events, self.failing.get(entry.version))
        self.pools.append(pool)
        self.events.append(f"v{entry.version} start")
        return pool

    def cleanup(self) -> None:
        self.cleaned = True

    def status(self, name: str) -> dict:
        return json.loads((self.run_dir / f"{name}.json").read_text())

    def served_version(self) -> str:
        assert self.supervisor.active is not None
        return self.supervisor.active.version


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_first_start_loads_checks_then_opens_the_front(h: Harness) -> None:
    h.supervisor.start()
    assert h.events == ["v1 start", "v1 adopt", "front start"]  # no traffic before it is ready
    assert h.pools[0].slots == h.front.slots
    served = h.status("served")
    assert served["version"] == "1" and served["source"] == "registry"
    assert served["model_uri"] == f"models:/{MODEL}/1" and served["scoring_processes"] == 2
    assert served["loaded_at"] == h.clock.now() and served["previous_version"] is None
    health = h.status("health")
    assert health["status"] == "ok" and health["model_version"] == "1"
    assert health["degraded"] == {} and health["rejected_versions"] == {}


def test_first_start_from_the_cache_says_so(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeModels(tmp_path, first="4", source="cache"))
    h.supervisor.start()
    assert h.status("served")["source"] == "cache" and h.served_version() == "4"
    h.supervisor.tick()  # the registry agrees: nothing to do
    assert len(h.pools) == 1


def test_a_moved_alias_switches_to_the_new_version(h: Harness) -> None:
    (h.models.entry("1").path / "serving_input_example.json").write_bytes(b'{"inputs": [1]}')
    h.supervisor.start()
    h.events.clear()
    h.models.alias = "2"
    # While the old pool drains (nginx's kept connections to it age out), /served still names
    # the old version: once it names the new one, no new request reaches the old pool.
    during_drain: list[str] = []
    h.clock.on_sleep = lambda: during_drain.append(h.status("served")["version"])
    h.supervisor.tick()
    assert during_drain == ["1"]
    old, new = h.pools
    # The new pool takes the slots before the old one stops, and the old one is given time to
    # finish what it is answering.
    assert h.events == ["v2 start", "v2 adopt", "v1 stop"]
    assert new.slots == h.front.slots and old.slots == []
    assert old.stopped_with == REQUEST_TIMEOUT_S + 5
    assert DRAIN_S in h.clock.slept
    # A version without its own input example is checked on the served version's.
    assert new.checked_with == b'{"inputs": [1]}'
    served = h.status("served")
    assert served["version"] == "2" and served["previous_version"] == "1"
    assert h.models.remembered == ["2"]
    h.supervisor.tick()
    assert len(h.pools) == 2, "switched again to the version it serves"


def test_a_version_that_fails_its_checks_is_never_switched_to(h: Harness) -> None:
    h.supervisor.start()
    h.failing["2"] = "test prediction answered 500"
    h.models.alias = "2"
    h.supervisor.tick()
    assert h.served_version() == "1"
    assert h.pools[1].stopped_with is not None and h.pools[0].stopped_with is None
    assert h.pools[0].slots == h.front.slots
    health = h.status("health")
    assert health["status"] == "degraded" and health["model_version"] == "1"
    assert health["rejected_versions"] == {"2": "version 2: test prediction answered 500"}
    assert h.status("served")["version"] == "1" and h.models.remembered == []
    h.supervisor.tick()
    assert len(h.pools) == 2, "tried the rejected version again"
    h.models.alias = "3"  # the next promotion is tried
    h.supervisor.tick()
    assert h.served_version() == "3"


def test_registry_outage_degrades_health_and_recovery_clears_it(h: Harness) -> None:
    h.supervisor.start()
    h.models.outage = MlflowException(
        "API request to http://127.0.0.1:1/api/2.0/mlflow/registered-models/alias failed "
        "with exception Max retries exceeded (Connection refused)"
    )
    h.supervisor.tick()
    health = h.status("health")
    assert health["status"] == "degraded" and health["model_version"] == "1"
    assert health["degraded"]["tracking_server"].startswith("unreachable: ")
    assert "Connection refused" in health["degraded"]["tracking_server"]
    assert h.served_version() == "1" and len(h.pools) == 1  # keeps serving what it has
    h.models.outage = None
    h.supervisor.tick()
    health = h.status("health")
    assert health["status"] == "ok" and health["degraded"] == {}


def test_a_removed_alias_degrades_and_keeps_the_served_version(h: Harness) -> None:
    h.supervisor.start()
    h.models.alias = None
    h.supervisor.tick()
    assert h.status("health")["degraded"] == {
        "alias": "no version has alias 'production'; keeping version 1"
    }
    assert h.served_version() == "1"
    h.models.alias = "1"
    h.supervisor.tick()
    assert h.status("health")["status"] == "ok"


def test_a_failed_download_degrades_until_the_next_one_works(h: Harness) -> None:
    h.supervisor.start()
    h.models.alias = "2"
    h.models.download_error = MlflowException("bucket unreachable")
    h.supervisor.tick()
    assert h.status("health")["degraded"] == {"artifact_download": "version 2: bucket unreachable"}
    assert h.served_version() == "1" and len(h.pools) == 1
    h.models.download_error = None
    h.supervisor.tick()
    assert h.served_version() == "2" and h.status("health")["status"] == "ok"


def test_dead_nginx_is_started_again(h: Harness) -> None:
    h.supervisor.start()
    h.front.running = False  # nginx exited
    h.supervisor.tick()
    assert h.front.starts == 2 and h.front.alive()
    assert len(h.pools) == 1 and h.served_version() == "1"


def test_only_the_dead_scoring_process_is_replaced(h: Harness) -> None:
    h.supervisor.start()
    h.pools[0].died = [1]
    h.events.clear()
    h.supervisor.tick()
    assert h.events == ["v1 replace 1"]  # no new pool, the other process untouched
    assert len(h.pools) == 1 and not h.pools[0].dead() and h.pools[0].slots == h.front.slots
    assert h.status("health")["status"] == "ok"
    served = h.status("served")
    assert served["version"] == "1" and served["previous_version"] is None


def test_failing_restarts_back_off_then_the_supervisor_reports_unhealthy_and_stops(
    h: Harness,
) -> None:
    h.supervisor.start()
    pool = h.pools[0]
    pool.died, pool.replace_failure = [0], "scoring process exited with code 1"
    attempts: list[float] = []  # when each restart was tried
    for _ in range(200):  # polls every 3 s of the fake clock: 10 minutes
        h.events.clear()
        h.supervisor.tick()
        if h.events:
            attempts.append(h.clock.t)
        h.clock.t += 3
    limit = h.supervisor.settings.restart_max_failures
    assert len(attempts) == limit, "retried after giving up"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0], f"no backoff: {gaps}"
    health = h.status("health")
    assert health["status"] == "unhealthy" and health["model_version"] == "1"
    assert f"failed to restart {limit} times" in health["unhealthy"]
    assert "exited with code 1" in health["unhealthy"] and "scoring" not in health["degraded"]
    assert h.supervisor.metrics.unhealthy._value.get() == 1
    assert len(h.pools) == 1 and h.served_version() == "1"
    h.models.alias = "2"  # a promotion is a fresh pool: tried, and it clears the state
    h.supervisor.tick()
    assert h.served_version() == "2" and h.status("health")["status"] == "ok"
    assert h.status("health")["unhealthy"] is None


def test_backoff_delays_double_up_to_the_cap(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        env={
            "SERVING_RESTART_BACKOFF_SECONDS": "2",
            "SERVING_RESTART_BACKOFF_MAX_SECONDS": "5",
            "SERVING_RESTART_MAX_FAILURES": "4",
        },
    )
    h.supervisor.start()
    h.pools[0].died, h.pools[0].replace_failure = [0], "not ready within 180s"
    waits = []
    for _ in range(3):
        h.supervisor.tick()
        waits.append(h.supervisor.restarts.retry_at - h.clock.t)
        assert "next attempt in" in h.status("health")["degraded"]["scoring"]
        h.clock.t = h.supervisor.restarts.retry_at
    assert waits == [2, 4, 5]
    h.supervisor.tick()
    assert h.status("health")["status"] == "unhealthy"
    h.pools[0].replace_failure = None  # recovered by itself: still no retry on a poll
    h.clock.t += 3600
    h.events.clear()
    h.supervisor.tick()
    assert h.events == []


def test_a_restart_that_works_after_failures_clears_the_degradation(h: Harness) -> None:
    h.supervisor.start()
    h.pools[0].died, h.pools[0].replace_failure = [1], "not ready"
    h.supervisor.tick()
    assert "scoring" in h.status("health")["degraded"]
    h.pools[0].replace_failure = None
    h.clock.t = h.supervisor.restarts.retry_at
    h.supervisor.tick()
    assert h.status("health")["status"] == "ok" and h.supervisor.restarts.failures == 0


def test_each_new_version_is_reported_once_it_serves_and_only_then(h: Harness) -> None:
    """The warm interpreter loads what serves, to have its imports for the next version: a
    rejected version or a restarted pool of the same version is not reported."""
    h.supervisor.start()
    assert h.warmed == ["1"]
    h.failing["2"] = "test prediction answered 500"
    h.models.alias = "2"
    h.supervisor.tick()
    h.pools[0].died = [0]
    h.supervisor.tick()
    assert h.warmed == ["1"] and h.served_version() == "1" and len(h.pools) == 2
    h.models.alias = "3"
    h.supervisor.tick()
    assert h.warmed == ["1", "3"]


def test_dead_nginx_is_repaired_even_while_the_registry_is_down(h: Harness) -> None:
    h.supervisor.start()
    h.models.outage = MlflowException("unreachable")
    h.front.running = False
    h.pools[0].died = [0]
    h.supervisor.tick()
    assert h.front.starts == 2 and h.served_version() == "1" and h.pools[0].dead() == []


def test_serve_polls_every_interval_until_asked_to_stop_then_shuts_down(h: Harness) -> None:
    polls: list[float] = []
    current = h.models.current_version

    def counted() -> str | None:
        polls.append(h.clock.monotonic())
        if len(polls) == 3:
            h.supervisor.request_stop()  # what SIGTERM does
        return current()

    h.models.current_version = counted  # type: ignore[method-assign]
    h.supervisor.serve()
    assert polls == pytest.approx([0.0, 3.0, 6.0])
    assert h.events[-2:] == ["front stop", "v1 stop"] and h.supervisor.active is None
    assert h.cleaned


def test_a_stop_while_starting_unwinds_at_once_and_cleans_up(h: Harness) -> None:
    first = h.models.first

    def interrupted(stopping: Callable[[], bool]) -> tuple[CacheEntry, str]:
        h.supervisor.request_stop()  # SIGTERM during a long first download
        return first(stopping)

    h.models.first = interrupted  # type: ignore[method-assign]
    h.supervisor.serve()
    assert h.pools == [] and h.events == ["front stop"] and h.cleaned


def _state(pid: int) -> str | None:
    """The process state letter /proc shows (Z: a zombie), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_the_reap_sweep_collects_a_child_that_is_not_in_the_pool(h: Harness) -> None:
    """An orphan the supervisor adopted as subreaper (here: a child of the test process that
    no object owns) is reaped on the next look, not left a zombie."""
    h.supervisor.start()
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    deadline = time.monotonic() + 10
    while _state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(pid) == "Z"
    h.supervisor.tick()
    assert _state(pid) is None, "the stray child is still a zombie"


def test_the_reap_sweep_leaves_its_exit_code_to_an_owned_child(h: Harness) -> None:
    owned = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    h.supervisor.other_children = lambda: [owned.pid]
    h.supervisor.start()
    deadline = time.monotonic() + 10
    while _state(owned.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    h.supervisor.tick()
    assert owned.wait(timeout=5) == 7


def test_a_signal_handler_only_records_and_the_loop_stops_on_it(h: Harness) -> None:
    polls = 0
    seen: list[bool] = []
    current = h.models.current_version

    def counted() -> str | None:
        nonlocal polls
        polls += 1
        if polls == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before kill returns
            seen.append(h.supervisor.stopping)
        return current()

    h.models.current_version = counted  # type: ignore[method-assign]
    previous = signal.getsignal(signal.SIGTERM)
    h.supervisor.signals.install()
    try:
        h.supervisor.serve()
    finally:
        h.supervisor.signals.uninstall()
    assert seen == [False], "the handler acted instead of recording"
    assert polls == 2 and h.supervisor.stopping  # the loop acted before the next poll
    assert h.events[-2:] == ["front stop", "v1 stop"] and h.cleaned
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_signal_wakes_the_loop_from_its_nap_at_once(tmp_path: Path) -> None:
    """With the real clock and a poll interval of 3 s, SIGINT ends the nap through the
    wake-up pipe; a SIGCHLD on the way wakes it too without stopping it."""
    h = Harness(tmp_path)
    signals = h.supervisor.signals
    h.supervisor.clock = SystemClock()
    h.supervisor.nap = signals.wait
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # its exit: a SIGCHLD
    h.supervisor.other_children = lambda: [child.pid]
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    signals.install()
    timer.start()
    began = time.monotonic()
    try:
        h.supervisor.serve()
    finally:
        timer.cancel()
        timer.join()
        signals.uninstall()
        child.wait()
    assert time.monotonic() - began < 2.5 and h.cleaned


def test_a_stop_signal_while_waiting_for_a_first_promotion_ends_the_wait(h: Harness) -> None:
    """Compose waits a day for the first promotion: SIGTERM must end that wait, and it does
    through the same queue (the wait looks at ``stopping``; serving/model_source.py)."""

    def waiting(stopping: Callable[[], bool]) -> tuple[CacheEntry, str]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if stopping():
                raise StartStopped
            time.sleep(0.01)
        raise AssertionError("the wait never heard of the signal")

    h.models.first = waiting  # type: ignore[method-assign]
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    h.supervisor.signals.install()
    timer.start()
    try:
        h.supervisor.serve()
    finally:
        timer.cancel()
        timer.join()
        h.supervisor.signals.uninstall()
    assert h.pools == [] and h.cleaned and h.supervisor.stopping
