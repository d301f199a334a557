"""Fixtures of the Compose tests: is ``docker compose`` here, can containers run, a test .env."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from compose_stack import (
    STAND_IN_IMAGES,
    TEST_SECRETS,
    compose_unavailable_reason,
    docker_unavailable_reason,
    write_env_file,
)


@pytest.fixture(scope="session")
def compose_cli() -> None:
    """Skip (saying why) where ``docker compose`` cannot run; ``docker compose config`` needs
    no engine."""
    reason = compose_unavailable_reason()
    if reason:
        pytest.skip(f"docker compose unavailable: {reason}")


@pytest.fixture(scope="session")
def docker_engine(compose_cli: None) -> None:
    """Skip (saying why) where no container can run, or the offline stand-ins are missing."""
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(f"no Docker engine: {reason}")
    missing = [
        image
        for image in STAND_IN_IMAGES
        if subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, timeout=60
        ).returncode
        != 0
    ]
    if missing:
        pytest.skip(
            f"stand-in images {', '.join(missing)} missing: run "
            "../shared/docker-offline/build-images.sh (tests/run.sh does)"
        )


@pytest.fixture
def env_file(tmp_path: Path) -> Callable[..., Path]:
    """``env_file(**values)``: a .env with the test secrets plus ``values`` (None drops a key)."""

    def make(name: str = "test.env", **values: str | None) -> Path:
        merged: Mapping[str, str | None] = {**TEST_SECRETS, **values}
        return write_env_file(tmp_path / name, {k: v for k, v in merged.items() if v is not None})

    return make
