"""The promotion CLI's configuration (``stack-registry``), read once per command."""

from __future__ import annotations

import getpass

from stack_common.settings import ClientSettings, env


class PromotionSettings(ClientSettings):
    """``stack-registry``: the tracking server and model of the client settings, who acts, and
    the live evidence the gate asks for (docs/monitoring.md, "Reading the challenger before
    promoting")."""

    # Recorded as promoted_by on the version; unset: the login name.
    promoted_by_setting: str | None = env("PROMOTED_BY", None)
    """Recorded as promoted_by on the version; unset: the login name."""

    live_metrics_url: str | None = env("PROMOTION_LIVE_METRICS_URL", None)
    """Serving's /metrics URL(s), comma-separated and summed, or a Prometheus base URL."""
    min_live_requests: int = env("PROMOTION_MIN_LIVE_REQUESTS", 0, ge=0)
    """Shadow and canary requests the promoted version must have had (0: no live evidence)."""
    max_live_error_rate: float = env("PROMOTION_MAX_LIVE_ERROR_RATE", 0.01, ge=0, le=1)
    """Largest share of the promoted version's live requests that may have failed."""
    max_live_disagreement: float = env("PROMOTION_MAX_LIVE_DISAGREEMENT", 0.05, ge=0, le=1)
    """Largest share of label predictions that may differ from production's."""
    max_live_mean_abs_difference: float | None = env(
        "PROMOTION_MAX_LIVE_MEAN_ABS_DIFFERENCE", None, ge=0
    )
    """Largest mean |challenger - production| of numeric predictions (unset: not checked)."""

    @property
    def promoted_by(self) -> str:
        return self.promoted_by_setting or getpass.getuser()

    @property
    def asks_live_evidence(self) -> bool:
        return self.min_live_requests > 0
