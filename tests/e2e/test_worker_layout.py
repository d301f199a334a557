"""The worker layout the docs promise is the one running, and it answers without Nagle's delay.

With more than one worker, uvicorn binds the listening socket itself (``socket.socket(AF_INET)``,
protocol 0) and asyncio's transport then skips ``TCP_NODELAY``: every keep-alive answer written
in two pieces waits ~40 ms for the client's delayed ACK. The launcher runs uvicorn with
``--loop uvloop --http httptools`` (``MLFLOW_UVICORN_OPTS``), and uvloop sets ``TCP_NODELAY`` on
each connection it accepts (bench/tracking_server.py measures the difference). These tests look
at the real process tree the launcher starts, and at the option on the server's end of a live
keep-alive connection (borrowed from the worker with ``pidfd_getfd``).
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
from pathlib import Path

import pytest

from tests.conftest import ServiceFactory
from tests.helpers import Proc, processes

pytestmark = pytest.mark.e2e

SYS_PIDFD_GETFD = 438  # x86-64 and arm64 alike


def process_group(pgid: int) -> list[Proc]:
    """Every process of the group (the launcher starts the server in its own session)."""
    return [p for p in processes() if p.pgid == pgid]


def uvicorn_layout(pgid: int) -> tuple[Proc, list[Proc]]:
    """uvicorn's supervisor and the workers it spawned."""
    group = process_group(pgid)
    [supervisor] = [p for p in group if p.argv[1:3] == ["-m", "uvicorn"]]
    workers = [
        p
        for p in group
        if p.ppid == supervisor.pid and any("spawn_main" in word for word in p.argv)
    ]
    return supervisor, workers


def option(cmdline: list[str], name: str) -> str:
    return cmdline[cmdline.index(name) + 1]


def server_socket_inode(server_port: int, client_port: int) -> str:
    """The inode of the server's end of our connection, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return fields[9]
    raise AssertionError(f"no server socket for 127.0.0.1:{client_port} -> :{server_port}")


def nodelay_of(workers: list[Proc], inode: str) -> int:
    """TCP_NODELAY on the worker's socket with this inode, read through a borrowed fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    for worker in workers:
        for fd in Path(f"/proc/{worker.pid}/fd").iterdir():
            try:
                if os.readlink(fd) != f"socket:[{inode}]":
                    continue
            except OSError:
                continue
            pidfd = os.pidfd_open(worker.pid)
            try:
                borrowed = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fd.name), 0)
                if borrowed < 0:
                    pytest.skip(f"pidfd_getfd refused here: {os.strerror(ctypes.get_errno())}")
                with socket.socket(fileno=borrowed) as sock:
                    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            finally:
                os.close(pidfd)
    raise AssertionError(f"no worker holds socket inode {inode}")


@pytest.mark.parametrize(
    ("uvicorn_opts", "nodelay"),
    [
        pytest.param(None, True, id="launcher-default"),
        # The layout before issue 10, as a control: the check above is not vacuous.
        pytest.param("--loop asyncio --http h11", False, id="asyncio-control"),
    ],
)
def test_the_workers_run_as_documented_and_answer_without_nagle(
    services: ServiceFactory, uvicorn_opts: str | None, nodelay: bool
) -> None:
    env = {"MLFLOW_WORKERS": "2"}
    if uvicorn_opts:
        env["MLFLOW_UVICORN_OPTS"] = uvicorn_opts
    tracking = services.tracking(env=env)

    supervisor, workers = uvicorn_layout(tracking.process.pid)
    assert option(supervisor.argv, "--workers") == "2"
    if uvicorn_opts is None:  # the default documented in .env.example
        assert option(supervisor.argv, "--loop") == "uvloop"
        assert option(supervisor.argv, "--http") == "httptools"
    assert len(workers) == 2, [w.argv for w in workers]

    connection = http.client.HTTPConnection("127.0.0.1", tracking.port, timeout=30)
    try:
        for _ in range(2):  # keep-alive: the second request reuses the connection
            connection.request("GET", "/health")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
        client_port = connection.sock.getsockname()[1]
        inode = server_socket_inode(tracking.port, client_port)
        assert bool(nodelay_of(workers, inode)) is nodelay
    finally:
        connection.close()
