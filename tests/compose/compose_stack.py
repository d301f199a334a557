"""Driving ``docker compose`` from the tests: one project, its own .env, its lifecycle.

:class:`ComposeProject` runs every command with ``-p <project> --env-file <file> -f ...`` from the
repo root, in an environment stripped of every variable the compose files interpolate, so neither
the developer's shell nor a ``.env`` in the checkout can change what the tests see.
:meth:`ComposeProject.lifecycle` owns a stack's life: ``down -v`` first, build, ``up -d --wait``,
and ``down -v`` at the end even on failure, printing the logs when the story failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = "docker-compose.yml"
AWS = "docker-compose.aws.yml"
GCS = "docker-compose.gcs.yml"
SCALE = "docker-compose.scale.yml"
TLS = "docker-compose.tls.yml"
OFFLINE = "tests/compose/offline.yml"
OFFLINE_SCALE = "tests/compose/offline-scale.yml"
OFFLINE_TLS = "tests/compose/offline-tls.yml"
COMPOSE_FILES = (BASE, AWS, GCS, SCALE, TLS, OFFLINE, OFFLINE_SCALE, OFFLINE_TLS)

# The stand-in images the offline override names (../shared/docker-offline/build-images.sh).
STAND_IN_IMAGES = (
    "local/python:3.11-slim",
    "local/postgres:15",
    "local/s3:moto",
    "local/prometheus:2",
)
SCALE_STAND_IN_IMAGES = (*STAND_IN_IMAGES, "local/haproxy:2.6")

# Secrets and settings a test .env supplies; the tests add ports and names. MLflow's basic auth
# wants passwords of 12+ characters.
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "test-postgres-secret",
    "MINIO_ROOT_USER": "test-minio-user",
    "MINIO_ROOT_PASSWORD": "test-minio-secret",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "test-admin-secret",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-flask-secret-key",
    "STACK_TRAINER_PASSWORD": "test-trainer-secret",
    "STACK_PROMOTER_PASSWORD": "test-promoter-secret",
    "STACK_SERVING_PASSWORD": "test-serving-secret",
    "STACK_METRICS_PASSWORD": "test-metrics-secret",
    # Images the tests build are tagged apart from a developer's (and from another checkout's
    # test run on the same engine: STACK_TEST_IMAGE_TAG).
    "STACK_IMAGE_TAG": os.environ.get("STACK_TEST_IMAGE_TAG", "test"),
}


class ComposeError(RuntimeError):
    pass


def interpolated_names() -> set[str]:
    """Every ``${NAME...}`` the compose files use."""
    names: set[str] = set()
    for name in COMPOSE_FILES:
        names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (ROOT / name).read_text()))
    return names


def clean_environment() -> dict[str, str]:
    """The process environment without anything compose would interpolate or obey."""
    drop = interpolated_names() | {"COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("COMPOSE_")}


def write_env_file(path: Path, values: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def docker_unavailable_reason() -> str | None:
    """Why no real container can run here, or None when one can."""
    reason = os.environ.get("STACK_DOCKER_UNAVAILABLE", "").strip()
    if reason:
        return reason
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`docker info` failed: {last}"
    return None


def compose_unavailable_reason() -> str | None:
    """Why ``docker compose`` cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed (tests/run.sh installs it where it can)"
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        return f"`docker compose version` failed: {probe.stderr.strip() or probe.stdout.strip()}"
    return None


def remove_superseded_test_images(prefix: str = "stacktest") -> None:
    """Delete the dangling images earlier test projects built (a rebuild after a source change
    untags the previous one); images of any other project are left alone."""

    def docker(*args: str) -> str:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300).stdout

    dangling = docker(
        "image",
        "ls",
        "-q",
        "--no-trunc",
        "--filter",
        "dangling=true",
        "--filter",
        "label=com.docker.compose.project",
    ).split()
    if not dangling:
        return
    labels = docker(
        "image",
        "inspect",
        "--format",
        '{{.Id}} {{index .Config.Labels "com.docker.compose.project"}}',
        *dangling,
    )
    ours = [
        fields[0]
        for fields in map(str.split, labels.splitlines())
        if len(fields) == 2 and fields[1].startswith(prefix)
    ]
    if ours:
        docker("image", "rm", *ours)


