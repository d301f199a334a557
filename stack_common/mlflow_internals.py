"""Every private MLflow name the stack uses, in one place.

MLflow releases monthly, and anything with a leading underscore (or a function the stack
replaces at run time) can move or change shape in any release. Code elsewhere in the stack
imports such names from here, never from ``mlflow`` directly, so an upgrade means reading this
one module and running ``tests/unit/stack_common/test_mlflow_internals.py``, whose test for
each name says what changed when it fails (``make upgrade-check MLFLOW=x.y.z`` runs it).

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


def authenticate_custom_fastapi_request(request: Any) -> Any:
    """The user a Starlette request names through the configured ``authorization_function``
    (``mlflow.server.auth._authenticate_custom_for_fastapi``, MLflow's bridge to a Flask-side
    function), or None when it answers with a response (401, 403): with OIDC on,
    tracking_server/native_gate.py judges native FastAPI routes with it."""
    from mlflow.server.auth import _authenticate_custom_for_fastapi

    user = _authenticate_custom_for_fastapi(request)
    return user if hasattr(user, "is_admin") else None


def artifacts_destination_repo() -> Any:
    """The artifact repository behind the server's proxy, rooted at ``--artifacts-destination``
    (``mlflow.server.handlers._get_artifact_repo_mlflow_artifacts``):
    tracking_server/version_digest.py reads a new version's files from it."""
    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

    return _get_artifact_repo_mlflow_artifacts()


# -- serving --------------------------------------------------------------------------------


def parse_json_data(data: Any, metadata: Any, schema: Any) -> Any:
    """MLflow's scoring server's JSON parsing (``mlflow.pyfunc.scoring_server._parse_json_data``):
    serving/batching.py parses a merged batch exactly as MLflow parses one request."""
    from mlflow.pyfunc import scoring_server

    return scoring_server._parse_json_data(data, metadata, schema)


def server_model_path_env() -> str:
    """The variable naming the model MLflow's scoring app loads at import
    (``mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH``): serving/pool.py sets it for each
    scoring process, serving/scoring_app.py reads it as MLflow's app does."""
    from mlflow.pyfunc import scoring_server

    return str(scoring_server._SERVER_MODEL_PATH)


def mark_serving_environment() -> None:
    """What MLflow's scoring app sets at import (``_MLFLOW_IS_IN_SERVING_ENVIRONMENT``): models
    that ask whether they are being served get the same answer from the stack's app."""
    import os

    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"


def signature_from_type_hint(metadata: Any) -> bool:
    """Whether a model's signature comes from its ``predict`` type hints
    (``Model._is_signature_from_type_hint``): MLflow then passes its JSON input unparsed, so the
    batcher has nothing to merge. False when MLflow no longer says."""
    check = getattr(metadata, "_is_signature_from_type_hint", None)
    return bool(check()) if callable(check) else False


def warm_packages_to_modules_map() -> None:
    """Fill MLflow's cache of installed packages (``requirements_utils.
    _init_packages_to_modules_map``) in the warm interpreter, so each forked scoring process
    does not build it again. Only a speed-up: nothing happens when MLflow no longer has it."""
    from mlflow.utils import requirements_utils

    warm = getattr(requirements_utils, "_init_packages_to_modules_map", None)
    if callable(warm):
        warm()


# -- tracking server ------------------------------------------------------------------------


def schema_version(engine: Any) -> str | None:
    """The backend store's alembic revision (``mlflow.store.db.utils._get_schema_version``):
    tracking_server/backend.py migrates once and waits for the migration."""
    from mlflow.store.db.utils import _get_schema_version

    return _get_schema_version(engine)


def latest_schema_revision() -> str:
    """The revision this MLflow's backend store needs (``_get_latest_schema_revision``)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def auth_alembic_config(uri: str) -> Any:
    """The auth database's alembic config (``mlflow.server.auth.db.utils._get_alembic_config``):
    tracking_server/backend.py reads its head revision."""
    from mlflow.server.auth.db.utils import _get_alembic_config

    return _get_alembic_config(uri)


def can_manage_registered_model() -> bool:
    """Whether the request's user has MANAGE on the registered model it names (MLflow's
    ``_get_permission_from_registered_model_or_prompt_name``): the protected-alias rule."""
    from mlflow.server import auth as mlflow_auth

    return bool(mlflow_auth._get_permission_from_registered_model_or_prompt_name().can_manage)


def add_static_prefix(path: str) -> str:
    """A route under ``--static-prefix`` (``mlflow.server.handlers._add_static_prefix``)."""
    from mlflow.server.handlers import _add_static_prefix

    return str(_add_static_prefix(path))


def has_fastapi_validator(path: str, method: str) -> bool:
    """Whether MLflow's FastAPI permission middleware judges this request itself
    (``mlflow.server.auth._find_fastapi_validator``): tracking_server/flask_lane.py."""
    from mlflow.server import auth as mlflow_auth

    return mlflow_auth._find_fastapi_validator(path, method) is not None


def wrap_cached_password_check(wrap: Any) -> bool:
    """Put ``wrap(check, cache_key)`` in front of MLflow's cached password check
    (``mlflow.server.auth._authenticate_cached``, keyed by ``_auth_cache_key``, looked up in the
    module at call time by both its Flask and FastAPI paths). A speed-up only: when MLflow's
    module no longer has that shape, MLflow's own check stays, with one warning line; False
    then, or when the cache is off (``_USER_AUTH_CACHE`` None: nothing to share)."""
    import mlflow.server.auth as basic_auth

    check = getattr(basic_auth, "_authenticate_cached", None)
    key = getattr(basic_auth, "_auth_cache_key", None)
    if not hasattr(basic_auth, "_USER_AUTH_CACHE") or not callable(check) or not callable(key):
        logger.warning(
            "MLflow's cached password check changed shape (mlflow.server.auth."
            "_authenticate_cached/_auth_cache_key/_USER_AUTH_CACHE): concurrent logins are "
            "not coalesced; MLflow's own check is used"
        )
        return False
    if basic_auth._USER_AUTH_CACHE is None:
        return False
    basic_auth._authenticate_cached = wrap(check, key)
    return True


def workspace_store() -> Any:
    """The tracking server's workspace store (``mlflow.server.workspace_helpers.
    _get_workspace_store``): tracking_server/default_workspace.py remembers the default
    workspace only when it lives in the SQL store."""
    from mlflow.server import workspace_helpers

    return workspace_helpers._get_workspace_store()


def download_through_server_only(repo: Any) -> None:
    """Make an ``mlflow-artifacts`` repository download through the tracking server, never
    through presigned bucket URLs, without touching the process's environment: MLflow decides
    from the server's capabilities, which each repository fetches once and keeps in
    ``_server_capabilities``; none known means no presigned downloads
    (mlflow/store/artifact/mlflow_artifacts_repo.py)."""
    repo._server_capabilities = {}
