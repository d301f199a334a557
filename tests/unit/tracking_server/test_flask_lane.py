"""The short lane to Flask (tracking_server/flask_lane.py) and the remembered default workspace
(tracking_server/default_workspace.py), on their own and on MLflow's real app layout. That every
check still refuses on a real server: tests/e2e/test_security.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, Response, request

from tracking_server.default_workspace import DefaultWorkspaceMemo
from tracking_server.flask_lane import (
    BUFFER_LIMIT_BYTES,
    FlaskLane,
    WSGIBridge,
    with_flask_lane,
)


def scope(path: str, method: str = "GET", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"a=1&b=2",
        "headers": [(b"host", b"127.0.0.1:5000"), (b"x-custom", b"yes")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5000),
        **extra,
    }


def call(app: Any, request_scope: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """Run one request through an ASGI app; the messages it sent."""
    sent: list[dict[str, Any]] = []
    chunks = [body[:3], body[3:]]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(request_scope, receive, send))
    return sent


def answer(messages: list[dict[str, Any]]) -> tuple[int, dict[bytes, bytes], bytes]:
    start = messages[0]
    assert start["type"] == "http.response.start"
    body = b"".join(m.get("body", b"") for m in messages[1:])
    assert messages[-1].get("more_body", False) is False
    return start["status"], dict(start["headers"]), body


def echo_app() -> Flask:
    app = Flask("echo")

    @app.route("/api/2.0/mlflow/echo", methods=["GET", "POST"])
    def echo() -> Any:
        return {
            "path": request.path,
            "query": request.query_string.decode(),
            "body": request.get_data().decode(),
            "custom": request.headers.get("X-Custom"),
            "remote": request.remote_addr,
        }

    @app.route("/big")
    def big() -> Response:
        return Response((b"x" * 100_000 for _ in range(5)), mimetype="application/octet-stream")

    @app.route("/fails")
    def fails() -> Response:
        raise RuntimeError("boom")

    return app


def bridge(app: Flask) -> WSGIBridge:
    from mlflow.server.fastapi_app import build_environ

    return WSGIBridge(app, build_environ)


def test_the_bridge_gives_flask_what_mlflows_bridge_gives() -> None:
    from mlflow.server.fastapi_app import _EfficientWSGIMiddleware

    app = echo_app()
    headers = [(b"host", b"127.0.0.1:5000"), (b"x-custom", b"yes"), (b"content-length", b"8")]
    request_scope = scope("/api/2.0/mlflow/echo", "POST", headers=headers)
    ours = answer(call(bridge(app), request_scope, b'{"x": 1}'))
    theirs = answer(call(_EfficientWSGIMiddleware(app), request_scope, b'{"x": 1}'))
    assert ours == theirs
    status, _, body = ours
    assert status == 200
    assert json.loads(body) == {
        "path": "/api/2.0/mlflow/echo",
        "query": "a=1&b=2",
        "body": '{"x": 1}',
        "custom": "yes",
        "remote": "127.0.0.1",
    }


def test_a_small_answer_is_sent_whole_a_large_one_streamed() -> None:
    app = echo_app()
    small = call(bridge(app), scope("/api/2.0/mlflow/echo"))
    assert len(small) == 2  # start + the whole body
    large = call(bridge(app), scope("/big"))
    status, _, body = answer(large)
    assert status == 200 and body == b"x" * 500_000
    assert len(large) > 3  # streamed in chunks
    assert max(len(m.get("body", b"")) for m in large[1:]) <= BUFFER_LIMIT_BYTES


def test_a_failing_view_is_flasks_500() -> None:
    status, _, _ = answer(call(bridge(echo_app()), scope("/fails")))
    assert status == 500


class Route:
    """A native route that fully matches one path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def matches(self, request_scope: dict[str, Any]) -> tuple[Any, dict]:
        from starlette.routing import Match

        return (Match.FULL if request_scope["path"] == self.path else Match.NONE), {}


def lane_of(validated: Iterable[str] = ()) -> tuple[FlaskLane, list[str]]:
    served: list[str] = []

    def app(name: str) -> Any:
        async def serve(request_scope: dict, receive: Any, send: Any) -> None:
            served.append(name)

        return serve

    validated = set(validated)
    lane = FlaskLane(
        app("mlflow"),
        app("lane"),
        [Route("/v1/traces")],
        lambda path, method: path in validated,
        "/gateway/",
    )
    return lane, served


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/2.0/mlflow/experiments/get-by-name", "lane"),
        ("/v1/traces", "mlflow"),  # a native FastAPI route
        ("/gateway/chat/mlflow/invocations", "mlflow"),  # timed by MLflow's gateway layer
        ("/ajax-api/3.0/jobs/x", "mlflow"),  # FastAPI's permission layer judges it
    ],
)
def test_only_requests_no_fastapi_layer_acts_on_take_the_lane(path: str, expected: str) -> None:
    lane, served = lane_of(validated={"/ajax-api/3.0/jobs/x"})
    call(lane, scope(path))
    assert served == [expected]


