"""The tracking server's Flask-side request rules beside the registry guard (issue 20).

* **Unknown authentication schemes get 401.** MLflow's basic-auth function hands a
  ``Digest`` (or ``Bearer``, or garbage) header's missing password to its credential cache, which
  fails with a 500 and a traceback on every request. Only ``Basic`` is accepted here, and
  ``Bearer`` as well when a custom ``authorization_function`` is configured (tracking_server/
  oidc.py, with STACK_OIDC_ISSUER set): whatever that function is, this check stays in front of it.
* **Only admins manage users and permissions.** MLflow lets a user with MANAGE on a model grant
  MANAGE to others (v2 ``.../permissions/...`` and v3 ``users/permissions/grant``), revoke
  serving's READ, and work with roles: a promoter could then let the trainer move
  ``production``. Every path under ``/mlflow/users/``, ``/mlflow/roles/`` or with a
  ``permissions`` segment is for admins, on ``/api`` and ``/ajax-api``, any version, any static
  or workspace prefix, except a user's reads of itself (``users/current``,
  ``users/current/permissions``) and ``users/update-password``, which MLflow limits to the
  user's own password (or an admin).
* **A DELETE's body is JSON or nothing**: MLflow's permission check reads a DELETE's query
  string unless its body is declared JSON, while the handler parses the body anyway, so a
  request could be checked against one model and act on another: 400 (see
  :func:`refuse_unparsed_body`).
* **Registered versions' files are immutable** (tracking_server/frozen_artifacts.py): writes and
  deletes through the Flask artifact routes (``PUT``/``DELETE .../mlflow-artifacts/artifacts/``,
  ``POST .../mlflow-artifacts/mpu/create|complete|abort/``, the UI's ``upload-artifact``). The
  native FastAPI upload route is judged in tracking_server/native_gate.py.

A refusal is MLflow's JSON error (403, PERMISSION_DENIED) with one audit line, as the registry
guard's are.
"""

from __future__ import annotations

import logging
import posixpath
import re
from typing import Any

from tracking_server import frozen_artifacts
from tracking_server.audit_text import quoted

audit_logger = logging.getLogger("tracking_server.audit")

MLFLOW_BASIC_AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"
SELF_SERVICE = re.compile(r"/mlflow/users/(current|current/permissions|update-password)$")
ACCOUNT_ADMIN = re.compile(r"/(api|ajax-api)/\d+\.\d+/mlflow/(users|roles)(/|$)")
PERMISSIONS_SEGMENT = re.compile(r"/(api|ajax-api)/\d+\.\d+/mlflow/(.*/)?permissions(/|$)")
ARTIFACT_WRITE = re.compile(
    r"/(api|ajax-api)/\d+\.\d+/mlflow-artifacts/(artifacts|mpu/(create|complete|abort))(/|$)"
)
API_PATH = re.compile(r"/(api|ajax-api)/\d+\.\d+/mlflow/")
UI_UPLOAD = re.compile(r"/ajax-api/\d+\.\d+/mlflow/upload-artifact$")
WORKSPACE_HEADER = "X-MLflow-Workspace"
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})


def accepted_scheme(header: str | None, *, bearer_supported: bool) -> bool:
    """Whether an ``Authorization`` header is one the configured authentication can judge
    (no header at all is: MLflow answers 401 for it)."""
    if header is None or not header.strip():
        return True
    scheme, _, credentials = header.strip().partition(" ")
    if not credentials.strip():
        return False
    return scheme.lower() == "basic" or (bearer_supported and scheme.lower() == "bearer")


def basic_credentials_usable(authorization: Any) -> bool:
    """A Basic header werkzeug could decode into a user name and a password."""
    return (
        authorization is not None
        and getattr(authorization, "type", "basic") == "basic"
        and authorization.username is not None
        and authorization.password is not None
    )


def admin_only_path(path: str) -> bool:
    """User, role and permission management (see the module docstring)."""
    if SELF_SERVICE.search(path):
        return False
    return bool(ACCOUNT_ADMIN.search(path) or PERMISSIONS_SEGMENT.search(path))


