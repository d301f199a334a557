"""One logging format for every service, so that interleaved logs stay readable."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # MLflow and its HTTP stack are chatty at INFO; their warnings still show.
    for noisy in (
        "urllib3",
        "botocore",
        "alembic",
        "mlflow.store.db.utils",
        "mlflow.store.model_registry.abstract_store",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
