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
    path: str, method: str, url: str, body: bytes | None = None, timeout: float = 10.0
) -> Answer:
    conn = _UnixConnection(path, timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, url, body=body, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, response.read())
    finally:
        conn.close()


class KeptConnection:
    """One kept-alive connection to a Unix socket, for many requests from one thread: a
    connection per request costs the server more than the request (uvicorn sets up its
    protocol for each). A connection the server closed in between is made again, once."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: _UnixConnection | None = None

    def post(self, url: str, body: bytes, content_type: str) -> Answer:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = _UnixConnection(self.path, self.timeout)
            try:
                self._conn.request("POST", url, body=body, headers={"Content-Type": content_type})
                response = self._conn.getresponse()
                answer = Answer(response.status, response.read())
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            except OSError:
                self.close()
                raise
            if response.will_close:
                self.close()
            return answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
