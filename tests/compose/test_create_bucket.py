"""The create-bucket job against in-process stand-ins: moto for S3, gcp-storage-emulator for GCS."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from stack_common.errors import ConfigError, StackError
from tracking_server.create_bucket import bucket_of, ensure_bucket, main


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("destination", "expected"),
    [("s3://bucket-a/some/prefix", ("s3", "bucket-a")), ("gs://bucket-b/", ("gs", "bucket-b"))],
)
def test_bucket_of_reads_the_artifacts_destination(destination: str, expected) -> None:
    assert bucket_of(destination) == expected


@pytest.mark.parametrize("destination", ["", "/srv/artifacts", "file:///x", "s3://", "http://h/b"])
def test_a_destination_without_bucket_is_a_config_error(destination: str) -> None:
    with pytest.raises(ConfigError, match="MLFLOW_ARTIFACTS_DESTINATION"):
        bucket_of(destination)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_s3_bucket_is_created_once_then_left_alone(aws: None, region: str) -> None:
    import boto3

    env = {
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://stack-artifacts/mlflow",
        "AWS_DEFAULT_REGION": region,
    }
    assert ensure_bucket(env) == ("s3://stack-artifacts", "created")
    s3 = boto3.client("s3", region_name=region)
    s3.put_object(Bucket="stack-artifacts", Key="kept.txt", Body=b"x")
    assert ensure_bucket(env) == ("s3://stack-artifacts", "exists")
    assert s3.get_object(Bucket="stack-artifacts", Key="kept.txt")["Body"].read() == b"x"
    location = s3.get_bucket_location(Bucket="stack-artifacts")["LocationConstraint"]
    assert (location or "us-east-1") == region


def test_unreachable_endpoint_fails_in_one_line_after_the_wait(aws: None) -> None:
    env = {
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://stack-artifacts/",
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}",
        "BUCKET_WAIT_SECONDS": "1",
    }
    with pytest.raises(StackError, match="did not answer within 1s") as caught:
        ensure_bucket(env)
    assert "\n" not in str(caught.value)


def test_cli_prints_the_outcome_and_exits_1_with_the_fix(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://cli-artifacts/")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    first = CliRunner().invoke(main, [])
    again = CliRunner().invoke(main, [])
    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    assert "bucket s3://cli-artifacts: created" in first.output
    assert "bucket s3://cli-artifacts: already exists" in again.output

    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "/local/folder")
    failed = CliRunner().invoke(main, [])
    assert failed.exit_code == 1
    assert "set it to s3://bucket/prefix or gs://bucket/prefix" in failed.output


@pytest.fixture
def gcs_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from gcp_storage_emulator.server import create_server

    port = closed_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        yield
    finally:
        server.stop()


def test_gcs_bucket_is_created_once_then_left_alone(gcs_emulator: None) -> None:
    env = {
        "MLFLOW_ARTIFACTS_DESTINATION": "gs://stack-artifacts/mlflow",
        "GOOGLE_CLOUD_PROJECT": "test-project",
    }
    assert ensure_bucket(env) == ("gs://stack-artifacts", "created")
    assert ensure_bucket(env) == ("gs://stack-artifacts", "exists")
