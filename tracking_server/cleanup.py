"""``stack-cleanup``: keep the bucket's cost in check.

The artifact bucket only grows by itself: MLflow's delete of a run or an experiment is a soft
delete (the UI's bin), whose files stay in the bucket, and every registered version stays
forever. Two jobs, both the operator's (admin credentials, the backend store's URI):

* ``gc``: MLflow's own garbage collection (``mlflow gc``) of runs, experiments and logged models
  deleted more than ``STACK_GC_OLDER_THAN_DAYS`` ago: their rows and their files in the bucket go
  for good. A deleted run stays restorable until then.
* ``retention``: an optional rule for registered versions that carry no alias and are older than
  ``STACK_RETENTION_DAYS``, never one that is or was promoted within that window (the
  ``promoted_at``/``rolled_back_at`` tags of ``stack-registry``, or the tracking server's
  ``stack.promoted_at``). Dry run first: without ``--apply`` it lists exactly what it would
  delete. Every deletion is one line on the ``tracking_server.audit`` logger. The version's
  logged model is deleted with it (soft) when no other version uses it, so the next ``gc`` frees
  its files.

``schedule`` runs both in a loop (the Compose ``cleanup`` service); Kubernetes runs ``gc`` (and
``retention`` when set) from a CronJob. See docs/buckets.md.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from stack_common.errors import StackError, cli_errors
from stack_common.logs import setup_logging
from stack_common.settings import ClientSettings, env
from stack_common.tracking import apply_client_defaults, connect

logger = logging.getLogger("tracking_server.cleanup")
audit_logger = logging.getLogger("tracking_server.audit")

DAY_MS = 86_400_000
# Tags that say a version was put in (or back in) production, and when.
PROMOTION_TAGS = ("promoted_at", "rolled_back_at", "stack.promoted_at")
# What ``mlflow gc`` prints for each thing it removed for good.
GC_DELETED = re.compile(
    r"^(Run|Experiment|Logged model) with ID (\S+) has been permanently deleted"
)


def _sqlite_in_data_dir(data: dict[str, Any]) -> str:
    return f"sqlite:///{data['stack_data_dir'] / 'mlflow.db'}"


class CleanupSettings(ClientSettings):
    """The clean-up jobs: the backend store (for ``mlflow gc``), the tracking server (as an
    admin, through ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``) and the windows."""

    backend_store_uri: str = env(
        "MLFLOW_BACKEND_STORE_URI",
        default_factory=_sqlite_in_data_dir,
        description="The tracking server's backend store: gc deletes rows there.",
    )
    gc_older_than_days: float = env(
        "STACK_GC_OLDER_THAN_DAYS",
        30.0,
        ge=0,
        description="gc removes what was deleted more than this many days ago (0: all).",
    )
    retention_days: float | None = env(
        "STACK_RETENTION_DAYS",
        None,
        gt=0,
        description="Unset: no retention. Else: unaliased versions older than this go.",
    )
    interval_hours: float = env(
        "STACK_CLEANUP_INTERVAL_HOURS",
        24.0,
        gt=0,
        description="How often the schedule command runs gc (and retention).",
    )


@dataclass(frozen=True)
class Removal:
    """One version the retention rule deletes."""

    model: str
    version: str
    created: datetime
    source: str

    @property
    def logged_model_id(self) -> str | None:
        if not self.source.startswith("models:/m-"):
            return None
        return self.source.removeprefix("models:/").split("/", 1)[0]


def _promoted_ms(tags: Mapping[str, str]) -> float | None:
    """When the version was last put in production, from its tags (None: never, as far as the
    tags say)."""
    latest = None
    for key in PROMOTION_TAGS:
        raw = tags.get(key)
        if not raw:
            continue
        try:
            when = float(raw) if raw.isdigit() else datetime.fromisoformat(raw).timestamp() * 1000
        except ValueError:
            return float("inf")  # unreadable: treat as promoted now, keep the version
        latest = when if latest is None else max(latest, when)
    return latest


def retention_plan(versions: Iterable[Any], days: float, now_ms: float) -> list[Removal]:
    """The versions the rule removes: no alias, created and last changed more than ``days``
    ago, and not promoted within that window."""
    cutoff = now_ms - days * DAY_MS
    plan = []
    for mv in versions:
        if mv.aliases:
            continue
        if mv.creation_timestamp >= cutoff or (mv.last_updated_timestamp or 0) >= cutoff:
            continue
        promoted = _promoted_ms(mv.tags or {})
        if promoted is not None and promoted >= cutoff:
            continue
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
        plan.append(Removal(mv.name, str(mv.version), created, mv.source or ""))
    return sorted(plan, key=lambda r: (r.model, int(r.version)))


def all_versions(client: Any, models: Sequence[str] | None) -> list[Any]:
    """Every version of the named models (default: of every registered model)."""
    if models:
        names = list(models)
    else:
        names = [m.name for m in _all_pages(client.search_registered_models)]
    versions = []
    for name in names:
        found = _all_pages(client.search_model_versions, filter_string=f"name = '{_quote(name)}'")
        # search_model_versions leaves out the aliases and some tags: read each version.
        versions += [client.get_model_version(name, mv.version) for mv in found]
    return versions


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'")


def _all_pages(search: Any, **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = search(max_results=100, page_token=token, **kwargs)
        items += list(page)
        token = page.token
        if not token:
            return items


def apply_retention(client: Any, plan: Sequence[Removal], actor: str) -> None:
    """Delete the planned versions and, when no version is left that uses it, each one's
    logged model (a soft delete: ``gc`` frees its files)."""
    for removal in plan:
        client.delete_model_version(removal.model, removal.version)
        _audit("delete_model_version", removal.model, removal.version, actor)
        model_id = removal.logged_model_id
        if model_id and not _still_used(client, removal.source):
            client.delete_logged_model(model_id)
            _audit("delete_logged_model", removal.model, model_id, actor)


def _still_used(client: Any, source: str) -> bool:
    found = client.search_model_versions(filter_string=f"source = '{_quote(source)}'")
    return len(list(found)) > 0


def _audit(action: str, model: str, what: str, actor: str) -> None:
    audit_logger.info(
        "allowed %s %r: %r by %r (retention)",
        action,
        model,
        what,
        actor,
        extra={
            "audit": True,
            "action": action,
            "model": model,
            "target": what,
            "user": actor,
            "outcome": "allowed",
            "reason": "retention",
        },
    )


def gc_command(settings: CleanupSettings, older_than_days: float) -> list[str]:
    """``mlflow gc`` for this store: MLflow's public command, so its rules (only what is in the
    deleted stage, only what is old enough) stay MLflow's."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "gc",
        "--backend-store-uri",
        settings.backend_store_uri,
        "--tracking-uri",
        settings.tracking_uri,
    ]
    if older_than_days > 0:
        cmd += ["--older-than", f"{older_than_days:g}d"]
    return cmd


