"""Fixtures of the end-to-end tests: real bucket endpoints on loopback.

A moto S3 server and a GCS emulator are started once per session as processes (like MinIO or a
cloud bucket, they outlive any one tracking server); every test gets a bucket of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from local_stack.processes import free_port
from tests.buckets import (
    BucketService,
    create_bucket,
    list_objects,
    read_object,
    start_gcs_emulator,
    start_moto_s3,
)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BucketService]:
    service = start_moto_s3(free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BucketService]:
    service = start_gcs_emulator(free_port(), tmp_path_factory.mktemp("gcs") / "gcs.log")
    try:
        yield service
    finally:
        service.stop()


@dataclass
class ArtifactStore:
    """One artifact store under test: how to configure the server and clients, how to look in."""

    kind: str  # local, s3, gcs
    destination: str
    server_env: dict[str, str]
    client_env: dict[str, str] = field(default_factory=dict)  # direct mode: bucket access
    bucket_service: BucketService | None = None
    bucket: str = ""
    prefix: str = ""
    local_root: Path | None = None

    def objects(self) -> dict[str, int]:
        """Every stored object (path relative to the destination) and its size."""
        if self.bucket_service is None:
            assert self.local_root is not None
            return {
                str(p.relative_to(self.local_root)): p.stat().st_size
                for p in self.local_root.rglob("*")
                if p.is_file()
            }
        found = list_objects(self.bucket_service, self.bucket, self.prefix + "/")
        return {key.removeprefix(self.prefix + "/"): size for key, size in found.items()}

    def read(self, relative: str) -> bytes:
        """One object's bytes, read with the store's own client."""
        if self.bucket_service is None:
            assert self.local_root is not None
            return (self.local_root / relative).read_bytes()
        return read_object(self.bucket_service, self.bucket, f"{self.prefix}/{relative}")


@pytest.fixture
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """``local``, ``s3``, ``gcs`` (proxied) or ``s3-direct``; parametrize with ``indirect=True``."""
    kind = request.param
    if kind == "local":
        root = tmp_path / "artifact-folder"
        return ArtifactStore(
            "local", str(root), {"MLFLOW_ARTIFACTS_DESTINATION": str(root)}, local_root=root
        )
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    prefix = "mlflow"
    if kind in ("s3", "s3-direct"):
        service = request.getfixturevalue("moto_s3")
        destination = f"s3://{bucket}/{prefix}"
    elif kind == "gcs":
        service = request.getfixturevalue("gcs_emulator")
        destination = f"gs://{bucket}/{prefix}"
    else:
        raise ValueError(f"unknown artifact store {kind!r}")
    create_bucket(service, bucket)
    if kind == "s3-direct":
        # The server only records s3:// locations; the clients need the bucket's credentials.
        server_env = {
            "MLFLOW_ARTIFACTS_DESTINATION": destination,
            "MLFLOW_SERVE_ARTIFACTS": "false",
        }
        return ArtifactStore(
            "s3", destination, server_env, dict(service.env), service, bucket, prefix
        )
    server_env = {"MLFLOW_ARTIFACTS_DESTINATION": destination, **service.env}
    return ArtifactStore(
        "s3" if kind == "s3" else "gcs", destination, server_env, {}, service, bucket, prefix
    )
