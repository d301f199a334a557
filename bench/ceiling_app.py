"""The ceiling of bench/serving.py: a minimal Starlette app calling scikit-learn on a NumPy
array, with none of MLflow's parsing, schema enforcement or pyfunc wrapping.

    MODEL_PATH=<model folder> uvicorn bench.ceiling_app:app --no-access-log
"""

from __future__ import annotations

import json
import os

import mlflow.sklearn
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

model = mlflow.sklearn.load_model(os.environ["MODEL_PATH"])


async def invocations(request: Request) -> Response:
    payload = json.loads(await request.body())
    features = np.asarray(payload["dataframe_split"]["data"], dtype=float)
    predictions = model.predict(features).tolist()
    return Response(json.dumps({"predictions": predictions}), media_type="application/json")


async def ping(request: Request) -> Response:
    return Response("\n", media_type="application/json")


app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])
