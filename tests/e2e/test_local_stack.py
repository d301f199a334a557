"""`make demo`, `make up` and `make down` as a user runs them, with their own data folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from local_stack.processes import free_port
from stack_common.scoring import Prediction, predict
from tests.helpers import run_cli, stack_snapshot, train_and_promote

pytestmark = pytest.mark.e2e


def processes_using(data_dir: Path) -> list[int]:
    """PIDs of live processes started for ``data_dir`` (they inherit STACK_DATA_DIR)."""
    marker = f"STACK_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "State:\tZ" not in status:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def stack_local(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local_stack", *args],
        env=dict(os.environ) | {"STACK_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def first_answer(url: str, hours: list[float], timeout_s: float = 120) -> Prediction:
    """Predict as soon as serving answers (it starts, or waits for a promotion, in the back)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return predict(url, hours)
        except requests.RequestException:
            assert time.monotonic() < deadline, f"serving at {url} never answered"
            time.sleep(1)


def test_demo_prints_three_predictions_and_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = stack_local("demo", data_dir=data_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    predictions = re.findall(r"(\d+) study hours -> predicted grade\s+([\d.]+)", first.stdout)
    assert [h for h, _ in predictions] == ["1", "5", "10"]
    grades = [float(g) for _, g in predictions]
    assert grades == sorted(grades) and all(0 <= g <= 100 for g in grades)
    assert re.search(
        r"run id [0-9a-f]{32} \| model grades-regressor version 1 \| UI http", first.stdout
    )
    assert processes_using(data_dir) == []

    # A second demo adds a new version on the same data folder.
    second = stack_local("demo", data_dir=data_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "model grades-regressor version 2" in second.stdout
    assert processes_using(data_dir) == []


def test_demo_that_fails_stops_what_it_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bad = tmp_path / "bad.csv"
    bad.write_text("hours,grade\n1,500\n")
    result = stack_local("demo", data_dir=data_dir, TRAINING_DATA=str(bad))
    assert result.returncode == 1
    assert "Error:" in result.stderr and "outside 0-100" in result.stderr
    assert "stopped the demo's tracking server" in result.stdout
    assert processes_using(data_dir) == []


def test_up_down_keeps_state_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ports = {"MLFLOW_PORT": str(free_port()), "SERVING_PORT": str(free_port())}
    ui = f"http://127.0.0.1:{ports['MLFLOW_PORT']}"
    serving = f"http://127.0.0.1:{ports['SERVING_PORT']}"
    try:
        up = stack_local("up", data_dir=data_dir, **ports)
        assert up.returncode == 0, up.stdout + up.stderr
        assert requests.get(f"{ui}/health", timeout=5).status_code == 200
        assert stack_local("up", data_dir=data_dir, **ports).returncode != 0  # already running

        # Serving waits for a production version; train and promote one, and it answers.
        env = train_and_promote(ui, "grades-regressor")
        answer = first_answer(serving, [5])
        assert 40 < answer.grades[0] < 80
        assert run_cli("training", env=env).code == 0  # a second version, not promoted
        before = stack_snapshot(ui, "grades-regressor", "grades-regressor", tmp_path)
        assert len(before["versions"]) == 2 and before["artifacts"]

        down = stack_local("down", data_dir=data_dir)
        assert down.returncode == 0 and "stopped tracking-server" in down.stdout
        assert processes_using(data_dir) == []

        assert stack_local("up", data_dir=data_dir, **ports).returncode == 0
        client = MlflowClient(ui)
        assert client.get_model_version_by_alias("grades-regressor", "production").version == "1"
        assert first_answer(serving, [5]).grades == answer.grades
        after = stack_snapshot(ui, "grades-regressor", "grades-regressor", tmp_path)
        assert after == before  # every run, metric, version, alias and artifact byte
    finally:
        stack_local("down", data_dir=data_dir)
    assert processes_using(data_dir) == []
