"""The canary: a share of live requests answered by the challenger, stopped when it does worse.

nginx picks the share (``split_clients`` in serving/nginx.conf.template) and sends it to the
``challenger`` upstream: the canary slots first, production's slots as backup. A canary that
answers 5xx, times out or is absent is therefore answered by production within the same
request, and the client sees no error. The canary runs while its slots exist: the supervisor
links them to the challenger's sockets (a hard link: the challenger's own paths stay where the
shadow reaches them) and removes them to stop it. Nothing is reloaded, so no client connection
is cut.

Its figures come from nginx's log (serving/metrics.py hands each line here). After
``SERVING_CANARY_MIN_REQUESTS`` canary requests, it stops by itself when its error rate exceeds
production's by ``SERVING_CANARY_ERROR_RATE_MARGIN`` or its p99 latency exceeds production's by
``SERVING_CANARY_P99_MARGIN_MS``, over the last ``WINDOW`` requests of each: one ERROR line and
``serving_canary_stopped_total{reason}``. A stopped version stays stopped until the challenger's
alias moves to another version (or serving restarts).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from serving.challenger_metrics import ChallengerMetrics

logger = logging.getLogger(__name__)

WINDOW = 1000  # requests of each side the verdict looks at


def canary_slot_paths(run_dir: Path, workers: int) -> list[Path]:
    """The fixed socket paths nginx's ``challenger`` upstream connects to first."""
    return [run_dir / f"canary-{i}.sock" for i in range(workers)]


def p99(samples: deque[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Limits:
    min_requests: int
    error_rate_margin: float
    p99_margin_s: float


class CanaryWatch:
    """Recent outcomes of both sides, and whether the canary does worse than the margins."""

    def __init__(self, limits: Limits, window: int = WINDOW) -> None:
        self.limits = limits
        self.production_errors: deque[bool] = deque(maxlen=window)
        self.production_seconds: deque[float] = deque(maxlen=window)
        self.canary_errors: deque[bool] = deque(maxlen=window)
        self.canary_seconds: deque[float] = deque(maxlen=window)

    def reset(self) -> None:
        self.canary_errors.clear()
        self.canary_seconds.clear()

    def production(self, error: bool, seconds: float) -> None:
        self.production_errors.append(error)
        self.production_seconds.append(seconds)

    def canary(self, error: bool, seconds: float | None) -> None:
        self.canary_errors.append(error)
        if seconds is not None:
            self.canary_seconds.append(seconds)

    def verdict(self) -> tuple[str, str] | None:
        """(reason, one line) when the canary must stop, else None."""
        limits = self.limits
        if len(self.canary_errors) < limits.min_requests:
            return None
        ours = sum(self.canary_errors) / len(self.canary_errors)
        theirs = (
            sum(self.production_errors) / len(self.production_errors)
            if self.production_errors
            else 0.0
        )
        if ours > theirs + limits.error_rate_margin:
            return "error_rate", (
                f"error rate {ours:.1%} against production's {theirs:.1%} "
                f"(SERVING_CANARY_ERROR_RATE_MARGIN {limits.error_rate_margin:g})"
            )
        if len(self.canary_seconds) >= limits.min_requests and self.production_seconds:
            ours_p99, theirs_p99 = p99(self.canary_seconds), p99(self.production_seconds)
            if ours_p99 > theirs_p99 + limits.p99_margin_s:
                return "p99", (
                    f"p99 {ours_p99 * 1000:.0f} ms against production's "
                    f"{theirs_p99 * 1000:.0f} ms (SERVING_CANARY_P99_MARGIN_MS "
                    f"{limits.p99_margin_s * 1000:g})"
                )
        return None


class Canary:
    """The canary of the challenger's current version: its slots, its figures, its stop.

    Used from two threads (the supervisor's loop starts and ends it; the metrics thread feeds
    it nginx's log lines and stops it), hence the lock."""

    def __init__(
        self, slots: list[Path], alias: str, limits: Limits, metrics: ChallengerMetrics
    ) -> None:
        self.slots = slots
        self.alias = alias
        self.watch = CanaryWatch(limits)
        self.metrics = metrics
        self.version: str | None = None
        self.stopped: dict[str, str] = {}  # version -> why its canary stopped
        self._lock = threading.Lock()

    def start(self, version: str, sockets: list[Path]) -> None:
        """Send the canary's share to ``sockets`` (the challenger's), unless this version's
        canary stopped already."""
        with self._lock:
            if version in self.stopped or not sockets:
                return
            for i, slot in enumerate(self.slots):
                staged = slot.with_name(f".{slot.name}.new")
                staged.unlink(missing_ok=True)
                os.link(sockets[i % len(sockets)], staged)
                os.replace(staged, slot)
            if self.version != version:
                self.watch.reset()
            self.version = version
            self.metrics.canary_running(self.alias, version, True)
            logger.info("canary: version %s answers its share of requests", version)

    def end(self) -> None:
        """No canary (the challenger is unloaded or moved): its share goes to production."""
        with self._lock:
            self._close()
            if self.version is not None:
                self.metrics.canary_running(self.alias, self.version, False)
            self.version = None

    def _close(self) -> None:
        for slot in self.slots:
            slot.unlink(missing_ok=True)

    def active_version(self) -> str | None:
        return self.version

    def production_answered(self, error: bool, seconds: float) -> None:
        self.watch.production(error, seconds)

    def canary_answered(self, version: str, error: bool, seconds: float | None) -> None:
        self.watch.canary(error, seconds)
        self.metrics.canary_answered(self.alias, version, not error, seconds)

    def check(self) -> None:
        """Stop the canary when it does worse than production by the margins."""
        with self._lock:
            if self.version is None:
                return
            verdict = self.watch.verdict()
            if verdict is None:
                return
            reason, why = verdict
            self._close()
            version, self.version = self.version, None
            self.stopped[version] = f"{reason}: {why}"
            self.metrics.canary_stopped_for(self.alias, version, reason)
        logger.error(
            "canary of version %s (%s) stopped by itself: %s; production answers every request",
            version,
            self.alias,
            why,
        )

    def status(self) -> dict[str, object]:
        return {
            "version": self.version,
            "stopped": dict(self.stopped),
        }
