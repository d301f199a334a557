"""Faults survived against real processes: a tracking server killed during training, a bucket
cut off while serving, and the local stack restarted with everything still there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from local_stack.processes import Service, stop_group
from tests.conftest import ServiceFactory
from tests.helpers import LoadGenerator, cli_env, run_cli, train_and_promote, wait_for_version

pytestmark = pytest.mark.e2e


def start_training(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "training"],
        env=dict(os.environ) | {"LOG_LEVEL": "WARNING"} | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def kill_when_a_run_starts(client: MlflowClient, experiment: str, tracking: Service) -> str:
    """SIGKILL the tracking server as soon as a run of ``experiment`` is RUNNING."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        if found:
            running = client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'")
            if running:
                os.killpg(tracking.process.pid, signal.SIGKILL)
                tracking.process.wait()
                return running[0].info.run_id
        time.sleep(0.05)
    raise AssertionError("no run started")


def run_states(client: MlflowClient, experiment: str) -> list[str]:
    found = client.get_experiment_by_name(experiment)
    return [r.info.status for r in client.search_runs([found.experiment_id])]


def test_training_rides_out_a_tracking_server_crash(
    services: ServiceFactory, unique_name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "stack"
    tracking = services.tracking(data_dir=data_dir)
    port = tracking.port
    client = MlflowClient(tracking.url)
    # A retry window (1+2+...+64 s) long enough for a restart on a machine under test load.
    env = cli_env(
        tracking.url,
        unique_name,
        STACK_DATA_DIR=str(tmp_path / "trainer"),
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="7",
    )

    training = start_training(env)
    kill_when_a_run_starts(client, unique_name, tracking)
    time.sleep(1)
    services.tracking(data_dir=data_dir, port=port)  # back within the client's retry window
    _out, err = training.communicate(timeout=300)

    assert training.returncode == 0, err
    assert run_states(client, unique_name) == ["FINISHED"]
    versions = client.search_model_versions(f"name='{unique_name}'")
    assert [mv.status for mv in versions] == ["READY"]
    assert client.get_model_version_by_alias(unique_name, "challenger").version == "1"


def test_training_fails_in_one_line_and_the_next_one_closes_the_lost_run(
    services: ServiceFactory, unique_name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "stack"
    tracking = services.tracking(data_dir=data_dir)
    port = tracking.port
    client = MlflowClient(tracking.url)
    env = cli_env(
        tracking.url,
        unique_name,
        STACK_DATA_DIR=str(tmp_path / "trainer"),
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",  # a shorter retry window keeps the test short
    )

    training = start_training(env)
    lost = kill_when_a_run_starts(client, unique_name, tracking)
    _out, err = training.communicate(timeout=300)  # the server stays down this time
    assert training.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert tracking.url in errors[0] and "stopped answering" in errors[0]

    services.tracking(data_dir=data_dir, port=port)
    assert run_states(client, unique_name) == ["RUNNING"]  # the server never heard the end
    assert run_cli("training", env=env).code == 0
    assert client.get_run(lost).info.status == "FAILED"
    assert sorted(run_states(client, unique_name)) == ["FAILED", "FINISHED"]
    assert [mv.version for mv in client.search_model_versions(f"name='{unique_name}'")] == ["1"]


class TcpProxy:
    """A loopback TCP relay that can be cut and restored: the bucket 'briefly unreachable'."""

    def __init__(self, target_port: int, port: int, log: Path) -> None:
        self.args = [sys.executable, "-m", "tests.tcp_relay", str(port), str(target_port)]
        self.port, self.log = port, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError("relay did not start")

    def cut(self) -> None:
        assert self.process is not None
        stop_group(self.process.pid)
        self.process.wait()


def test_bucket_outage_while_serving_degrades_health_not_answers(
    services: ServiceFactory, unique_name: str, tmp_path: Path, moto_s3
) -> None:
    from local_stack.processes import free_port
    from tests.buckets import create_bucket

    bucket = f"outage-{unique_name}"
    create_bucket(moto_s3, bucket)
    relay = TcpProxy(moto_s3.service.port, free_port(), tmp_path / "relay.log")
    relay.start()
    tracking = services.tracking(
        env={
            "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/artifacts",
            "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    env = train_and_promote(tracking.url, unique_name)
    assert run_cli("training", env=env).code == 0  # version 2, in the bucket, not yet served
    serving = services.serving(
        tracking.url,
        unique_name,
        env={"SERVING_POLL_SECONDS": "0.5", "SERVING_DOWNLOAD_ATTEMPTS": "1"},
    )

    with LoadGenerator(serving.url, concurrency=4) as load:
        relay.cut()
        assert run_cli("promotion", "promote", env=env).code == 0  # the registry still works
        deadline = time.monotonic() + 90
        while (
            "artifact_download"
            not in requests.get(f"{serving.url}/health", timeout=5).json()["degraded"]
        ):
            assert time.monotonic() < deadline, "/health never reported the bucket"
            time.sleep(0.2)
        relay.start()  # the bucket is back: serving gets version 2 by itself
        wait_for_version(serving.url, "2", timeout_s=120)
        load.wait_until_seen("2")
    assert load.failures == []
    assert load.versions_seen() == {"1", "2"}
    assert requests.get(f"{serving.url}/health", timeout=5).json()["status"] == "ok"
    relay.cut()
