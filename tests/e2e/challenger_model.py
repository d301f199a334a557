"""Challengers for the shadow and canary stories, one file for several behaviours.

Logged as MLflow "model from code" with ``model_config={"mode": ...}``:
- ``fair``: a plausible other model (grade = 30 + 5 * hours);
- ``slow``: the same, 0.3 s per prediction;
- ``breaks``: the same for its first two predictions in a process (serving's load check and one
  live request), then raises on every one: a challenger that passed its checks and fails live.
"""

import time

import mlflow
from mlflow.pyfunc import PythonModel


class Challenger(PythonModel):
    def load_context(self, context):
        self.mode = (context.model_config or {}).get("mode", "fair")
        self.calls = 0

    def predict(self, context, model_input, params=None):
        self.calls += 1
        if self.mode == "slow":
            time.sleep(0.3)
        if self.mode == "breaks" and self.calls > 2:
            raise RuntimeError("this challenger breaks on live traffic")
        return [30.0 + 5.0 * float(hours) for hours in model_input["hours"]]


mlflow.models.set_model(Challenger())
