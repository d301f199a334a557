"""``stack-local``'s configuration: the data folder, the ports of ``up``, the model's name."""

from __future__ import annotations

from stack_common.settings import (
    DEFAULT_MODEL_NAME,
    DEFAULT_SERVING_PORT,
    DEFAULT_TRACKING_PORT,
    DataDirSettings,
    env,
)


class LocalStackSettings(DataDirSettings):
    """What ``stack-local`` itself reads; the processes it starts read their own settings from
    the environment it passes on (tracking_server/settings.py, serving/settings.py)."""

    model_name: str = env("MODEL_NAME", DEFAULT_MODEL_NAME)
    """The registered model the demo trains and serves."""
    # `up`: the UI's and serving's ports (the demo picks free ones).
    ui_port: int = env("MLFLOW_PORT", DEFAULT_TRACKING_PORT, ge=1)
    """The tracking server's (UI's) port for `up`."""
    serving_port: int = env("SERVING_PORT", DEFAULT_SERVING_PORT, ge=1)
    """Serving's port for `up`."""
