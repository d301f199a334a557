"""Typed reads of environment variables, failing with the variable's name and the fix."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from stack_common.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; set it to e.g. {default}"
        ) from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}; set it to e.g. {default}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to e.g. {default}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}; set it to e.g. {default}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; set it to true or false")


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The one folder that holds the embedded stack's state (database, artifacts, caches)."""
    env = os.environ if env is None else env
    return Path(env_str(env, "STACK_DATA_DIR", ".stack")).expanduser().resolve()


def default_tracking_uri(env: Mapping[str, str]) -> str:
    return env_str(env, "MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")


def default_model_name(env: Mapping[str, str]) -> str:
    return env_str(env, "MODEL_NAME", "grades-regressor")
