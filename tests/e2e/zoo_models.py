"""A zoo of models that are not the demo regressor, for the scoring-equivalence test.

Each is logged with MLflow as a user would log it; the custom ones are pickled by value
(``cloudpickle.register_pickle_by_value``) so the serving processes need not import this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel


class ScaledPair(PythonModel):
    """Params and a two-column DataFrame output."""

    def predict(self, context, model_input, params=None):
        scale = float((params or {}).get("scale", 1.0))
        x = model_input["x"].astype(float)
        return pd.DataFrame({"scaled": x * scale, "shifted": x + 1.0})


class RowSums(PythonModel):
    """A tensor signature: one sum per row of a 2-D float array."""

    def predict(self, context, model_input, params=None):
        return np.asarray(model_input, dtype=np.float64).sum(axis=1)


class DayOfYear(PythonModel):
    """A datetime column and an optional string column."""

    def predict(self, context, model_input, params=None):
        ts = pd.to_datetime(model_input["ts"])
        bonus = model_input["opt"].fillna("").str.len() if "opt" in model_input else 0
        return (ts.dt.month * 100 + ts.dt.day + model_input["a"] + bonus).astype(float)


class Picky(PythonModel):
    """Raises for some inputs: a negative x."""

    def predict(self, context, model_input, params=None):
        x = model_input["x"].astype(float)
        if (x < 0).any():
            raise ValueError("x must not be negative")
        return x * 2.0


class ShareOfBatch(PythonModel):
    """Not row-wise: each row's share of the whole input."""

    def predict(self, context, model_input, params=None):
        x = model_input["x"].astype(float)
        return x / x.sum()


@dataclass
class ZooModel:
    name: str  # short name, part of the registered model's
    batched: bool  # what serving must decide for it
    cases: dict[str, dict] = field(default_factory=dict)  # request name -> JSON body
    opt_in: bool = False  # tag serving.batching=true on the version


def split(columns: list[str], *rows: list) -> dict:
    return {"dataframe_split": {"columns": columns, "data": [list(r) for r in rows]}}


def log_zoo() -> dict[str, tuple[ZooModel, str]]:
    """Log every model of the zoo in the active run; name -> (model, model URI)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(__name__, fromlist=["_"]))
    logged: dict[str, tuple[ZooModel, str]] = {}

    # scikit-learn: a Pipeline with a string column, served as predict_proba.
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame(
        {"city": ["paris", "lyon", "nice", "paris", "lyon", "nice"] * 5, "x": np.arange(30.0)}
    )
    labels = (frame["x"] % 3 == 0).astype(int)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])],
                    remainder="passthrough",
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, labels)
    info = mlflow.sklearn.log_model(
        pipe,
        name="sklearn-proba",
        signature=infer_signature(frame, pipe.predict_proba(frame)),
        pyfunc_predict_fn="predict_proba",
        serialization_format="cloudpickle",
    )
    sk = ZooModel("sklearn-proba", batched=True)
    sk.cases = {
        f"sk-{i}": split(["city", "x"], [city, float(i) * 1.7])
        for i, city in enumerate(["paris", "lyon", "nice", "brest"])
    } | {"sk-two": split(["city", "x"], ["paris", 3.3], ["nice", 8.1])}
    sk.cases["sk-wrong-column"] = split(["town", "x"], ["paris", 1.0])
    logged[sk.name] = (sk, info.model_uri)

    x_frame = pd.DataFrame({"x": [1.0, 2.0]})
    pair = ZooModel("params-pair", batched=True, opt_in=True)
    info = mlflow.pyfunc.log_model(
        name="params-pair",
        python_model=ScaledPair(),
        signature=infer_signature(
            x_frame, ScaledPair().predict(None, x_frame), params={"scale": 1.0}
        ),
    )
    pair.cases = {f"pair-{i}": split(["x"], [i * 0.5]) for i in range(4)}
    pair.cases["pair-params"] = split(["x"], [2.0]) | {"params": {"scale": 3.0}}
    logged[pair.name] = (pair, info.model_uri)

    tensor = np.array([[1.0, 2.0], [3.0, 4.0]])
    sums = ZooModel("tensor-sums", batched=False, opt_in=True)
    info = mlflow.pyfunc.log_model(
        name="tensor-sums",
        python_model=RowSums(),
        signature=infer_signature(tensor, RowSums().predict(None, tensor)),
    )
    sums.cases = {f"tensor-{i}": {"inputs": [[float(i), 0.25]]} for i in range(3)}
    sums.cases["tensor-two"] = {"inputs": [[1.0, 1.0], [2.5, 0.5]]}
    logged[sums.name] = (sums, info.model_uri)

    dates = pd.DataFrame(
        {"ts": pd.to_datetime(["2024-02-13", "2024-01-02"]), "a": [1.0, 2.0], "opt": ["x", None]}
    )
    day = ZooModel("datetime-optional", batched=False, opt_in=True)
    info = mlflow.pyfunc.log_model(
        name="datetime-optional",
        python_model=DayOfYear(),
        signature=infer_signature(dates, DayOfYear().predict(None, dates)),
    )
    day.cases = {
        "day-first": split(["ts", "a", "opt"], ["13/02/2024", 1.0, "x"]),
        "month-first": split(["ts", "a", "opt"], ["01/02/2024", 1.0, "x"]),
        "no-optional": split(["ts", "a"], ["2024-03-04", 2.0]),
    }
    logged[day.name] = (day, info.model_uri)

    picky = ZooModel("raises", batched=True, opt_in=True)
    info = mlflow.pyfunc.log_model(
        name="raises",
        python_model=Picky(),
        signature=infer_signature(x_frame, Picky().predict(None, x_frame)),
    )
    picky.cases = {f"ok-{i}": split(["x"], [float(i)]) for i in range(3)}
    picky.cases["negative"] = split(["x"], [-1.0])
    logged[picky.name] = (picky, info.model_uri)

    share = ZooModel("share-of-batch", batched=False)
    info = mlflow.pyfunc.log_model(
        name="share-of-batch",
        python_model=ShareOfBatch(),
        signature=infer_signature(x_frame, ShareOfBatch().predict(None, x_frame)),
    )
    share.cases = {f"share-{i}": split(["x"], [1.0 + i], [3.0]) for i in range(3)}
    logged[share.name] = (share, info.model_uri)
    return logged
