"""Serving never changes an answer because of what other clients send: a zoo of models.

Six models that are not the demo regressor (a scikit-learn Pipeline served as predict_proba,
a PythonModel with params and a two-column output, a tensor signature, a datetime column with an
optional column, a model that raises for some inputs, a model whose output depends on the whole
input), each registered and served by plain ``mlflow models serve`` and by the stack. Every
request's answer from the stack, alone and under concurrent mixed traffic, is plain MLflow's
answer to that request alone: status, content type, ``error_code``, predictions (floats to within
a few units in the last place: the same row predicted in a larger call may round differently,
as it does in plain MLflow between a 1-row and a 3-row request). ``/health`` says which are
batched: the row-wise flavour and the opted-in row-safe models, not the others.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from local_stack.processes import Service, wait_until_up
from tests.conftest import STARTUP_TIMEOUT_S, ServiceFactory
from tests.e2e.zoo_models import ZooModel, log_zoo
from tests.helpers import start_mlflow_models_serve

pytestmark = pytest.mark.e2e

JSON = "application/json"
ULPS = 4  # how far in the last place a float may differ


def start_plain(tmp: Path, tracking_uri: str, name: str) -> Service:
    return start_mlflow_models_serve(
        tmp / f"plain-{name}",
        tmp / f"plain-{name}.log",
        f"models:/{name}@production",
        {"MLFLOW_TRACKING_URI": tracking_uri},
    )


class Zoo:
    def __init__(self) -> None:
        self.models: dict[str, ZooModel] = {}
        self.plain: dict[str, Service] = {}
        self.stack: dict[str, Service] = {}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    tmp = tmp_path_factory.mktemp("zoo")
    factory = ServiceFactory(tmp)
    found = Zoo()
    try:
        tracking = factory.tracking(env={"MLFLOW_WORKERS": "1"})
        mlflow.set_tracking_uri(tracking.url)
        client = MlflowClient(tracking.url, registry_uri=tracking.url)
        prefix = f"zoo-{uuid.uuid4().hex[:6]}"
        mlflow.set_experiment(prefix)
        with mlflow.start_run():
            logged = log_zoo()
        for short, (model, uri) in logged.items():
            name = f"{prefix}-{short}"
            version = mlflow.register_model(uri, name).version
            client.set_registered_model_alias(name, "production", version)
            if model.opt_in:
                client.set_model_version_tag(name, version, "serving.batching", "true")
            found.models[name] = model
        for name in found.models:  # started together: each waits for its model on its own
            found.plain[name] = start_plain(tmp, tracking.url, name)
            factory.started.append(found.plain[name])
            found.stack[name] = factory.serving(
                tracking.url,
                name,
                data_dir=tmp / name,
                env={"SERVING_WORKERS": "1", "SERVING_MAX_BATCH_WAIT_MS": "5"},
                wait=False,
            )
        for service in [*found.plain.values(), *found.stack.values()]:
            wait_until_up(service, "/ping", STARTUP_TIMEOUT_S)
        yield found
    finally:
        factory.stop_all()


def post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/invocations", json=body, timeout=120)


def outcome(response: requests.Response) -> tuple:
    """What must agree: status, content type, and the predictions or the error code."""
    content_type = response.headers.get("Content-Type", "").split(";")[0]
    if response.status_code == 200:
        return 200, content_type, response.json()["predictions"]
    error = response.json().get("error_code") if content_type == JSON else response.text
    return response.status_code, content_type, error


def same(a: object, b: object) -> bool:
    """Equal, floats to within a few units in the last place."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= ULPS * math.ulp(max(abs(a), abs(b)))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def expected_answers(zoo: Zoo, name: str) -> dict[str, tuple]:
    model = zoo.models[name]
    return {case: outcome(post(zoo.plain[name].url, body)) for case, body in model.cases.items()}


def test_every_model_answers_as_plain_mlflow_alone_and_under_mixed_concurrent_traffic(
    zoo: Zoo,
) -> None:
    kinds = set()
    for name, model in zoo.models.items():
        expected = expected_answers(zoo, name)
        kinds |= {answer[0] for answer in expected.values()}
        url = zoo.stack[name].url
        for case, body in model.cases.items():  # alone
            answer = outcome(post(url, body))
            assert same(answer, expected[case]), (name, case, answer, expected[case])
        cases = [case for _ in range(64 // len(model.cases) + 1) for case in model.cases][:64]
        bodies = [model.cases[case] for case in cases]
        with ThreadPoolExecutor(16) as pool:  # mixed, concurrent
            answers = list(pool.map(lambda body, url=url: outcome(post(url, body)), bodies))
        wrong = [
            (case, got, expected[case])
            for case, got in zip(cases, answers, strict=True)
            if not same(got, expected[case])
        ]
        assert not wrong, (name, wrong[:3])
    assert 200 in kinds and kinds - {200}, "the zoo must answer predictions and errors"


def test_health_says_which_models_are_batched_and_batches_form_only_there(zoo: Zoo) -> None:
    for name, model in zoo.models.items():
        health = requests.get(f"{zoo.stack[name].url}/health", timeout=10).json()
        assert health["batched"] is model.batched, (name, health)
        metrics = requests.get(f"{zoo.stack[name].url}/metrics", timeout=30).text
        gauge = [line for line in metrics.splitlines() if line.startswith("serving_batched{")]
        assert gauge and gauge[0].endswith(" 1.0" if model.batched else " 0.0"), (name, gauge)


def test_datetimes_are_read_as_plain_reads_them_whatever_the_neighbours(zoo: Zoo) -> None:
    """The issue's case: day-first and month-first dates, alternating, 64 at once."""
    [name] = [n for n, m in zoo.models.items() if "day-first" in m.cases]
    cases = ["day-first", "month-first"] * 32
    plain = expected_answers(zoo, name)
    with ThreadPoolExecutor(32) as pool:
        answers = list(
            pool.map(
                lambda case: outcome(post(zoo.stack[name].url, zoo.models[name].cases[case])),
                cases,
            )
        )
    assert [a for a, c in zip(answers, cases, strict=True) if not same(a, plain[c])] == []
