"""The serving container's configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stack_common.env import (
    data_dir,
    default_model_name,
    default_tracking_uri,
    env_bool,
    env_float,
    env_int,
    env_str,
)
from stack_common.errors import ConfigError
from stack_common.tracking import HttpBudget


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class ServingSettings:
    tracking_uri: str
    model_name: str
    alias: str
    cache_dir: Path
    cache_keep_versions: int
    cache_max_bytes: int
    host: str
    port: int
    workers: int
    server_wait_s: float
    alias_wait_s: float
    poll_s: float
    max_body_mb: int
    request_timeout_s: int
    load_timeout_s: float
    start_from_cache: bool
    run_dir: Path | None
    nginx: str
    njs_module: str
    download_attempts: int
    download_max_wait_s: float
    download_timeout_s: int
    # MLflow's client knobs as the operator set them (or the stack's defaults): the budget of
    # the registry look-ups at start; the supervisor's polls have their own, shorter one.
    registry_budget: HttpBudget
    # The scoring app: "batching" (serving/batching.py) or "mlflow" (MLflow's own, verbatim).
    engine: str = "batching"
    max_batch_rows: int = 32
    max_batch_wait_ms: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServingSettings:
        env = os.environ if env is None else env
        return cls(
            tracking_uri=default_tracking_uri(env),
            model_name=default_model_name(env),
            alias=env_str(env, "SERVING_ALIAS", "production"),
            cache_dir=Path(
                env_str(env, "SERVING_CACHE_DIR", str(data_dir(env) / "model-cache"))
            ).expanduser(),
            cache_keep_versions=env_int(env, "SERVING_CACHE_KEEP_VERSIONS", 3, minimum=1),
            cache_max_bytes=env_int(env, "SERVING_CACHE_MAX_MB", 0) * 1024 * 1024,
            host=env_str(env, "SERVING_HOST", "127.0.0.1"),
            port=env_int(env, "SERVING_PORT", 8080, minimum=1),
            workers=env_int(env, "SERVING_WORKERS", os.cpu_count() or 1, minimum=1),
            server_wait_s=env_float(env, "SERVER_WAIT_SECONDS", 30.0),
            alias_wait_s=env_float(env, "SERVING_ALIAS_WAIT_SECONDS", 0.0),
            poll_s=env_float(env, "SERVING_POLL_SECONDS", 3.0, minimum=0.2),
            max_body_mb=env_int(env, "SERVING_MAX_BODY_MB", 10, minimum=1),
            request_timeout_s=env_int(env, "SERVING_REQUEST_TIMEOUT_SECONDS", 60, minimum=1),
            load_timeout_s=env_float(env, "SERVING_LOAD_TIMEOUT_SECONDS", 180.0, minimum=1),
            start_from_cache=env_bool(env, "SERVING_START_FROM_CACHE", True),
            run_dir=Path(env["SERVING_RUN_DIR"]) if env.get("SERVING_RUN_DIR") else None,
            nginx=env_str(env, "SERVING_NGINX", "nginx"),
            njs_module=env_str(
                env, "SERVING_NJS_MODULE", "/usr/lib/nginx/modules/ngx_http_js_module.so"
            ),
            download_attempts=env_int(env, "SERVING_DOWNLOAD_ATTEMPTS", 4, minimum=1),
            download_max_wait_s=env_float(env, "SERVING_DOWNLOAD_MAX_WAIT_SECONDS", 30.0),
            download_timeout_s=env_int(env, "SERVING_DOWNLOAD_TIMEOUT_SECONDS", 600, minimum=1),
            registry_budget=HttpBudget.from_env(env),
            engine=env_choice(env, "SERVING_ENGINE", "batching", ("batching", "mlflow")),
            max_batch_rows=env_int(env, "SERVING_MAX_BATCH_ROWS", 32, minimum=1),
            max_batch_wait_ms=env_float(env, "SERVING_MAX_BATCH_WAIT_MS", 2.0),
        )

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"
