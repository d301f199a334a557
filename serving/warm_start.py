"""The warm interpreter scoring processes are forked from (``python -m serving.warm_start``).

A fresh scoring process spends about 1.2 s importing MLflow, pandas and uvicorn, 0.7 s more
building MLflow's package map (the requirement check inside ``load_model``) and as long again on
its flavour's own imports (scikit-learn, skops, ...), before the model itself loads in
milliseconds. Under traffic those seconds compete with the requests for the same cores, which
made a promotion take 5-12 s. This process pays for all of it once, while nothing is waiting,
and then forks each scoring process in milliseconds: a promoted version answers well under a
second after its files are here. After each new version is served it loads that model once
and drops it (``warm``), so the imports of the flavour in use are already done next time.

Each scoring process is forked twice, so that it becomes the supervisor's own child (the
supervisor is a child subreaper, see ``serving/spawn.py``): the supervisor waits for it, reads
its exit code and signals it like any process it started, and a crash of this interpreter takes
no scoring process down with it.

Protocol (typed in ``serving/warm_messages.py``): one request per line on stdin, one reply
per line on the original stdout (which nothing else writes to: stray prints go to stderr)::

    SpawnRequest(argv, env, log, name) -> Spawned(pid) | Failed(error)
    WarmRequest(model_path)             -> Warmed(seconds) | Failed(error)
    a malformed line                    -> Failed(error naming the line)
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import IO, NoReturn

from serving.spawn import die_with_parent, prctl
from serving.warm_messages import (
    Failed,
    ProtocolError,
    Spawned,
    SpawnRequest,
    Warmed,
    WarmRequest,
    decode_request,
    encode,
)

logger = logging.getLogger("serving.warm_start")

PR_SET_NAME = 15
# What every scoring process needs, whatever it serves: imported once, here.
PRELOAD = (
    "mlflow.pyfunc",
    "mlflow.pyfunc.scoring_server",
    "mlflow.utils.requirements_utils",
    "pandas",
    "uvicorn.main",
    "uvloop",
    "httptools",
    "serving.scoring_app",
)
REPARENT_WAIT_S = 5.0


def _set_name(name: str) -> None:
    """What ``ps -o comm`` and ``top`` show (15 bytes), instead of the warm interpreter's."""
    prctl(PR_SET_NAME, name[:15].encode())


def preload() -> float:
    """Import what every scoring process needs and build MLflow's package map (what the first
    ``load_model`` of every process would otherwise build again)."""
    began = time.monotonic()
    import importlib

    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # e.g. uvloop missing: the scoring process falls back too
            logger.warning("warm start: cannot import %s (%s)", module, exc)
    from stack_common.mlflow_internals import warm_packages_to_modules_map

    with contextlib.suppress(Exception):  # only a speed-up
        warm_packages_to_modules_map()
    _freeze()
    return time.monotonic() - began


def _freeze() -> None:
    """Move what is loaded out of the collector's reach before forking: collections in the
    scoring processes then skip these objects and leave their pages shared with this one."""
    gc.collect()
    gc.freeze()


def warm(model_path: str) -> Warmed | Failed:
    """Load a model and drop it: its flavour's imports stay in this interpreter."""
    began = time.monotonic()
    try:
        from mlflow.pyfunc import scoring_server

        model = scoring_server.load_model_with_mlflow_config(model_path)
        del model
    except Exception as exc:  # the version's own scoring processes report it properly
        return Failed(error=f"{type(exc).__name__}: {exc}"[:300])
    finally:
        _freeze()
    return Warmed(seconds=round(time.monotonic() - began, 3))


def spawn(request: SpawnRequest, supervisor: int, stdout_fd: int, reply_fd: int) -> int:
    """Fork a scoring process that the supervisor adopts; its pid."""
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        code = 0
        try:
            os.close(read_end)
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                _run_scoring(request, supervisor, os.getppid(), stdout_fd, reply_fd)
            os.write(write_end, str(pid).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)  # its child is orphaned now, and the supervisor adopts it
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(intermediate, 0)
    if not answer:
        raise OSError("the scoring process could not be forked")
    return int(answer)


def _run_scoring(
    request: SpawnRequest, supervisor: int, intermediate: int, stdout_fd: int, reply_fd: int
) -> NoReturn:
    """In the forked scoring process: become what ``python -m uvicorn <argv>`` would be."""
    code = 1
    try:
        deadline = time.monotonic() + REPARENT_WAIT_S
        while os.getppid() == intermediate and time.monotonic() < deadline:
            time.sleep(0.001)
        die_with_parent()
        if os.getppid() != supervisor:  # the supervisor is gone, or did not adopt us
            os._exit(1)
        _set_name(request.name)
        _redirect(request.log, stdout_fd, reply_fd)
        os.environ.clear()
        os.environ.update(request.env)
        from uvicorn.main import main as uvicorn_main

        uvicorn_main.main(args=request.argv, prog_name="uvicorn", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _redirect(log: str | None, stdout_fd: int, reply_fd: int) -> None:
    """stdin from /dev/null, output where a process the supervisor started would write it."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if log:
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
    else:
        os.dup2(stdout_fd, 1)
    os.close(stdout_fd)
    os.close(reply_fd)


def serve(supervisor: int) -> None:
    """Answer the supervisor's requests until it closes stdin."""
    stdout_fd = os.dup(1)  # the scoring processes' stdout
    reply_fd = os.dup(1)  # answers; nothing else may write there
    os.dup2(2, 1)  # a stray print from an import goes to stderr, not into the protocol
    replies = os.fdopen(reply_fd, "wb", buffering=0, closefd=False)
    logger.info("warm start: ready in %.2fs", preload())

    def do_spawn(request: SpawnRequest) -> int:
        return spawn(request, supervisor, stdout_fd, reply_fd)

    answer_requests(sys.stdin.buffer, replies, do_spawn, warm)


def answer_requests(
    requests: Iterable[bytes],
    replies: IO[bytes],
    do_spawn: Callable[[SpawnRequest], int],
    do_warm: Callable[[str], Warmed | Failed],
) -> None:
    """One reply per request line until ``requests`` ends (the supervisor closed the pipe);
    a malformed line is answered with Failed, and the next line is read as usual."""
    for line in requests:
        answer: Spawned | Warmed | Failed
        try:
            request = decode_request(line)
        except ProtocolError as exc:
            logger.error("%s", exc)
            answer = Failed(error=str(exc))
        else:
            if isinstance(request, WarmRequest):
                answer = do_warm(request.model_path)
                logger.info("warm start: %s warmed %s", request.model_path, answer)
            else:
                try:
                    answer = Spawned(pid=do_spawn(request))
                except OSError as exc:
                    answer = Failed(error=str(exc))
        replies.write(encode(answer))


def main() -> None:
    import argparse

    from stack_common.logs import add_context, setup_logging

    parser = argparse.ArgumentParser(description="The warm interpreter of stack-serve.")
    parser.add_argument("--model", default=None, help="The model served, named in log lines.")
    setup_logging()
    add_context(model=parser.parse_args().model)
    supervisor = os.getppid()
    die_with_parent()
    if os.getppid() != supervisor:
        return
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(supervisor)


if __name__ == "__main__":
    main()
