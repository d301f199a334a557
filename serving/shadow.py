"""The supervisor's side of the shadow: mirrored requests, sent to the challenger and compared.

Production's scoring processes send each mirrored request, with production's answer, as one
datagram to ``shadow.sock`` after answering their client (serving/shadow_tap.py). Here one
thread takes them off the socket into a bounded queue (``SERVING_SHADOW_MAX_QUEUED``; past it
they are dropped and counted, so a slow challenger costs memory never and production nothing),
and ``SERVING_CHALLENGER_WORKERS`` threads send each to the challenger's scoring processes over
their Unix sockets, time it, and compare the answers (serving/agreement.py). Every request the
challenger was sent is counted once, by version: the figures the promotion gate reads.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from serving import unix_http
from serving.agreement import Comparison, compare
from serving.challenger_metrics import ChallengerMetrics
from serving.shadow_tap import SEND_BUFFER, Mirrored, decode

logger = logging.getLogger(__name__)

SHADOW_SOCKET = "shadow.sock"  # in the supervisor's run directory
# The shadow's threads run at this lower priority (Linux: per thread): production's scoring
# processes and nginx get the cores first.
THREAD_NICE = 10


def yield_the_cores() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_NICE)


@dataclass(frozen=True)
class Target:
    version: str
    sockets: tuple[Path, ...]


class ShadowDispatcher:
    def __init__(
        self,
        path: Path,
        metrics: ChallengerMetrics,
        alias: str,
        timeout_s: float,
        max_queued: int,
        workers: int,
    ) -> None:
        self.path = path
        self.metrics = metrics
        self.alias = alias
        self.timeout_s = timeout_s
        self.max_queued = max_queued
        self.workers = workers
        self._target: Target | None = None
        self._queue: deque[tuple[Mirrored, Target]] = deque()
        self._ready = threading.Condition()
        self._busy = 0
        self._stop = threading.Event()
        self._socket: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._turn = itertools.count()

    def aim(self, version: str | None, sockets: list[Path] | None = None) -> None:
        """Mirror to this version's processes from now on (None: no challenger; dropped)."""
        with self._ready:
            self._target = None if version is None else Target(version, tuple(sockets or ()))

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SEND_BUFFER)
        sock.bind(str(self.path))
        sock.settimeout(0.5)
        self._socket = sock
        self._stop.clear()
        self._threads = [threading.Thread(target=self._receive, name="shadow-in", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"shadow-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 1)
        self._threads = []
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self.path.unlink(missing_ok=True)

    # -- threads --------------------------------------------------------------------------------

    def _receive(self) -> None:
        assert self._socket is not None
        yield_the_cores()
        while not self._stop.is_set():
            with self._ready:
                # A full queue: take no more. The scoring processes' sends then fail at once
                # and they count what they drop (Mirrored.unsent), so an overloaded challenger
                # costs this process nothing per request.
                while len(self._queue) >= self.max_queued and not self._stop.is_set():
                    self._ready.wait(0.5)
            try:
                datagram = self._socket.recv(SEND_BUFFER)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            try:
                record = decode(datagram)
            except ValueError:
                logger.warning("not a mirrored request on %s; ignored", self.path)
                continue
            self._enqueue(record)

    def _enqueue(self, record: Mirrored) -> None:
        if record.unsent:
            self.metrics.shadow_dropped("queue_full", record.unsent)
        with self._ready:
            target = self._target
            if record.too_large:
                reason = "too_large"
            elif target is None or not target.sockets:
                reason = "no_challenger"
            elif len(self._queue) >= self.max_queued:
                reason = "queue_full"
            else:
                self._queue.append((record, target))
                self._ready.notify()
                return
        self.metrics.shadow_dropped(reason)

    def _work(self) -> None:
        yield_the_cores()
        connections: dict[Path, unix_http.KeptConnection] = {}  # this thread's, by socket
        try:
            self._work_with(connections)
        finally:
            for connection in connections.values():
                connection.close()

    def _work_with(self, connections: dict[Path, unix_http.KeptConnection]) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stop.is_set():
                    self._ready.wait()
                if self._stop.is_set():
                    return
                record, target = self._queue.popleft()
                self._ready.notify_all()  # room again for the receiver
                if target is not self._target:  # queued for a challenger since unloaded
                    self.metrics.shadow_dropped("no_challenger")
                    continue
                self._busy += 1
            sock = target.sockets[next(self._turn) % len(target.sockets)]
            if sock not in connections:
                for gone in set(connections) - set(target.sockets):  # an unloaded challenger's
                    connections.pop(gone).close()
                connections[sock] = unix_http.KeptConnection(str(sock), self.timeout_s)
            try:
                self._send(record, target, connections[sock])
            except Exception:
                logger.exception("mirroring a request to version %s failed", target.version)
            finally:
                with self._ready:
                    self._busy -= 1

    def _send(self, record: Mirrored, target: Target, connection: unix_http.KeptConnection) -> None:
        version = target.version
        started = time.perf_counter()
        comparison: Comparison | None = None
        try:
            answer = connection.post(
                "/invocations", record.request, record.content_type or "application/json"
            )
            ok = answer.status == 200
        except (OSError, http.client.HTTPException) as exc:  # timed out, refused, cut off
            logger.debug("version %s did not answer a mirrored request: %s", version, exc)
            ok = False
        seconds = time.perf_counter() - started
        if not ok and target is not self._target:
            # Its pool was stopped under it (the alias moved on): not the challenger's failure.
            self.metrics.shadow_dropped("no_challenger")
            return
        if ok:
            try:
                comparison = compare(record.answer, answer.body)
            except ValueError:
                ok = False
        self.metrics.shadow_answered(self.alias, version, ok, seconds, comparison)