class ComposeProject:
    def __init__(
        self,
        project: str,
        env_file: Path,
        files: Sequence[str] = (BASE,),
        profiles: Sequence[str] = (),
    ) -> None:
        self.project = project
        self.env_file = env_file
        self.files = tuple(files)
        # On for every command (up, down, logs...): e.g. "monitoring" adds Prometheus.
        self.profiles = tuple(profiles)
        self.timings: dict[str, float] = {}

    def command(self, *args: str, profiles: Sequence[str] = ()) -> list[str]:
        cmd = ["docker", "compose", "-p", self.project, "--env-file", str(self.env_file)]
        for name in self.files:
            cmd += ["-f", name]
        for profile in dict.fromkeys((*self.profiles, *profiles)):
            cmd += ["--profile", profile]
        return [*cmd, *args]

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        step: str | None = None,
        profiles: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """``docker compose <args>``; ``step`` records its duration in :attr:`timings`."""
        started = time.monotonic()
        result = subprocess.run(
            self.command(*args, profiles=profiles),
            cwd=ROOT,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if step:
            self.timings[step] = time.monotonic() - started
        if check and result.returncode != 0:
            raise ComposeError(
                f"`docker compose {' '.join(args)}` exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def config(self, profiles: Sequence[str] = ("jobs",)) -> dict:
        out = self.run("config", "--format", "json", timeout=60, profiles=profiles).stdout
        return json.loads(out)

    def python_in(self, service: str, code: str) -> str:
        """Run ``python -c code`` in the running ``service`` container; its stdout."""
        return self.run("exec", "-T", service, "python", "-c", code, timeout=120).stdout

    def logs(self, *services: str, tail: int = 200) -> str:
        result = self.run("logs", "--no-color", "--tail", str(tail), *services, check=False)
        return result.stdout + result.stderr

    def down(self, volumes: bool = True) -> None:
        args = ["down", "--remove-orphans", "--timeout", "20"]
        if volumes:
            args.append("--volumes")
        # With the "jobs" profile, so that a trainer container left by a killed run goes too.
        self.run(*args, timeout=300, step="down -v" if volumes else "down", profiles=("jobs",))

    def leftovers(self) -> list[str]:
        """Containers, volumes and networks still labelled with this project."""
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind in ("container", "volume", "network"):
            listing = ["docker", kind, "ls", "--filter", label, "--format", "{{.Name}}"]
            if kind == "container":
                listing.insert(3, "--all")
            out = subprocess.run(listing, capture_output=True, text=True, timeout=60).stdout
            found += [f"{kind} {name}" for name in out.split()]
        return found

    @contextlib.contextmanager
    def lifecycle(self, wait_timeout_s: int = 300) -> Iterator[ComposeProject]:
        """Build, ``up -d --wait``; on exit print the logs if the body failed, then ``down -v``."""
        failed = True
        try:
            self.down(volumes=True)  # a previous run killed half-way leaves nothing in the way
            self.run("build", timeout=1800, step="build", profiles=("jobs",))
            self.up(wait_timeout_s, step="up --wait")
            yield self
            failed = False
        finally:
            if failed:
                print(f"--- docker compose logs ({self.project}) ---")
                print(self.logs())
            self.down(volumes=True)
            remove_superseded_test_images()
            left = self.leftovers()
            if left and not failed:
                raise ComposeError(f"down -v left behind: {', '.join(left)}")

    def up(self, wait_timeout_s: int = 300, step: str = "up --wait") -> None:
        self.run(
            "up",
            "--detach",
            "--wait",
            "--wait-timeout",
            str(wait_timeout_s),
            timeout=wait_timeout_s + 120,
            step=step,
        )
