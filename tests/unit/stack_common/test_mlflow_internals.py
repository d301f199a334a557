"""One test per private MLflow name in stack_common/mlflow_internals.py: each fails with a
message naming the name and what changed when the installed MLflow no longer matches."""

from __future__ import annotations

from stack_common import mlflow_internals


def test_the_module_imports_without_touching_mlflow_state() -> None:
    assert mlflow_internals.__doc__


def test_the_store_getters_and_fastapi_authentication_exist() -> None:
    import mlflow.server.auth as basic_auth
    import mlflow.server.handlers as handlers

    for module, name in (
        (handlers, "_get_model_registry_store"),
        (handlers, "_get_tracking_store"),
        (basic_auth, "_authenticate_fastapi_request"),
        # The FastAPI bridge to a custom authorization_function (OIDC: native_gate.py).
        (basic_auth, "_authenticate_custom_for_fastapi"),
    ):
        assert callable(getattr(module, name, None)), (
            f"MLflow no longer has {module.__name__}.{name}: "
            "update stack_common/mlflow_internals.py"
        )


def test_the_artifact_proxys_repository_getter_exists_and_takes_no_argument() -> None:
    import inspect

    import mlflow.server.handlers as handlers

    getter = getattr(handlers, "_get_artifact_repo_mlflow_artifacts", None)
    assert callable(getter), (
        "MLflow no longer has mlflow.server.handlers._get_artifact_repo_mlflow_artifacts: "
        "update artifacts_destination_repo in stack_common/mlflow_internals.py"
    )
    assert not inspect.signature(getter).parameters, (
        "_get_artifact_repo_mlflow_artifacts now takes arguments: "
        "update artifacts_destination_repo in stack_common/mlflow_internals.py"
    )


def test_serving_internals_still_have_their_shape(tmp_path) -> None:
    import inspect

    from mlflow.pyfunc import scoring_server

    assert mlflow_internals.server_model_path_env() == "__pyfunc_model_path__", (
        "mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH changed: serving/pool.py and "
        "serving/scoring_app.py follow it, check mlflow models serve still uses it"
    )
    params = list(inspect.signature(scoring_server._parse_json_data).parameters)
    assert params[:3] == ["data", "metadata", "input_schema"], (
        f"scoring_server._parse_json_data now takes {params}: update parse_json_data"
    )


def test_parse_json_data_parses_a_dataframe_split_as_mlflow_does() -> None:
    import pandas as pd
    from mlflow.models import Model

    parsed = mlflow_internals.parse_json_data(
        {"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.0]]}}, Model(), None
    )
    assert isinstance(parsed.data, pd.DataFrame) and list(parsed.data["x"]) == [1.0, 2.0], (
        "scoring_server._parse_json_data no longer returns .data as a DataFrame"
    )


def test_the_serving_environment_flag_is_set_as_mlflows_app_sets_it(monkeypatch) -> None:
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

    monkeypatch.delenv(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name, raising=False)
    mlflow_internals.mark_serving_environment()
    assert _MLFLOW_IS_IN_SERVING_ENVIRONMENT.get() is True


def test_signature_from_type_hint_is_false_for_a_plain_model_and_when_mlflow_drops_it() -> None:
    from types import SimpleNamespace

    from mlflow.models import Model

    assert hasattr(Model, "_is_signature_from_type_hint"), (
        "Model._is_signature_from_type_hint is gone: the batcher would merge type-hinted "
        "models' unparsed inputs; update signature_from_type_hint"
    )
    assert mlflow_internals.signature_from_type_hint(Model()) is False
    assert mlflow_internals.signature_from_type_hint(SimpleNamespace()) is False


def test_the_warm_up_helper_exists() -> None:
    from mlflow.utils import requirements_utils

    assert callable(getattr(requirements_utils, "_init_packages_to_modules_map", None)), (
        "requirements_utils._init_packages_to_modules_map is gone: the warm start no longer "
        "pre-fills MLflow's package map (only a speed-up; drop or replace the call)"
    )
    mlflow_internals.warm_packages_to_modules_map()


def test_tracking_server_internals_still_have_their_shape() -> None:
    import inspect

    import mlflow.server.auth as basic_auth
    import mlflow.server.handlers as handlers
    import mlflow.store.db.utils as db_utils
    from mlflow.server.auth.db import utils as auth_db_utils

    for module, name in (
        (db_utils, "_get_schema_version"),
        (db_utils, "_get_latest_schema_revision"),
        (auth_db_utils, "_get_alembic_config"),
        (basic_auth, "_get_permission_from_registered_model_or_prompt_name"),
        (basic_auth, "_find_fastapi_validator"),
        (basic_auth, "_authenticate_cached"),
        (basic_auth, "_auth_cache_key"),
        (handlers, "_add_static_prefix"),
    ):
        assert callable(getattr(module, name, None)), (
            f"MLflow no longer has {module.__name__}.{name}: update "
            "stack_common/mlflow_internals.py"
        )
    assert hasattr(basic_auth, "_USER_AUTH_CACHE"), "mlflow.server.auth._USER_AUTH_CACHE is gone"
    assert list(inspect.signature(basic_auth._find_fastapi_validator).parameters)[:2] == [
        "path",
        "method",
    ], "_find_fastapi_validator's arguments changed: update has_fastapi_validator"
    assert mlflow_internals.latest_schema_revision(), "no latest backend schema revision"
    assert mlflow_internals.add_static_prefix("/gateway/").endswith("/gateway/")


def test_the_password_check_speed_up_falls_back_to_mlflows_own(monkeypatch, caplog) -> None:
    """When MLflow's cached check changes shape, the stack leaves it alone and says so once."""
    import logging

    import mlflow.server.auth as basic_auth

    def wrap(check, key):
        raise AssertionError("must not wrap a check of an unknown shape")

    monkeypatch.delattr(basic_auth, "_auth_cache_key")
    original = basic_auth._authenticate_cached
    with caplog.at_level(logging.WARNING, logger="stack_common.mlflow_internals"):
        assert mlflow_internals.wrap_cached_password_check(wrap) is False
    assert basic_auth._authenticate_cached is original
    assert "MLflow's own check is used" in caplog.text


def test_the_password_check_speed_up_wraps_when_the_shape_holds(monkeypatch) -> None:
    import mlflow.server.auth as basic_auth

    monkeypatch.setattr(basic_auth, "_USER_AUTH_CACHE", {}, raising=False)
    monkeypatch.setattr(basic_auth, "_authenticate_cached", basic_auth._authenticate_cached)
    seen = []

    def wrap(check, key):
        seen.append((check, key))
        return check

    assert mlflow_internals.wrap_cached_password_check(wrap) is True
    assert seen and seen[0][1] is basic_auth._auth_cache_key


def test_the_workspace_store_getter_and_the_artifact_repos_capabilities_exist() -> None:
    from mlflow.server import workspace_helpers
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    assert callable(getattr(workspace_helpers, "_get_workspace_store", None)), (
        "mlflow.server.workspace_helpers._get_workspace_store is gone: update workspace_store"
    )
    repo = MlflowArtifactsRepository("mlflow-artifacts:/0/m", tracking_uri="http://127.0.0.1:9")
    assert hasattr(repo, "_server_capabilities"), (
        "MlflowArtifactsRepository no longer keeps _server_capabilities: serving's switch to "
        "proxied downloads (download_through_server_only) needs another way"
    )
