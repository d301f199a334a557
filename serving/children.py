"""The supervisor's signals and stray children, kept the way gunicorn's arbiter keeps them.

Signal handlers only record: :class:`SignalQueue` appends the signal and writes a byte to a
wake-up pipe, so the main loop's nap ends at once and the loop, not the handler, decides what
to do (a handler that raised or did work could interrupt the supervisor half-way through a
switch). :func:`reap_strays` is the ``waitpid(-1, WNOHANG)`` sweep of a subreaper: the warm
interpreter's forks are re-parented to the supervisor, and any descendant orphaned the same
way would otherwise stay a zombie for the container's lifetime.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
from collections.abc import Collection, Iterable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# SIGCHLD wakes the loop so a dead scoring process is replaced at once, not at the next poll.
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


class SignalQueue:
    """Signals received and not yet acted on, and the pipe that wakes the loop for them."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return self._read_fd is not None

    def install(self, signals: Iterable[int] = HANDLED) -> None:
        """Handle ``signals`` from now on (the main thread only, as for any signal handler)."""
        if self.installed:
            return
        self._read_fd, self._write_fd = os.pipe()  # not inherited by children (PEP 446)
        for fd in (self._read_fd, self._write_fd):
            os.set_blocking(fd, False)
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._record)

    def uninstall(self) -> None:
        """The handlers that were there before, and the pipe closed."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        for fd in (self._read_fd, self._write_fd):
            if fd is not None:
                os.close(fd)
        self._read_fd = self._write_fd = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        """The handler: note the signal, wake the loop, nothing else."""
        if signum not in self.pending:  # a burst of SIGCHLD is one thing to act on
            self.pending.append(signum)
        if self._write_fd is not None:
            with contextlib.suppress(OSError):  # the pipe is full: the loop is awake already
                os.write(self._write_fd, b".")

    def pop(self) -> list[int]:
        """The signals received since the last call, in order."""
        pending, self.pending = self.pending, []
        return pending

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if a signal arrives (the supervisor's nap)."""
        if self._read_fd is None or self.pending:
            if not self.pending:
                select.select([], [], [], max(0.0, seconds))
            return
        ready, _, _ = select.select([self._read_fd], [], [], max(0.0, seconds))
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read_fd, 512):
                    pass


def reap_strays(owned: Collection[int]) -> list[tuple[int, int]]:
    """Reap every exited child that is not one of ``owned``; ``(pid, exit code)`` of each.

    ``owned`` are the children whose objects (nginx's Popen, the scoring processes) reap them
    themselves and read their exit codes: the sweep peeks (``WNOWAIT``) before it reaps, so it
    never takes an exit code away from them. An owned zombie ends the sweep; its owner reaps it
    on the next look, and the sweep after that goes on past it.
    """
    reaped = []
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # no children at all
            break
        if info is None or info.si_pid == 0 or info.si_pid in owned:
            break
        try:
            pid, status = os.waitpid(info.si_pid, 0)
        except ChildProcessError:
            continue
        code = os.waitstatus_to_exitcode(status)
        logger.info("reaped process %d (exit code %d), not one of the supervisor's own", pid, code)
        reaped.append((pid, code))
    return reaped
