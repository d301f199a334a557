"""The training run: data → split → fit → evaluate → checks → log → register.

The data is validated before the tracking server is touched, so a bad CSV creates nothing. Once
the run has started, any failure ends it as FAILED (MLflow's ``start_run`` context does that),
and the model is registered only as the last step, after it passed its checks.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

from stack_common.tracking import connect
from training.data import FEATURE, TARGET, file_checksum, load_grades
from training.journal import RunJournal
from training.model import check_behaviour, evaluate, fit, split
from training.register import register_version
from training.settings import TrainingSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    run_id: str
    model_name: str
    version: str
    metrics: dict[str, float]
    experiment_id: str


def code_version() -> str:
    """The git commit when run from a checkout, else the installed package's version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return package_version("mlflow-stack")


def pip_requirements() -> list[str]:
    """Exact pins instead of MLflow's inference, which loads the model in a subprocess (slow)."""
    return [f"{p}=={package_version(p)}" for p in ("mlflow", "scikit-learn", "pandas", "numpy")]


def run_training(settings: TrainingSettings) -> TrainingResult:
    frame = load_grades(settings.data_path)
    checksum = file_checksum(settings.data_path)
    client = connect(settings.tracking_uri, settings.server_wait_s)

    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    journal = RunJournal(settings.journal_path, settings.tracking_uri)
    journal.close_orphans(client)
    experiment = mlflow.set_experiment(settings.experiment_name)
    with mlflow.start_run(tags={"code_version": code_version(), "data_sha256": checksum}) as run:
        run_id = run.info.run_id
        journal.opened(run_id)
        logger.info("run %s in experiment %r", run_id, settings.experiment_name)
        data = split(frame, settings.test_size, settings.seed)
        mlflow.log_params(
            {
                "model_type": "LinearRegression",
                "feature": FEATURE,
                "target": TARGET,
                "test_size": settings.test_size,
                "seed": settings.seed,
                "rows_train": len(data.train),
                "rows_test": len(data.test),
            }
        )
        with warnings.catch_warnings():  # a file path matches two equivalent source types
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(
                frame,
                source=str(settings.data_path.resolve()),
                targets=TARGET,
                name="grades",
                digest=checksum[:20],
            )
        mlflow.log_input(dataset, context="training")

        model = fit(data.train)
        metrics = evaluate(model, data)
        mlflow.log_metrics(metrics)
        mlflow.log_params(
            {
                "coef_hours": round(float(model.coef_[0]), 6),
                "intercept": round(float(model.intercept_), 6),
            }
        )
        check_behaviour(model)

        example = data.train[[FEATURE]].head(3)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            pip_requirements=pip_requirements(),
        )
        version = register_version(
            client,
            settings.model_name,
            info.model_uri,
            info.model_id,
            run_id,
            tags={"data_sha256": checksum, "test_rmse": f"{metrics['test_rmse']:.6f}"},
        )
    journal.closed(run_id)  # ended on the server, FINISHED or FAILED: nothing left to repair
    return TrainingResult(run_id, settings.model_name, version, metrics, experiment.experiment_id)
