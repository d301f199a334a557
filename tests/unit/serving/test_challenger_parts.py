"""The parts of shadow and canary that decide: comparison, mirroring, the canary's verdict and
slots, counting nginx's canary lines, following the challenger's alias."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from serving.agreement import compare
from serving.canary import Canary, CanaryWatch, Limits
from serving.challenger import Challenger
from serving.challenger_metrics import ChallengerMetrics
from serving.metrics import DURATION_BUCKETS, Route, ServingMetrics
from serving.settings import ServingSettings
from serving.shadow_tap import Mirrored, ShadowTap, decode, encode
from stack_common.errors import ConfigError

# -- comparing answers ---------------------------------------------------------------------


def test_numeric_predictions_give_absolute_differences() -> None:
    result = compare(b'{"predictions": [40.0, 60.5]}', b'{"predictions": [41.5, 60.5]}')
    assert result.absolute_differences == [1.5, 0.0] and result.agree == result.disagree == 0


def test_labels_agree_or_not_and_a_different_shape_disagrees_everywhere() -> None:
    labels = compare(
        b'{"predictions": ["pass", "fail", 1]}', b'{"predictions": ["pass", "pass", 1]}'
    )
    assert (labels.agree, labels.disagree, labels.absolute_differences) == (2, 1, [])
    shape = compare(b'{"predictions": [1.0, 2.0, 3.0]}', b'{"predictions": [1.0]}')
    assert shape.disagree == 3
    nested = compare(b'[{"a": 1.0, "b": "x"}]', b'[{"a": 3.0, "b": "x"}]')
    assert nested.absolute_differences == [2.0] and nested.agree == 1


def test_an_answer_that_is_not_json_cannot_be_compared() -> None:
    with pytest.raises(ValueError):
        compare(b'{"predictions": [1]}', b"Internal Server Error")


# -- production's tap ----------------------------------------------------------------------


def test_a_record_survives_the_datagram() -> None:
    record = Mirrored("text/csv", b"hours\n1\n", b'{"predictions": [1.0]}')
    assert decode(encode(record)) == record
    with pytest.raises(ValueError):
        decode(b"short")
    with pytest.raises(ValueError):
        decode(encode(record) + b"x")


async def _call(app: ShadowTap, path: str, sent: list[str]) -> None:
    messages = [{"type": "http.request", "body": b'{"inputs": [1]}', "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message["type"])

    scope = {"type": "http", "path": path, "headers": [(b"content-type", b"application/json")]}
    await app(scope, receive, send)


def _scoring(status: int):
    async def app(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b'{"predictions": [2.0]}'})

    return app


def test_the_tap_mirrors_answered_requests_after_their_answer(tmp_path: Path) -> None:
    target = tmp_path / "shadow.sock"
    inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    inbox.bind(str(target))
    inbox.settimeout(2)
    sent: list[str] = []
    asyncio.run(_call(ShadowTap(_scoring(200), target, 100), "/invocations", sent))
    assert sent == ["http.response.start", "http.response.body"]  # the client had it all
    record = decode(inbox.recv(65536))
    assert record.request == b'{"inputs": [1]}' and record.answer == b'{"predictions": [2.0]}'
    assert record.content_type == "application/json"
    # Not sampled, not a prediction, or production's own error: nothing is mirrored.
    asyncio.run(_call(ShadowTap(_scoring(200), target, 0), "/invocations", sent))
    asyncio.run(_call(ShadowTap(_scoring(200), target, 100), "/ping", sent))
    asyncio.run(_call(ShadowTap(_scoring(400), target, 100), "/invocations", sent))
    inbox.setblocking(False)
    with pytest.raises(BlockingIOError):
        inbox.recv(65536)


def test_what_the_tap_cannot_send_is_counted_and_reported_with_the_next_record(
    tmp_path: Path,
) -> None:
    target = tmp_path / "shadow.sock"
    inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    inbox.bind(str(target))
    tap = ShadowTap(_scoring(200), target, 100)
    sent: list[str] = []
    for _ in range(40):  # the supervisor reads none: its socket's queue fills, then sends fail
        asyncio.run(_call(tap, "/invocations", sent))
    queued = []
    inbox.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            queued.append(decode(inbox.recv(65536)))
    assert tap.unsent == 40 - len(queued) > 0
    assert sent.count("http.response.body") == 40  # every client had its answer
    asyncio.run(_call(tap, "/invocations", sent))
    assert decode(inbox.recv(65536)).unsent == 40 - len(queued) and tap.unsent == 0


def test_without_a_listener_the_client_still_gets_its_answer(tmp_path: Path) -> None:
    sent: list[str] = []
    asyncio.run(
        _call(ShadowTap(_scoring(200), tmp_path / "nobody.sock", 100), "/invocations", sent)
    )
    assert sent == ["http.response.start", "http.response.body"]


# -- the canary ------------------------------------------------------------------------------

LIMITS = Limits(min_requests=10, error_rate_margin=0.05, p99_margin_s=0.05)


def test_the_canary_is_judged_only_after_enough_requests_and_by_its_margins() -> None:
    watch = CanaryWatch(LIMITS)
    for _ in range(100):
        watch.production(False, 0.01)
    for _ in range(9):
        watch.canary(True, 0.01)
    assert watch.verdict() is None  # nine failures: not enough to judge
    watch.canary(True, 0.01)
    reason, why = watch.verdict() or ("", "")
    assert reason == "error_rate" and "100.0% against production's 0.0%" in why

    slow = CanaryWatch(LIMITS)
    for _ in range(100):
        slow.production(False, 0.01)
    for _ in range(20):
        slow.canary(False, 0.04)
    assert slow.verdict() is None  # 30 ms slower: inside the 50 ms margin
    for _ in range(20):
        slow.canary(False, 0.2)
    assert (slow.verdict() or ("",))[0] == "p99"


def _canary(tmp_path: Path) -> tuple[Canary, ChallengerMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = ChallengerMetrics(registry, "grades", DURATION_BUCKETS)
    slots = [tmp_path / "canary-0.sock", tmp_path / "canary-1.sock"]
    return Canary(slots, "challenger", LIMITS, metrics), metrics, registry


def test_a_canary_that_fails_stops_itself_and_stays_stopped(tmp_path: Path) -> None:
    canary, _, registry = _canary(tmp_path)
    sock = tmp_path / "v2.sock"
    sock.write_text("")
    canary.start("2", [sock])
    assert all(slot.samefile(sock) for slot in canary.slots)  # hard links: same socket
    assert registry.get_sample_value("serving_canary_active", _labels("2")) == 1
    for _ in range(10):
        canary.canary_answered("2", True, 0.01)
    canary.check()
    assert not any(slot.exists() for slot in canary.slots) and sock.exists()
    assert canary.active_version() is None and canary.stopped["2"].startswith("error_rate")
    stopped = _labels("2") | {"reason": "error_rate"}
    assert registry.get_sample_value("serving_canary_stopped_total", stopped) == 1
    assert registry.get_sample_value("serving_canary_fallbacks_total", _labels("2")) == 10
    canary.start("2", [sock])  # the same version again (its pool restarted): still stopped
    assert canary.active_version() is None and not canary.slots[0].exists()


def _labels(version: str) -> dict[str, str]:
    return {"model": "grades", "alias": "challenger", "version": version}


def test_nginx_lines_of_the_canary_are_counted_by_who_answered(tmp_path: Path) -> None:
    assert Route.parse("canary;400 : 200;0.002 : 0.003") == Route(True, 0.002, 400)
    assert Route.parse("canary;502, 200;0.000, 0.003") == Route(True, 0.0, 502)
    assert Route.parse("production;200;0.001") == Route(False, 0.001, 200)
    assert Route.parse("canary;-;-") == Route(True, None, None)
    metrics = ServingMetrics("grades", "production", tmp_path)
    canary, _, _ = _canary(tmp_path)
    canary.metrics = metrics.challenger
    sock = tmp_path / "v2.sock"
    sock.write_text("")
    canary.start("2", [sock])
    metrics.canary = canary
    metrics.count(
        [
            "1.0 200 0.003 2 - canary;200;0.003",  # the canary answered
            "1.1 200 0.006 1 - canary;400 : 200;0.002 : 0.003",  # it failed; production answered
            "1.2 400 0.006 1 - canary;400 : 400;0.002 : 0.003",  # both refused: a bad request
            "1.3 200 0.002 1 - production;200;0.002",
        ]
    )
    value = metrics.registry.get_sample_value
    assert value("serving_requests_total", _labels("2") | {"status": "200"}) == 1
    ok = _labels("2") | {"mode": "canary", "result": "ok"}
    assert value("serving_challenger_requests_total", ok) == 2
    assert value("serving_challenger_requests_total", ok | {"result": "error"}) == 1
    production = {"model": "grades", "alias": "production", "version": "1"}
    assert value("serving_requests_total", production | {"status": "200"}) == 2


# -- following the challenger's alias -------------------------------------------------------


class FakePool:
    def __init__(self, version: str, fails: bool = False) -> None:
        self.version, self.fails = version, fails
        self.sockets: list[Path] = [Path(f"/nowhere/v{version}.sock")]
        self.stopped = False

    def wait_ready(self, timeout_s: float, fallback_example: bytes | None = None) -> None:
        if self.fails:
            raise RuntimeError("test prediction answered 400")

    def dead(self) -> list[int]:
        return []

    def pids(self) -> list[int]:
        return []

    def stop(self, timeout_s: float = 0) -> None:
        self.stopped = True


def test_the_challenger_follows_its_alias_and_never_duplicates_production() -> None:
    alias: dict[str, str | None] = {"challenger": "2"}
    pools: list[FakePool] = []

    def start_pool(version: str) -> FakePool:
        pools.append(FakePool(version, fails=version == "4"))
        return pools[-1]

    challenger = Challenger("challenger", alias.get, start_pool, 5, None, None)
    challenger.follow("1", lambda: None)
    assert challenger.version == "2"
    challenger.follow("1", lambda: None)
    assert len(pools) == 1  # unchanged alias: nothing to do
    alias["challenger"] = "4"  # fails its check: the running challenger stays
    challenger.follow("1", lambda: None)
    assert challenger.version == "2" and pools[-1].stopped and "4" in challenger.failed
    challenger.follow("1", lambda: None)
    assert len(pools) == 2  # a rejected version is not tried on every poll
    alias["challenger"] = "1"  # promoted: production serves it, nothing to compare
    challenger.follow("1", lambda: None)
    assert challenger.version is None and pools[0].stopped


def test_a_share_without_a_challenger_alias_is_refused_in_one_line() -> None:
    base = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:1", "MODEL_NAME": "grades"}
    with pytest.raises(ConfigError) as missing:
        ServingSettings.from_env(base | {"SERVING_SHADOW_PERCENT": "10"})
    assert str(missing.value) == (
        "SERVING_SHADOW_PERCENT or SERVING_CANARY_PERCENT is set but SERVING_SHADOW_ALIAS is "
        "not: name the challenger's alias (e.g. challenger)"
    )
    with pytest.raises(ConfigError, match="the alias served as production"):
        ServingSettings.from_env(base | {"SERVING_SHADOW_ALIAS": "production"})
