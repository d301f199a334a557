"""Connecting a client process (trainer, promotion CLI, serving) to the tracking server.

MLflow's client reads its HTTP knobs (retries, backoff, timeout) from the environment at every
call, so they are process-wide. They are set once, by each entry point before its first MLflow
call (:func:`apply_client_defaults`), and never changed afterwards: the result must not depend on
which function ran first. A call that needs a different budget (serving's alias poll) passes it
explicitly (:class:`HttpBudget`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

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


def apply_client_defaults(
    env: MutableMapping[str, str] | None = None, extra: Mapping[str, str] | None = None
) -> None:
    """Give MLflow's client the stack's defaults where the operator set nothing.

    Call it once, at the start of a process (a CLI's ``main``), before any MLflow call; library
    functions never touch the environment.
    """
    env = os.environ if env is None else env
    for name, value in {**CLIENT_ENV_DEFAULTS, **(extra or {})}.items():
        if not env.get(name):
            env[name] = value


@dataclass(frozen=True)
class HttpBudget:
    """How long one MLflow REST call may take: retries, their backoff factor, and the timeout of
    each try (connect and read). Serving's comes from its settings (``registry_budget``)."""

    max_retries: int
    backoff_factor: float
    timeout_s: float


def wait_for_tracking_server(tracking_uri: str, wait_s: float) -> None:
    """Wait up to ``wait_s`` until an HTTP tracking server answers /health (ServerUnreachable)."""
    if tracking_uri.startswith(("http://", "https://")):
        wait_for_http(
            tracking_uri.rstrip("/") + "/health",
            wait_s,
            what="MLflow tracking server",
            hint="check MLFLOW_TRACKING_URI and that the server is running (make up)",
        )


def connect(tracking_uri: str, wait_s: float):
    """Wait until the tracking server answers, then point MLflow's fluent API and client at it."""
    import mlflow
    from mlflow import MlflowClient

    wait_for_tracking_server(tracking_uri, wait_s)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
