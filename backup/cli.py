"""``stack-backup create | list | verify ID | restore [--yes] ID`` (docs/backup.md)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from backup.settings import BackupSettings
from stack_common.errors import cli_errors
from stack_common.logs import setup_logging

P = ParamSpec("P")
R = TypeVar("R")


def _settings() -> BackupSettings:
    return BackupSettings.from_env()


def file_errors(func: Callable[P, R]) -> Callable[P, R]:
    """A file the backup cannot read or write: one line naming it, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(
                f"{exc.strerror or exc}{where}; check the folder's owner and free space"
            ) from exc

    return wrapper


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Back up and restore the stack: backend store, auth database, every artifact object."""
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))


@cli.command()
@cli_errors
@file_errors
def create() -> None:
    """Make one consistent backup; its ID is the last line printed."""
    from backup.service import create as make

    settings = _settings()
    manifest = make(settings)
    click.echo(
        f"backup complete in {settings.target}: {len(manifest.artifacts)} artifact objects, "
        f"auth database {'included' if manifest.auth else 'absent'}, {_mb(manifest.size)}"
    )
    click.echo(manifest.id)


@cli.command(name="list")
@cli_errors
@file_errors
def list_() -> None:
    """The backups in BACKUP_DIR / BACKUP_URI, oldest first."""
    from backup.service import list_backups

    settings = _settings()
    listing = list_backups(settings)
    if not listing.complete and not listing.incomplete:
        click.echo(f"no backups in {settings.target}")
        return
    click.echo(f"{'ID':<24} {'created (UTC)':<26} {'size':>10} {'objects':>8}  auth")
    for m in listing.complete:
        auth = "yes" if m.auth else "no"
        click.echo(f"{m.id:<24} {m.created:<26} {_mb(m.size):>10} {len(m.artifacts):>8}  {auth}")
    for name in listing.incomplete:
        click.echo(f"{name:<24} incomplete or unreadable: not restorable")


@cli.command()
@click.argument("backup_id", metavar="ID")
@cli_errors
@file_errors
def verify(backup_id: str) -> None:
    """Re-read every file of backup ID and check its sha256."""
    from backup.service import verify as check

    manifest = check(_settings(), backup_id)
    click.echo(f"backup {manifest.id} is intact: {len(manifest.files)} files, {_mb(manifest.size)}")


@cli.command()
@click.argument("backup_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Replace what the stack holds now.")
@cli_errors
@file_errors
def restore(backup_id: str, yes: bool) -> None:
    """Put backup ID back into a stack whose tracking server is stopped."""
    from backup.service import plan
    from backup.service import restore as put_back
    from backup.service import verify as check

    settings = _settings()
    if not yes:
        check(settings, backup_id)  # a corrupted backup fails before anything else
        current = plan(settings)
        if not current.empty:
            raise click.ClickException(
                f"the stack is not empty ({current.describe()}); restoring {backup_id} "
                "replaces both databases and overwrites differing objects: rerun with --yes"
            )
    done = put_back(settings, backup_id)
    click.echo(
        f"restored {done.manifest.id}: databases replaced, {done.written} objects written, "
        f"{done.unchanged} already intact, {done.extra} newer objects left in place"
    )


def main() -> None:
    cli()
