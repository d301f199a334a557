"""Starting and stopping the stack's services as local processes.

Each service runs in its own session (process group): ``mlflow server`` and ``mlflow models
serve`` spawn workers, and stopping the group is the only way to leave nothing behind. The demo,
``make up`` and the end-to-end tests all start services through here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from stack_common.errors import StackError

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log_path: Path
    url: str
    stopped: bool = False

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the service's whole process group, once: its PID may belong to another process
        after that, and signalling it again could hit a stranger."""
        if self.stopped:
            return
        self.stopped = True
        stop_group(self.process.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


def stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL what is left after ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):  # reap our child so the group can vanish
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def start_service(
    name: str, module: str, env: Mapping[str, str], log_path: Path, url: str
) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    logger.info("started %s (pid %d), log %s", name, process.pid, log_path)
    return Service(name, process, log_path, url)


def wait_until_up(service: Service, path: str, timeout_s: float) -> None:
    """Poll ``service.url + path`` until 200; fail early with the log if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = service.process.poll()
        if code is not None:
            raise StackError(
                f"{service.name} exited with code {code} before answering; "
                f"see {service.log_path}:\n{service.log_tail()}"
            )
        try:
            if requests.get(service.url + path, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise StackError(
        f"{service.name} did not answer {service.url}{path} within {timeout_s:g}s; "
        f"see {service.log_path}:\n{service.log_tail()}"
    )


def base_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "STACK_DATA_DIR": str(data_dir),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_tracking_server(
    data_dir: Path, port: int, log_path: Path, extra_env: Mapping[str, str] | None = None
) -> Service:
    env = base_env(data_dir) | {"MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port)}
    env |= dict(extra_env or {})
    url = f"http://127.0.0.1:{port}"
    return start_service("tracking server", "tracking_server", env, log_path, url)


def start_serving(
    data_dir: Path,
    tracking_uri: str,
    model_name: str,
    port: int,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Service:
    env = base_env(data_dir) | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODEL_NAME": model_name,
        "SERVING_HOST": "127.0.0.1",
        "SERVING_PORT": str(port),
    }
    env |= dict(extra_env or {})
    return start_service("serving", "serving", env, log_path, f"http://127.0.0.1:{port}")
