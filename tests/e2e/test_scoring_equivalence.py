"""The stack's serving answers as plain ``mlflow models serve`` does, with either scoring engine.

A corpus of payloads goes to both, one at a time and concurrently: the same status codes and the
same ``predictions`` (error bodies may differ: the stack's are one-line JSON). Under concurrency
the batching engine really merges requests (``X-Batch-Rows`` and ``serving_batch_rows``), and a
bad request among good ones in the same batch fails alone.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import requests

from local_stack.processes import Service, wait_until_up
from tests.conftest import STARTUP_TIMEOUT_S, ServiceFactory
from tests.helpers import start_mlflow_models_serve, train_and_promote

pytestmark = pytest.mark.e2e

MODEL = "equivalence"
JSON = "application/json"
CSV = "text/csv"


def split(*hours: object) -> str:
    return json.dumps({"dataframe_split": {"columns": ["hours"], "data": [[h] for h in hours]}})


def parquet() -> bytes:
    out = io.BytesIO()
    pd.DataFrame({"hours": [1.0, 2.0]}).to_parquet(out)
    return out.getvalue()


HUGE_ROWS = 200_000
CORPUS: dict[str, tuple[str | bytes, str]] = {
    "split-one": (split(5.0), JSON),
    "split-multi": (split(0.0, 1.5, 3.0, 12.0), JSON),
    "split-int": (split(1, 2, 3), JSON),
    "records": (json.dumps({"dataframe_records": [{"hours": 1.0}, {"hours": 7.0}]}), JSON),
    "instances": (json.dumps({"instances": [{"hours": 2.0}, {"hours": 4.0}]}), JSON),
    "instances-scalars": (json.dumps({"instances": [2.0, 4.0]}), JSON),
    "inputs": (json.dumps({"inputs": {"hours": [3.0, 6.0]}}), JSON),
    "inputs-tensor": (json.dumps({"inputs": [[3.0], [6.0]]}), JSON),
    "params": (json.dumps({"inputs": {"hours": [3.0]}, "params": {"x": 1}}), JSON),
    "charset": (split(5.0), "application/json; charset=utf-8"),
    "charset-latin1": (split(5.0), "application/json; charset=latin-1"),
    "content-type-param": (split(5.0), "application/json; format=pandas-split"),
    "csv": ("hours\n1\n5\n10\n", CSV),
    "csv-wrong-column": ("minutes\n1\n", CSV),
    "csv-wrong-type": ("hours\nmany\n", CSV),
    "parquet": (parquet(), "application/vnd.apache.parquet"),
    "text-plain": ("hours\n5\n", "text/plain"),
    "wrong-column": (json.dumps({"dataframe_records": [{"hour": 1.0}]}), JSON),
    "extra-column": (json.dumps({"dataframe_records": [{"hours": 1.0, "x": 2}]}), JSON),
    "wrong-type": (json.dumps({"dataframe_records": [{"hours": "many"}]}), JSON),
    "wrong-type-bool": (split(True), JSON),
    "null": (json.dumps({"dataframe_records": [{"hours": None}]}), JSON),
    "empty-data": (json.dumps({"dataframe_split": {"columns": ["hours"], "data": []}}), JSON),
    "empty-records": (json.dumps({"dataframe_records": []}), JSON),
    "empty-object": ("{}", JSON),
    "empty-body": ("", JSON),
    "malformed": ("{not json", JSON),
    "bare-list": ("[]", JSON),
    "two-formats": (json.dumps({"inputs": {"hours": [1.0]}, "instances": [1.0]}), JSON),
    "not-utf8": (b'{"inputs": {"hours": [1.0]}, "x": "\xff"}', JSON),
    "huge": (split(*[i % 13 * 1.0 for i in range(HUGE_ROWS)]), JSON),
}


def start_plain(tmp: Path, tracking_uri: str) -> Service:
    """``mlflow models serve`` as a user runs it, answering."""
    service = start_mlflow_models_serve(
        tmp / "plain", tmp / "plain.log", f"models:/{MODEL}@production",
        {"MLFLOW_TRACKING_URI": tracking_uri},
    )  # fmt: skip
    wait_until_up(service, "/ping", STARTUP_TIMEOUT_S)
    return service


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """Plain MLflow, and the stack with each engine, on the same production version."""
    tmp = tmp_path_factory.mktemp("equivalence")
    factory = ServiceFactory(tmp)
    started: list[Service] = []
    try:
        tracking = factory.tracking()
        train_and_promote(tracking.url, MODEL)
        started.append(start_plain(tmp, tracking.url))
        found = {"plain": started[0]}
        for engine in ("batching", "mlflow"):
            found[engine] = factory.serving(
                tracking.url,
                MODEL,
                data_dir=tmp / engine,
                # MLflow's engine also starts cold (fresh interpreters): both start paths answer.
                env={
                    "SERVING_ENGINE": engine,
                    "SERVING_WORKERS": "2",
                    "SERVING_WARM_START": "true" if engine == "batching" else "false",
                },
            )
        yield found
    finally:
        for service in started:
            service.stop()
        factory.stop_all()


def post(url: str, body: str | bytes, content_type: str) -> requests.Response:
    return requests.post(
        f"{url}/invocations", data=body, headers={"Content-Type": content_type}, timeout=120
    )


def outcome(response: requests.Response) -> tuple[int, str, object]:
    """What must agree: the status, the content type, and the predictions of a 200 or the
    error_code of an error (MLflow's plain-text answers: their text)."""
    content_type = response.headers.get("Content-Type", "").split(";")[0]
    if response.status_code == 200:
        return 200, content_type, response.json()["predictions"]
    if content_type == "application/json":
        return response.status_code, content_type, response.json().get("error_code")
    return response.status_code, content_type, response.text


@pytest.fixture(scope="module")
def expected(servers: dict[str, Service]) -> dict[str, tuple[int, object]]:
    return {
        name: outcome(post(servers["plain"].url, body, ctype))
        for name, (body, ctype) in CORPUS.items()
    }


@pytest.mark.parametrize("engine", ["batching", "mlflow"])
@pytest.mark.parametrize("case", list(CORPUS))
def test_same_status_and_predictions_as_plain_mlflow(
    servers: dict[str, Service], expected: dict, engine: str, case: str
) -> None:
    body, content_type = CORPUS[case]
    response = post(servers[engine].url, body, content_type)
    assert outcome(response) == expected[case], response.text[:300]
    if case == "huge":
        assert len(expected[case][2]) == HUGE_ROWS


def test_the_corpus_has_answers_and_errors(expected: dict) -> None:
    statuses = {status for status, _, _ in expected.values()}
    assert 200 in statuses and statuses - {200}, statuses


def concurrently(url: str, cases: list[str]) -> list[requests.Response]:
    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(lambda case: post(url, *CORPUS.get(case, (case, JSON))), cases))


