"""The trainer's configuration (``stack-train``), read once at start."""

from __future__ import annotations

from pathlib import Path

from stack_common.errors import ConfigError
from stack_common.settings import DEFAULT_EXPERIMENT_NAME, ClientSettings, env

DEFAULT_DATA = Path(__file__).parent / "data" / "grades.csv"


class TrainingSettings(ClientSettings):
    """``stack-train``: what it trains on and where the run and the version go."""

    experiment_name: str = env("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT_NAME)
    """The experiment runs are logged to."""
    data_path: Path = env("TRAINING_DATA", DEFAULT_DATA)
    """The training data (CSV)."""
    # Share of the rows held out to measure the model (the promotion gate's metric).
    test_size: float = env("TRAINING_TEST_SIZE", 0.2)
    """Share of the rows held out to measure the model."""
    seed: int = env("TRAINING_SEED", 42)
    """The random seed of the split and the model."""

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "training-journal.json"

    def check(self) -> None:
        if not 0.05 <= self.test_size <= 0.5:
            raise ConfigError(
                f"TRAINING_TEST_SIZE={self.test_size} is outside 0.05-0.5; set it to e.g. 0.2"
            )
