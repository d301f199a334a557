"""MLflow's basic-auth app for the tracking server: settings, its database, its ini file.

On with ``MLFLOW_AUTH=true`` (or ``MLFLOW_APP_NAME=basic-auth``); Compose always turns it on.
The launcher then runs the ``stack-auth`` app: basic-auth with protected aliases and admin-only
hard deletes in front (tracking_server/stack_auth.py).
The launcher then refuses to start without the secrets MLflow needs, each with one line naming
the variable: ``MLFLOW_FLASK_SERVER_SECRET_KEY`` (CSRF protection of the sign-up form, the same
in every worker) and ``MLFLOW_AUTH_ADMIN_PASSWORD`` (at least 12 characters, never the old
default ``password1234``). MLflow creates the admin user from it on the first start and
ignores it afterwards, except to replace that old default.

The users and permissions live in their own database, beside the backend store: a SQLite file
in the data folder, or a PostgreSQL database ``<backend database>_auth`` on the same server
(created here if missing). Its schema is migrated before ``mlflow server`` starts, as
``mlflow db upgrade`` does for the backend store. MLflow reads everything else from an ini file
(``MLFLOW_AUTH_CONFIG_PATH``) that the launcher writes at every start into a private temporary
file (mode 600); the passwords themselves stay in the environment. See docs/security.md.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

from stack_common.errors import StackError

logger = logging.getLogger(__name__)

# The app the launcher runs when auth is on: MLflow's basic-auth plus the registry's rules
# (tracking_server/stack_auth.py). MLFLOW_APP_NAME=basic-auth asks for it too.
APP_NAME = "stack-auth"
BASIC_AUTH_APP_NAME = "basic-auth"
# Shipped as the admin password by MLflow before 3.x's fix (GHSA-gq3w-7jj3-x7gr): known to all.
LEGACY_DEFAULT_PASSWORD = "password1234"
MIN_PASSWORD_LENGTH = 12  # MLflow's own policy (mlflow.utils.validation._validate_password)
PERMISSIONS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
DEFAULT_CACHE_TTL_SECONDS = 60
MLFLOW_AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


@dataclass(frozen=True)
class AuthSettings:
    """What the basic-auth app needs besides the secrets (those stay in the environment);
    built from the tracking server's settings (``ServerSettings.auth``)."""

    database_uri: str
    admin_username: str
    default_permission: str
    # How long a worker trusts a password it has checked (MLflow's ``auth_cache_ttl_seconds``):
    # hashing it on every request costs tens of milliseconds by design. A password changed or a
    # user deleted through another worker is honoured by this one only after the TTL; 0 turns
    # the cache off.
    cache_ttl_seconds: int = DEFAULT_CACHE_TTL_SECONDS
    # Who sends a request: MLflow's password check, or tracking_server.oidc:authenticate
    # (Basic and Bearer) when STACK_OIDC_ISSUER is set (the launcher sets it).
    authorization_function: str = MLFLOW_AUTHORIZATION_FUNCTION


def default_database_uri(backend_store_uri: str, root: Path) -> str:
    """SQLite in the data folder; on a server database, ``<database>_auth`` beside it."""
    if backend_store_uri.startswith("sqlite"):
        return f"sqlite:///{root / 'basic_auth.db'}"
    url = sqlalchemy.engine.make_url(backend_store_uri)
    return url.set(database=f"{url.database or 'mlflow'}_auth").render_as_string(
        hide_password=False
    )


def ensure_database(uri: str, backend_store_uri: str) -> None:
    """Create the auth database when it does not exist yet (SQLite: its folder; PostgreSQL:
    ``CREATE DATABASE`` through the backend store's connection, whose user owns it)."""
    url = sqlalchemy.engine.make_url(uri)
    if url.get_backend_name() == "sqlite":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return
    if url.get_backend_name() != "postgresql" or not url.database:
        return  # MySQL, MSSQL: create it yourself (docs/security.md); no name: MLflow says so
    backend = sqlalchemy.engine.make_url(backend_store_uri)
    same_server = (backend.get_backend_name(), backend.host, backend.port, backend.username) == (
        "postgresql",
        url.host,
        url.port,
        url.username,
    )
    admin_url = backend if same_server else url.set(database="postgres")
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": url.database},
            ).scalar()
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote(url.database)
                conn.execute(sqlalchemy.text(f"CREATE DATABASE {quoted}"))
                logger.info("created the auth database %r", url.database)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise StackError(
            f"could not create the auth database {url.database!r} ({reason}); create it "
            "yourself or set MLFLOW_AUTH_DATABASE_URI to an existing one"
        ) from None
    finally:
        engine.dispose()


def upgrade_database(uri: str) -> None:
    """Create or migrate the users/permissions tables (MLflow's own alembic scripts)."""
    from mlflow.server.auth.db.utils import migrate_if_needed

    engine = sqlalchemy.create_engine(uri)
    try:
        migrate_if_needed(engine, "head")
    finally:
        engine.dispose()


def prepare_database(settings: AuthSettings, backend_store_uri: str) -> None:
    ensure_database(settings.database_uri, backend_store_uri)
    upgrade_database(settings.database_uri)


def write_config(settings: AuthSettings, directory: str | None = None) -> Path:
    """MLflow's basic_auth.ini for these settings, in a new file only this user can read."""
    # ConfigParser interpolates '%': a URL-encoded password in the URI must be escaped.
    text = (
        "[mlflow]\n"
        f"default_permission = {settings.default_permission}\n"
        f"database_uri = {settings.database_uri.replace('%', '%%')}\n"
        f"admin_username = {settings.admin_username}\n"
        f"auth_cache_ttl_seconds = {settings.cache_ttl_seconds}\n"
        f"authorization_function = {settings.authorization_function}\n"
        "grant_default_workspace_access = false\n"
    )
    fd, name = tempfile.mkstemp(prefix="mlflow-basic-auth-", suffix=".ini", dir=directory)
    with os.fdopen(fd, "w") as handle:  # mkstemp: O_EXCL, mode 0600
        handle.write(text)
    return Path(name)
