"""``make demo``: the whole life of a model on one machine, then everything stopped again."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import click

from local_stack.processes import (
    Service,
    free_port,
    start_serving,
    start_tracking_server,
    wait_until_up,
)
from promotion.aliases import PromotionError, promote, version_by_alias
from stack_common.scoring import predict
from stack_common.tracking import connect
from training.pipeline import run_training
from training.settings import TrainingSettings

logger = logging.getLogger(__name__)

DEMO_HOURS = (1.0, 5.0, 10.0)


def _terminate_on_sigterm() -> None:
    """Make SIGTERM (e.g. from a CI runner) unwind like Ctrl-C, so every service is stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_demo(
    data_dir: Path,
    model_name: str,
    startup_timeout_s: float = 180.0,
    promoted_by: str | None = None,
) -> None:
    _terminate_on_sigterm()
    logs = data_dir / "logs"
    services: list[Service] = []
    try:
        click.echo(f"1/5 starting the tracking server (data in {data_dir}) ...")
        tracking = start_tracking_server(data_dir, free_port(), logs / "demo-tracking-server.log")
        services.append(tracking)
        wait_until_up(tracking, "/health", startup_timeout_s)

        click.echo("2/5 training and registering the model ...")
        env = dict(os.environ) | {"MLFLOW_TRACKING_URI": tracking.url, "MODEL_NAME": model_name}
        result = run_training(TrainingSettings.from_env(env))
        click.echo(
            f"    run {result.run_id}, version {result.version}, "
            f"test RMSE {result.metrics['test_rmse']:.2f}"
        )

        click.echo("3/5 promoting the challenger to production (champion/challenger gate) ...")
        client = connect(tracking.url, 10)
        try:
            move = promote(client, model_name, reason="make demo", actor=promoted_by)
            click.echo(f"    production -> version {move.version}: {move.reason}")
        except PromotionError as exc:
            click.echo(f"    {exc}")
        production = version_by_alias(client, model_name, "production")
        if production is None:
            raise PromotionError(f"no production version of {model_name!r} to serve")

        click.echo(
            f"4/5 serving models:/{model_name}@production (version {production.version}) ..."
        )
        serving = start_serving(
            data_dir, tracking.url, model_name, free_port(), logs / "demo-serving.log"
        )
        services.append(serving)
        wait_until_up(serving, "/ping", startup_timeout_s)

        click.echo("5/5 asking for predictions ...")
        answer = predict(serving.url, DEMO_HOURS)
        for hours, grade in zip(DEMO_HOURS, answer.grades, strict=True):
            click.echo(f"    {hours:>4g} study hours -> predicted grade {grade:5.1f}")
        click.echo(
            f"\nrun id {result.run_id} | model {model_name} version {production.version} | "
            f"UI {tracking.url}/#/models/{model_name} (stops with the demo; 'make up' keeps it)"
        )
    finally:
        for service in reversed(services):
            service.stop()
        if services:
            click.echo("stopped the demo's tracking server and serving process")
