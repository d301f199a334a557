"""``python -m tracking_server.bootstrap_users``: the stack's users and what each may do.

The one-shot ``create-users`` job of the Compose stack, also run by hand against a local
server started with ``MLFLOW_AUTH=true``. As the admin (``MLFLOW_AUTH_ADMIN_USERNAME`` /
``MLFLOW_AUTH_ADMIN_PASSWORD``), through MLflow's own auth client, it

1. creates the experiment (``MLFLOW_EXPERIMENT_NAME``) and the registered model
   (``MODEL_NAME``) unless they exist: permissions can only be granted on what exists;
2. creates each user of :data:`ROLES` whose password is set (``STACK_<ROLE>_PASSWORD``; name
   ``STACK_<ROLE>_USERNAME``, default the role), or sets the password of one that exists, so
   the environment stays the truth (rotation: change it, run the job again);
3. grants each user exactly its permissions on the experiment and the model (the scrape-only
   ``metrics`` user gets none: the tracking server's stack-auth app lets it GET ``/metrics``
   and nothing else, when started with ``STACK_METRICS_USERNAME`` naming it).

With ``default_permission = NO_PERMISSIONS`` (the launcher's default) a user can do nothing
else with them. It is idempotent: a second run changes nothing and says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

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
from tracking_server.roles import JOB_ROLES, ROLES

logger = logging.getLogger("tracking_server.bootstrap_users")

MODEL_DESCRIPTION = "Exam grade (0-100) predicted from study hours."

# The users this job keeps as the environment says (STACK_<ROLE>_USERNAME / _PASSWORD): the
# shared job users. People get their own users with `stack-users` (tracking_server/users_cli.py).
BOOTSTRAPPED_ROLES: tuple[str, ...] = ("trainer", "promoter", *JOB_ROLES)


@dataclass(frozen=True)
class Account:
    role: str
    username: str
    password: str


class UsersSettings(ClientSettings):
    """The users job's configuration: the admin who acts, and a user name and password per role
    (``STACK_<ROLE>_USERNAME`` / ``STACK_<ROLE>_PASSWORD``)."""

    experiment_name: str = env("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT_NAME)
    """The experiment the trainer is granted."""
    admin_username: str = env("MLFLOW_AUTH_ADMIN_USERNAME", DEFAULT_ADMIN_USERNAME)
    """The admin the job logs in as."""
    admin_password: SecretStr | None = env("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    """The admin's password."""
    trainer_username: str = env("STACK_TRAINER_USERNAME", "trainer")
    """The training user to create."""
    trainer_password: SecretStr | None = env("STACK_TRAINER_PASSWORD", None)
    """Its password (unset: not created)."""
    promoter_username: str = env("STACK_PROMOTER_USERNAME", "promoter")
    """The promotion user to create."""
    promoter_password: SecretStr | None = env("STACK_PROMOTER_PASSWORD", None)
    """Its password (unset: not created)."""
    serving_username: str = env("STACK_SERVING_USERNAME", "serving")
    """The read-only serving user to create."""
    serving_password: SecretStr | None = env("STACK_SERVING_PASSWORD", None)
    """Its password (unset: not created)."""
    metrics_username: str = env("STACK_METRICS_USERNAME", "metrics")
    """The user Prometheus scrapes /metrics as."""
    metrics_password: SecretStr | None = env("STACK_METRICS_PASSWORD", None)
    """Its password (unset: not created)."""

    def accounts(self) -> list[Account]:
        """The users to create: every role whose ``STACK_<ROLE>_PASSWORD`` is set."""
        accounts = []
        for role in BOOTSTRAPPED_ROLES:
            prefix = f"STACK_{role.upper()}"
            secret: SecretStr | None = getattr(self, f"{role}_password")
            password = secret.get_secret_value() if secret is not None else ""
            if not password:
                logger.warning("no %s user: %s_PASSWORD is not set", role, prefix)
                continue
            if len(password) < MIN_PASSWORD_LENGTH:
                raise ConfigError(
                    f"{prefix}_PASSWORD has {len(password)} characters, MLflow needs at least "
                    f"{MIN_PASSWORD_LENGTH}; set a longer one, e.g. `openssl rand -hex 16`"
                )
            accounts.append(Account(role, getattr(self, f"{role}_username"), password))
        if not accounts:
            raise ConfigError(
                "no user to create: set STACK_TRAINER_PASSWORD, STACK_PROMOTER_PASSWORD, "
                "STACK_SERVING_PASSWORD and/or STACK_METRICS_PASSWORD"
            )
        return accounts

    def check(self) -> None:
        if self.admin_password is None:
            raise ConfigError("MLFLOW_AUTH_ADMIN_PASSWORD is not set; the admin creates the users")
        self.accounts()


