"""The stack's rules on MLflow's native FastAPI routes (the ones Flask's hooks never see).

MLflow 3.17 serves some routes from FastAPI itself, ahead of the Flask mount: OTLP traces,
jobs, the AI gateway, the assistant, MCP, server info, and artifact up/downloads. Its permission
middleware lets any authenticated user through several of them (``metrics`` and ``serving``
read the assistant's config and search jobs), and the stack uses none but the artifact routes.
This ASGI layer, outermost around the app ``stack_auth.create_app`` returns, so it judges both
MLflow's full stack and the Flask lane's requests, decides for a request that one of those
routes would serve:

* artifact downloads (``GET``): left to MLflow's own permission check; refused to the
  scrape-only user, who reads ``/metrics`` and nothing else;
* artifact uploads (``PUT``): admins pass; for anyone else a path under a registered version's
  files is refused (tracking_server/frozen_artifacts.py), the rest left to MLflow;
* server info (the UI asks it): left to MLflow;
* everything else: admins only (401 without credentials, 403 for other users).

Requests no native route serves pass untouched (one route match per request; Flask's hooks
judge them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

ARTIFACT_ROUTE_MARK = "/mlflow-artifacts/artifacts/"
LEFT_TO_MLFLOW_MARKS = ("/server-info",)


def route_kind(path: str, method: str) -> str:
    """``download``, ``upload``, ``mlflow`` (left to MLflow) or ``admin`` for a native route."""
    if ARTIFACT_ROUTE_MARK in path:
        return "download" if method in ("GET", "HEAD") else "upload"
    if any(mark in path for mark in LEFT_TO_MLFLOW_MARKS):
        return "mlflow"
    return "admin"


class NativeGate:
    """The ASGI layer (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        native_routes: list[BaseRoute],
        *,
        metrics_username: str | None,
        unprotected: Callable[[str], bool],
        authenticate: Callable[[Any], Any],
        frozen_reason: Callable[[str, str | None], str | None],
    ) -> None:
        self.app = app
        self.native_routes = native_routes
        self.metrics_username = metrics_username
        self.unprotected = unprotected
        self.authenticate = authenticate
        self.frozen_reason = frozen_reason

    def _native(self, scope: Scope) -> BaseRoute | None:
        for route in self.native_routes:
            if route.matches(scope)[0] == Match.FULL:
                return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.unprotected(scope["path"]):
            await self.app(scope, receive, send)
            return
        probe = dict(scope)
        if self._native(probe) is None:
            await self.app(scope, receive, send)
            return
        kind = route_kind(scope["path"], scope["method"])
        if kind == "mlflow":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        user = await anyio.to_thread.run_sync(self.authenticate, Request(scope))
        if user is None:
            if kind == "admin":
                await _answer(send, 401, "UNAUTHENTICATED", "You are not authenticated.")
                return
            await self.app(scope, receive, send)  # MLflow's middleware answers 401
            return
        reason = await anyio.to_thread.run_sync(self._refusal, user, kind, probe)
        if reason is None:
            await self.app(scope, receive, send)
            return
        from tracking_server.request_rules import audit_refusal

        audit_refusal(scope["method"], scope["path"], user.username, reason)
        await _answer(send, 403, "PERMISSION_DENIED", f"Permission denied: {reason}")

    def _refusal(self, user: Any, kind: str, probe: Scope) -> str | None:
        if user.is_admin:
            return None
        if self.metrics_username and user.username == self.metrics_username:
            return f"{user.username!r} is the scrape-only user: GET /metrics only"
        if kind == "admin":
            return "this MLflow route is for admins only on this stack"
        if kind == "upload":
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in probe["headers"]
            }
            path = probe["path"].split(ARTIFACT_ROUTE_MARK, 1)[1]
            try:
                return self.frozen_reason(path, headers.get("x-mlflow-workspace"))
            except Exception as exc:  # an unknown workspace, a store error: fail closed
                logger.warning("could not check upload %r against the registry: %s", path, exc)
                return "could not check this path against the registered versions' files"

        return None


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="mlflow"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def native_gate_for(fastapi_app: Any) -> Callable[[ASGIApp], ASGIApp]:
    """A wrapper putting :class:`NativeGate` around an app, for MLflow's ``fastapi_app``'s
    native routes (every route but the Flask mount)."""
    from mlflow.server import auth as mlflow_auth

    from stack_common.mlflow_internals import (
        authenticate_custom_fastapi_request,
        authenticate_fastapi_request,
    )
    from tracking_server import frozen_artifacts
    from tracking_server.request_rules import bearer_supported
    from tracking_server.settings import ProtectionSettings

    native = [r for r in fastapi_app.routes if not (isinstance(r, Mount) and r.path == "")]
    metrics_username = ProtectionSettings.from_env().metrics_username

    def frozen_reason(path: str, workspace_header: str | None) -> str | None:
        search, source_run = frozen_artifacts.registry_lookups(
            frozen_artifacts.workspace_of(path, workspace_header)
        )
        return frozen_artifacts.protected_version(
            path, deleting=False, search_versions=search, source_run_of_model=source_run
        )

    def wrap(app: ASGIApp) -> ASGIApp:
        return NativeGate(
            app,
            native,
            metrics_username=metrics_username,
            unprotected=mlflow_auth.is_unprotected_route,
            # A custom authorization_function (OIDC: tracking_server/oidc.py) judges Bearer too.
            authenticate=authenticate_custom_fastapi_request
            if bearer_supported()
            else authenticate_fastapi_request,
            frozen_reason=frozen_reason,
        )

    return wrap
