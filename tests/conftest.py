"""Fixtures shared by the whole suite: real processes on free loopback ports, unique names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from local_stack.processes import (
    Service,
    free_port,
    start_serving,
    start_tracking_server,
    wait_until_up,
)
from stack_common.tracking import apply_client_defaults

# Library code run in-process gets the MLflow client settings the CLIs give their process.
apply_client_defaults()

STARTUP_TIMEOUT_S = 180.0


def _forget_global_mlflow_uris() -> None:
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri("")
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """How tests/run.sh's two workers share the suite: each test module stays whole on one
    worker (its module-scoped servers start once), and all Compose tests go to one worker, in
    order, first: they share the Docker engine and its image builds, and two stacks at once on
    a small machine starve each other's health checks. The rest runs beside them."""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesWithComposeTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/compose" if module.startswith("tests/compose/") else module

    config.option.loadscopereorder = False  # collection order: tests/compose comes first
    return ModulesWithComposeTogether(config, log)


@pytest.fixture(autouse=True)
def _isolated_mlflow_uris() -> Iterator[None]:
    """Library code run in-process (``connect()``, ``run_training``) points MLflow's global
    tracking and registry URIs, and the variables subprocesses inherit, at one test's server.
    A later ``MlflowClient(url)`` would send its registry calls there: reset around each test."""
    _forget_global_mlflow_uris()
    yield
    _forget_global_mlflow_uris()


@pytest.fixture
def unique_name() -> str:
    """A model/experiment name no other test (or test run) uses."""
    return f"test-{uuid.uuid4().hex[:10]}"


class ServiceFactory:
    """Starts real services on free ports; :meth:`stop_all` stops every one of them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Service] = []

    def _up(self, service: Service, path: str | None) -> Service:
        self.started.append(service)
        if path:
            wait_until_up(service, path, STARTUP_TIMEOUT_S)
        return service

    def tracking(
        self,
        data_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> Service:
        port = port or free_port()
        log = self.tmp_path / f"tracking-{port}.log"
        service = start_tracking_server(data_dir or self.tmp_path / "stack", port, log, env)
        return self._up(service, "/health")

    def serving(
        self,
        tracking_uri: str,
        model_name: str,
        data_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Service:
        port = free_port()
        log = self.tmp_path / f"serving-{port}.log"
        root = data_dir or self.tmp_path / "stack"
        service = start_serving(root, tracking_uri, model_name, port, log, env)
        return self._up(service, "/ping" if wait else None)

    def stop_all(self) -> None:
        for service in reversed(self.started):
            service.stop()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start services; every one started is stopped when the test ends, pass or fail."""
    factory = ServiceFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def shared_tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One tracking server for the tests that only need *a* server; each uses its own names."""
    root = tmp_path_factory.mktemp("shared-stack")
    port = free_port()
    service = start_tracking_server(root, port, root / "tracking.log")
    try:
        wait_until_up(service, "/health", STARTUP_TIMEOUT_S)
        yield service
    finally:
        service.stop()


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch, shared_tracking_server: Service, unique_name: str):
    """Point this test process's MLflow client at the shared server, with its own names."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_tracking_server.url)
    monkeypatch.setenv("MODEL_NAME", unique_name)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", unique_name)
    monkeypatch.setenv("SERVER_WAIT_SECONDS", "20")
    return shared_tracking_server
