"""Serving as clients meet it: MLflow's request formats, version headers, and bad input that
gets a 4xx with a one-line reason (never a stack trace) while the server stays up."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_stack.processes import Service
from tests.conftest import ServiceFactory
from tests.helpers import train_and_promote

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A tracking server with one production version, and serving in front of it."""
    factory = ServiceFactory(tmp_path_factory.mktemp("hardening"))
    try:
        tracking = factory.tracking()
        train_and_promote(tracking.url, "hardening")
        yield factory.serving(
            tracking.url, "hardening", env={"SERVING_MAX_BODY_MB": "5", "SERVING_WORKERS": "2"}
        )
    finally:
        factory.stop_all()


def post(service: Service, body: bytes | str, content_type: str = "application/json"):
    return requests.post(
        f"{service.url}/invocations",
        data=body,
        headers={"Content-Type": content_type},
        timeout=60,
    )


def assert_clean_4xx(response: requests.Response, *fragments: str, from_model: bool = True) -> None:
    """A 4xx as MLflow's scoring server answers it (its JSON error, or its plain-text 415),
    with no stack trace."""
    assert 400 <= response.status_code < 500, response.text[:300]
    assert "Traceback" not in response.text
    if response.headers["Content-Type"].startswith("application/json"):
        payload = response.json()
        message = payload["message"]
        assert message.strip() and "stack_trace" not in payload
    else:
        assert response.status_code == 415, response.text[:300]
        assert response.headers["Content-Type"].startswith("text/plain")
        message = response.text
    for fragment in fragments:
        assert fragment in message
    if from_model:  # nginx's own refusals (413) never reached a model
        assert response.headers.get("X-Model-Version") == "1"


def assert_still_serving(service: Service) -> None:
    response = post(service, json.dumps({"inputs": {"hours": [5.0]}}))
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ({"dataframe_split": {"columns": ["hours"], "data": [[1.0], [5.0], [10.0]]}}, None),
        ({"dataframe_records": [{"hours": 1.0}, {"hours": 5.0}, {"hours": 10.0}]}, None),
        ({"instances": [{"hours": 1.0}, {"hours": 5.0}, {"hours": 10.0}]}, None),
        ({"inputs": {"hours": [1.0, 5.0, 10.0]}}, None),
        ("hours\n1\n5\n10\n", "text/csv"),
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs", "csv"],
)
def test_every_mlflow_request_format_answers_with_its_version(
    served: Service, body: object, content_type: str | None
) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    response = post(served, raw, content_type or "application/json")
    assert response.status_code == 200, response.text
    grades = response.json()["predictions"]
    assert len(grades) == 3 and grades == sorted(grades)
    assert response.headers["X-Model-Version"] == "1"
    assert response.headers["X-Model-Alias"] == "production"


def test_status_endpoints(served: Service) -> None:
    assert requests.get(f"{served.url}/ping", timeout=5).status_code == 200
    assert requests.get(f"{served.url}/version", timeout=5).text.startswith("3.")
    info = requests.get(f"{served.url}/served", timeout=5).json()
    assert info["version"] == "1" and info["alias"] == "production"
    assert info["model_uri"] == "models:/hardening/1" and info["loaded_at"]
    health = requests.get(f"{served.url}/health", timeout=5).json()
    assert health["status"] == "ok" and health["model_version"] == "1"


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        ("{not json", "application/json", "valid JSON"),
        ('{"dataframe_records": [{"hour": 1}]}', "application/json", "missing inputs ['hours']"),
        ('{"dataframe_records": [{"hours": "many"}]}', "application/json", ""),
        ('{"dataframe_records": [{"hours": null}]}', "application/json", ""),
        ('{"dataframe_split": {"columns": ["hours"], "data": []}}', "application/json", ""),
        ('{"something": 1}', "application/json", ""),
        ("[]", "application/json", ""),
        ("hours\n5\n", "text/plain", "content types"),
        ("", "application/json", ""),
    ],
    ids=[
        "malformed-json",
        "wrong-column",
        "wrong-type",
        "null",
        "empty-data",
        "unknown-key",
        "bare-list",
        "wrong-content-type",
        "empty-body",
    ],
)
def test_bad_requests_get_a_clean_4xx_and_serving_stays_up(
    served: Service, body: str, content_type: str, fragment: str
) -> None:
    assert_clean_4xx(post(served, body, content_type), fragment)
    assert_still_serving(served)


def test_body_over_the_limit_is_refused_with_413(served: Service) -> None:
    rows = ",".join(["[5.0]"] * 1_500_000)  # a huge batch: about 10 MB, over the 5 MB limit
    body = '{"dataframe_split": {"columns": ["hours"], "data": [' + rows + "]}}"
    response = post(served, body)
    assert response.status_code == 413
    assert_clean_4xx(response, "request body over 5 MB", from_model=False)
    assert_still_serving(served)


def test_a_100_mb_body_is_refused_without_reading_it_all(served: Service) -> None:
    response = post(served, b"x" * (100 * 1024 * 1024))
    assert response.status_code == 413
    assert_still_serving(served)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries({"dataframe_split": json_values}),
    st.fixed_dictionaries({"dataframe_records": json_values}),
    st.fixed_dictionaries({"inputs": json_values}),
    st.fixed_dictionaries({"instances": json_values}),
    st.fixed_dictionaries(
        {
            "dataframe_split": st.fixed_dictionaries(
                {"columns": st.just(["hours"]), "data": st.lists(st.lists(json_values))}
            )
        }
    ),
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=payloads)
def test_generated_payloads_get_200_or_a_clean_4xx(served: Service, payload: object) -> None:
    response = post(served, json.dumps(payload))
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text[:300]
    if response.status_code != 200:
        assert "Traceback" not in response.text and "stack_trace" not in response.json()
