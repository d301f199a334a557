"""One logging format for every service, so that interleaved logs stay readable.

``LOG_FORMAT=json`` switches to one JSON object per line (time, level, logger, message and any
``extra`` fields, e.g. the tracking server's audit lines) for log collectors; text is the
default.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has: anything else on a record came in through ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ContextFields(logging.Filter):
    """Adds fields to every record that passes (``model``, ``version``...), unless the record
    brings its own. A value may be a callable, read at each record (the version being served
    changes at run time). Shown by the JSON format; text lines stay as they are."""

    def __init__(self, **fields: object) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if key not in vars(record):
                value = value() if callable(value) else value
                if value is not None:
                    setattr(record, key, value)
        return True


def add_context(**fields: object) -> None:
    """Put ``fields`` on every record the root logger's handlers write."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(ContextFields(**fields))


def json_dict_config(level: str, **fields: str) -> dict:
    """A ``logging.config.dictConfig`` for a process we start but do not write (uvicorn's
    ``--log-config``): everything, uvicorn's loggers included, as JSON lines with ``fields``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "stack_common.logs.ContextFields", **fields}},
        "formatters": {"json": {"()": "stack_common.logs.JsonFormatter"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"handlers": ["json"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.access")
        }
        | {"uvicorn.error": {"level": level}},
        "root": {"handlers": ["json"], "level": level},
    }


LOG_FORMATS = ("text", "json")


def log_format_from_env() -> str:
    return (os.environ.get("LOG_FORMAT", "") or "text").strip().lower()


def make_formatter(log_format: str) -> logging.Formatter:
    """JSON for ``json``; the text format otherwise (unknown names are warned about)."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT, datefmt="%H:%M:%S")


def setup_logging(level: str | None = None, *, logger_name: str | None = None) -> None:
    """Configure the root logger, or only ``logger_name`` inside a host that owns the root.

    ``logger_name`` is for code running inside another program's processes (the tracking
    server's app in ``mlflow server``'s workers): that logger gets its own handler and stops
    propagating, so the host's loggers are neither duplicated nor reformatted.
    """
    resolved = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    log_format = log_format_from_env()
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(log_format))
    if logger_name is not None:
        target = logging.getLogger(logger_name)
        if not any(getattr(h, "_stack_handler", False) for h in target.handlers):
            handler._stack_handler = True  # type: ignore[attr-defined]
            target.addHandler(handler)
        target.setLevel(resolved)
        target.propagate = False
    else:
        logging.basicConfig(level=resolved, handlers=[handler])
        _quiet_chatty_loggers()
    if log_format not in LOG_FORMATS:
        logging.getLogger(__name__).warning(
            "LOG_FORMAT=%r is not a log format; logging text. Set it to text or json", log_format
        )


def _quiet_chatty_loggers() -> None:
    # MLflow and its HTTP stack are chatty at INFO; their warnings still show.
    for noisy in (
        "urllib3",
        "botocore",
        "alembic",
        "mlflow.store.db.utils",
        "mlflow.store.model_registry.abstract_store",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
