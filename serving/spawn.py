"""How the supervisor starts scoring processes: forked from a warm interpreter, or cold.

``WarmStart`` runs ``serving/warm_start.py`` beside the supervisor and asks it for each scoring
process; ``popen`` starts a fresh interpreter (``python -m uvicorn ...``), the way it was done
before and the fallback whenever the warm interpreter is off, missing or broken. Either way the
pool gets a process it can poll, wait for, terminate and kill (``Process``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from serving.warm_messages import (
    Failed,
    Message,
    ProtocolError,
    Spawned,
    SpawnRequest,
    Warmed,
    WarmRequest,
    decode_reply,
    encode,
)

logger = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1


class Process(Protocol):
    """What the pool needs of a scoring process (``subprocess.Popen`` has it all)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


def prctl(option: int, value: int | bytes) -> bool:
    """Linux's ``prctl(option, value)``; False where it failed or there is no such call."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the supervisor dies (Linux prctl), so neither
    nginx nor a scoring process outlives it holding a port or a socket."""
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def popen(argv: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen:
    """A fresh interpreter running ``uvicorn <argv>``."""
    out = open(log, "ab") if log else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
    finally:
        if out:
            out.close()


@dataclass
class AdoptedProcess:
    """A scoring process the warm interpreter forked and this process adopted: our child (we
    are its subreaper), so ``waitpid`` gives its exit code as for one we started."""

    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, code unknown
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``): the warm interpreter's
    grandchildren then become this process's children."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


class WarmStartFailed(OSError):
    pass


class WarmStart:
    """The warm interpreter, seen from the supervisor.

    Started at once, so its imports overlap the supervisor's registry look-up and download at
    a cold start. If it cannot be used (not Linux, crashed, stuck) scoring processes start cold
    and it is started again for the next version.
    """

    def __init__(self, env: dict[str, str], reply_timeout_s: float, model_name: str) -> None:
        self.env = env
        self.model_name = model_name
        self.reply_timeout_s = reply_timeout_s
        self.process: subprocess.Popen | None = None
        self.pending_warm = 0  # "warm" answers not read yet
        self.usable = become_subreaper()
        if not self.usable:
            logger.warning("warm start off: cannot adopt forked processes on this system")

    def start(self) -> None:
        if not self.usable or (self.process is not None and self.process.poll() is None):
            return
        self.pending_warm = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.warm_start", "--model", self.model_name],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )

    def spawn(self, argv: list[str], env: dict[str, str], log: Path | None, name: str) -> Process:
        """A scoring process forked from the warm interpreter, else a cold one."""
        self.start()
        if self.process is not None:
            try:
                while self.pending_warm:
                    self._answer()
                    self.pending_warm -= 1
                answer = self._ask(
                    SpawnRequest(argv=argv, env=env, log=str(log) if log else None, name=name)
                )
                if isinstance(answer, Spawned):
                    return AdoptedProcess(answer.pid)
                if isinstance(answer, Failed):
                    raise WarmStartFailed(answer.error)
                raise ProtocolError(f"warm-start protocol: {answer!r} is no answer to a spawn")
            except (OSError, ValueError) as exc:
                logger.warning("warm start failed (%s); starting this process cold", exc)
                self.stop()
        return popen(argv, env, log)

    def warm(self, model_path: Path) -> None:
        """Have the warm interpreter load ``model_path`` once, without waiting for it."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self._send(WarmRequest(model_path=str(model_path)))
            self.pending_warm += 1
        except OSError:
            self.stop()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin:
                process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()

    def _ask(self, request: Message) -> Spawned | Warmed | Failed:
        self._send(request)
        return self._answer()

    def _send(self, request: Message) -> None:
        stdin = self._pipe(self.process.stdin if self.process else None)
        stdin.write(encode(request))
        stdin.flush()

    def _answer(self) -> Spawned | Warmed | Failed:
        stdout = self._pipe(self.process.stdout if self.process else None)
        ready, _, _ = select.select([stdout], [], [], self.reply_timeout_s)
        line = stdout.readline() if ready else b""
        if not line:
            raise WarmStartFailed("no answer from the warm interpreter")
        return decode_reply(line)

    @staticmethod
    def _pipe(pipe: IO[bytes] | None) -> IO[bytes]:
        if pipe is None:
            raise WarmStartFailed("the warm interpreter is not running")
        return pipe
