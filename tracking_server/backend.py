"""Preparing the backend store before ``mlflow server`` opens it.

MLflow refuses to start on a database whose schema is older than the installed MLflow, so an
upgrade of the image would otherwise need a manual ``mlflow db upgrade``. A database that is
still starting (PostgreSQL in Compose) gets a bounded wait and a clear message. Replicas that
start together serialise their upgrades on a PostgreSQL advisory lock (docs/scaling.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy
from tenacity import RetryError, Retrying, before_sleep_log, stop_after_delay, wait_fixed

from stack_common.errors import StackError

logger = logging.getLogger(__name__)


def redact(uri: str) -> str:
    """The URI with its password hidden, for logs and error messages."""
    try:
        return sqlalchemy.engine.make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri.split("@")[-1]


def wait_for_database(uri: str, timeout_s: float) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(uri, pool_pre_ping=True)

    def connect() -> None:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))

    try:
        Retrying(
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(1),
            before_sleep=before_sleep_log(logger, logging.INFO),
        )(connect)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        reason = str(getattr(cause, "orig", cause)).strip().splitlines()[0]
        raise StackError(
            f"backend store {redact(uri)} not reachable after {timeout_s:g}s ({reason}); "
            "check MLFLOW_BACKEND_STORE_URI and that the database is running"
        ) from None
    finally:
        engine.dispose()


def upgrade_schema(uri: str) -> None:
    """``mlflow db upgrade``: creates the tables of a new database, migrates an old one."""
    from mlflow.db import upgrade

    logger.info("mlflow db upgrade %s", redact(uri))
    upgrade.main([uri], standalone_mode=False)


# Key of the PostgreSQL advisory lock that serialises schema upgrades between replicas (any
# constant works as long as every launcher uses the same one: "mlflowsk" in ASCII).
MIGRATION_LOCK_KEY = 0x6D6C666C6F77736B


@contextmanager
def migration_lock(uri: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock while upgrading, so replicas starting together against a
    fresh database migrate it once: the first takes the lock and upgrades, the others wait, then
    find the schema at head and do nothing. Other databases get no lock (SQLite is one host)."""
    if sqlalchemy.engine.make_url(uri).get_backend_name() != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            logger.info("waiting for the schema-migration lock of %s", redact(uri))
            conn.execute(
                sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            conn.commit()
            try:
                yield
            finally:
                conn.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                conn.commit()
    finally:
        engine.dispose()


def schema_revision(uri: str) -> str | None:
    """The alembic revision of the backend store (None: no MLflow tables yet)."""
    from stack_common.mlflow_internals import schema_version

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        return schema_version(engine)
    finally:
        engine.dispose()


def head_revision() -> str:
    """The schema revision the installed MLflow expects."""
    from stack_common.mlflow_internals import latest_schema_revision

    return latest_schema_revision()


def upgrade_schema_once(uri: str) -> bool:
    """``mlflow db upgrade`` unless the schema is already at head; True when it upgraded.
    Call it under :func:`migration_lock` so the check and the upgrade are one step."""
    current, head = schema_revision(uri), head_revision()
    if current == head:
        logger.info("backend store schema already at head %s: nothing to migrate", head)
        return False
    logger.info("migrating the backend store schema from %s to %s", current or "empty", head)
    upgrade_schema(uri)
    return True


def wait_for_schema(
    uri: str, timeout_s: float, extra_check: Callable[[], bool] | None = None
) -> None:
    """Wait (bounded) until another process (a migration job, another replica) has brought the
    schema to head: MLFLOW_MIGRATE_ON_START=false never migrates itself."""
    head = head_revision()
    deadline = time.monotonic() + timeout_s
    current: str | None = None
    while True:
        try:
            current = schema_revision(uri)
            if current == head and (extra_check is None or extra_check()):
                logger.info("backend store schema at head %s", head)
                return
        except sqlalchemy.exc.SQLAlchemyError as exc:
            logger.info("schema not readable yet: %s", str(getattr(exc, "orig", exc)).strip())
        if time.monotonic() >= deadline:
            raise StackError(
                f"backend store {redact(uri)} schema is at {current or 'nothing'}, not at head "
                f"{head}, after {timeout_s:g}s with MLFLOW_MIGRATE_ON_START=false; run "
                "`stack-tracking-server --migrate-only` (the migration job) or set "
                "MLFLOW_MIGRATE_ON_START=true"
            )
        logger.info("waiting for the schema migration (at %s, head %s)", current, head)
        time.sleep(2)


def auth_schema_is_current(uri: str) -> bool:
    """Whether the basic-auth database exists and its schema (``alembic_version_auth``) is at
    MLflow's head; False while it is missing or still being migrated."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from stack_common.mlflow_internals import auth_alembic_config

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        head = ScriptDirectory.from_config(auth_alembic_config(uri)).get_current_head()
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": "alembic_version_auth"}
            )
            return context.get_current_revision() == head
    except sqlalchemy.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()
