"""``stack-train``: train, log and register one version of the grade model."""

from __future__ import annotations

import os

import click

from stack_common.errors import cli_errors
from stack_common.logs import setup_logging
from stack_common.tracking import apply_client_defaults
from training.pipeline import run_training
from training.settings import TrainingSettings


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_path", type=click.Path(), help="CSV to train on (TRAINING_DATA).")
@click.option("--model-name", help="Registered model name (MODEL_NAME).")
@click.option("--experiment", help="MLflow experiment (MLFLOW_EXPERIMENT_NAME).")
@click.option(
    "--print-version", is_flag=True, help="Print only the new model version, for scripts."
)
@cli_errors
def main(
    data_path: str | None, model_name: str | None, experiment: str | None, print_version: bool
) -> None:
    """Train the exam-grade regressor and register it with the alias 'challenger'.

    Settings come from the environment (MLFLOW_TRACKING_URI, MODEL_NAME, TRAINING_DATA, ...);
    the options override them.
    """
    setup_logging()
    apply_client_defaults()
    overrides = {
        "TRAINING_DATA": data_path,
        "MODEL_NAME": model_name,
        "MLFLOW_EXPERIMENT_NAME": experiment,
    }
    env = dict(os.environ) | {k: v for k, v in overrides.items() if v}
    settings = TrainingSettings.from_env(env)
    result = run_training(settings)
    if print_version:
        click.echo(result.version)
        return
    m = result.metrics
    run_url = f"{settings.tracking_uri.rstrip('/')}/#/experiments/{result.experiment_id}"
    click.echo(
        f"run {run_url}/runs/{result.run_id}\n"
        f"registered {result.model_name!r} version {result.version} "
        f"(alias challenger), test RMSE {m['test_rmse']:.2f}, MAE {m['test_mae']:.2f}, "
        f"R2 {m['test_r2']:.3f}"
    )


if __name__ == "__main__":
    main()
