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
