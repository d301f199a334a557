"""Fitting and evaluating the regression, and the behaviour checks a model must pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import train_test_split

from stack_common.errors import StackError
from training.data import FEATURE, GRADE_RANGE, TARGET

CHECK_HOURS = np.linspace(0.0, 12.0, 49)


class BehaviourCheckFailed(StackError):
    pass


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def split(frame: pd.DataFrame, test_size: float, seed: int) -> Split:
    if len(frame) < 10:
        raise StackError(
            f"only {len(frame)} rows of data; at least 10 are needed to train and test"
        )
    train, test = train_test_split(frame, test_size=test_size, random_state=seed)
    return Split(train=train, test=test)


def fit(train: pd.DataFrame) -> LinearRegression:
    return LinearRegression().fit(train[[FEATURE]], train[TARGET])


def evaluate(model: LinearRegression, data: Split) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for part, frame in (("train", data.train), ("test", data.test)):
        predicted = model.predict(frame[[FEATURE]])
        metrics[f"{part}_rmse"] = float(root_mean_squared_error(frame[TARGET], predicted))
        metrics[f"{part}_mae"] = float(mean_absolute_error(frame[TARGET], predicted))
        metrics[f"{part}_r2"] = float(r2_score(frame[TARGET], predicted))
    return metrics


def check_behaviour(model: LinearRegression) -> None:
    """Refuse a model a teacher would not trust; failing is clearer than silently clipping.

    More study hours must never predict a lower grade, and predictions for 0-12 hours must be
    grades (0-100). A model that breaks either is not registered.
    """
    predicted = model.predict(pd.DataFrame({FEATURE: CHECK_HOURS}))
    steps = np.diff(predicted)
    if (steps < -1e-9).any():
        at = CHECK_HOURS[int(np.argmax(steps < -1e-9)) + 1]
        raise BehaviourCheckFailed(
            f"behaviour check failed: the model predicts a lower grade for more study hours "
            f"(at {at:g} h); check the training data"
        )
    low, high = GRADE_RANGE
    outside = (predicted < low) | (predicted > high)
    if outside.any():
        index = int(np.argmax(outside))
        raise BehaviourCheckFailed(
            f"behaviour check failed: {predicted[index]:.1f} predicted for "
            f"{CHECK_HOURS[index]:g} h is outside {low:g}-{high:g}; check the training data"
        )
