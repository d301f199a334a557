"""The tracking server's Prometheus exporter: on by default, one emptied folder per process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tracking_server.launcher import (
    PROMETHEUS_PREFIX,
    prometheus_folder,
    server_command,
    server_environment,
)
from tracking_server.settings import ServerSettings


def test_metrics_on_by_default_in_a_folder_of_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    gone = tmp_path / f"{PROMETHEUS_PREFIX}999999999"  # a server that has exited
    gone.mkdir()
    settings = prometheus_folder(ServerSettings.from_env({}))
    folder = tmp_path / f"{PROMETHEUS_PREFIX}{os.getpid()}"
    assert settings.prometheus_dir == folder
    assert folder.is_dir()
    assert not gone.exists()
    cmd = server_command(settings)
    assert cmd[cmd.index("--expose-prometheus") + 1] == str(folder)
    assert server_environment(settings)["PROMETHEUS_MULTIPROC_DIR"] == str(folder)


def test_counts_of_an_earlier_process_are_removed(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old counts")
    (tmp_path / "keep.txt").write_text("not ours")
    settings = prometheus_folder(ServerSettings.from_env({"MLFLOW_PROMETHEUS_DIR": str(tmp_path)}))
    assert settings.prometheus_dir == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_metrics_can_be_turned_off() -> None:
    settings = prometheus_folder(ServerSettings.from_env({"MLFLOW_PROMETHEUS": "false"}))
    assert settings.prometheus_dir is None
    assert "--expose-prometheus" not in server_command(settings)


def test_an_unwritable_folder_costs_the_metrics_not_the_server(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    env = {"MLFLOW_PROMETHEUS_DIR": str(blocked / "metrics")}
    settings = prometheus_folder(ServerSettings.from_env(env))
    assert "--expose-prometheus" not in server_command(settings)
