"""``stack-registry``: promote, roll back and inspect the served model's aliases."""

from __future__ import annotations

import os

import click

from promotion.aliases import (
    PRODUCTION,
    AliasMove,
    gate_metric,
    promote,
    require_model,
    rollback,
)
from promotion.settings import PromotionSettings
from stack_common.errors import cli_errors
from stack_common.logs import setup_logging
from stack_common.tracking import apply_client_defaults, connect


def _settings() -> PromotionSettings:
    setup_logging(os.environ.get("LOG_LEVEL", "WARNING"))
    return PromotionSettings.from_env()


def _client(settings: PromotionSettings):
    return connect(settings.tracking_uri, settings.server_wait_s)


def _report(move: AliasMove) -> None:
    was = f" (was {move.replaced})" if move.replaced else ""
    click.echo(f"{move.model_name}@{PRODUCTION} -> version {move.version}{was}: {move.reason}")


model_option = click.option(
    "--model-name",
    default=None,
    show_default="MODEL_NAME",
    help="Registered model name.",
)
reason_option = click.option("--reason", default="", help="Why; stored as a version tag.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Promote and roll back versions of the registered model (MLFLOW_TRACKING_URI)."""
    apply_client_defaults()


@cli.command("promote")
@model_option
@click.option("--version", help="Version to promote; default: the one with alias 'challenger'.")
@click.option(
    "--force",
    is_flag=True,
    help="Promote even if the gate refuses: worse than production, or not enough or bad live "
    "evidence (PROMOTION_MIN_LIVE_REQUESTS); what the gate said is kept in promoted_reason.",
)
@reason_option
@cli_errors
def promote_cmd(model_name: str | None, version: str | None, force: bool, reason: str) -> None:
    """Point 'production' at a version if it is at least as good as the current one.

    With PROMOTION_MIN_LIVE_REQUESTS > 0 it must also have enough live requests (shadow and
    canary) with a low enough error rate and disagreement (PROMOTION_LIVE_METRICS_URL).
    """
    from promotion.live import live_check

    settings = _settings()
    client = _client(settings)
    _report(
        promote(
            client,
            model_name or settings.model_name,
            version=version,
            force=force,
            reason=reason,
            actor=settings.promoted_by,
            live_check=live_check(settings),
        )
    )


@cli.command("rollback")
@model_option
@reason_option
@cli_errors
def rollback_cmd(model_name: str | None, reason: str) -> None:
    """Point 'production' back at the version it replaced (alias 'previous')."""
    settings = _settings()
    name = model_name or settings.model_name
    _report(rollback(_client(settings), name, reason=reason, actor=settings.promoted_by))


@cli.command("status")
@model_option
@cli_errors
def status_cmd(model_name: str | None) -> None:
    """List the versions with their aliases and test RMSE."""
    settings = _settings()
    client = _client(settings)
    model_name = model_name or settings.model_name
    require_model(client, model_name)
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(model_name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(
        f"name='{model_name}'", order_by=["version_number DESC"]
    )
    click.echo(f"{'version':>7}  {'test_rmse':>9}  {'status':<8} aliases")
    for mv in versions:
        rmse = gate_metric(client, mv)
        shown = f"{rmse:9.4f}" if rmse is not None else f"{'-':>9}"
        names = ", ".join(sorted(aliases.get(mv.version, [])))
        click.echo(f"{mv.version:>7}  {shown}  {mv.status:<8} {names}")


@cli.command("production-version")
@model_option
@cli_errors
def production_version_cmd(model_name: str | None) -> None:
    """Print only the version that carries 'production' (for scripts)."""
    from promotion.aliases import PromotionError, version_by_alias

    settings = _settings()
    model_name = model_name or settings.model_name
    mv = version_by_alias(_client(settings), model_name, PRODUCTION)
    if mv is None:
        raise PromotionError(f"model {model_name!r} has no version with alias 'production'")
    click.echo(mv.version)


@cli.command("usage")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead.")
@cli_errors
def usage_cmd(as_json: bool) -> None:
    """Bytes in the bucket per experiment and per registered model (what the clean-up frees)."""
    import json
    from dataclasses import asdict

    from promotion.usage import experiment_usage, human, model_usage

    settings = _settings()
    client = _client(settings)
    usages = experiment_usage(client) + model_usage(client)
    for usage in sorted(usages, key=lambda u: (u.kind, -u.bytes, u.name)):
        if as_json:
            click.echo(json.dumps(asdict(usage)))
        else:
            count = "versions" if usage.kind == "model" else "runs+models"
            click.echo(
                f"{usage.kind:<10} {usage.name:<40} {human(usage.bytes):>10}  "
                f"({usage.items} {count})"
            )


@cli.command("live")
@model_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row instead.")
@cli_errors
def live_cmd(model_name: str | None, as_json: bool) -> None:
    """Production's and the challenger's live figures side by side (PROMOTION_LIVE_METRICS_URL).

    Totals since each serving replica started, summed over replicas: what the gate reads.
    """
    import json

    from promotion.aliases import version_by_alias
    from promotion.live import rows, table
    from promotion.live_source import read_samples

    settings = _settings()
    model_name = model_name or settings.model_name
    production = version_by_alias(_client(settings), model_name, PRODUCTION)
    samples = read_samples(settings.live_metrics_url, model_name)
    found = rows(samples, production.version if production else None)
    if as_json:
        for row in found:
            click.echo(json.dumps(row))
        return
    for line in table(found):
        click.echo(line)
    if not any(row["who"] == "challenger" for row in found):
        click.echo(
            "no challenger on live traffic yet: set SERVING_SHADOW_ALIAS=challenger and "
            "SERVING_SHADOW_PERCENT or SERVING_CANARY_PERCENT on serving"
        )
