"""Model behaviour: what a teacher expects of any grade model before it may be registered."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from stack_common.errors import StackError
from training.data import load_grades
from training.model import BehaviourCheckFailed, check_behaviour, evaluate, fit, split
from training.settings import DEFAULT_DATA


@pytest.fixture(scope="module")
def trained() -> LinearRegression:
    return fit(split(load_grades(DEFAULT_DATA), 0.2, 42).train)


def test_shipped_model_passes_its_checks_and_fits_well(trained: LinearRegression) -> None:
    check_behaviour(trained)
    metrics = evaluate(trained, split(load_grades(DEFAULT_DATA), 0.2, 42))
    assert metrics["test_r2"] > 0.8
    assert metrics["test_rmse"] < 10
    assert set(metrics) == {f"{p}_{m}" for p in ("train", "test") for m in ("rmse", "mae", "r2")}


def linear(intercept: float, slope: float) -> LinearRegression:
    frame = pd.DataFrame({"hours": [0.0, 10.0]})
    return LinearRegression().fit(frame, [intercept, intercept + 10 * slope])


class Curve:
    """A model whose predictions are given point by point (what a non-linear model may do)."""

    def __init__(self, grades: np.ndarray) -> None:
        self.grades = grades

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.grades


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (linear(80, -2), "lower grade for more study hours (at 0.25 h)"),
        (linear(50, 10), "102.5 predicted for 5.25 h is outside 0-100"),
        (linear(-20, 5), "-20.0 predicted for 0 h is outside 0-100"),
        (linear(41, 5), "101.0 predicted for 12 h is outside 0-100"),  # only at the last hour
        # A dip in the middle of an otherwise rising curve is found where it is.
        (Curve(np.r_[np.linspace(40, 60, 25), np.linspace(59, 90, 24)]), "(at 6.25 h)"),
    ],
)
def test_untrustworthy_models_are_refused(model: LinearRegression, message: str) -> None:
    with pytest.raises(BehaviourCheckFailed, match=re.escape(message)):
        check_behaviour(model)


@pytest.mark.parametrize(
    "model",
    [
        linear(0, 100 / 12),  # exactly 0 at 0 h and 100 at 12 h: the range includes its ends
        linear(55, 0),  # flat: more hours never predict a *lower* grade
        linear(40, 5),  # 100 at 12 h; beyond 12 h is not checked
    ],
)
def test_models_at_the_edges_of_the_rules_pass(model: LinearRegression) -> None:
    check_behaviour(model)  # raises BehaviourCheckFailed if refused


def grades(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"hours": np.arange(rows, dtype=float), "grade": np.arange(rows) + 50.0})


def test_too_little_data_is_refused() -> None:
    with pytest.raises(StackError, match="only 9 rows of data; at least 10 are needed"):
        split(grades(9), 0.2, 42)
    parts = split(grades(10), 0.2, 42)
    assert (len(parts.train), len(parts.test)) == (8, 2)
