"""The trainer's configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stack_common.env import (
    data_dir,
    default_model_name,
    default_tracking_uri,
    env_float,
    env_int,
    env_str,
)
from stack_common.errors import ConfigError

DEFAULT_DATA = Path(__file__).parent / "data" / "grades.csv"


@dataclass(frozen=True)
class TrainingSettings:
    tracking_uri: str
    experiment_name: str
    model_name: str
    data_path: Path
    test_size: float
    seed: int
    server_wait_s: float
    journal_path: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainingSettings:
        env = os.environ if env is None else env
        settings = cls(
            tracking_uri=default_tracking_uri(env),
            experiment_name=env_str(env, "MLFLOW_EXPERIMENT_NAME", "grades"),
            model_name=default_model_name(env),
            data_path=Path(env_str(env, "TRAINING_DATA", str(DEFAULT_DATA))),
            test_size=env_float(env, "TRAINING_TEST_SIZE", 0.2),
            seed=env_int(env, "TRAINING_SEED", 42),
            server_wait_s=env_float(env, "SERVER_WAIT_SECONDS", 30.0),
            journal_path=data_dir(env) / "training-journal.json",
        )
        if not 0.05 <= settings.test_size <= 0.5:
            raise ConfigError(
                f"TRAINING_TEST_SIZE={settings.test_size} is outside 0.05-0.5; set it to e.g. 0.2"
            )
        return settings
