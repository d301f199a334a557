"""Connecting a client process (trainer, promotion CLI, serving) to the tracking server."""

from __future__ import annotations

import os

from stack_common.wait import wait_for_http

# Bounded retries of MLflow's own HTTP client: a server restart (several seconds) is ridden
# out, a dead server fails within about a minute (1+2+4+8+16 s of backoff plus timeouts)
# instead of MLflow's default of several minutes.
CLIENT_ENV_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    # Our CLIs print their own result; stdout stays clean for `--print-version` in scripts.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def apply_client_defaults() -> None:
    for name, value in CLIENT_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def connect(tracking_uri: str, wait_s: float):
    """Wait until the tracking server answers, then point MLflow's fluent API and client at it."""
    apply_client_defaults()
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri.startswith(("http://", "https://")):
        wait_for_http(
            tracking_uri.rstrip("/") + "/health",
            wait_s,
            what="MLflow tracking server",
            hint="check MLFLOW_TRACKING_URI and that the server is running (make up)",
        )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
