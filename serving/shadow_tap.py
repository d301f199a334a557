"""Production's side of the shadow: a share of answered requests, handed to the supervisor.

An ASGI middleware around the scoring app (either engine) of production's scoring processes.
For a sampled ``/invocations`` request it keeps the request's body and the answer's, and only
once the answer has been handed to the server (the client has it, or is being sent it) it
sends both as one datagram on a Unix socket to the supervisor (``serving/shadow.py``), without
waiting: ``sendto`` on a non-blocking socket either queues the datagram or fails at once, and
a failure drops the mirror, never the answer. So the client's status, body and latency do not
depend on the challenger: it is not called on the client's path at all, and nothing here can
raise into it. Requests not sampled pass through untouched.

nginx's ``mirror`` is not used: it holds the client's connection until the mirror's subrequest
ends, so a slow challenger would delay the client's next request on a kept-alive connection.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import random
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Lengths of the three parts of a record: its metadata (JSON), the request body, the answer.
_HEADER = struct.Struct("!III")
# A datagram larger than the socket's send buffer cannot be sent: the tap asks for this much
# (Linux caps it at twice net.core.wmem_max, ~400 KB by default); larger requests are reported
# as too large to mirror instead.
SEND_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True)
class Mirrored:
    """One answered request: what production was asked and what it answered."""

    content_type: str
    request: bytes
    answer: bytes
    too_large: bool = False
    # Mirrors this process dropped since its last record reached the supervisor: its socket's
    # queue was full (the supervisor takes no more while its own queue is full) or absent.
    unsent: int = 0


def encode(record: Mirrored) -> bytes:
    meta = json.dumps(
        {
            "content_type": record.content_type,
            "too_large": record.too_large,
            "unsent": record.unsent,
        }
    )
    raw = meta.encode()
    return _HEADER.pack(len(raw), len(record.request), len(record.answer)) + b"".join(
        (raw, record.request, record.answer)
    )


def decode(datagram: bytes) -> Mirrored:
    """The record in a datagram; ValueError when it is not one."""
    try:
        meta_len, request_len, answer_len = _HEADER.unpack_from(datagram)
    except struct.error as exc:
        raise ValueError("not a mirrored request") from exc
    start = _HEADER.size
    if start + meta_len + request_len + answer_len != len(datagram):
        raise ValueError("a mirrored request of the wrong length")
    meta = json.loads(datagram[start : start + meta_len])
    start += meta_len
    request = datagram[start : start + request_len]
    answer = datagram[start + request_len :]
    return Mirrored(
        meta["content_type"],
        request,
        answer,
        bool(meta.get("too_large")),
        int(meta.get("unsent", 0)),
    )


class ShadowTap:
    """Wraps a scoring app: ``percent`` of the answered ``/invocations`` requests are sent to
    ``target`` (the supervisor's shadow socket) after their answer."""

    def __init__(
        self, app: App, target: Path, percent: float, sample: Callable[[], float] = random.random
    ) -> None:
        self.app = app
        self.target = str(target)
        self.share = percent / 100
        self.sample = sample
        self._socket: socket.socket | None = None
        self.unsent = 0  # dropped here, reported with the next record that gets through

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/invocations"
            or self.sample() >= self.share
        ):
            await self.app(scope, receive, send)
            return
        request: list[bytes] = []
        answer: list[bytes] = []
        status = 0

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request.append(message.get("body", b""))
            return message

        async def send_and_keep(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive_and_keep, send_and_keep)
        if status == 200:  # production's errors are not compared: there is nothing to compare
            self._mirror(scope, b"".join(request), b"".join(answer))

    def _mirror(self, scope: Scope, request: bytes, answer: bytes) -> None:
        content_type = ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
        try:
            self._send(encode(Mirrored(content_type, request, answer, unsent=self.unsent)))
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:  # the supervisor takes no more now: dropped here
                self.unsent += 1
                return
            # Counted by the supervisor as too large to mirror.
            self._try_send(Mirrored(content_type, b"", b"", too_large=True, unsent=self.unsent))
            return
        self.unsent = 0

    def _try_send(self, record: Mirrored) -> None:
        try:
            self._send(encode(record))
        except OSError:
            self.unsent += 1
        else:
            self.unsent = 0

    def _send(self, datagram: bytes) -> None:
        if self._socket is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            self._socket = sock
        self._socket.sendto(datagram, self.target)


# The scoring apps a production pool runs when it mirrors (serving/pool.py, TAPPED_APPS):
# uvicorn imports ``serving.shadow_tap:batching_app`` or ``:mlflow_app``.
_INNER = {
    "batching_app": "serving.scoring_app:app",
    "mlflow_app": "mlflow.pyfunc.scoring_server.app:app",
}


def __getattr__(name: str) -> Any:
    """The engine's app (loaded on first use, as uvicorn imports it) inside a ShadowTap, with
    the socket and share the supervisor passed (ScoringSettings)."""
    if name not in _INNER:
        raise AttributeError(name)
    from uvicorn.importer import import_from_string

    from serving.settings import ScoringSettings

    settings = ScoringSettings.from_env()
    inner = import_from_string(_INNER[name])
    if settings.shadow_socket is None or not settings.shadow_percent:
        app = inner
    else:
        app = ShadowTap(inner, settings.shadow_socket, settings.shadow_percent)
    globals()[name] = app
    return app
