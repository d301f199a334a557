"""The one place that waits for a server: bounded, logged, and ending in an actionable error."""

from __future__ import annotations

import logging

import requests
from tenacity import (
    RetryError,
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from stack_common.errors import StackError

logger = logging.getLogger(__name__)


class ServerUnreachable(StackError):
    pass


def wait_for_http(url: str, timeout_s: float, what: str, hint: str) -> None:
    """Poll ``url`` until it answers 200, for at most ``timeout_s`` seconds.

    Used before any real work so that a server that is still starting (or briefly restarting)
    costs a few seconds, while one that is really down fails with one line naming the URL.
    """

    def probe() -> None:
        response = requests.get(url, timeout=min(5.0, max(timeout_s, 0.5)))
        if response.status_code != 200:
            raise ConnectionError(f"HTTP {response.status_code}")

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_exponential(multiplier=0.25, max=2.0),
        retry=retry_if_exception_type((requests.RequestException, ConnectionError)),
        before_sleep=before_sleep_log(logger, logging.INFO),
        reraise=False,
    )
    try:
        retrying(probe)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        reason = type(cause).__name__ if isinstance(cause, requests.RequestException) else cause
        raise ServerUnreachable(
            f"{what} at {url} did not answer within {timeout_s:g}s ({reason}); {hint}"
        ) from None
