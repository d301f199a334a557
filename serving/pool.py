"""A pool of MLflow scoring processes serving one model version on Unix sockets.

Each process runs uvicorn with a scoring app: by default ``serving.scoring_app:app``, MLflow's
endpoints with adaptive batching (``serving/batching.py``); with ``SERVING_ENGINE=mlflow``
exactly what ``mlflow models serve --env-manager local`` runs (uvicorn with
``mlflow.pyfunc.scoring_server.app:app``). One worker each, on its own Unix socket: nginx
balances over them, which uses every core without uvicorn's multi-worker mode (whose sockets
lack TCP_NODELAY and add ~40 ms to keep-alive answers), and Unix sockets have no Nagle delay at
all. Starting uvicorn directly skips one Python start-up (the ``mlflow`` CLI) per process, and
the supervisor forks them from a warm interpreter (``serving/spawn.py``) rather than starting
fresh ones, unless ``SERVING_WARM_START=false``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serving import unix_http
from serving.batch_policy import Decision
from serving.settings import ServingSettings
from serving.spawn import Process, popen
from stack_common.errors import StackError
from stack_common.logs import json_dict_config, log_format_from_env
from stack_common.mlflow_internals import server_model_path_env
from stack_common.settings import DEFAULT_MODEL_NAME

logger = logging.getLogger(__name__)

APP = "mlflow.pyfunc.scoring_server.app:app"
BATCHING_APP = "serving.scoring_app:app"
APPS = {"mlflow": APP, "batching": BATCHING_APP}
# The same apps inside serving/shadow_tap.py's ShadowTap: production's pool when it mirrors.
TAPPED_APPS = {
    "mlflow": "serving.shadow_tap:mlflow_app",
    "batching": "serving.shadow_tap:batching_app",
}
SHADOW_SOCKET_ENV = "SERVING_SHADOW_SOCKET"
SHADOW_PERCENT_ENV = "SERVING_SHADOW_PERCENT"
DEFAULT_ALIAS = ServingSettings.model_fields["alias"].default
# How the batching limits reach a scoring process (serving/scoring_app.py reads them).
MAX_ROWS_ENV = "SERVING_MAX_BATCH_ROWS"
MAX_WAIT_ENV = "SERVING_MAX_BATCH_WAIT_MS"
MAX_QUEUED_ENV = "SERVING_MAX_QUEUED_REQUESTS"
OPT_IN_ENV = "SERVING_BATCHING_OPT_IN"


# Starts one scoring process: uvicorn's arguments, its environment, its log, a name for ps.
Spawner = Callable[[list[str], dict[str, str], Path | None, str], Process]


def cold_spawner(argv: list[str], env: dict[str, str], log: Path | None, name: str) -> Process:
    return popen(argv, env, log)


class PoolFailed(StackError):
    pass


@dataclass(frozen=True)
class Mirror:
    """Production's pool mirrors ``percent`` of its answered requests to ``socket`` (the
    supervisor's shadow dispatcher, serving/shadow.py) through serving/shadow_tap.py."""

    socket: Path
    percent: float

    def env(self) -> dict[str, str]:
        return {SHADOW_SOCKET_ENV: str(self.socket), SHADOW_PERCENT_ENV: str(self.percent)}


@dataclass(frozen=True)
class BatchSettings:
    """The scoring engine and its batching limits (SERVING_ENGINE, SERVING_MAX_BATCH_*), as the
    pool hands them to its scoring processes; the defaults are ServingSettings' own."""

    engine: str = ServingSettings.model_fields["engine"].default
    max_rows: int = ServingSettings.model_fields["max_batch_rows"].default
    max_wait_ms: float = ServingSettings.model_fields["max_batch_wait_ms"].default
    max_queued: int = ServingSettings.model_fields["max_queued_requests"].default
    # The version's serving.batching tag (serving/batch_policy.py); None: no tag.
    opt_in: bool | None = None

    @classmethod
    def of(cls, settings: ServingSettings, opt_in: bool | None) -> BatchSettings:
        return cls(
            settings.engine,
            settings.max_batch_rows,
            settings.max_batch_wait_ms,
            settings.max_queued_requests,
            opt_in,
        )


def fast_io() -> list[str]:
    """uvloop's event loop and httptools' parser (about twice the requests of asyncio + h11 in
    a scoring process); uvicorn's ``auto`` where one is not installed, with a warning."""
    missing = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name) is None]
    if missing:
        logger.warning("%s not installed: the scoring processes are slower", ", ".join(missing))
        return []
    return ["--loop", "uvloop", "--http", "httptools"]


