"""The shared wait-for-server helper: quick when the server comes up, one clear line when not."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local_stack.processes import free_port
from stack_common.wait import ServerUnreachable, wait_for_http


class Healthy(BaseHTTPRequestHandler):
    probes = 0  # answered requests, for the test to see it was asked

    def do_GET(self) -> None:
        type(self).probes += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


class Starting(BaseHTTPRequestHandler):
    """A server that is up but not ready: 503 to every probe."""

    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_unreachable_server_fails_with_the_url_and_a_hint() -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    started = time.monotonic()
    with pytest.raises(ServerUnreachable) as err:
        wait_for_http(url, 1.5, what="MLflow tracking server", hint="check MLFLOW_TRACKING_URI")
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert url in message and "check MLFLOW_TRACKING_URI" in message and "\n" not in message


def test_server_that_comes_up_late_is_waited_for() -> None:
    port = free_port()
    # Nothing listens for the first second: the first probes are refused.
    server = ThreadingHTTPServer(("127.0.0.1", port), Healthy, bind_and_activate=False)
    server.allow_reuse_address = True

    def bind_later() -> None:
        time.sleep(1.0)
        server.server_bind()
        server.server_activate()
        server.serve_forever()

    Healthy.probes = 0
    thread = threading.Thread(target=bind_later, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", 15, what="test server", hint="none")
        waited = time.monotonic() - started
    finally:
        server.shutdown()
    assert Healthy.probes == 1  # returned on the first answer, not before and not later
    assert 1.0 <= waited < 8  # waited for the server, then about one backoff step (2 s)


def test_a_server_that_answers_but_not_200_is_not_up() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Starting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    try:
        with pytest.raises(ServerUnreachable, match=r"did not answer within 1s \(HTTP 503\)"):
            wait_for_http(url, 1, what="test server", hint="none")
    finally:
        server.shutdown()
