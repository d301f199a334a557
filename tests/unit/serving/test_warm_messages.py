"""The warm-start protocol (serving/warm_messages.py), both sides, over real pipes in-process:
the supervisor's ``WarmStart`` against a scripted warm interpreter, and the warm interpreter's
request loop against scripted requests. No model, no fork: tests/e2e/test_warm_start.py runs
the real processes."""

from __future__ import annotations

import gc
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from serving.spawn import PR_SET_CHILD_SUBREAPER, AdoptedProcess, WarmStart, prctl
from serving.warm_messages import (
    Failed,
    Message,
    ProtocolError,
    Spawned,
    SpawnRequest,
    Warmed,
    WarmRequest,
    decode_reply,
    decode_request,
    encode,
)
from serving.warm_start import answer_requests, warm

SPAWN = SpawnRequest(
    argv=["--uds", "/run/a.sock", "serving.scoring_app:app"],
    env={"A": "1", "EMPTY": "", "UNICODE": "é✓"},
    log="/var/log/scoring.log",
    name="scoring-v3-0",
)


def pipe() -> tuple[IO[bytes], IO[bytes]]:
    """(read end, write end) of a real pipe, as the processes hold them."""
    read_fd, write_fd = os.pipe()
    return os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb", buffering=0)


@pytest.mark.parametrize(
    "message",
    [
        SPAWN,
        SpawnRequest(argv=[], env={}),
        WarmRequest(model_path="/cache/m/3"),
        Spawned(pid=1234),
        Warmed(seconds=0.8),
        Failed(error="multi\nline error"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_message_round_trips_through_a_pipe(message: Message) -> None:
    reader, writer = pipe()
    with reader, writer:
        writer.write(encode(message))
        line = reader.readline()
    assert line.count(b"\n") == 1, "one message, one line"
    decode = decode_request if hasattr(message, "op") else decode_reply
    assert decode(line) == message


@pytest.mark.parametrize(
    ("line", "names"),
    [
        (b"not json\n", "Invalid JSON"),
        (b'{"op": "fork"}\n', "'fork'"),
        (b'{"argv": []}\n', "op"),
        (b'{"op": "spawn", "argv": "uvicorn", "env": {}}\n', "spawn.argv"),
        (b'{"op": "warm"}\n', "warm.model_path"),
        (b'{"op": "warm", "model_path": "/m", "extra": 1}\n', "warm.extra"),
    ],
)
def test_a_malformed_request_is_refused_with_a_line_naming_it(line: bytes, names: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_request(line)
    message = str(refused.value)
    assert message.startswith("warm-start protocol: malformed request ")
    assert names in message and "\n" not in message


@pytest.mark.parametrize(
    "line", [b'{"pid": 12}\n', b'{"kind": "spawned", "pid": 0}\n', b"Loading model...\n"]
)
def test_a_malformed_reply_is_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed reply"):
        decode_reply(line)


def test_the_warm_interpreter_answers_each_line_and_survives_a_bad_one() -> None:
    requests_in, requests_out = pipe()
    replies_in, replies_out = pipe()
    spawned: list[SpawnRequest] = []

    def fake_spawn(request: SpawnRequest) -> int:
        spawned.append(request)
        if request.name == "no-fork":
            raise OSError("the scoring process could not be forked")
        return 4242

    def answering() -> None:
        with requests_in, replies_out:
            answer_requests(requests_in, replies_out, fake_spawn, warm)

    loop = threading.Thread(target=answering)
    loop.start()
    try:
        with requests_out:
            for request in (
                encode(SPAWN),
                encode(WarmRequest(model_path="/nowhere/model")),  # the real warm(): no model
                b'{"op": "spawn"}\n',
                encode(SpawnRequest(argv=[], env={}, name="no-fork")),
            ):
                requests_out.write(request)
        with replies_in:
            replies = [decode_reply(line) for line in replies_in]
    finally:
        loop.join(timeout=30)
        gc.unfreeze()  # warm() freezes the heap, as the warm interpreter wants; not pytest
    assert spawned == [SPAWN, SpawnRequest(argv=[], env={}, name="no-fork")]
    first, warmed, refused, failed = replies
    assert first == Spawned(pid=4242)
    assert isinstance(warmed, Failed) and warmed.error.startswith("MlflowException: ")
    assert isinstance(refused, Failed) and "spawn.argv: Field required" in refused.error
    assert failed == Failed(error="the scoring process could not be forked")
    assert not loop.is_alive(), "the loop did not end when the supervisor closed the pipe"


class FakeWarmProcess:
    """The warm interpreter as WarmStart sees it (a Popen): its stdin and stdout are pipes,
    and the test answers on the other ends."""

    def __init__(self) -> None:
        self.requests, self.stdin = pipe()
        self.stdout, self.replies = pipe()

    def poll(self) -> int | None:
        return None

    def reply(self, *messages: Message | bytes) -> list[Message]:
        """Answer each request that comes with the next of ``messages``; the requests read."""
        received: list[Message] = []
        for message in messages:
            received.append(decode_request(self.requests.readline()))
            self.replies.write(message if isinstance(message, bytes) else encode(message))
        return received

    def terminate(self) -> None:  # WarmStart.stop, after a failure
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def warm_start() -> Iterator[tuple[WarmStart, FakeWarmProcess]]:
    started = WarmStart({}, reply_timeout_s=10, model_name="m")
    prctl(PR_SET_CHILD_SUBREAPER, 0)  # the test process adopts no orphans
    fake = FakeWarmProcess()
    started.process = fake  # type: ignore[assignment]
    yield started, fake
    for end in (fake.requests, fake.stdin, fake.stdout, fake.replies):
        end.close()


def test_the_supervisor_side_reads_the_pending_warm_reply_before_a_spawn(
    warm_start: tuple[WarmStart, FakeWarmProcess],
) -> None:
    started, fake = warm_start
    started.warm(Path("/cache/m/3"))
    assert started.pending_warm == 1  # sent, not waited for
    peer = threading.Thread(
        target=lambda: received.extend(fake.reply(Warmed(seconds=0.5), Spawned(pid=777)))
    )
    received: list[Message] = []
    peer.start()
    process = started.spawn(SPAWN.argv, SPAWN.env, None, "scoring-v3-0")
    peer.join(timeout=10)
    assert isinstance(process, AdoptedProcess) and process.pid == 777
    assert started.pending_warm == 0
    assert received == [
        WarmRequest(model_path="/cache/m/3"),
        SpawnRequest(argv=SPAWN.argv, env=SPAWN.env, log=None, name="scoring-v3-0"),
    ]


def test_the_supervisor_side_refuses_a_garbled_reply(
    warm_start: tuple[WarmStart, FakeWarmProcess],
) -> None:
    started, fake = warm_start
    peer = threading.Thread(target=fake.reply, args=(b"Loading model...\n",))
    peer.start()
    with pytest.raises(ProtocolError, match=re.escape("malformed reply 'Loading model...'")):
        started._ask(WarmRequest(model_path="/m"))
    peer.join(timeout=10)