def uvicorn_args(
    socket_path: Path,
    version: str,
    engine: str = "mlflow",
    tapped: bool = False,
    alias: str = DEFAULT_ALIAS,
) -> list[str]:
    """uvicorn itself stamps every answer with the version and alias it serves (``--header``):
    with a canary, production and the challenger answer through the same nginx location."""
    return [
        "--uds",
        str(socket_path),
        "--workers",
        "1",
        "--no-access-log",
        "--timeout-keep-alive",
        "75",
        *fast_io(),
        "--header",
        f"X-Model-Version:{version}",
        "--header",
        f"X-Model-Alias:{alias}",
        (TAPPED_APPS if tapped else APPS)[engine],
    ]


def scoring_command(socket_path: Path, version: str, engine: str = "mlflow") -> list[str]:
    """The command line of a scoring process started cold."""
    return [sys.executable, "-m", "uvicorn", *uvicorn_args(socket_path, version, engine)]


def interpreter_env() -> dict[str, str]:
    """The environment of every scoring interpreter, the warm one included: what must be set
    before MLflow is imported."""
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if log_format_from_env() == "json":
        # MLflow's loggers, left unconfigured, write through uvicorn's JSON config.
        env["MLFLOW_CONFIGURE_LOGGING"] = "false"
    return env


def scoring_env(
    model_path: Path, request_timeout_s: int, batch: BatchSettings | None = None
) -> dict[str, str]:
    env = interpreter_env()
    if batch is not None:
        env[MAX_ROWS_ENV] = str(batch.max_rows)
        env[MAX_WAIT_ENV] = str(batch.max_wait_ms)
        env[MAX_QUEUED_ENV] = str(batch.max_queued)
        env[OPT_IN_ENV] = "" if batch.opt_in is None else str(batch.opt_in).lower()
    # The variable mlflow.pyfunc.scoring_server.get_cmd sets (tests/unit/serving/test_pool.py).
    env[server_model_path_env()] = model_path.as_uri()
    env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(request_timeout_s)
    return env


def json_logging_env(
    run_dir: Path, stamp: str, version: str, model_name: str = DEFAULT_MODEL_NAME
) -> dict[str, str]:
    """With LOG_FORMAT=json, the scoring processes log JSON lines too, naming model and version:
    uvicorn reads the logging config (UVICORN_LOG_CONFIG); see ``interpreter_env``."""
    if log_format_from_env() != "json":
        return {}
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    config = json_dict_config(level, model=model_name, version=version)
    path = run_dir / f"v{stamp}-logging.json"
    path.write_text(json.dumps(config, indent=1))
    return {"UVICORN_LOG_CONFIG": str(path)}


def example_request(model_path: Path) -> bytes | None:
    """The model's own serving input example, the real prediction every new version must answer."""
    example = model_path / "serving_input_example.json"
    return example.read_bytes() if example.is_file() else None


