"""Stand-ins for cloud buckets in the tests and benchmarks: a moto S3 server and a GCS emulator,
as real processes (test harness: the shipped packages never import it).

The end-to-end tests and the benchmark point the tracking server at these exactly as at AWS S3,
MinIO or Google Cloud Storage: only ``MLFLOW_S3_ENDPOINT_URL`` / ``STORAGE_EMULATOR_HOST`` differ.
Both keep their objects in memory and listen on 127.0.0.1 only.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from local_stack.processes import Service, base_env, wait_until_up

# moto accepts any key pair; these only have to look like credentials.
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class BucketService:
    """A running bucket endpoint and the environment a process needs to use it."""

    kind: str  # "s3" or "gcs"
    service: Service
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.service.url

    def stop(self) -> None:
        self.service.stop()


def _start(name: str, args: list[str], log_path: Path, url: str, env: Mapping[str, str]) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, *args],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=log_path.parent,
        )
    return Service(name, process, log_path, url)


def start_moto_s3(port: int, log_path: Path, timeout_s: float = 60.0) -> BucketService:
    """``python -m moto.server`` on 127.0.0.1:port; S3 clients need the returned env."""
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    service = _start("moto S3 server", args, log_path, url, base_env(log_path.parent))
    try:
        wait_until_up(service, "/moto-api/", timeout_s)
    except BaseException:
        service.stop()
        raise
    return BucketService("s3", service, {**MOTO_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": url})


def start_gcs_emulator(port: int, log_path: Path, timeout_s: float = 60.0) -> BucketService:
    """``gcp-storage-emulator start --in-memory`` on 127.0.0.1:port.

    google-cloud-storage (and so MLflow's GCS artifact repository) sends every request to
    ``STORAGE_EMULATOR_HOST`` with anonymous credentials when that variable is set.
    """
    url = f"http://127.0.0.1:{port}"
    args = [
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--quiet",
    ]
    service = _start("GCS emulator", args, log_path, url, base_env(log_path.parent))
    try:
        wait_until_up(service, "/storage/v1/b", timeout_s)
    except BaseException:
        service.stop()
        raise
    return BucketService("gcs", service, {"STORAGE_EMULATOR_HOST": url})


def s3_client(bucket_service: BucketService):
    import boto3

    env = bucket_service.env
    return boto3.client(
        "s3",
        endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def gcs_client(bucket_service: BucketService):
    """A google.cloud.storage client of the emulator (anonymous, as the emulator expects)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="local-emulator",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": bucket_service.url},
    )


def create_bucket(bucket_service: BucketService, name: str) -> None:
    if bucket_service.kind == "s3":
        s3_client(bucket_service).create_bucket(Bucket=name)
    else:
        gcs_client(bucket_service).create_bucket(name)


def list_objects(bucket_service: BucketService, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object under ``prefix`` with its size, as the store's own client sees it."""
    if bucket_service.kind == "s3":
        found: dict[str, int] = {}
        pages = s3_client(bucket_service).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix):
            found |= {obj["Key"]: obj["Size"] for obj in page.get("Contents", [])}
        return found
    blobs = gcs_client(bucket_service).list_blobs(bucket, prefix=prefix or None)
    return {blob.name: blob.size for blob in blobs}


def read_object(bucket_service: BucketService, bucket: str, key: str) -> bytes:
    if bucket_service.kind == "s3":
        return s3_client(bucket_service).get_object(Bucket=bucket, Key=key)["Body"].read()
    return gcs_client(bucket_service).bucket(bucket).blob(key).download_as_bytes()
