"""The per-request memo of store reads (tracking_server/request_memo.py): what a request may
reuse, and what it must read again. Against a real server: tests/e2e/test_auth_cache.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask, jsonify

from tracking_server.request_memo import (
    close_memo_unless_read_only,
    memoise_reads,
    memoised,
    open_memo,
)


class CountingStore:
    """Stands in for MLflow's store: counts the reads that reach the database."""

    def __init__(self) -> None:
        self.reads: list[Any] = []

    def get_user(self, username: str) -> dict[str, str]:
        self.reads.append(username)
        if username == "ghost":
            raise LookupError(username)
        return {"username": username}

    def create_user(self, username: str) -> None:
        self.reads.append(("write", username))


@pytest.fixture
def store() -> CountingStore:
    store = CountingStore()
    memoise_reads(store, ("get_user",))
    return store


@contextmanager
def inside_a_request() -> Iterator[None]:
    """A request whose memo is open, as after the first ``before_request`` hook."""
    with Flask(__name__).test_request_context("/"):
        open_memo()
        yield


def app_reading_in_hook_and_view(store: CountingStore) -> Flask:
    """Authorization reads the user twice in its hook, the handler once more (MLflow's shape)."""
    app = Flask(__name__)
    app.before_request(open_memo)

    @app.before_request
    def authorize() -> None:
        store.get_user("trainer")
        store.get_user("trainer")

    app.before_request(close_memo_unless_read_only)

    @app.route("/user", methods=["GET", "HEAD", "POST", "PATCH", "DELETE"])
    def handler() -> Any:
        return jsonify(store.get_user("trainer"))

    return app


def test_a_read_only_request_reads_the_user_once(store: CountingStore) -> None:
    client = app_reading_in_hook_and_view(store).test_client()
    assert client.get("/user").json == {"username": "trainer"}
    assert store.reads == ["trainer"]
    client.head("/user")
    assert store.reads == ["trainer", "trainer"]  # the next request reads again


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
def test_a_write_requests_handler_reads_afresh(store: CountingStore, method: str) -> None:
    client = app_reading_in_hook_and_view(store).test_client()
    assert client.open("/user", method=method).status_code == 200
    assert store.reads == ["trainer", "trainer"]  # once for the hook, once for the handler


def test_each_request_has_its_own_memo(store: CountingStore) -> None:
    client = app_reading_in_hook_and_view(store).test_client()
    for _ in range(3):
        client.get("/user")
    assert store.reads == ["trainer"] * 3


def test_outside_a_request_every_call_reads(store: CountingStore) -> None:
    store.get_user("trainer")
    store.get_user("trainer")
    assert store.reads == ["trainer", "trainer"]


def test_a_failed_read_is_not_remembered(store: CountingStore) -> None:
    with inside_a_request():
        for _ in range(2):
            with pytest.raises(LookupError):
                store.get_user("ghost")
        assert store.reads == ["ghost", "ghost"]


def test_arguments_key_the_memo(store: CountingStore) -> None:
    with inside_a_request():
        store.get_user("trainer")
        store.get_user("promoter")
        store.get_user(username="trainer")
        store.get_user("trainer")
        assert store.reads == ["trainer", "promoter", "trainer"]


def test_unhashable_arguments_go_to_the_store() -> None:
    calls: list[Any] = []

    def read(value: Any) -> int:
        calls.append(value)
        return len(calls)

    remembered = memoised("read", read)
    with inside_a_request():
        assert remembered(["a"]) == 1
        assert remembered(["a"]) == 2


def test_only_the_named_reads_are_wrapped_and_only_once(store: CountingStore) -> None:
    wrapped = store.get_user
    memoise_reads(store, ("get_user", "no_such_read"))
    assert store.get_user is wrapped
    assert "create_user" not in vars(store)  # writes are the class's, untouched
    assert "get_user" not in vars(CountingStore())  # other instances untouched
