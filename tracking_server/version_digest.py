"""The digest of a version's files, recorded by the tracking server when the version is
registered, and ``stack.`` tags kept for admins and the server.

After a successful ``CreateModelVersion`` the server reads the new version's files from the
store it proxies (the logged model's folder for ``models:/m-...`` sources, the run's folder for
``runs:/`` ones), computes :func:`stack_common.model_digest.folder_digest` and tags the version
with it (``stack.files_sha256``). Serving recomputes it over what it downloads and refuses files
that do not match (docs/security.md). The trainer cannot forge or erase it: setting or deleting a
model version or registered model tag whose key starts with ``stack.``, or creating a version
with such a tag, is for admins only (MLflow's JSON 403), and the server writes its own tags
through the store, not through the API. It costs the registration one read of the version's
files through the artifact store (for the demo model a few kilobytes).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stack_common.model_digest import DIGEST_TAG, folder_digest

logger = logging.getLogger("tracking_server")

RESERVED_PREFIX = "stack."
TAG_METHODS = (
    "SetModelVersionTag",
    "DeleteModelVersionTag",
    "SetRegisteredModelTag",
    "DeleteRegisteredModelTag",
)
CREATE_METHOD = "CreateModelVersion"


def reserved(key: object) -> bool:
    return isinstance(key, str) and key.strip().lower().startswith(RESERVED_PREFIX)


def reserved_tags_in(method: str, params: Callable[[str], Any], body: Any) -> bool:
    """Whether a request of ``method`` would set or delete a ``stack.`` tag."""
    if method == CREATE_METHOD:
        tags = body.get("tags") if isinstance(body, dict) else None
        return isinstance(tags, list) and any(
            isinstance(tag, dict) and reserved(tag.get("key")) for tag in tags
        )
    return reserved(params("key"))


def files_location(source: str) -> tuple[Any, str]:
    """The artifact repository and the path in it that hold a version's files."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from stack_common.mlflow_internals import artifacts_destination_repo, tracking_store

    if source.startswith("models:/m-"):
        model_id = source.removeprefix("models:/").split("/", 1)[0]
        uri = tracking_store().get_logged_model(model_id).artifact_location
    elif source.startswith("runs:/"):
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        root = tracking_store().get_run(run_id).info.artifact_uri
        uri = f"{root.rstrip('/')}/{path}" if path else root
    else:
        uri = source
    if uri.startswith("mlflow-artifacts:"):
        return artifacts_destination_repo(), urlparse(uri).path.lstrip("/")
    return get_artifact_repository(uri), ""


def version_digest(source: str) -> str:
    repo, path = files_location(source)
    with tempfile.TemporaryDirectory(prefix="stack-digest-") as scratch:
        return folder_digest(Path(repo.download_artifacts(path, dst_path=scratch)))


class VersionDigest:
    """The Flask hooks: refuse ``stack.`` tag writes by non-admins; tag new versions."""

    def __init__(self, views: dict[Callable[..., Any], str]) -> None:
        self.views = views

    def _method(self) -> str | None:
        from flask import current_app, request

        view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
        return self.views.get(view) if view is not None else None

    def before_request(self) -> Any:
        from flask import Response, request
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
        from mlflow.server import auth as mlflow_auth

        from tracking_server.stack_auth import _param

        method = self._method()
        if method is None:
            return None
        if not reserved_tags_in(method, _param, request.get_json(silent=True)):
            return None
        if isinstance(mlflow_auth.authenticate_request(), Response):
            return None  # MLflow answers 401
        if mlflow_auth.sender_is_admin():
            return None
        raise MlflowException(
            f"Permission denied: tags named {RESERVED_PREFIX}* are the stack's own "
            f"({DIGEST_TAG} is the digest of the version's files): only admins may change them",
            error_code=PERMISSION_DENIED,
        )

    def after_request(self, response: Any) -> Any:
        if response.status_code != 200 or self._method() != CREATE_METHOD:
            return response
        version = (response.get_json(silent=True) or {}).get("model_version") or {}
        name, number, source = version.get("name"), version.get("version"), version.get("source")
        if name and number and source:
            record(name, str(number), source)
        return response


def record(name: str, version: str, source: str) -> None:
    """Tag the version with the digest of its files; a failure leaves it untagged (serving then
    serves it as unverified and says so) and is logged."""
    from mlflow.entities.model_registry import ModelVersionTag

    from stack_common.mlflow_internals import model_registry_store

    started = time.monotonic()
    try:
        digest = version_digest(source)
        model_registry_store().set_model_version_tag(
            name, version, ModelVersionTag(DIGEST_TAG, digest)
        )
    except Exception:  # the version stands; only its digest is missing
        logger.exception("could not record the digest of %s version %s (%s)", name, version, source)
        return
    logger.info(
        "recorded %s=%s for %s version %s in %.2fs",
        DIGEST_TAG,
        digest[:12],
        name,
        version,
        time.monotonic() - started,
    )


def install(flask_app: Any) -> None:
    from mlflow.protos import model_registry_pb2
    from mlflow.server.handlers import catch_mlflow_exception, get_handler

    views = {
        get_handler(getattr(model_registry_pb2, method)): method
        for method in (*TAG_METHODS, CREATE_METHOD)
    }
    hooks = VersionDigest(views)
    flask_app.before_request(catch_mlflow_exception(hooks.before_request))
    flask_app.after_request(hooks.after_request)