@dataclass
class ScoringPool:
    version: str
    model_path: Path
    sockets: list[Path]
    processes: list[Process] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    # How its processes were started, to start one again (``replace``).
    respawn: Callable[[Path, int], Process] | None = None
    replaced: int = 0
    # Whether its requests are merged, and why (serving/batch_policy.py), for /health.
    batching: Decision | None = None

    @classmethod
    def start(
        cls,
        version: str,
        model_path: Path,
        run_dir: Path,
        size: int,
        request_timeout_s: int,
        log_path: Path | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        batch: BatchSettings | None = None,
        spawner: Spawner | None = None,
        mirror: Mirror | None = None,
        nice: int = 0,
        alias: str = DEFAULT_ALIAS,
        role: str = "scoring",
    ) -> ScoringPool:
        run_dir.mkdir(parents=True, exist_ok=True)
        stamp = f"{version}-{int(time.time() * 1000) % 10**8}"
        sockets = [run_dir / f"v{stamp}-{i}.sock" for i in range(size)]
        pool = cls(version, model_path, sockets)
        batch = batch or BatchSettings()
        env = (
            (mirror.env() if mirror is not None else {})
            | scoring_env(model_path, request_timeout_s, batch)
            | json_logging_env(run_dir, stamp, version, model_name)
        )
        spawner = spawner or cold_spawner
        engine = batch.engine

        def respawn(sock: Path, i: int) -> Process:
            sock.unlink(missing_ok=True)
            args = uvicorn_args(sock, version, engine, tapped=mirror is not None, alias=alias)
            process = spawner(args, env, log_path, f"{role}-v{version}-{i}")
            if nice:  # the challenger's shadow work yields the cores to production's answers
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, process.pid, nice)
            return process

        pool.respawn = respawn
        for i, sock in enumerate(sockets):
            pool.processes.append(respawn(sock, i))
        logger.info("starting version %s in %d scoring processes", version, size)
        return pool

    def wait_ready(self, timeout_s: float, fallback_example: bytes | None = None) -> None:
        """Every process answers /ping and predicts the model's input example, or PoolFailed.

        A version logged without an input example is tried on ``fallback_example`` (the served
        version's): it replaces that version, so it must answer the same requests.
        """
        deadline = time.monotonic() + timeout_s
        example = example_request(self.model_path) or fallback_example
        for sock, process in zip(self.sockets, self.processes, strict=True):
            self._wait_one(sock, process, deadline, timeout_s, example)

    def _wait_one(
        self, sock: Path, process: Process, deadline: float, timeout_s: float, example: bytes | None
    ) -> None:
        while True:
            if process.poll() is not None:
                raise PoolFailed(
                    f"version {self.version}: scoring process exited with code "
                    f"{process.returncode} while loading the model"
                )
            try:
                if unix_http.request(str(sock), "GET", "/ping", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PoolFailed(f"version {self.version}: not ready within {timeout_s:g}s")
            time.sleep(0.1)
        if example is not None:
            self._check_prediction(sock, example)

    def replace(self, index: int, timeout_s: float) -> None:
        """Start process ``index`` again after it died, the others untouched: the new one loads
        on a socket of its own and takes over the old one's path (an nginx slot, once adopted)
        only when it answers /ping and the input example, as ``adopt`` does for a whole pool.
        PoolFailed if it does not; it is then stopped, and ``dead`` reports it again."""
        if self.respawn is None or not self.sockets:
            raise PoolFailed(f"version {self.version}: this pool cannot start a process again")
        self.replaced += 1
        target = self.sockets[index]
        fresh = target.with_name(f"v{self.version}-r{self.replaced}-{index}.sock")
        process = self.respawn(fresh, index)
        self.processes[index] = process
        try:
            self._wait_one(
                fresh,
                process,
                time.monotonic() + timeout_s,
                timeout_s,
                example_request(self.model_path),
            )
        except PoolFailed:
            if process.poll() is None:
                process.kill()
                process.wait()
            fresh.unlink(missing_ok=True)
            raise
        os.replace(fresh, target)
        logger.info(
            "version %s: scoring process %d replaced (pid %d)", self.version, index, process.pid
        )

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def _check_prediction(self, sock: Path, example: bytes) -> None:
        try:
            answer = unix_http.request(str(sock), "POST", "/invocations", body=example, timeout=30)
        except OSError as exc:
            raise PoolFailed(f"version {self.version}: test prediction failed ({exc})") from None
        if answer.status != 200:
            detail = answer.body[:200].decode(errors="replace")
            raise PoolFailed(
                f"version {self.version}: test prediction answered {answer.status}: {detail}"
            )
        try:
            predictions = json.loads(answer.body)["predictions"]
        except (ValueError, KeyError, TypeError):
            raise PoolFailed(f"version {self.version}: test prediction is not MLflow's") from None
        if not predictions:
            raise PoolFailed(f"version {self.version}: test prediction is empty")

    def adopt(self, slots: list[Path]) -> None:
        """Take over the socket paths nginx connects to: from now on new connections reach
        this pool. ``rename`` swaps a path atomically; connections already open to the pool
        that held it are untouched until that pool stops."""
        for sock, slot in zip(self.sockets, slots, strict=True):
            os.replace(sock, slot)
        self.sockets = list(slots)

    def release(self) -> None:
        """Forget the socket paths: another pool has adopted them (stop must not unlink them)."""
        self.sockets = []

    def dead(self) -> list[int]:
        return [i for i, p in enumerate(self.processes) if p.poll() is not None]

    def stop(self, timeout_s: float = 15.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for sock in self.sockets:
            sock.unlink(missing_ok=True)
        logger.info("stopped the scoring processes of version %s", self.version)
