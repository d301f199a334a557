"""The ASGI app the ``stack-auth`` workers serve: MLflow's own app, with a short lane to Flask.

Under uvicorn, MLflow's basic-auth factory returns a FastAPI app: its security middlewares
(pure ASGI: host check, CORS, security headers), then three ``@app.middleware("http")`` layers
(``BaseHTTPMiddleware``: permissions, gateway timing, workspace), then the router, whose last
route mounts the Flask app (every ``/api``, ``/ajax-api`` and UI path MLflow has not moved to
FastAPI) through a WSGI bridge. Each ``BaseHTTPMiddleware`` runs the rest of the request in a new
task with its own streams, and the bridge answers through a task group and a memory stream:
together about a fifth of an authenticated request's CPU, for nothing on the Flask-served paths,
where the three layers have nothing to do:

* the permission layer judges only native FastAPI routes (OTLP ``/v1/traces``, jobs, gateway,
  assistant, artifact up/downloads, MCP): for any other path ``_find_fastapi_validator`` finds
  nothing and the request goes on untouched; Flask's ``before_request`` hook (ours, then
  MLflow's) judges it, as it always does;
* the gateway timing layer only times paths under ``/gateway/``;
* the workspace layer resolves the request's workspace, which Flask's own
  ``workspace_before_request_handler`` does when the layer has not (the same function, the same
  error answer).

:class:`FlaskLane` sends exactly those requests (no native route matches, not under
``/gateway/``, no FastAPI validator) through MLflow's security middlewares, unchanged and in
MLflow's order, straight to :class:`WSGIBridge`; everything else (native routes, lifespan,
websockets) goes to MLflow's app as before. If MLflow's app ever has a ``BaseHTTPMiddleware`` the
lane does not know, or no Flask mount where it expects it, there is no lane
(:func:`with_flask_lane` returns MLflow's app and logs why).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from typing import Any

import anyio.from_thread
import anyio.to_thread
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

# MLflow 3.17's ``@app.middleware("http")`` layers, by the name of their dispatch function, and
# why each has nothing to do on a lane request (see the module docstring).
KNOWN_HTTP_MIDDLEWARES = frozenset(
    {
        "fastapi_permission_middleware",  # validators for native FastAPI routes only
        "gateway_timing_middleware",  # /gateway/ only: never on the lane
        "workspace_context_middleware",  # Flask's workspace hook does the same
    }
)
# Responses up to this size are read whole in the worker thread and sent in one go (one thread
# hop per request); a larger body (an artifact download through Flask) is streamed as the WSGI
# app yields it, one chunk at a time, as Starlette's bridge does.
BUFFER_LIMIT_BYTES = 256 * 1024


class WSGIBridge:
    """Serve a WSGI app to ASGI with one thread hop for a whole small response.

    What Starlette's ``WSGIMiddleware`` (MLflow's bridge) does, the same ``environ`` (its
    ``build_environ``), without a task group and memory stream per request.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], build_environ: Callable[..., dict]):
        self.app = app
        self.build_environ = build_environ

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        more_body = True
        while more_body:
            message = await receive()
            if chunk := message.get("body", b""):
                chunks.append(chunk)
            more_body = message.get("more_body", False)
        environ = self.build_environ(scope, b"".join(chunks))
        del chunks
        messages = await anyio.to_thread.run_sync(self._run, environ, send)
        for message in messages:
            await send(message)

    def _run(self, environ: dict[str, Any], send: Send) -> list[Message]:
        """Call the app in a worker thread; the messages left to send, or [] if it streamed."""
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            if exc_info is not None and started.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            started["status"] = int(status.split(" ", 1)[0])
            started["headers"] = [
                (name.strip().encode("ascii").lower(), value.strip().encode("ascii"))
                for name, value in headers
            ]
            started["exc_info"] = exc_info

        body = io.BytesIO()
        streaming = False
        result = self.app(environ, start_response)
        try:
            for chunk in result:
                if not chunk:
                    continue
                if not streaming and body.tell() + len(chunk) <= BUFFER_LIMIT_BYTES:
                    body.write(chunk)
                    continue
                if not streaming:
                    streaming = True
                    started["sent"] = True
                    _send_from_thread(send, _start(started))
                    if body.tell():
                        _send_from_thread(send, _body(body.getvalue(), more=True))
                _send_from_thread(send, _body(chunk, more=True))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        exc_info = started.get("exc_info")
        if exc_info is not None:
            raise exc_info[1].with_traceback(exc_info[2])
        if streaming:
            _send_from_thread(send, _body(b"", more=False))
            return []
        return [_start(started), _body(body.getvalue(), more=False)]


