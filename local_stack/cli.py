"""``stack-local``: the demo, and the local stack kept running in the background."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from local_stack.processes import (
    start_serving,
    start_tracking_server,
    stop_group,
    wait_until_up,
)
from local_stack.settings import LocalStackSettings
from stack_common.errors import cli_errors
from stack_common.logs import setup_logging


def _state_file(root: Path) -> Path:
    return root / "run" / "services.json"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Run the stack as local processes (STACK_DATA_DIR holds all state)."""
    setup_logging(os.environ.get("LOG_LEVEL", "WARNING"))


@cli.command()
@cli_errors
def demo() -> None:
    """Start, train, register, promote, serve, predict, stop: the whole story."""
    from local_stack.demo import run_demo
    from promotion.settings import PromotionSettings
    from stack_common.tracking import apply_client_defaults

    settings = LocalStackSettings.from_env()
    promoted_by = PromotionSettings.from_env().promoted_by  # PROMOTED_BY, as stack-registry's
    apply_client_defaults()
    run_demo(settings.data_dir, settings.model_name, promoted_by=promoted_by)


@cli.command()
@cli_errors
def up() -> None:
    """Start the tracking server (UI) and serving in the background."""
    settings = LocalStackSettings.from_env()
    root = settings.data_dir
    state = _state_file(root)
    if state.exists():
        raise click.ClickException(f"the local stack already runs ({state}); 'make down' first")
    tracking = start_tracking_server(root, settings.ui_port, root / "logs" / "tracking-server.log")
    pids = {"tracking-server": tracking.process.pid}
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(pids))
    wait_until_up(tracking, "/health", 180)
    # Serving waits for a production version instead of exiting, so `up` works before training.
    serving = start_serving(
        root,
        tracking.url,
        settings.model_name,
        settings.serving_port,
        root / "logs" / "serving.log",
        extra_env={"SERVING_ALIAS_WAIT_SECONDS": "31536000"},
    )
    pids["serving"] = serving.process.pid
    state.write_text(json.dumps(pids))
    click.echo(f"MLflow UI   {tracking.url}")
    click.echo(f"serving     {serving.url}/invocations (answers once a version is in production)")
    click.echo(f"logs        {root / 'logs'}")


@cli.command()
@cli_errors
def down() -> None:
    """Stop what 'up' started; the data folder stays."""
    root = LocalStackSettings.from_env().data_dir
    state = _state_file(root)
    if not state.exists():
        click.echo("the local stack is not running")
        return
    for name, pid in json.loads(state.read_text()).items():
        if ours(pid, root):
            stop_group(pid)
            click.echo(f"stopped {name} (pid {pid})")
        else:
            click.echo(f"{name} (pid {pid}) was not running")
    state.unlink()


def ours(pid: int, root: Path) -> bool:
    """Whether ``pid`` is still a service of this data folder (a PID can be reused)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"STACK_DATA_DIR={root}".encode() in environ
