"""Clients transfer artifacts through the tracking server, not through presigned bucket URLs,
unless the operator says the bucket is reachable from where the clients are.

MLflow's server tells its clients (``GET /api/3.0/mlflow/server-info``) that they may upload and
download large artifacts straight to and from the bucket, through URLs it signs, whenever its
artifact store can (S3, GCS, Azure). Those URLs name the bucket's endpoint as the *server*
reaches it: in Compose ``http://minio:9000``, which resolves only inside the Compose network,
so a teammate's ``mlflow models serve -m models:/…@production`` retried for minutes and failed.
The stack answers server-info with both transfers off (``STACK_PRESIGNED_TRANSFERS=false``, the
default): every MLflow client, on any machine, moves artifacts through the tracking server's
proxy, behind the same front, credentials and TLS as everything else. Set it to ``true`` when
the bucket is a cloud bucket every client reaches (S3, GCS), to save the proxy's bandwidth.

Only the two capability flags change; the rest of the answer is MLflow's. Both servers are
covered: the FastAPI route under uvicorn (an ASGI layer, :func:`presigned_off`) and the Flask
route under gunicorn or waitress (:func:`install_flask_hook`).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVER_INFO_SUFFIX = "/mlflow/server-info"
# mlflow.utils.server_info's names for the flags (public constants; the test checks them).
PRESIGNED_FLAGS = ("multipart_uploads_enabled", "multipart_downloads_enabled")


def without_presigned(body: bytes) -> bytes:
    """The server-info answer with presigned transfers off; anything but a JSON object as is."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if not isinstance(payload, dict):
        return body
    for flag in PRESIGNED_FLAGS:
        if flag in payload:
            payload[flag] = False
    return json.dumps(payload).encode()


def _is_server_info(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and path.rstrip("/").endswith(SERVER_INFO_SUFFIX)


def presigned_off(app: ASGIApp) -> ASGIApp:
    """An ASGI layer rewriting server-info's answer (buffered: it is a few hundred bytes)."""

    async def layer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_server_info(scope["method"], scope["path"]):
            await app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def buffer(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if start.get("status") == 200:
                body = without_presigned(body)
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await app(scope, receive, buffer)

    return layer


def install_flask_hook(flask_app: Any) -> None:
    """The same for MLflow's Flask route (gunicorn, waitress and the Flask lane)."""
    from flask import request

    def after_request(response: Any) -> Any:
        if response.status_code == 200 and _is_server_info(request.method, request.path):
            response.set_data(without_presigned(response.get_data()))
        return response

    flask_app.after_request(after_request)
