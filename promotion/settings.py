"""The promotion CLI's configuration (``stack-registry``), read once per command."""

from __future__ import annotations

import getpass

from stack_common.settings import ClientSettings, env


class PromotionSettings(ClientSettings):
    """``stack-registry``: the tracking server and model of the client settings, and who acts."""

    # Recorded as promoted_by on the version; unset: the login name.
    promoted_by_setting: str | None = env("PROMOTED_BY", None)
    """Recorded as promoted_by on the version; unset: the login name."""

    @property
    def promoted_by(self) -> str:
        return self.promoted_by_setting or getpass.getuser()
