"""HTTP over a Unix socket, for checking a scoring process before nginx sends it traffic."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    path: str,
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 10.0,
    content_type: str = "application/json",
) -> Answer:
    conn = _UnixConnection(path, timeout)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, url, body=body, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, response.read())
    finally:
        conn.close()
