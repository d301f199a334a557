"""Every private MLflow name the stack uses, in one place.

MLflow releases monthly, and anything with a leading underscore (or a function the stack
replaces at run time) can move or change shape in any release. Code elsewhere in the stack
imports such names from here, never from ``mlflow`` directly, so an upgrade means reading this
one module and running ``tests/unit/test_mlflow_internals.py``, whose test for each name says
what changed when it fails.

Each entry says what the stack uses it for. A speed-up that patches MLflow checks here that
MLflow still has the shape it expects and otherwise leaves MLflow's own path in place, with one
warning line.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def model_registry_store() -> Any:
    """The tracking server's registry store (``mlflow.server.handlers._get_model_registry_store``):
    tracking_server/frozen_artifacts.py asks it which versions a write would touch."""
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def tracking_store() -> Any:
    """The tracking server's tracking store (``mlflow.server.handlers._get_tracking_store``):
    tracking_server/frozen_artifacts.py reads a logged model's source run from it."""
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store()


def authenticate_fastapi_request(request: Any) -> Any:
    """The user a Starlette request's Basic credentials name, or None
    (``mlflow.server.auth._authenticate_fastapi_request``, MLflow's FastAPI auth path, with its
    credential cache): tracking_server/native_gate.py judges native FastAPI routes with it."""
    from mlflow.server.auth import _authenticate_fastapi_request

    return _authenticate_fastapi_request(request)


def artifacts_destination_repo() -> Any:
    """The artifact repository behind the server's proxy, rooted at ``--artifacts-destination``
    (``mlflow.server.handlers._get_artifact_repo_mlflow_artifacts``):
    tracking_server/version_digest.py reads a new version's files from it."""
    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

    return _get_artifact_repo_mlflow_artifacts()
