"""Whether a served version's requests may be merged into one model call.

Merging concurrent requests assumes what MLServer, Triton and TF Serving ask a model to declare
before they batch it: each output row depends on its input row alone. That holds for the
estimators of scikit-learn, XGBoost, LightGBM and CatBoost, whose ``predict`` maps rows to rows;
it does not hold for an arbitrary ``PythonModel`` (one that normalises by the batch, ranks or
deduplicates its input answers differently beside other clients' rows). So batching is on by
default only for those flavours, and a version opts in or out with the tag
``serving.batching=true|false`` on the version (or, for every version, on the registered model).

Merging also assumes each column is parsed the same alone and merged: a datetime column is not
(``pd.to_datetime`` takes its format from the first row of the merged frame, so a neighbour's
``13/02/2024`` turns this request's ``01/02/2024`` from 2 January into 1 February), nor are
binary, array, object or tensor inputs. Those models are never merged, opt-in or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BATCHING_TAG = "serving.batching"
# The pyfunc loaders of flavours whose predict is row-wise.
ROW_WISE_LOADERS = {
    "mlflow.sklearn": "scikit-learn",
    "mlflow.xgboost": "XGBoost",
    "mlflow.lightgbm": "LightGBM",
    "mlflow.catboost": "CatBoost",
}
# Schema column types whose parsing of one row never depends on another row.
ROW_SAFE_TYPES = frozenset({"double", "float", "long", "integer", "boolean", "string"})


@dataclass(frozen=True)
class Decision:
    batched: bool
    why: str


def opt_in_from_tags(version_tags: dict[str, str], model_tags: dict[str, str]) -> bool | None:
    """The version's ``serving.batching`` tag, else the registered model's; None: neither."""
    for tags in (version_tags, model_tags):
        raw = str(tags.get(BATCHING_TAG, "")).strip().lower()
        if raw in ("true", "1", "yes", "on"):
            return True
        if raw in ("false", "0", "no", "off"):
            return False
    return None


def loader_module(flavors: dict[str, Any]) -> str | None:
    pyfunc = flavors.get("python_function") or {}
    return pyfunc.get("loader_module")


def row_safe_schema(schema: Any) -> bool:
    """Whether every input column is of a type parsed row by row (no schema: pandas infers
    from JSON types, which the batcher only merges when they agree)."""
    if schema is None:
        return True
    if getattr(schema, "is_tensor_spec", lambda: False)():
        return False
    for spec in schema.inputs:
        kind = getattr(spec, "type", None)
        name = getattr(kind, "name", None) or str(kind)
        if name not in ROW_SAFE_TYPES:
            return False
    return True


def decide(flavors: dict[str, Any], schema: Any, opt_in: bool | None) -> Decision:
    """Batched or not, and why in a few words (for /health and the log)."""
    if not row_safe_schema(schema):
        return Decision(False, "an input column's parsing depends on other rows")
    if opt_in is False:
        return Decision(False, f"opted out ({BATCHING_TAG}=false)")
    if opt_in:
        return Decision(True, f"opted in ({BATCHING_TAG}=true)")
    loader = loader_module(flavors)
    if loader in ROW_WISE_LOADERS:
        return Decision(True, f"{ROW_WISE_LOADERS[loader]} predicts row by row")
    return Decision(False, f"not a row-wise flavour ({loader}); opt in with {BATCHING_TAG}=true")
