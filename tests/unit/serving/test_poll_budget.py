"""The supervisor's alias poll gives up within its own short budget, whatever ran before it.

Serving started from the registry runs ``connect()`` first, which tunes MLflow's client for
patient callers (5 retries, 60 s). If the poll inherited that, one poll during a registry
outage would block for about a minute, and a dead nginx or scoring process would wait that
long to be restarted.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from local_stack.processes import free_port
from serving.cache import ModelCache
from serving.model_source import ALIAS_ENDPOINT, POLL_BUDGET, RegistrySource
from serving.settings import ServingSettings
from stack_common.tracking import CLIENT_ENV_DEFAULTS, apply_client_defaults


class BusyRegistry(BaseHTTPRequestHandler):
    """A tracking server whose /health answers but whose registry answers 503 (busy or broken
    database): MLflow's client retries 503 with backoff."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def busy_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), BusyRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A port that accepts connections and never answers (a hung server)."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for conn in accepted:
        conn.close()


@pytest.fixture
def patient_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process as connect()-using code leaves it: MLflow's client tuned for patient calls
    (5 retries, 60 s per try). monkeypatch puts the variables back afterwards."""
    for name in CLIENT_ENV_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    apply_client_defaults()


def source(tmp_path: Path, tracking_uri: str, **budget: float) -> RegistrySource:
    settings = ServingSettings.from_env(
        {"MLFLOW_TRACKING_URI": tracking_uri, "STACK_DATA_DIR": str(tmp_path)}
    )
    poll = replace(POLL_BUDGET, **budget) if budget else POLL_BUDGET
    return RegistrySource(settings, ModelCache(settings.cache_dir), poll_budget=poll)


@pytest.mark.usefixtures("patient_client")
def test_poll_gives_up_within_its_budget_after_connect_ran(
    busy_registry: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(MlflowException, match="503"):
        source(tmp_path, busy_registry).current_version()
    assert time.monotonic() - started < 5  # 1 retry, 1 s backoff; not 5 retries (~31 s)


@pytest.mark.usefixtures("patient_client")
def test_poll_timeout_is_its_own_against_a_server_that_never_answers(
    silent_registry: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(MlflowException, match="timeout"):
        source(tmp_path, silent_registry, max_retries=0, timeout_s=0.5).current_version()
    assert time.monotonic() - started < 3  # not MLFLOW_HTTP_REQUEST_TIMEOUT's 60 s


def test_a_poll_during_an_outage_costs_under_half_a_minute() -> None:
    """Worst case: every try times out, with urllib3's backoff (0 s, then 2x factor) between."""
    tries = POLL_BUDGET.max_retries + 1
    backoff = sum(POLL_BUDGET.backoff_factor * 2**n for n in range(1, POLL_BUDGET.max_retries))
    assert tries * POLL_BUDGET.timeout_s + backoff < 30


def test_the_alias_endpoint_is_the_one_mlflows_client_calls() -> None:
    from mlflow.protos.model_registry_pb2 import GetModelVersionByAlias
    from mlflow.store.model_registry.rest_store import _METHOD_TO_INFO

    assert _METHOD_TO_INFO[GetModelVersionByAlias] == (ALIAS_ENDPOINT, "GET")