def versions_on_deleted_files(client: Any, versions: Iterable[Any]) -> list[str]:
    """Registered versions whose files belong to a deleted run or logged model.

    MLflow's gc looks only at the deleted stage: it would remove such a version's files with
    the run, and serving could then no longer load it. The stack refuses to run gc until the
    owner restores the run (or an admin deletes the version).
    """
    from mlflow.exceptions import MlflowException

    found = []
    for mv in versions:
        source = mv.source or ""
        label = f"{mv.name} version {mv.version}"
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
            try:
                client.get_logged_model(model_id)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    found.append(f"{label} (logged model {model_id} is deleted)")
                    continue
                raise
        elif (
            mv.run_id
            and (source.startswith("runs:/") or mv.run_id in source)
            and client.get_run(mv.run_id).info.lifecycle_stage == "deleted"
        ):
            found.append(f"{label} (run {mv.run_id} is deleted)")
    return found


def check_nothing_registered_is_deleted(client: Any) -> None:
    at_risk = versions_on_deleted_files(client, all_versions(client, None))
    if at_risk:
        raise StackError(
            f"gc would remove the files of {', '.join(at_risk)}; restore the run or logged "
            "model in the MLflow UI, or delete the version, then run gc again"
        )


def run_gc(settings: CleanupSettings, older_than_days: float) -> list[str]:
    """Run MLflow's gc, unless a registered version's files would go with it; the IDs it
    removed for good (each also an audit line)."""
    check_nothing_registered_is_deleted(connect(settings.tracking_uri, settings.server_wait_s))
    result = subprocess.run(
        gc_command(settings, older_than_days),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri},
    )
    removed = []
    for line in result.stdout.splitlines():
        match = GC_DELETED.match(line.strip())
        if match:
            kind, ident = match.groups()
            removed.append(ident)
            audit_logger.info(
                "allowed gc %s %s (deleted more than %g days ago)",
                kind.lower(),
                ident,
                older_than_days,
                extra={"audit": True, "action": "gc", "target": ident, "outcome": "allowed"},
            )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise StackError(f"mlflow gc failed: {reason}")
    return removed