def _send_from_thread(send: Send, message: Message) -> None:
    """Send one ASGI message from the worker thread, on the event loop."""

    async def deliver() -> None:
        await send(message)

    anyio.from_thread.run(deliver)


def _start(started: dict[str, Any]) -> Message:
    return {
        "type": "http.response.start",
        "status": started["status"],
        "headers": started["headers"],
    }


def _body(data: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


class FlaskLane:
    """Route Flask-served requests past MLflow's ``BaseHTTPMiddleware`` layers (see module
    docstring); ``takes_lane`` decides, the two apps serve."""

    def __init__(
        self,
        full: ASGIApp,
        lane: ASGIApp,
        native_routes: list[BaseRoute],
        has_fastapi_validator: Callable[[str, str], bool],
        gateway_prefix: str,
    ) -> None:
        self.full = full
        self.lane = lane
        self.native_routes = native_routes
        self.has_fastapi_validator = has_fastapi_validator
        self.gateway_prefix = gateway_prefix

    def takes_lane(self, scope: Scope) -> bool:
        """True when MLflow's app would hand this request to Flask with nothing done on the
        way but what the lane does too."""
        if scope["type"] != "http":
            return False
        path: str = scope["path"]
        if path.startswith(self.gateway_prefix):
            return False
        if any(route.matches(scope)[0] == Match.FULL for route in self.native_routes):
            return False
        return not self.has_fastapi_validator(path, scope["method"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.takes_lane(scope):
            await self.lane(scope, receive, send)
        else:
            await self.full(scope, receive, send)


def flask_mount(fastapi_app: Any, flask_app: Any) -> Mount | None:
    """The router's catch-all mount of ``flask_app`` (MLflow mounts it last, at ``/``)."""
    routes = fastapi_app.routes
    last = routes[-1] if routes else None
    if isinstance(last, Mount) and last.path == "" and getattr(last.app, "app", None) is flask_app:
        return last
    return None


def unknown_http_middlewares(fastapi_app: Any) -> list[str]:
    """Names of ``BaseHTTPMiddleware`` layers the lane does not know to be idle on its paths."""
    return [
        getattr(m.kwargs.get("dispatch"), "__name__", repr(m))
        for m in fastapi_app.user_middleware
        if m.cls is BaseHTTPMiddleware
        and getattr(m.kwargs.get("dispatch"), "__name__", None) not in KNOWN_HTTP_MIDDLEWARES
    ]


def lane_stack(fastapi_app: Any, endpoint: ASGIApp) -> ASGIApp:
    """``endpoint`` inside MLflow's pure ASGI middlewares, in MLflow's order, and Starlette's
    500 handler outermost, as ``FastAPI.build_middleware_stack`` wraps them."""
    app = endpoint
    for middleware in reversed(fastapi_app.user_middleware):
        if middleware.cls is BaseHTTPMiddleware:
            continue
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    return ServerErrorMiddleware(app)


def with_flask_lane(
    fastapi_app: Any,
    flask_app: Any,
    has_fastapi_validator: Callable[[str, str], bool],
    gateway_prefix: str,
) -> ASGIApp:
    """MLflow's app with the lane in front, or MLflow's app alone if its layout is not the one
    the lane was written for."""
    from mlflow.server.fastapi_app import build_environ  # the environ MLflow's bridge builds

    mount = flask_mount(fastapi_app, flask_app)
    unknown = unknown_http_middlewares(fastapi_app)
    if mount is None or unknown:
        logger.warning(
            "no short lane to Flask: MLflow's app %s; every request takes its full middleware "
            "stack",
            f"has unknown HTTP middlewares {unknown}" if unknown else "mounts no Flask app last",
        )
        return fastapi_app
    native = [route for route in fastapi_app.routes if route is not mount]
    lane = lane_stack(fastapi_app, WSGIBridge(flask_app, build_environ))
    return FlaskLane(fastapi_app, lane, native, has_fastapi_validator, gateway_prefix)
