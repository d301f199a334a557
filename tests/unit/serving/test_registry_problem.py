"""Serving's /health names what really went wrong when it cannot read the alias."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

from serving.supervisor import registry_problem

ENDPOINT = "http://tracking:5000/api/2.0/mlflow/registered-models/alias"


@pytest.mark.parametrize(
    ("error", "says", "never"),
    [
        (
            MlflowException(
                f"API request to endpoint {ENDPOINT} failed with error code 403 != 200. "
                "Response body: 'Permission denied'"
            ),
            "permission denied (403",
            "unreachable",
        ),
        (
            MlflowException(
                f"API request to endpoint {ENDPOINT} failed with error code 401 != 200. "
                "Response body: 'You are not authenticated.'"
            ),
            "refused the credentials (401",
            "unreachable",
        ),
        (
            MlflowException(
                f"API request to {ENDPOINT} failed with exception "
                "HTTPConnectionPool(host='tracking', port=5000): Max retries exceeded"
            ),
            "unreachable: API request",
            "permission",
        ),
        (
            MlflowException("Permission denied: 'serving' may not read", PERMISSION_DENIED),
            "Permission denied",
            "unreachable",
        ),
        (ConnectionError("connection refused"), "unreachable: connection refused", "permission"),
    ],
    ids=["403", "401", "lost", "403-json", "network"],
)
def test_health_names_a_refusal_apart_from_an_outage(
    monkeypatch: pytest.MonkeyPatch, error: Exception, says: str, never: str
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "serving")
    reason = registry_problem(error)
    assert says in reason and never not in reason and "\n" not in reason
