"""New versions start in processes forked from a warm interpreter, which the supervisor adopts:
they are its own children (repaired, stopped and counted like any other), a dead warm
interpreter costs no promotion, and nothing outlives a killed supervisor."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import ServiceFactory
from tests.helpers import LoadGenerator, Proc, processes, run_cli, train_and_promote, wait_for

pytestmark = pytest.mark.e2e

WARM = "serving.warm_start"


def live() -> list[Proc]:
    """Processes that have not exited (a zombie is gone, only not yet reaped)."""
    return [p for p in processes() if p.state != "Z"]


def children(pid: int) -> list[Proc]:
    return [p for p in live() if p.ppid == pid]


def scoring(pid: int, version: str) -> list[Proc]:
    return [p for p in children(pid) if p.name.startswith(f"scoring-v{version}-")]


def warm_interpreter(pid: int) -> Proc | None:
    found = [p for p in children(pid) if WARM in p.command and not p.name.startswith("scoring")]
    return found[0] if found else None


def test_versions_start_warm_and_the_supervisor_owns_every_process(
    services: ServiceFactory, unique_name: str, tmp_path: Path
) -> None:
    tracking = services.tracking()
    env = train_and_promote(tracking.url, unique_name)
    serving = services.serving(
        tracking.url, unique_name, env={"SERVING_POLL_SECONDS": "0.5", "SERVING_WORKERS": "2"}
    )
    supervisor = serving.process.pid

    # Version 1's processes were forked from the warm interpreter and adopted by the supervisor.
    first = scoring(supervisor, "1")
    assert len(first) == 2 and all(WARM in p.command for p in first), children(supervisor)
    warm = warm_interpreter(supervisor)
    assert warm is not None
    log = serving.log_path
    wait_for(lambda: "warmed" in log.read_text(), what="the served version warmed")

    # The warm interpreter dies: the next promotion still switches under load, losing nothing.
    os.kill(warm.pid, signal.SIGKILL)
    assert run_cli("training", env=env).code == 0
    with LoadGenerator(serving.url, concurrency=4) as load:
        assert run_cli("promotion", "promote", "--version", "2", "--force", env=env).code == 0
        load.wait_until_seen("2", timeout_s=60)
    assert load.failures == []
    wait_for(lambda: len(scoring(supervisor, "2")) == 2, what="version 2's two processes")
    wait_for(lambda: not scoring(supervisor, "1"), what="version 1's processes stopped")

    # A new warm interpreter took its place, and the rollback is forked from it again.
    again = wait_for(lambda: warm_interpreter(supervisor), what="a new warm interpreter")
    assert again.pid != warm.pid
    with LoadGenerator(serving.url, concurrency=4) as load:
        assert run_cli("promotion", "rollback", env=env).code == 0
        load.wait_until_seen("1", timeout_s=60)
    assert load.failures == []
    back = wait_for(lambda: len(scoring(supervisor, "1")) == 2 and scoring(supervisor, "1"))
    assert all(WARM in p.command for p in back)

    # Nothing outlives a supervisor killed outright: no nginx, no scoring process, no warm one.
    ours = {p.pid for p in children(supervisor)}
    os.kill(supervisor, signal.SIGKILL)
    serving.process.wait(timeout=10)
    wait_for(
        lambda: not ours & {p.pid for p in live()},
        timeout_s=20,
        what="every process of the killed supervisor gone",
    )