def artifact_write_target(path: str, method: str, view_args: dict, body: Any) -> str | None:
    """The proxied artifact path a Flask request writes or deletes, or None if it writes none."""
    if method not in WRITE_METHODS:
        return None
    if ARTIFACT_WRITE.search(path):
        target = str(view_args.get("artifact_path") or "")
        if "/mpu/" in path and isinstance(body, dict) and body.get("path"):
            target = posixpath.join(target, str(body["path"]))
        return target
    return None


class RequestRules:
    """The Flask hook (see the module docstring), registered before every other hook."""

    def __init__(self, bearer_supported: bool) -> None:
        self.bearer_supported = bearer_supported

    def before_request(self) -> Any:
        from flask import request
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
        from mlflow.server import auth as mlflow_auth

        header = request.headers.get("Authorization")
        if not accepted_scheme(header, bearer_supported=self.bearer_supported) or (
            header
            and header.strip().lower().startswith("basic")
            and not basic_credentials_usable(request.authorization)
        ):
            return mlflow_auth.make_basic_auth_response()
        if request.method == "DELETE" and API_PATH.search(request.path):
            # Any DELETE, not only the registry guard's four: MLflow's check reads a DELETE's
            # query string unless the body is declared JSON, its handler parses the body anyway.
            refuse_unparsed_body()
        admin_only = admin_only_path(request.path)
        target = None if admin_only else self._artifact_target()
        if not admin_only and target is None:
            return None
        authorization = mlflow_auth.authenticate_request()
        if not _authenticated(authorization):
            return None  # MLflow answers 401
        if mlflow_auth.sender_is_admin():
            return None
        reason: str | None = "only admins manage users, roles and permissions"
        if not admin_only:
            assert target is not None
            search, source_run = frozen_artifacts.registry_lookups(
                frozen_artifacts.workspace_of(target, request.headers.get(WORKSPACE_HEADER))
            )
            reason = frozen_artifacts.protected_version(
                target,
                deleting=request.method == "DELETE",
                search_versions=search,
                source_run_of_model=source_run,
            )
        if reason is None:
            return None
        audit_refusal(
            request.method, request.path, getattr(authorization, "username", None), reason
        )
        raise MlflowException(f"Permission denied: {reason}", error_code=PERMISSION_DENIED)

    def _artifact_target(self) -> str | None:
        from flask import request

        if UI_UPLOAD.search(request.path) and request.method == "POST":
            run_id = request.args.get("run_uuid") or request.args.get("run_id") or ""
            return f"{run_id}/artifacts/{request.args.get('path', '')}"
        if not ARTIFACT_WRITE.search(request.path):
            return None
        body = request.get_json(silent=True) if request.is_json else None
        return artifact_write_target(request.path, request.method, request.view_args or {}, body)


def refuse_unparsed_body() -> None:
    """400 for a governed request whose body is not declared JSON (see ``stack_auth._param``): the
    handler would parse it while MLflow's permission check reads the query string."""
    from flask import request
    from mlflow.exceptions import MlflowException

    if request.method != "GET" and request.get_data(cache=True) and not request.is_json:
        raise MlflowException.invalid_parameter_value(
            f"a {request.method} to {request.path} with a body must send it as JSON: set "
            "'Content-Type: application/json'"
        )


def audit_refusal(method: str, path: str, user: str | None, reason: str) -> None:
    """One escaped audit line for a refused request (user-supplied text quoted)."""
    audit_logger.info(
        "refused %s %s by %s (%s)",
        method,
        quoted(path),
        quoted(user or "anonymous"),
        reason,
        extra={
            "audit": True,
            "action": "request",
            "method": method,
            "path": path,
            "user": user or "anonymous",
            "outcome": "refused",
            "status": 403,
            "reason": reason,
        },
    )


def _authenticated(authorization: Any) -> bool:
    from flask import Response

    return authorization is not None and not isinstance(authorization, Response)


def bearer_supported() -> bool:
    """A custom ``authorization_function`` is configured (it may accept Bearer tokens)."""
    from mlflow.server import auth as mlflow_auth

    return str(mlflow_auth.auth_config.authorization_function) != MLFLOW_BASIC_AUTH_FUNCTION
