"""A model that loads but cannot predict: serving must refuse to switch to it.

Logged as MLflow "model from code", so the scoring process needs nothing from the tests.
"""

import mlflow
from mlflow.pyfunc import PythonModel


class BrokenModel(PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("this version is broken on purpose")


mlflow.models.set_model(BrokenModel())
