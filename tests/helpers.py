"""What a user types, as functions: the CLIs run as subprocesses, and small data sets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]


def run_cli(module: str, *args: str, env: Mapping[str, str], timeout: float = 180) -> CliResult:
    """Run ``python -m <module> args`` the way a user runs ``stack-train`` & co."""
    full_env = dict(os.environ) | {"LOG_LEVEL": "WARNING"} | dict(env)
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def cli_env(tracking_uri: str, model_name: str, **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODEL_NAME": model_name,
        "MLFLOW_EXPERIMENT_NAME": model_name,
        "SERVER_WAIT_SECONDS": "20",
        **extra,
    }


def write_grades(path: Path, intercept: float, slope: float, noise_sd: float) -> Path:
    """A dataset of another shape than the shipped one, so its model answers differently."""
    rng = np.random.default_rng(7)
    hours = rng.uniform(0, 12, size=200).round(1)
    grade = (intercept + slope * hours + rng.normal(0, noise_sd, size=200)).clip(0, 100).round(1)
    pd.DataFrame({"hours": hours, "grade": grade}).to_csv(path, index=False)
    return path
