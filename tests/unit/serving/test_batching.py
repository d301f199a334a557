"""The batching engine answers every request exactly as MLflow's ``invocations`` does, whether
it was merged with others or not (serving/batching.py)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from serving.batching import Answer, Batcher, mlflow_answer, split

JSON = "application/json"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    hours = pd.DataFrame({"hours": [0.0, 2.0, 4.0, 8.0, 12.0]})
    fitted = LinearRegression().fit(hours, [30.0, 40.0, 52.0, 70.0, 90.0])
    path = tmp_path_factory.mktemp("model") / "m"
    mlflow.sklearn.save_model(fitted, path, signature=infer_signature(hours, fitted.predict(hours)))
    return mlflow.pyfunc.load_model(str(path))


def split_body(*hours: float) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": ["hours"], "data": [[h] for h in hours]}}
    ).encode()


GOOD = [
    (split_body(1.0), JSON),
    (split_body(2.0, 3.0, 4.0), JSON),
    (json.dumps({"dataframe_records": [{"hours": 5.5}]}).encode(), JSON),
    (json.dumps({"inputs": {"hours": [6.0, 7.0]}}).encode(), JSON),
    (json.dumps({"instances": [{"hours": 8.0}]}).encode(), JSON),
    (b"hours\n9\n10\n", "text/csv"),
    (split_body(11.0), "application/json; charset=UTF-8"),
    (split_body(1, 2), JSON),  # ints: merged only with ints
    (json.dumps({"dataframe_records": [{"hours": 3}, {"hours": 4.5}]}).encode(), JSON),
]
BAD = [
    (b"{not json", JSON),
    (json.dumps({"dataframe_records": [{"hour": 1}]}).encode(), JSON),
    (json.dumps({"dataframe_records": [{"hours": "many"}]}).encode(), JSON),
    (json.dumps({"dataframe_records": [{"hours": None}]}).encode(), JSON),
    (json.dumps({"dataframe_split": {"columns": ["hours"], "data": []}}).encode(), JSON),
    (b"hours\n5\n", "text/plain"),
    (split_body(1.0), "application/json; charset=latin-1"),
    (b"", JSON),
    (b"[]", JSON),
    (split_body(None, 2.0), JSON),
]


def run_together(model, requests: list[tuple[bytes, str]], **limits) -> list[Answer]:
    """Every request queued before the worker starts, so they meet in the same batches."""
    answers: list[Answer | None] = [None] * len(requests)
    done = threading.Semaphore(0)
    batcher = Batcher(model, start=False, **{"max_rows": 32, "max_wait_s": 0.0, **limits})

    def deliver(i: int):
        def put(answer: Answer) -> None:
            answers[i] = answer
            done.release()

        return put

    for i, (body, content_type) in enumerate(requests):
        batcher.submit(body, content_type, deliver(i))
    batcher.start()
    for _ in requests:
        assert done.acquire(timeout=30)
    batcher.stop()
    return [a for a in answers if a is not None]


def test_merged_answers_are_mlflows(model) -> None:
    requests = GOOD * 3
    schema = model.metadata.get_input_schema()
    answers = run_together(model, requests)
    for (body, content_type), answer in zip(requests, answers, strict=True):
        alone = mlflow_answer(body, content_type, model, schema)
        assert (answer.status, answer.body) == (alone.status, alone.body)
    assert max(a.batch_rows or 0 for a in answers) > 3  # they were merged


def test_a_bad_request_never_fails_the_others_in_its_batch(model) -> None:
    requests = [r for pair in zip(GOOD, BAD, strict=False) for r in pair] + BAD[len(GOOD) :]
    schema = model.metadata.get_input_schema()
    answers = run_together(model, requests)
    for (body, content_type), answer in zip(requests, answers, strict=True):
        alone = mlflow_answer(body, content_type, model, schema)
        assert answer.status == alone.status, body
        if alone.status == 200:
            assert answer.body == alone.body
    assert sum(a.status == 200 for a in answers) == len(GOOD)


def test_batches_stop_at_max_rows(model) -> None:
    answers = run_together(model, [(split_body(float(i)), JSON) for i in range(10)], max_rows=4)
    assert {a.status for a in answers} == {200}
    assert max(a.batch_rows or 0 for a in answers) == 4


def test_a_merged_call_that_fails_falls_back_to_each_alone(model) -> None:
    class Failing:
        metadata = model.metadata

        def predict(self, data, params=None):
            if len(data) > 1:
                raise RuntimeError("batch of several rows")
            return model.predict(data, params=params)

    answers = run_together(Failing(), [(split_body(1.0), JSON), (split_body(2.0), JSON)])
    assert [a.status for a in answers] == [200, 200]


def test_a_refused_or_failed_prediction_is_logged_with_its_request_id(
    model, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        metadata = model.metadata

        def predict(self, data, params=None):
            raise ZeroDivisionError("the model is broken")

    schema = model.metadata.get_input_schema()
    caplog.set_level("INFO", logger="serving.batching")
    refused = mlflow_answer(b"{not json", JSON, model, schema, request_id="req-bad-json")
    assert refused.status == 400
    # MLflow turns a failing predict into a 400 with its message, as its own server does.
    broken = mlflow_answer(split_body(1.0), JSON, Broken(), schema, request_id="req-broken")
    assert broken.status == 400
    ids = [getattr(record, "request_id", None) for record in caplog.records]
    assert ids == ["req-bad-json", "req-broken"]
    assert all(len(record.getMessage().splitlines()) == 1 for record in caplog.records)


def test_split_by_rows() -> None:
    assert [p.tolist() for p in split(np.arange(5), [2, 3])] == [[0, 1], [2, 3, 4]]
    frame = pd.DataFrame({"a": range(3)})
    assert [len(p) for p in split(frame, [1, 2])] == [1, 2]
    assert split([1, 2, 3], [1, 2]) == [[1], [2, 3]]
    assert split(np.arange(4), [2, 3]) is None
    assert split({"a": 1}, [1, 1]) is None
    assert split(7, [1]) == [7]


def test_engine_settings() -> None:
    from serving.settings import ServingSettings
    from stack_common.errors import ConfigError

    default = ServingSettings.from_env({})
    assert (default.engine, default.max_batch_rows, default.max_batch_wait_ms) == (
        "batching",
        32,
        2.0,
    )
    chosen = ServingSettings.from_env(
        {
            "SERVING_ENGINE": "MLflow",
            "SERVING_MAX_BATCH_ROWS": "8",
            "SERVING_MAX_BATCH_WAIT_MS": "0",
        }
    )
    assert (chosen.engine, chosen.max_batch_rows, chosen.max_batch_wait_ms) == ("mlflow", 8, 0.0)
    with pytest.raises(ConfigError, match="SERVING_ENGINE"):
        ServingSettings.from_env({"SERVING_ENGINE": "fast"})


def call(app, method: str, path: str, body: bytes = b"", content_type: str = JSON):
    """One HTTP request through the ASGI app: (status, headers, body)."""
    import asyncio

    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", content_type.encode())],
    }
    asyncio.run(app(scope, receive, send))
    headers = dict(sent[0]["headers"])
    return sent[0]["status"], headers, sent[1]["body"]


def test_the_scoring_app_answers_as_mlflows(model) -> None:
    from mlflow.version import VERSION

    from serving.scoring_app import ScoringApp

    app = ScoringApp(model, max_rows=32, max_wait_s=0.002, timeout_s=10)
    try:
        assert call(app, "GET", "/ping")[0::2] == (200, b"\n")
        assert call(app, "GET", "/health")[0] == 200
        assert call(app, "GET", "/version")[0::2] == (200, VERSION.encode())
        assert call(app, "GET", "/nothing")[0] == 404
        assert call(app, "GET", "/invocations")[0] == 405
        assert call(app, "POST", "/ping")[0] == 405
        body = split_body(2.0, 3.0)
        status, headers, answer = call(app, "POST", "/invocations", body)
        alone = mlflow_answer(body, JSON, model, model.metadata.get_input_schema())
        assert (status, answer) == (200, alone.body)
        assert headers[b"x-batch-rows"] == b"2"
        status, headers, _ = call(app, "POST", "/invocations", b"{not json")
        assert status == 400 and b"x-batch-rows" not in headers
    finally:
        app.batcher.stop()


class ThreadRecorder:
    """A model that notes the thread of every prediction."""

    def __init__(self, model) -> None:
        self.model = model
        self.metadata = model.metadata
        self.threads: list[str] = []

    def predict(self, data, params=None):
        self.threads.append(threading.current_thread().name)
        return self.model.predict(data, params=params)


def test_a_lone_quick_request_is_predicted_on_the_event_loop(model) -> None:
    """The first lone requests go to the worker, which finds the model quick (once its first,
    slower calls are averaged away); later lone requests skip the thread hop. The answers are
    the same."""
    from serving.scoring_app import ScoringApp

    recorder = ThreadRecorder(model)
    app = ScoringApp(recorder, max_rows=32, max_wait_s=0.002, timeout_s=10)
    loop_thread = threading.current_thread().name
    try:
        body = split_body(2.0)
        first = call(app, "POST", "/invocations", body)
        assert recorder.threads == ["batcher"]
        for _ in range(50):
            later = call(app, "POST", "/invocations", body)
            assert later[0::2] == first[0::2] and first[0] == 200
            if recorder.threads[-1] == loop_thread:
                break
        assert recorder.threads[-1] == loop_thread
        assert later[1][b"x-batch-rows"] == b"1"
        # A bad request on the loop gets MLflow's error, as from the worker.
        assert call(app, "POST", "/invocations", b"{not json")[0] == 400
    finally:
        app.batcher.stop()


def test_a_slow_model_or_a_large_request_stays_on_the_worker(model) -> None:
    from serving.batching import INLINE_MAX_BYTES, INLINE_MAX_S

    batcher = Batcher(model, max_rows=32, max_wait_s=0.0, start=False)
    assert not batcher.quick(100)  # nothing measured yet
    batcher.lone_s = INLINE_MAX_S / 2
    assert batcher.quick(100) and not batcher.quick(INLINE_MAX_BYTES + 1)
    batcher.lone_s = INLINE_MAX_S * 2
    assert not batcher.quick(100)


def test_concurrent_requests_still_meet_in_batches(model) -> None:
    """Requests that arrive together are counted before any is predicted on the loop: they go
    to the worker and are merged."""
    import asyncio

    from serving.scoring_app import ScoringApp

    recorder = ThreadRecorder(model)
    app = ScoringApp(recorder, max_rows=32, max_wait_s=0.002, timeout_s=10)
    app.batcher.lone_s = 0.0  # quick: a lone request would be predicted on the loop

    async def one(hours: float) -> tuple[int, dict]:
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": split_body(hours), "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/invocations",
            "headers": [(b"content-type", JSON.encode())],
        }
        await app(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"])

    async def together() -> list[tuple[int, dict]]:
        return await asyncio.gather(*(one(float(i)) for i in range(8)))

    try:
        answers = asyncio.run(together())
        assert {status for status, _ in answers} == {200}
        assert set(recorder.threads) == {"batcher"}
        assert max(int(headers[b"x-batch-rows"]) for _, headers in answers) > 1
        assert (app.in_flight, app.pending) == (0, 0)
    finally:
        app.batcher.stop()


def test_the_heap_at_start_is_out_of_the_collectors_reach() -> None:
    """A full collection must not walk MLflow's and pandas' objects (a 130 ms pause)."""
    import gc

    from serving.scoring_app import freeze_heap

    try:
        freeze_heap()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