def _error_code(exc: Exception) -> str:
    return getattr(exc, "error_code", "")


def ensure_experiment(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        logger.info("creating experiment %r", name)
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def ensure_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
        logger.info("creating registered model %r", name)
        client.create_registered_model(name, description=MODEL_DESCRIPTION)


def ensure_user(auth, account: Account) -> str:
    """Create the user, or give an existing one the configured password; never an admin."""
    from mlflow.exceptions import MlflowException

    try:
        user = auth.get_user(account.username)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
        auth.create_user(account.username, account.password)
        return "created"
    auth.update_user_password(account.username, account.password)
    if user.is_admin:
        auth.update_user_admin(account.username, False)
        return "exists, password set, admin rights removed"
    return "exists, password set"


def ensure_permission(auth, username: str, resource_type: str, resource_id: str, wanted: str):
    """Grant ``wanted`` unless the user already has exactly that; replace another grant."""
    from mlflow.exceptions import MlflowException

    current = auth.get_user_permission(username, resource_type, resource_id).permission
    if current == wanted:
        return False
    try:
        auth.grant_user_permission(username, resource_type, resource_id, wanted)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, wanted)
    return True


def check_admin(auth, username: str) -> None:
    """Fail in one line when the admin's credentials are refused."""
    from mlflow.exceptions import MlflowException

    try:
        user = auth.get_user(username)
    except MlflowException as exc:
        text = str(exc)
        if "401" in text or _error_code(exc) == "UNAUTHENTICATED":
            raise StackError(
                f"the tracking server refused the admin {username!r} (401); "
                "MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD must be the server's"
            ) from None
        if "404" in text and "users/get" in text:
            raise StackError(
                "the tracking server has no basic auth (no /api/2.0/mlflow/users); start it "
                "with MLFLOW_AUTH=true"
            ) from None
        raise
    if not user.is_admin:
        raise StackError(f"user {username!r} is not an admin; use the admin's credentials")


def admin_credentials(settings: UsersSettings) -> dict[str, str]:
    """MLflow's clients (tracking and auth) read the credentials from these variables: the job's
    ``main`` sets them once, at start, before any MLflow call."""
    password = settings.admin_password
    return {
        "MLFLOW_TRACKING_USERNAME": settings.admin_username,
        "MLFLOW_TRACKING_PASSWORD": password.get_secret_value() if password is not None else "",
    }


def bootstrap(settings: UsersSettings) -> list[str]:
    """Create the experiment, the model, the users and their grants; one line per user.

    MLflow's client must already act as the admin (:func:`admin_credentials`).
    """
    admin = settings.admin_username
    accounts = settings.accounts()
    tracking_uri = settings.tracking_uri
    experiment_name = settings.experiment_name
    model_name = settings.model_name
    client = connect(tracking_uri, settings.server_wait_s)
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    check_admin(auth, admin)

    experiment_id = ensure_experiment(client, experiment_name)
    ensure_model(client, model_name)
    # The MLflow roles people are given (stack-users, sign-in) follow the table too.
    from tracking_server.people import sync_roles

    sync_roles(auth, experiment_id, model_name)
    lines = []
    for account in accounts:
        role = ROLES[account.role]
        outcome = ensure_user(auth, account)
        if role.experiment is None or role.model is None:
            changed = [outcome != "exists, password set"]
            grants = "no permissions"
        else:
            changed = [
                ensure_permission(
                    auth, account.username, "experiment", experiment_id, role.experiment
                ),
                ensure_permission(
                    auth, account.username, "registered_model", model_name, role.model
                ),
            ]
            grants = (
                f"experiment {experiment_name!r} {role.experiment}, model {model_name!r} "
                f"{role.model}"
            )
        lines.append(
            f"user {account.username!r} ({account.role}: {role.does}): {outcome}; "
            f"{grants}{'' if any(changed) else ' (unchanged)'}"
        )
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cli_errors
def main() -> None:
    """Create the stack's users (trainer, promoter, serving, metrics) and grant their permissions.

    Needs MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD, MODEL_NAME,
    MLFLOW_EXPERIMENT_NAME and STACK_<ROLE>_USERNAME/_PASSWORD (see .env.example; roles
    trainer, promoter, serving, metrics).
    """
    setup_logging()
    settings = UsersSettings.from_env()
    apply_client_defaults()
    # Once, at start: this process acts as the admin, whoever MLFLOW_TRACKING_USERNAME names.
    os.environ.update(admin_credentials(settings))
    for line in bootstrap(settings):
        click.echo(line)


if __name__ == "__main__":
    main()
