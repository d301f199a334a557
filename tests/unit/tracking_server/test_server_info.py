"""Server-info tells clients to transfer through the server (tracking_server/server_info.py)."""

from __future__ import annotations

import json

import anyio
import pytest
from flask import Flask, jsonify
from mlflow.utils import server_info as mlflow_server_info
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracking_server.server_info import (
    PRESIGNED_FLAGS,
    install_flask_hook,
    presigned_off,
    without_presigned,
)

ANSWER = {
    "store_type": "SqlStore",
    "multipart_uploads_enabled": True,
    "multipart_downloads_enabled": True,
    "workspaces_enabled": True,
}
OFF = ANSWER | {"multipart_uploads_enabled": False, "multipart_downloads_enabled": False}


def test_the_flags_are_mlflows() -> None:
    """MLflow's own names for the flags: a rename in a new MLflow fails here, not in the field."""
    assert PRESIGNED_FLAGS == (
        mlflow_server_info.SERVER_INFO_MULTIPART_UPLOADS_ENABLED,
        mlflow_server_info.SERVER_INFO_MULTIPART_DOWNLOADS_ENABLED,
    )


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b""])
def test_anything_but_a_json_object_passes_as_it_is(body: bytes) -> None:
    assert without_presigned(body) == body


def test_the_fastapi_route_answers_without_presigned_transfers() -> None:
    async def info(request):
        return JSONResponse(ANSWER)

    inner = Starlette(routes=[Route("/api/3.0/mlflow/server-info", info), Route("/other", info)])
    app = presigned_off(inner)
    headers, body = anyio.run(_get, app, "/api/3.0/mlflow/server-info")
    assert json.loads(body) == OFF
    assert int(headers[b"content-length"]) == len(body)
    assert json.loads(anyio.run(_get, app, "/other")[1]) == ANSWER  # nothing else is touched


async def _get(app, path: str) -> tuple[dict[bytes, bytes], bytes]:
    """One GET through an ASGI app, as a server would drive it."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return dict(start["headers"]), body


def test_the_flask_route_answers_without_presigned_transfers() -> None:
    app = Flask(__name__)
    app.add_url_rule("/ajax-api/3.0/mlflow/server-info", "info", lambda: jsonify(ANSWER))
    app.add_url_rule("/other", "other", lambda: jsonify(ANSWER))
    install_flask_hook(app)
    client = app.test_client()
    assert json.loads(client.get("/ajax-api/3.0/mlflow/server-info").data) == OFF
    assert json.loads(client.get("/other").data) == ANSWER
