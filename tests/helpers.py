"""What a user types, as functions: the CLIs run as subprocesses, and small data sets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from local_stack.processes import Service, base_env, free_port


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]


# Chromium flags for a closed network: no background calls home, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def run_cli(
    module: str,
    *args: str,
    env: Mapping[str, str],
    timeout: float = 180,
    stdin_text: str | None = None,
) -> CliResult:
    """Run ``python -m <module> args`` the way a user runs ``stack-train`` & co."""
    full_env = dict(os.environ) | {"LOG_LEVEL": "WARNING"} | dict(env)
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **({"input": stdin_text} if stdin_text is not None else {"stdin": subprocess.DEVNULL}),
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


def train_and_promote(tracking_uri: str, model_name: str, **extra: str) -> dict[str, str]:
    """Version 1 trained and in production, as the CLIs do it; returns their environment."""
    env = cli_env(tracking_uri, model_name, **extra)
    trained = run_cli("training", env=env)
    assert trained.code == 0, trained.stderr
    promoted = run_cli("promotion", "promote", env=env)
    assert promoted.code == 0, promoted.stderr
    return env


def write_grades(path: Path, intercept: float, slope: float, noise_sd: float) -> Path:
    """A dataset of another shape than the shipped one, so its model answers differently."""
    rng = np.random.default_rng(7)
    hours = rng.uniform(0, 12, size=200).round(1)
    grade = (intercept + slope * hours + rng.normal(0, noise_sd, size=200)).clip(0, 100).round(1)
    pd.DataFrame({"hours": hours, "grade": grade}).to_csv(path, index=False)
    return path


class LoadGenerator:
    """Continuous single-row predictions from ``concurrency`` threads, each with keep-alive,
    recording every answer's status and ``X-Model-Version``: what clients saw during a switch."""

    def __init__(self, url: str, concurrency: int = 8) -> None:
        self.url = url.rstrip("/") + "/invocations"
        self.concurrency = concurrency
        self.answers: list[tuple[int, str | None]] = []
        self.bodies: set[str] = set()  # every distinct answer body (one row, always the same)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _loop(self) -> None:
        session = requests.Session()
        body = {"dataframe_split": {"columns": ["hours"], "data": [[5.0]]}}
        while not self._stop.is_set():
            try:
                response = session.post(self.url, json=body, timeout=30)
                record = (response.status_code, response.headers.get("X-Model-Version"))
                with self._lock:
                    self.answers.append(record)
                    self.bodies.add(response.text)
            except requests.RequestException as exc:
                with self._lock:
                    self.errors.append(repr(exc))

    def __enter__(self) -> LoadGenerator:
        self._threads = [
            threading.Thread(target=self._loop, daemon=True) for _ in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    @property
    def failures(self) -> list[str]:
        with self._lock:
            bad = [f"HTTP {status}" for status, _ in self.answers if status != 200]
            return bad + list(self.errors)

    def versions_seen(self) -> set[str | None]:
        with self._lock:
            return {version for _, version in self.answers}

    def wait_until_seen(self, version: str, timeout_s: float = 30) -> None:
        """Until one of the load's own answers came from ``version`` (serving may have answered
        another client from it a moment before)."""
        deadline = time.monotonic() + timeout_s
        while version not in self.versions_seen():
            assert time.monotonic() < deadline, f"the load never got version {version}"
            time.sleep(0.05)


def wait_for_version(url: str, version: str, timeout_s: float = 120) -> float:
    """Seconds until serving answers from ``version`` (by its X-Model-Version header); returns
    once the switch is complete too (``/served`` names it: every request sent from then on is
    answered by it, while for about a second before both versions may answer). The bound is
    for a loaded machine (the suite runs on two workers); the speed is benchmarked."""
    started = time.monotonic()
    first_answer: float | None = None
    while time.monotonic() - started < timeout_s:
        try:
            if first_answer is None:
                response = requests.post(
                    url.rstrip("/") + "/invocations",
                    json={"dataframe_split": {"columns": ["hours"], "data": [[1.0]]}},
                    timeout=10,
                )
                if response.headers.get("X-Model-Version") == version:
                    first_answer = time.monotonic() - started
            served = requests.get(url.rstrip("/") + "/served", timeout=10)
            if first_answer is not None and served.json().get("version") == version:
                return first_answer
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"serving at {url} did not switch to version {version} in {timeout_s}s")


def stack_snapshot(tracking_uri: str, model_name: str, experiment: str, scratch: Path) -> dict:
    """Everything a restart must keep: runs with metrics, versions, aliases, artifact bytes."""
    import hashlib

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # models:/ URIs resolve through the global registry
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    snapshot: dict = {
        "runs": {r.info.run_id: (r.info.status, dict(r.data.metrics)) for r in runs},
        "versions": {
            mv.version: (mv.status, mv.run_id, mv.source)
            for mv in client.search_model_versions(f"name='{model_name}'")
        },
        "aliases": dict(client.get_registered_model(model_name).aliases),
        "artifacts": {},
    }
    for version in snapshot["versions"]:
        target = scratch / f"v{version}-{time.monotonic_ns()}"
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_name}/{version}",
            dst_path=str(target),
        )
        for path in sorted(target.rglob("*")):
            if path.is_file():
                key = f"{version}/{path.relative_to(target)}"
                snapshot["artifacts"][key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


@dataclass(frozen=True)
class Proc:
    """One process as /proc shows it."""

    pid: int
    ppid: int
    pgid: int
    state: str  # "Z": a zombie, exited and not yet reaped
    name: str  # comm, what ``ps -o comm`` shows (a forked scoring process names itself)
    argv: list[str]

    @property
    def command(self) -> str:
        return " ".join(self.argv)


def processes() -> list[Proc]:
    """Every process /proc lists now (one that exits while it is read is left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found.append(Proc(int(entry.name), int(fields[1]), int(fields[2]), fields[0], name, argv))
    return found


def wait_for(condition, timeout_s: float = 60, what: str = "condition"):
    """``condition()``'s first truthy value, polled every 0.2 s; AssertionError after
    ``timeout_s`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def start_mlflow_models_serve(
    folder: Path, log: Path, model_uri: str, env: Mapping[str, str | None]
) -> Service:
    """``mlflow models serve -m <model_uri>`` as a user runs it, on a free loopback port: the
    local env manager (the default virtualenv one needs a network this machine lacks), the
    venv's ``bin`` on PATH (MLflow starts ``uvicorn`` from it). ``env`` adds the tracking URI
    and credentials; a None value unsets a variable. Not waited for: callers wait on /ping."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    full = base_env(folder)
    for name, value in env.items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    full["PATH"] = f"{bin_dir}{os.pathsep}{full.get('PATH', '')}"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                *("models", "serve", "-m", model_uri),
                *("--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)),
            ],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Service("plain", process, log, f"http://127.0.0.1:{port}")
