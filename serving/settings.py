"""The serving container's configuration (``stack-serve``), read once at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_validator

from stack_common.settings import (
    DEFAULT_SERVING_PORT,
    ClientSettings,
    StackSettings,
    UserPath,
    env,
)
from stack_common.tracking import CLIENT_ENV_DEFAULTS, HttpBudget


def _cache_in_data_dir(data: dict[str, Any]) -> Path:
    return data["stack_data_dir"] / "model-cache"


def _one_per_cpu() -> int:
    return os.cpu_count() or 1


class ServingSettings(ClientSettings):
    """``stack-serve``: which model it serves, how, and how it follows the alias."""

    alias: str = env("SERVING_ALIAS", "production")
    """The registry alias served (and followed as it moves)."""
    # Model cache for ephemeral disks; versions kept, and a size limit (0 = none).
    cache_dir: UserPath = env("SERVING_CACHE_DIR", default_factory=_cache_in_data_dir)
    """The model cache folder."""
    cache_keep_versions: int = env("SERVING_CACHE_KEEP_VERSIONS", 3, ge=1)
    """Versions kept in the model cache."""
    cache_max_mb: int = env("SERVING_CACHE_MAX_MB", 0, ge=0)
    """The model cache's size limit in MB (0: none)."""
    host: str = env("SERVING_HOST", "127.0.0.1")
    """The address serving listens on."""
    port: int = env("SERVING_PORT", DEFAULT_SERVING_PORT, ge=1)
    """The port serving listens on."""
    # Scoring processes, each behind nginx on its own Unix socket.
    workers: int = env("SERVING_WORKERS", default_factory=_one_per_cpu, ge=1)
    """Scoring processes (default: one per CPU)."""
    # 0 = exit with a message when no version has the alias; >0 = wait that long for one.
    alias_wait_s: float = env("SERVING_ALIAS_WAIT_SECONDS", 0.0, ge=0)
    """Seconds to wait at start for a version with the alias (0: exit at once)."""
    poll_s: float = env("SERVING_POLL_SECONDS", 1.0, ge=0.2)
    """Seconds between two looks at the alias."""
    max_body_mb: int = env("SERVING_MAX_BODY_MB", 10, ge=1)
    """The largest request body accepted, in MB."""
    request_timeout_s: int = env("SERVING_REQUEST_TIMEOUT_SECONDS", 60, ge=1)
    """Seconds a prediction may take before a 504."""
    load_timeout_s: float = env("SERVING_LOAD_TIMEOUT_SECONDS", 180.0, ge=1)
    """Seconds a version has to load and answer its test prediction."""
    start_from_cache: bool = env("SERVING_START_FROM_CACHE", True)
    """Start from the cached version when the registry is unreachable."""
    # Fork scoring processes from a warm interpreter (serving/warm_start.py); false: start each
    # one as a fresh interpreter.
    warm_start: bool = env("SERVING_WARM_START", True)
    """Fork scoring processes from a warm interpreter; false: fresh interpreters."""
    # Where nginx's config, sockets and status files live (None: a fresh temporary folder).
    run_dir: Path | None = env("SERVING_RUN_DIR", None)
    """nginx's config, sockets and status files (unset: a temporary folder)."""
    nginx: str = env("SERVING_NGINX", "nginx")
    """The nginx binary."""
    njs_module: str = env("SERVING_NJS_MODULE", "/usr/lib/nginx/modules/ngx_http_js_module.so")
    """nginx's njs module (the JSON error answers)."""
    download_attempts: int = env("SERVING_DOWNLOAD_ATTEMPTS", 4, ge=1)
    """Attempts to download a version's files."""
    download_max_wait_s: float = env("SERVING_DOWNLOAD_MAX_WAIT_SECONDS", 30.0, ge=0)
    """The longest wait between two download attempts, in seconds."""
    download_timeout_s: int = env("SERVING_DOWNLOAD_TIMEOUT_SECONDS", 600, ge=1)
    """Seconds a download may stall before it is retried."""
    # MLflow's client knobs as the operator set them (or the stack's defaults): the budget of
    # the registry look-ups at start; the supervisor's polls have their own, shorter one.
    http_max_retries: int = env(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        int(CLIENT_ENV_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]),
        ge=0,
    )
    """MLflow's client retries of a registry call at start."""
    http_backoff_factor: float = env(
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        float(CLIENT_ENV_DEFAULTS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]),
        ge=0,
    )
    """MLflow's client backoff between those retries."""
    http_timeout_s: float = env(
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        float(CLIENT_ENV_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"]),
        ge=0,
    )
    """MLflow's client timeout of one registry call, in seconds."""
    # The scoring app: "batching" (serving/batching.py) or "mlflow" (MLflow's own, verbatim).
    engine: Literal["batching", "mlflow"] = env("SERVING_ENGINE", "batching")
    """The scoring app: batching, or mlflow (MLflow's own, verbatim)."""
    max_batch_rows: int = env("SERVING_MAX_BATCH_ROWS", 32, ge=1)
    """The most rows one batched model call predicts."""
    max_batch_wait_ms: float = env("SERVING_MAX_BATCH_WAIT_MS", 2.0, ge=0)
    """Milliseconds a batch waits for more requests."""
    max_queued_requests: int = env("SERVING_MAX_QUEUED_REQUESTS", 256, ge=1)
    """Requests a scoring process holds waiting for the model; past it, 503 with Retry-After."""
    restart_backoff_s: float = env(
        "SERVING_RESTART_BACKOFF_SECONDS",
        1.0,
        ge=0,
        description="Wait before the 2nd attempt to restart a scoring process that keeps "
        "failing; each further attempt waits twice as long.",
    )
    restart_backoff_max_s: float = env(
        "SERVING_RESTART_BACKOFF_MAX_SECONDS",
        60.0,
        ge=0,
        description="The longest wait between two restart attempts.",
    )
    restart_max_failures: int = env(
        "SERVING_RESTART_MAX_FAILURES",
        5,
        ge=1,
        description="Failed restarts in a row after which /health says unhealthy and the "
        "supervisor stops restarting (until a new version is promoted).",
    )

    # The challenger (issue 24): a second alias served beside production, to see it on live
    # traffic before promoting it. Off unless an alias is named.
    shadow_alias: str | None = env("SERVING_SHADOW_ALIAS", None)
    """The challenger's alias, loaded beside production for shadow and canary (unset: off)."""
    shadow_percent: float = env("SERVING_SHADOW_PERCENT", 0.0, ge=0, le=100)
    """Share (%) of production's answered requests also sent to the challenger, after the
    client's answer; its answers are compared, never returned."""
    canary_percent: float = env("SERVING_CANARY_PERCENT", 0.0, ge=0, le=100)
    """Share (%) of requests answered by the challenger (a 5xx of it: production answers)."""
    challenger_workers: int = env("SERVING_CHALLENGER_WORKERS", 1, ge=1)
    """Scoring processes of the challenger."""
    shadow_timeout_s: float = env("SERVING_SHADOW_TIMEOUT_SECONDS", 5.0, gt=0)
    """How long a mirrored request waits for the challenger before it counts as an error."""
    shadow_max_queued: int = env("SERVING_SHADOW_MAX_QUEUED", 64, ge=1)
    """Mirrored requests waiting for the challenger; past it they are dropped (and counted)."""
    canary_min_requests: int = env("SERVING_CANARY_MIN_REQUESTS", 50, ge=1)
    """Canary requests seen before the canary may be stopped for its error rate or p99."""
    canary_error_rate_margin: float = env("SERVING_CANARY_ERROR_RATE_MARGIN", 0.02, ge=0, le=1)
    """The canary stops when its error rate exceeds production's by more than this."""
    canary_p99_margin_ms: float = env("SERVING_CANARY_P99_MARGIN_MS", 50.0, ge=0)
    """The canary stops when its p99 latency exceeds production's by more than this (ms)."""

    @model_validator(mode="after")
    def _challenger_needs_an_alias(self) -> ServingSettings:
        if (self.shadow_percent or self.canary_percent) and not self.shadow_alias:
            raise ValueError(
                "SERVING_SHADOW_PERCENT or SERVING_CANARY_PERCENT is set but "
                "SERVING_SHADOW_ALIAS is not: name the challenger's alias (e.g. challenger)"
            )
        if self.shadow_alias is not None and self.shadow_alias == self.alias:
            raise ValueError(
                f"SERVING_SHADOW_ALIAS is {self.shadow_alias!r}, the alias served as "
                "production (SERVING_ALIAS): name the challenger's alias instead"
            )
        return self

    @field_validator("engine", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def cache_max_bytes(self) -> int:
        return self.cache_max_mb * 1024 * 1024

    @property
    def registry_budget(self) -> HttpBudget:
        return HttpBudget(self.http_max_retries, self.http_backoff_factor, self.http_timeout_s)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"


def _as_in_serving(field: str) -> Any:
    """ServingSettings' own field (variable, default, limits, description): the supervisor and
    the scoring processes read one variable by one rule."""
    return ServingSettings.model_fields[field]


class ScoringSettings(StackSettings):
    """A scoring process (``serving/scoring_app.py``): the batching limits its pool passes it
    (``serving.pool.scoring_env``). The model path and the request timeout are MLflow's own
    variables, read as MLflow's scoring server reads them."""

    max_batch_rows: int = _as_in_serving("max_batch_rows")
    max_batch_wait_ms: float = _as_in_serving("max_batch_wait_ms")
    max_queued_requests: int = _as_in_serving("max_queued_requests")
    batching_opt_in: bool | None = env("SERVING_BATCHING_OPT_IN", None)
    """The served version's serving.batching tag as the supervisor read it (unset: no tag)."""
    shadow_socket: Path | None = env("SERVING_SHADOW_SOCKET", None)
    """Where production's scoring processes send the requests they mirror (set by the pool)."""
    shadow_percent: float = _as_in_serving("shadow_percent")
