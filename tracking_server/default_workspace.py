"""The default workspace, looked up once per server process instead of once per request.

With workspaces on (the stack's default with auth), MLflow resolves every request's workspace
before anything else: a request without the ``X-MLflow-Workspace`` header (every client but the
UI's workspace picker) or naming ``default`` costs one database read of the ``default``
workspace's row (``resolve_workspace_from_header``), a session and a query on the backend store,
about 5% of an authenticated request's CPU. Its only use is the workspace's name: whoever
reads the resolved workspace (Flask's workspace hook, the FastAPI workspace and permission
layers) keeps ``workspace.name`` and nothing else.

For the default workspace of MLflow's SQL workspace store that answer cannot go stale: the row
is made by the schema migration, its name is the key and never changes, and the store refuses
to delete it (``delete_workspace``: "Cannot delete the reserved 'default' workspace"). So once
one lookup has found it, later requests reuse that answer. Everything else is asked every time,
as before: other workspaces (one may be deleted at any time), other workspace stores (their
default may change), and the workspace APIs themselves (they read the store, not this).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class DefaultWorkspaceMemo:
    """``resolve_workspace_from_header`` with the default workspace remembered once found."""

    def __init__(
        self,
        resolve: Callable[[str | None], Any],
        stable_default: Callable[[], bool],
        default_name: str,
    ) -> None:
        self.resolve = resolve
        self.stable_default = stable_default
        self.default_name = default_name
        self.found: Any = None

    def __call__(self, header_workspace: str | None) -> Any:
        asked = (header_workspace or "").strip()
        if asked in ("", self.default_name) and self.found is not None:
            return self.found
        workspace = self.resolve(header_workspace)
        if (
            self.found is None
            and asked in ("", self.default_name)
            and workspace is not None
            and workspace.name == self.default_name
            and self.stable_default()
        ):
            self.found = workspace
        return workspace


def remember_default_workspace() -> None:
    """Put :class:`DefaultWorkspaceMemo` where MLflow's request hooks look the resolver up
    (``mlflow.server.workspace_helpers``, read at call time by
    ``resolve_workspace_for_request_if_enabled``)."""
    from mlflow.server import workspace_helpers
    from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore
    from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

    from stack_common.mlflow_internals import workspace_store

    current = workspace_helpers.resolve_workspace_from_header
    if isinstance(current, DefaultWorkspaceMemo):
        return

    def sql_store() -> bool:
        return type(workspace_store()) is SqlAlchemyStore

    workspace_helpers.resolve_workspace_from_header = DefaultWorkspaceMemo(
        current, sql_store, DEFAULT_WORKSPACE_NAME
    )