def _settings() -> CleanupSettings:
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    return CleanupSettings.from_env()


def _actor() -> str:
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or "cleanup"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Free the artifact bucket: MLflow's gc, and an optional retention rule for versions."""
    apply_client_defaults()


days_option = click.option(
    "--older-than-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Override the window (default: STACK_GC_OLDER_THAN_DAYS / STACK_RETENTION_DAYS).",
)


@cli.command("gc")
@days_option
@cli_errors
def gc_cmd(older_than_days: float | None) -> None:
    """Remove for good what was deleted more than N days ago, files in the bucket included."""
    settings = _settings()
    days = settings.gc_older_than_days if older_than_days is None else older_than_days
    removed = run_gc(settings, days)
    click.echo(f"gc: {len(removed)} removed for good (deleted more than {days:g} days ago)")


@cli.command("retention")
@days_option
@click.option("--model-name", "models", multiple=True, help="Only these models (default: all).")
@click.option("--apply", "apply_", is_flag=True, help="Delete; without it, only list (dry run).")
@cli_errors
def retention_cmd(older_than_days: float | None, models: tuple[str, ...], apply_: bool) -> None:
    """List (or with --apply, delete) unaliased versions older than N days."""
    settings = _settings()
    days = older_than_days if older_than_days is not None else settings.retention_days
    if days is None:
        raise StackError("retention is off: set STACK_RETENTION_DAYS or pass --older-than-days")
    client = connect(settings.tracking_uri, settings.server_wait_s)
    plan = retention_plan(all_versions(client, models), days, time.time() * 1000)
    verb = "deleting" if apply_ else "would delete"
    for removal in plan:
        click.echo(f"{verb} {removal.model} version {removal.version} ({removal.created:%Y-%m-%d})")
    if apply_:
        apply_retention(client, plan, _actor())
    click.echo(f"retention: {len(plan)} version(s) {'deleted' if apply_ else 'to delete'}")


@cli.command("schedule")
@cli_errors
def schedule_cmd() -> None:
    """Run gc (and retention, when STACK_RETENTION_DAYS is set) every interval, for ever."""
    settings = _settings()
    while True:
        try:
            removed = run_gc(settings, settings.gc_older_than_days)
            logger.info("gc: %d removed for good", len(removed))
            if settings.retention_days is not None:
                client = connect(settings.tracking_uri, settings.server_wait_s)
                plan = retention_plan(
                    all_versions(client, None), settings.retention_days, time.time() * 1000
                )
                apply_retention(client, plan, _actor())
                logger.info("retention: %d version(s) deleted", len(plan))
        except Exception as exc:  # a daemon: the next round may go through
            logger.error("clean-up failed: %s; next try in %g h", exc, settings.interval_hours)
        time.sleep(settings.interval_hours * 3600)


def main() -> None:
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
