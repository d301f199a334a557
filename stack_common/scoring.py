"""A small client of MLflow's scoring protocol, as a user of the serving endpoint would call it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class Prediction:
    grades: list[float]
    model_version: str | None


def predict(base_url: str, hours: Sequence[float], timeout: float = 10.0) -> Prediction:
    response = requests.post(
        f"{base_url.rstrip('/')}/invocations",
        json={"dataframe_split": {"columns": ["hours"], "data": [[float(h)] for h in hours]}},
        timeout=timeout,
    )
    response.raise_for_status()
    return Prediction(
        grades=[float(g) for g in response.json()["predictions"]],
        model_version=response.headers.get("X-Model-Version"),
    )
