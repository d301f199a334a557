"""Model behaviour: what a teacher expects of any grade model before it may be registered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from training.data import load_grades
from training.model import BehaviourCheckFailed, check_behaviour, evaluate, fit, split
from training.settings import DEFAULT_DATA


@pytest.fixture(scope="module")
def trained() -> LinearRegression:
    return fit(split(load_grades(DEFAULT_DATA), 0.2, 42).train)


def predict(model: LinearRegression, hours: list[float]) -> np.ndarray:
    return model.predict(pd.DataFrame({"hours": hours}))


def test_more_hours_never_predict_a_lower_grade(trained: LinearRegression) -> None:
    grades = predict(trained, list(np.linspace(0, 12, 100)))
    assert (np.diff(grades) >= 0).all()


def test_predictions_stay_grades(trained: LinearRegression) -> None:
    grades = predict(trained, [0, 1, 5, 10, 12])
    assert ((grades >= 0) & (grades <= 100)).all()


def test_shipped_model_passes_its_checks_and_fits_well(trained: LinearRegression) -> None:
    check_behaviour(trained)
    metrics = evaluate(trained, split(load_grades(DEFAULT_DATA), 0.2, 42))
    assert metrics["test_r2"] > 0.8
    assert metrics["test_rmse"] < 10
    assert set(metrics) == {f"{p}_{m}" for p in ("train", "test") for m in ("rmse", "mae", "r2")}


def linear(intercept: float, slope: float) -> LinearRegression:
    frame = pd.DataFrame({"hours": [0.0, 10.0]})
    return LinearRegression().fit(frame, [intercept, intercept + 10 * slope])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (linear(80, -2), "lower grade for more study hours"),
        (linear(50, 10), "is outside 0-100"),
        (linear(-20, 5), "is outside 0-100"),
    ],
)
def test_untrustworthy_models_are_refused(model: LinearRegression, message: str) -> None:
    with pytest.raises(BehaviourCheckFailed, match=message):
        check_behaviour(model)


def test_too_little_data_is_refused() -> None:
    frame = pd.DataFrame({"hours": [1.0, 2.0], "grade": [50.0, 55.0]})
    with pytest.raises(Exception, match="at least 10"):
        split(frame, 0.2, 42)
