"""Preparing the backend store before ``mlflow server`` opens it.

MLflow refuses to start on a database whose schema is older than the installed MLflow, so an
upgrade of the image would otherwise need a manual ``mlflow db upgrade``. A database that is
still starting (PostgreSQL in Compose) gets a bounded wait and a clear message.
"""

from __future__ import annotations

import logging
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
