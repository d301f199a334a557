"""Errors a user can act on.

Every service raises :class:`StackError` with one line that names the input, the value and the
fix; the command-line entry points print that line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import re
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


_LOST_SERVER = re.compile(r"API request to (\S+) failed with exception")
_REFUSED = re.compile(r"API request to endpoint (\S+) failed with error code (401|403) ")


def refused_status(message: str) -> int | None:
    """401 or 403 when MLflow's client says the tracking server refused the request."""
    refused = _REFUSED.search(message)
    return int(refused.group(2)) if refused else None


def describe_mlflow_error(message: str) -> str:
    """MLflow's message in one line; a lost server or refused credentials get the fix with it."""
    lost = _LOST_SERVER.search(message)
    if lost:
        url = lost.group(1).split("/api/", 1)[0]
        return (
            f"the tracking server at {url} stopped answering (retried, then gave up); "
            "check that it runs and try again"
        )
    refused = _REFUSED.search(message)
    if refused and refused.group(2) == "401":
        return (
            f"the tracking server refused the credentials (401 on {refused.group(1)}); set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user it knows "
            "(docs/security.md)"
        )
    if refused:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "this user")
        return (
            f"permission denied (403 on {refused.group(1)}): {user!r} may not do this; "
            "use the user whose job it is (docs/security.md)"
        )
    return one_line(message)


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn StackError, MLflow's and HTTP errors into click's one-line ``Error: …``, exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except StackError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            # Imported only when something failed: importing MLflow costs a second, and the
            # command may have work to start before it needs MLflow (serving's warm start).
            import requests
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException):
                logger.debug("MLflow error", exc_info=True)
                raise click.ClickException(describe_mlflow_error(exc.message)) from exc
            if isinstance(exc, requests.RequestException):
                logger.debug("HTTP error", exc_info=True)
                message = f"HTTP request failed: {one_line(str(exc), 200)}"
                raise click.ClickException(message) from exc
            raise

    return wrapper
