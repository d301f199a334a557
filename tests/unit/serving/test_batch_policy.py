"""Which versions are batched, and a scoring process's bound on waiting requests."""

from __future__ import annotations

import asyncio

import pytest
from mlflow.types import ColSpec, Schema, TensorSpec

from serving.batch_policy import decide, opt_in_from_tags, row_safe_schema

SKLEARN = {"python_function": {"loader_module": "mlflow.sklearn"}, "sklearn": {}}
CUSTOM = {"python_function": {"loader_module": "mlflow.pyfunc.model"}}
NUMBERS = Schema([ColSpec("double", "x"), ColSpec("string", "city", required=False)])


@pytest.mark.parametrize(
    ("flavors", "schema", "opt_in", "batched"),
    [
        (SKLEARN, NUMBERS, None, True),  # row-wise flavour: on by default
        (SKLEARN, NUMBERS, False, False),  # opted out
        (CUSTOM, NUMBERS, None, False),  # a PythonModel may look at the whole input
        (CUSTOM, NUMBERS, True, True),  # unless the version opts in
        (CUSTOM, None, True, True),
        (SKLEARN, Schema([ColSpec("datetime", "ts")]), None, False),  # never: parsing
        (CUSTOM, Schema([ColSpec("datetime", "ts")]), True, False),
        (CUSTOM, Schema([ColSpec("binary", "b")]), True, False),
    ],
)
def test_batching_only_where_it_cannot_change_an_answer(
    flavors: dict, schema: Schema | None, opt_in: bool | None, batched: bool
) -> None:
    decision = decide(flavors, schema, opt_in)
    assert decision.batched is batched and decision.why


def test_tensor_inputs_are_never_merged() -> None:
    import numpy as np

    assert not row_safe_schema(Schema([TensorSpec(np.dtype("float64"), (-1, 2))]))


@pytest.mark.parametrize(
    ("version_tags", "model_tags", "opt_in"),
    [
        ({"serving.batching": "true"}, {}, True),
        ({}, {"serving.batching": "TRUE"}, True),
        ({"serving.batching": "false"}, {"serving.batching": "true"}, False),  # version wins
        ({}, {}, None),
        ({"serving.batching": "maybe"}, {}, None),
    ],
)
def test_the_version_tag_wins_over_the_models(
    version_tags: dict, model_tags: dict, opt_in: bool | None
) -> None:
    assert opt_in_from_tags(version_tags, model_tags) is opt_in


def test_past_the_queue_bound_requests_are_answered_503_with_retry_after(tmp_path) -> None:
    """A real model that takes a while, one scoring app with room for two waiting requests."""
    import time

    import mlflow
    from mlflow.pyfunc import PythonModel

    from serving.scoring_app import ScoringApp

    class Slow(PythonModel):
        def predict(self, context, model_input, params=None):
            time.sleep(0.3)
            return model_input

    mlflow.pyfunc.save_model(tmp_path / "slow", python_model=Slow())
    model = mlflow.pyfunc.load_model(str(tmp_path / "slow"))
    app = ScoringApp(model, max_rows=1, max_wait_s=0, timeout_s=30, merge=False, max_queued=2)
    body = b'{"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}'

    async def call() -> tuple[int, dict]:
        sent: list[dict] = []
        scope = {
            "type": "http",
            "path": "/invocations",
            "method": "POST",
            "headers": [(b"content-type", b"application/json")],
        }

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"])

    async def flood() -> list[tuple[int, dict]]:
        return await asyncio.gather(*(call() for _ in range(8)))

    try:
        answers = asyncio.run(flood())
    finally:
        app.batcher.stop()
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(200) >= 2 and 503 in statuses, statuses
    assert all(h[b"retry-after"] == b"1" for s, h in answers if s == 503)
