"""The supervisor's alias poll gives up within its own short budget, whatever ran before it.

Serving started from the registry runs ``connect()`` first, which tunes MLflow's client for
patient callers (5 retries, 60 s). If the poll inherited that, one poll during a registry
outage would block for about a minute, and a dead nginx or scoring process would wait that
long to be restarted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from local_stack.processes import free_port
from serving import supervisor
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


def test_poll_gives_up_within_its_budget_after_connect_ran(
    busy_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CLIENT_ENV_DEFAULTS:
        monkeypatch.delenv(name, raising=False)  # restored after the test
    apply_client_defaults()  # what connect() does first when serving starts from the registry
    poller = SimpleNamespace(
        client=None,
        settings=SimpleNamespace(tracking_uri=busy_registry, model_name="m", alias="production"),
    )
    started = time.monotonic()
    with pytest.raises(Exception, match="503"):
        supervisor.Supervisor._resolve(poller)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5  # 1 retry, 1 s backoff
