"""Errors a user can act on.

Every service raises :class:`StackError` with one line that names the input, the value and the
fix; the command-line entry points print that line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)


class StackError(Exception):
    """A failure whose message alone tells the user what is wrong and what to do."""


class ConfigError(StackError):
    """An environment variable holds a value the service cannot use."""


def one_line(text: str, limit: int = 300) -> str:
    """Collapse a (possibly multi-line) server message so it fits on one terminal line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn StackError and MLflow's own errors into click's one-line ``Error: …`` and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from mlflow.exceptions import MlflowException

        try:
            return func(*args, **kwargs)
        except StackError as exc:
            raise click.ClickException(str(exc)) from exc
        except MlflowException as exc:
            logger.debug("MLflow error", exc_info=True)
            raise click.ClickException(one_line(exc.message)) from exc

    return wrapper