def test_lifespan_and_websockets_go_to_mlflows_app() -> None:
    lane, served = lane_of()
    for kind in ("lifespan", "websocket"):
        call(lane, {"type": kind, "path": "/api/2.0/mlflow/x"})
    assert served == ["mlflow", "mlflow"]


def mlflow_app(flask_app: Flask) -> Any:
    """MLflow's FastAPI app around ``flask_app``, with basic-auth's permission layer, as
    ``mlflow.server.auth.create_app`` builds it under uvicorn."""
    from mlflow.server.auth import add_fastapi_permission_middleware
    from mlflow.server.fastapi_app import create_fastapi_app

    app = create_fastapi_app(flask_app)
    add_fastapi_permission_middleware(app)
    return app


def test_mlflows_app_has_the_layout_the_lane_was_written_for() -> None:
    """Fails when an MLflow upgrade adds an HTTP middleware or moves the Flask mount: read the
    new layer, then add it to KNOWN_HTTP_MIDDLEWARES or keep it on the lane's paths."""
    from stack_common.mlflow_internals import has_fastapi_validator

    flask_app = echo_app()
    app = with_flask_lane(mlflow_app(flask_app), flask_app, has_fastapi_validator, "/gateway/")
    assert isinstance(app, FlaskLane)
    assert app.takes_lane(scope("/api/2.0/mlflow/experiments/get-by-name"))
    assert app.takes_lane(scope("/ajax-api/2.0/mlflow/registered-models/alias", "POST"))
    assert not app.takes_lane(scope("/v1/traces", "POST"))
    assert not app.takes_lane(scope("/api/2.0/mlflow-artifacts/artifacts/1/a/model.pkl"))
    assert not app.takes_lane(scope("/api/2.0/mlflow-artifacts/artifacts/1/a/model.pkl", "PUT"))
    assert not app.takes_lane(scope("/ajax-api/3.0/jobs/search", "POST"))


def test_the_lane_keeps_mlflows_security_middlewares() -> None:
    flask_app = echo_app()
    app = with_flask_lane(mlflow_app(flask_app), flask_app, lambda p, m: False, "/gateway/")
    status, headers, _ = answer(call(app, scope("/api/2.0/mlflow/echo")))
    assert status == 200
    assert headers[b"x-content-type-options"] == b"nosniff"
    evil_host = scope("/api/2.0/mlflow/echo", headers=[(b"host", b"evil.example")])
    assert answer(call(app, evil_host))[0] == 403
    cross_origin = scope(
        "/api/2.0/mlflow/echo",
        "POST",
        headers=[(b"host", b"127.0.0.1:5000"), (b"origin", b"http://evil.example")],
    )
    assert answer(call(app, cross_origin))[0] == 403


def test_an_unknown_http_middleware_means_no_lane(caplog: pytest.LogCaptureFixture) -> None:
    flask_app = echo_app()
    app = mlflow_app(flask_app)

    @app.middleware("http")
    async def something_new(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    assert with_flask_lane(app, flask_app, lambda p, m: False, "/gateway/") is app
    assert "something_new" in caplog.text


class WorkspaceStore:
    def __init__(self) -> None:
        self.lookups = 0

    def resolve(self, header: str | None) -> Any:
        self.lookups += 1
        name = (header or "").strip() or "default"
        return SimpleNamespace(name=name)


@pytest.mark.parametrize("header", [None, "", " default ", "default"])
def test_the_default_workspace_is_looked_up_once(header: str | None) -> None:
    store = WorkspaceStore()
    memo = DefaultWorkspaceMemo(store.resolve, lambda: True, "default")
    assert [memo(header).name for _ in range(3)] == ["default"] * 3
    assert memo(None).name == "default"
    assert store.lookups == 1


def test_other_workspaces_are_looked_up_every_time() -> None:
    store = WorkspaceStore()
    memo = DefaultWorkspaceMemo(store.resolve, lambda: True, "default")
    memo(None)
    assert [memo("team-a").name for _ in range(3)] == ["team-a"] * 3
    assert store.lookups == 4


def test_a_default_that_may_change_is_looked_up_every_time() -> None:
    store = WorkspaceStore()
    memo = DefaultWorkspaceMemo(store.resolve, lambda: False, "default")
    for _ in range(3):
        memo(None)
    assert store.lookups == 3


def test_a_failed_lookup_is_not_remembered() -> None:
    calls = 0

    def resolve(header: str | None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database down")
        return SimpleNamespace(name="default")

    memo = DefaultWorkspaceMemo(resolve, lambda: True, "default")
    with pytest.raises(RuntimeError):
        memo(None)
    memo(None)
    memo(None)
    assert calls == 2
