"""``stack-users``: one user per person, with a stack role, managed by an admin.

The job users (trainer, promoter, serving, metrics) stay what the create-users job makes from
the environment; people get their own user here, so the audit log and the ``stack.promoted_by``
tag name a person and leaving the team is ``stack-users disable NAME``, not rotating a shared
password. Runs as the admin (``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD``)
over the REST API (tracking_server/people.py), against any stack: local, Compose, Kubernetes.
"""

from __future__ import annotations

import os
import sys

import click
from pydantic import SecretStr

from stack_common.errors import ConfigError, StackError, cli_errors
from stack_common.logs import setup_logging
from stack_common.settings import (
    DEFAULT_ADMIN_USERNAME,
    DEFAULT_EXPERIMENT_NAME,
    ClientSettings,
    env,
)
from stack_common.tracking import apply_client_defaults, connect
from tracking_server.auth import MIN_PASSWORD_LENGTH
from tracking_server.bootstrap_users import check_admin, ensure_experiment, ensure_model
from tracking_server.people import People, new_password, sync_roles
from tracking_server.roles import PERSON_ROLES, ROLES


class PeopleSettings(ClientSettings):
    """Who acts (the admin) and on what the people's roles grant (the team's experiment and
    model, ``MODEL_NAME``)."""

    experiment_name: str = env("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT_NAME)
    """The team's experiment the roles grant on."""
    admin_username: str = env("MLFLOW_AUTH_ADMIN_USERNAME", DEFAULT_ADMIN_USERNAME)
    """The admin stack-users logs in as."""
    admin_password: SecretStr | None = env("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    """The admin's password."""


def _people(settings: PeopleSettings) -> People:
    if settings.admin_password is None:
        raise ConfigError("MLFLOW_AUTH_ADMIN_PASSWORD is not set; stack-users acts as the admin")
    # Once, at start: this process acts as the admin, whoever MLFLOW_TRACKING_USERNAME names.
    os.environ["MLFLOW_TRACKING_USERNAME"] = settings.admin_username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.admin_password.get_secret_value()
    client = connect(settings.tracking_uri, settings.server_wait_s)
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=settings.tracking_uri)
    check_admin(auth, settings.admin_username)
    experiment_id = ensure_experiment(client, settings.experiment_name)
    ensure_model(client, settings.model_name)
    return People(auth, sync_roles(auth, experiment_id, settings.model_name))


def _password(from_stdin: bool) -> tuple[str, bool]:
    """The password to set, and whether it was generated (then it is shown, once)."""
    if not from_stdin:
        return new_password(), True
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StackError(
            f"the password read from standard input has {len(password)} characters; MLflow "
            f"needs at least {MIN_PASSWORD_LENGTH}"
        )
    return password, False


ROLE_CHOICE = click.Choice(PERSON_ROLES)
ROLE_HELP = "; ".join(f"{name}: {ROLES[name].does}" for name in PERSON_ROLES)
STDIN_OPTION = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (default: generate one and print it once).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Manage people's users on the tracking server (as the admin).

    Needs MLFLOW_TRACKING_URI and MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD; the
    roles grant on MLFLOW_EXPERIMENT_NAME and MODEL_NAME (see .env.example).
    """
    setup_logging()
    apply_client_defaults()
    ctx.obj = PeopleSettings.from_env()


@cli.command()
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, required=True, help=ROLE_HELP)
@STDIN_OPTION
@click.pass_obj
@cli_errors
def add(settings: PeopleSettings, name: str, role: str, password_stdin: bool) -> None:
    """Create NAME's user with ROLE."""
    password, generated = _password(password_stdin)
    _people(settings).add(name, role, password)
    click.echo(f"user {name!r} added as {role} ({ROLES[role].does})")
    if generated:
        click.echo(f"password (shown once, give it to {name}): {password}")


@cli.command("list")
@click.pass_obj
@cli_errors
def list_people(settings: PeopleSettings) -> None:
    """Every user, its role and its grants outside the roles."""
    for person in _people(settings).list():
        grants = f"  [{'; '.join(person.grants)}]" if person.grants else ""
        click.echo(f"{person.username:<24} {person.role:<9}{grants}")


@cli.command("set-role")
@click.argument("name")
@click.argument("role", type=ROLE_CHOICE)
@click.pass_obj
@cli_errors
def set_role(settings: PeopleSettings, name: str, role: str) -> None:
    """Give NAME exactly ROLE (the other stack roles are taken away)."""
    before = _people(settings).set_role(name, role)
    click.echo(f"user {name!r}: {before} -> {role}")


@cli.command()
@click.argument("name")
@click.pass_obj
@cli_errors
def disable(settings: PeopleSettings, name: str) -> None:
    """Take every right and the password from NAME (runs and versions they made stay)."""
    _people(settings).disable(name)
    click.echo(f"user {name!r} disabled: no role, no grant, password replaced")


@cli.command("reset-password")
@click.argument("name")
@STDIN_OPTION
@click.pass_obj
@cli_errors
def reset_password(settings: PeopleSettings, name: str, password_stdin: bool) -> None:
    """Set a new password for NAME."""
    password, generated = _password(password_stdin)
    _people(settings).reset_password(name, password)
    click.echo(f"user {name!r}: password reset")
    if generated:
        click.echo(f"password (shown once, give it to {name}): {password}")


if __name__ == "__main__":
    cli()
