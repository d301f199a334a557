"""The messages between the supervisor and the warm interpreter, typed (as MLServer's
``mlserver/parallel/messages.py`` types its workers' messages).

One JSON object per line each way: the supervisor sends a request (``op`` says which), the
warm interpreter answers each with one reply (``kind`` says which). Both sides build and read
them only through this module, so a field added on one side and forgotten on the other, or a
line garbled by a stray print, is a :class:`ProtocolError` naming the line, not a ``KeyError``
somewhere in a fork.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpawnRequest(Message):
    """Fork a scoring process running ``uvicorn <argv>`` with ``env``, output to ``log``
    (None: the supervisor's stdout), named ``name`` for ps and top."""

    op: Literal["spawn"] = "spawn"
    argv: list[str]
    env: dict[str, str]
    log: str | None = None
    name: str = "scoring"


class WarmRequest(Message):
    """Load the model at ``model_path`` once and drop it, to keep its flavour's imports."""

    op: Literal["warm"] = "warm"
    model_path: str


class Spawned(Message):
    """The scoring process was forked: the supervisor adopts ``pid``."""

    kind: Literal["spawned"] = "spawned"
    pid: int = Field(gt=0)


class Warmed(Message):
    kind: Literal["warmed"] = "warmed"
    seconds: float


class Failed(Message):
    """The request could not be done (or was not understood); ``error`` says why."""

    kind: Literal["failed"] = "failed"
    error: str


Request = Annotated[SpawnRequest | WarmRequest, Field(discriminator="op")]
Reply = Annotated[Spawned | Warmed | Failed, Field(discriminator="kind")]
_REQUEST: TypeAdapter[SpawnRequest | WarmRequest] = TypeAdapter(Request)
_REPLY: TypeAdapter[Spawned | Warmed | Failed] = TypeAdapter(Reply)


T = TypeVar("T")


class ProtocolError(ValueError):
    """A line that is not a message of the warm-start protocol."""


def encode(message: Message) -> bytes:
    """One line of the protocol."""
    return message.model_dump_json().encode() + b"\n"


def decode_request(line: bytes | str) -> SpawnRequest | WarmRequest:
    return _decode(_REQUEST, line, "request")


def decode_reply(line: bytes | str) -> Spawned | Warmed | Failed:
    return _decode(_REPLY, line, "reply")


def _decode(adapter: TypeAdapter[T], line: bytes | str, what: str) -> T:
    try:
        return adapter.validate_json(line)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the line"
        shown = line if isinstance(line, str) else line.decode(errors="replace")
        raise ProtocolError(
            f"warm-start protocol: malformed {what} {shown.strip()[:120]!r}: "
            f"{where}: {error['msg']} (a stray write to the pipe, or the two sides at different "
            "versions of serving/warm_messages.py)"
        ) from None