def test_concurrent_requests_form_batches_with_plain_answers(
    servers: dict[str, Service],
) -> None:
    bodies = [split(i / 10, (i + 3) / 10) for i in range(120)]
    plain = {body: outcome(post(servers["plain"].url, body, JSON)) for body in bodies}
    url = servers["batching"].url
    for _ in range(3):  # on a busy machine a round may happen to arrive one by one
        answers = concurrently(url, bodies)
        assert [outcome(r) for r in answers] == [plain[b] for b in bodies]
        rows = [int(r.headers.get("X-Batch-Rows", "0")) for r in answers]
        if max(rows) > 2:
            break
    assert max(rows) > 2, rows
    metrics = requests.get(f"{url}/metrics", timeout=30).text
    merged = [
        line
        for line in metrics.splitlines()
        if line.startswith("serving_batch_rows_bucket") and 'le="2.0"' in line
    ]
    total = [line for line in metrics.splitlines() if line.startswith("serving_batch_rows_count")]
    assert merged and total and float(total[0].split()[-1]) > float(merged[0].split()[-1])


def test_a_bad_request_in_a_batch_fails_alone(servers: dict[str, Service], expected: dict) -> None:
    bad = ["wrong-type", "null", "wrong-column", "extra-column", "empty-data", "malformed"]
    good = ["split-one", "split-multi", "records", "inputs", "csv", "instances"]
    cases = []
    for i in range(24):  # 24 good, a bad one every fourth
        cases += [good[i % len(good)]] + ([bad[i // 4]] if i % 4 == 0 else [])
    url = servers["batching"].url
    for _ in range(3):
        answers = concurrently(url, cases)
        assert [outcome(r) for r in answers] == [expected[c] for c in cases]
        if max(int(r.headers.get("X-Batch-Rows", "0")) for r in answers) > 2:
            return
    pytest.fail("no batch formed in three rounds of 30 concurrent requests")
