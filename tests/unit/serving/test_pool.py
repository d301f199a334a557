"""The scoring pool runs exactly MLflow's scoring server, as `mlflow models serve` starts it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.pyfunc import scoring_server

from serving.pool import (
    APP,
    BATCHING_APP,
    BatchSettings,
    scoring_command,
    scoring_env,
)
from serving.settings import ScoringSettings
from stack_common.errors import ConfigError


def test_same_app_and_environment_as_mlflow_models_serve(tmp_path: Path) -> None:
    command, env = scoring_server.get_cmd(str(tmp_path), port=5000, host="127.0.0.1", nworkers=1)
    assert command.endswith(APP)
    ours = scoring_env(tmp_path, request_timeout_s=60)
    # The variable MLflow's get_cmd names the model in (a private name of MLflow's).
    assert ours["__pyfunc_model_path__"] == env["__pyfunc_model_path__"] == tmp_path.as_uri()
    assert ours["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] == "60"


def test_one_uvicorn_worker_per_unix_socket(tmp_path: Path) -> None:
    cmd = scoring_command(tmp_path / "a.sock", "7")
    assert cmd[1:3] == ["-m", "uvicorn"]
    assert cmd[cmd.index("--uds") + 1] == str(tmp_path / "a.sock")
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[-1] == APP
    assert cmd[cmd.index("--header") + 1] == "X-Model-Version:7"


def test_the_batching_engine_runs_in_the_same_uvicorn_with_its_limits(tmp_path: Path) -> None:
    cmd = scoring_command(tmp_path / "a.sock", "7", engine="batching")
    assert cmd[-1] == BATCHING_APP
    assert cmd[cmd.index("--loop") + 1] == "uvloop"
    assert cmd[cmd.index("--http") + 1] == "httptools"
    env = scoring_env(tmp_path, 60, BatchSettings("batching", 8, 1.5))
    assert env["SERVING_MAX_BATCH_ROWS"] == "8" and env["SERVING_MAX_BATCH_WAIT_MS"] == "1.5"


def test_a_scoring_process_reads_the_limits_its_pool_passed_through_its_settings(
    tmp_path: Path,
) -> None:
    env = scoring_env(tmp_path, 60, BatchSettings("batching", 8, 1.5))
    settings = ScoringSettings.from_env(env)
    assert (settings.max_batch_rows, settings.max_batch_wait_ms) == (8, 1.5)
    defaults = ScoringSettings.from_env({"SERVING_MAX_BATCH_ROWS": " "})  # empty means unset
    assert defaults.max_batch_rows == BatchSettings().max_rows
    with pytest.raises(ConfigError, match=r"^SERVING_MAX_BATCH_WAIT_MS='soon' is not a number"):
        ScoringSettings.from_env({"SERVING_MAX_BATCH_WAIT_MS": "soon"})
