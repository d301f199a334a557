"""When to restart a dead scoring process again, and when to stop trying.

gunicorn's arbiter stops after repeated worker boot failures; this policy backs off first: the
first restart is at once, after a failed one the next waits ``base_s``, then twice that, and so
on up to ``max_s``; after ``max_failures`` failures in a row it gives up, and only ``reset`` (a
new pool, i.e. a promotion) makes it try again. A restart loop on every poll would spend the
cores the live processes are answering with, and never tell anyone. The clock is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    base_s: float
    max_s: float
    max_failures: int
    failures: int = 0  # failed restarts in a row
    retry_at: float = 0.0  # no attempt before this time
    gave_up: bool = False

    def may_try(self, now: float) -> bool:
        return not self.gave_up and now >= self.retry_at

    def failed(self, now: float) -> float | None:
        """One more failure: the wait before the next attempt, or None: given up."""
        self.failures += 1
        if self.failures >= self.max_failures:
            self.gave_up = True
            return None
        delay = min(self.base_s * 2 ** (self.failures - 1), self.max_s)
        self.retry_at = now + delay
        return delay

    def succeeded(self) -> bool:
        """A restart worked; True when that ends a run of failures."""
        ended = self.failures > 0
        self.failures, self.retry_at = 0, 0.0
        return ended

    def reset(self) -> None:
        self.failures, self.retry_at, self.gave_up = 0, 0.0, False
