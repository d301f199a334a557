"""The batching scoring app: MLflow's scoring server's endpoints, predictions batched.

A drop-in for ``mlflow.pyfunc.scoring_server.app:app`` (uvicorn runs it the same way, with the
model path in the same environment variable): ``/ping``, ``/health``, ``/version`` and
``/invocations`` answer as MLflow's do (statuses, bodies, timeout answer), but ``/invocations``
goes through ``serving.batching.Batcher``. It is a bare ASGI callable rather than a FastAPI app:
with four fixed routes, FastAPI's routing and middleware are most of the per-request cost.

Each ``/invocations`` answer that came from a model call carries ``X-Batch-Rows``, the rows that
call predicted; nginx logs it and ``serving/metrics.py`` counts ``serving_batch_rows``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.pyfunc import scoring_server
from mlflow.version import VERSION

from serving.batch_policy import decide
from serving.batching import Answer, Batcher
from serving.settings import ScoringSettings
from stack_common.mlflow_internals import mark_serving_environment, server_model_path_env

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

BATCH_ROWS_HEADER = b"x-batch-rows"

JSON = b"application/json"
# FastAPI's answers for a path or a method it has no route for.
NOT_FOUND = Answer(b'{"detail":"Not Found"}', 404, "application/json")
NOT_ALLOWED = Answer(b'{"detail":"Method Not Allowed"}', 405, "application/json")
TIMED_OUT = Answer(b"Request processing time exceeded limit", 504, "application/json")
# Past SERVING_MAX_QUEUED_REQUESTS waiting for the model: MLflow's JSON error shape, retry soon
# (serving_requests_total{status="503"} counts them).
OVERLOADED = Answer(
    b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the model is overloaded: too many '
    b'requests are waiting for it; retry after a second"}',
    503,
    "application/json",
    retry_after_s=1,
)


class ScoringApp:
    def __init__(
        self,
        model: Any,
        max_rows: int,
        max_wait_s: float,
        timeout_s: float,
        merge: bool = True,
        max_queued: int = 256,
    ) -> None:
        self.batcher = Batcher(model, max_rows, max_wait_s, merge=merge)
        self.timeout_s = timeout_s
        self.max_queued = max_queued
        # Event-loop state only (no lock): /invocations requests being answered, and requests
        # handed to the batcher's worker whose answer has not come back.
        self.in_flight = 0
        self.pending = 0
        self.ping = Answer(b"\n", 200 if model is not None else 404, "application/json")
        self.version = Answer(VERSION.encode(), 200, "application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/invocations":
            if method != "POST":
                await respond(send, NOT_ALLOWED, allow=b"POST")
                return
            self.in_flight += 1
            try:
                # asyncio.timeout, not wait_for: no second task per request.
                async with asyncio.timeout(self.timeout_s):
                    answer = await self._invocation(scope, receive)
            except TimeoutError:
                answer = TIMED_OUT
            finally:
                self.in_flight -= 1
            if answer is not None:  # None: the client left before sending its body
                await respond(send, answer)
        elif path in ("/ping", "/health", "/version"):
            if method != "GET":
                await respond(send, NOT_ALLOWED, allow=b"GET")
                return
            await respond(send, self.version if path == "/version" else self.ping)
        else:
            await respond(send, NOT_FOUND)

    async def _invocation(self, scope: Scope, receive: Receive) -> Answer | None:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = request_id = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")
        if self._alone_and_quick(len(body)):
            # Let the requests read in the same pass of the loop start (and count) first.
            await asyncio.sleep(0)
            if self._alone_and_quick(len(body)):
                return self.batcher.predict_now(body, content_type, request_id)
        if self.pending >= self.max_queued:
            return OVERLOADED  # answered now, not queued for ever: memory stays bounded
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self.pending += 1

        def resolve(answer: Answer) -> None:
            self.pending -= 1
            if not future.done():
                future.set_result(answer)

        self.batcher.submit(
            body, content_type, lambda a: loop.call_soon_threadsafe(resolve, a), request_id
        )
        return await future

    def _alone_and_quick(self, size: int) -> bool:
        """No other request here, the worker idle, a request the model answers fast: predicted
        on the event loop (serving/batching.py, ``predict_now``)."""
        return self.in_flight == 1 and self.pending == 0 and self.batcher.quick(size)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.batcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def respond(send: Send, answer: Answer, allow: bytes | None = None) -> None:
    headers = [
        (b"content-type", answer.media_type.encode()),
        (b"content-length", str(len(answer.body)).encode()),
    ]
    if answer.batch_rows is not None:
        headers.append((BATCH_ROWS_HEADER, str(answer.batch_rows).encode()))
    if answer.retry_after_s is not None:
        headers.append((b"retry-after", str(answer.retry_after_s).encode()))
    if allow is not None:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def create_app() -> ScoringApp:
    """What ``mlflow.pyfunc.scoring_server.app`` does at import: load the model the environment
    names, mark the process as serving; then the batching settings the pool passed."""
    settings = ScoringSettings.from_env()  # first: a bad limit fails before the model loads
    model = scoring_server.load_model_with_mlflow_config(os.environ[server_model_path_env()])
    mark_serving_environment()
    decision = decide(
        model.metadata.flavors, model.metadata.get_input_schema(), settings.batching_opt_in
    )
    logger.info("batching %s: %s", "on" if decision.batched else "off", decision.why)
    app = ScoringApp(
        model,
        max_rows=settings.max_batch_rows,
        max_wait_s=settings.max_batch_wait_ms / 1000,
        timeout_s=float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()),
        merge=decision.batched,
        max_queued=settings.max_queued_requests,
    )
    freeze_heap()
    return app


def freeze_heap() -> None:
    """Moves every object alive now (MLflow's, pandas', scikit-learn's modules, the model) out of
    the garbage collector's reach. Otherwise each full collection walks them all: ~240,000
    objects, a 130 ms pause of every request in the process, which was the p99 of a loaded
    process at c=32 in bench/serving.py. They live as long as the process anyway."""
    gc.collect()
    gc.freeze()


def __getattr__(name: str) -> Any:
    """``serving.scoring_app:app`` loads the model on first use, so importing this module (tests,
    type checks) does not need one."""
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
