"""A verified person's MLflow user, made on first sight, their stack role following their groups.

The MLflow user store stays the one truth (tracking_server/roles.py): a person signed in through
the provider is an MLflow user (made here with a random password nobody knows, so only the
provider lets them in), their stack role the MLflow role ``stack-<role>`` assigned in the default
workspace, ``admin`` MLflow's admin flag. At every verified token the assignment is brought to
what the groups map to (other ``stack-*`` roles unassigned, the mapped one assigned, the admin
flag set or cleared). That costs database reads, so each worker remembers which (user, role) it
applied for which token and until when (the token's ``exp``): the next requests with the same
token (or UI session) cost one read of the user's row, which MLflow's own admin check makes
anyway. A change of groups comes with a new token, and is applied at its first request, whichever
worker answers it.

``stack-users disable`` (tracking_server/users_cli.py) removes a person's role and sets a random
password. A person signed in through the provider is refused when their groups map to no role
(403 naming the groups that map), so a disabled SSO person is refused as soon as the provider
stops listing them in a mapped group; and at once: an MLflow user that exists with no stack role
and no admin flag is refused (403) rather than given the role its groups map to. Disabling sets
a new password, so the user's row changes and every worker looks at the roles again at the next
request. The same rule keeps tokens off the jobs' users (direct grants, no stack role), and
tracking_server/oidc.py refuses tokens naming the bootstrap admin.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from tracking_server.roles import ROLES, mlflow_role_name, stack_role_of

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("tracking_server.audit")

DEFAULT_WORKSPACE = "default"
# Entries the per-worker memory keeps at most (one per signed-in person): bounded memory.
MAX_REMEMBERED = 10_000


class RoleMissing(Exception):
    """The MLflow role carrying a stack role does not exist (the create-users job makes it)."""


class Disabled(Exception):
    """The person's MLflow user holds no stack role and no admin flag: disabled by stack-users."""


class RoleSync:
    """Makes users and applies roles in MLflow's auth store (``store``: its SqlAlchemyStore)."""

    def __init__(self, store: Any, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        # username -> (role, until, password hash then, token): the hash changes when
        # stack-users disables the person (or resets their password), a new token may carry
        # new groups (and another worker may have applied them): then the role is looked at
        # again.
        self._applied: dict[str, tuple[str, float, str, str]] = {}

    def remembered(self, username: str, role: str, password_hash: str, token: str) -> bool:
        """Whether this worker applied ``role`` for this token, to this user row, unexpired."""
        with self._lock:
            entry = self._applied.get(username)
        if entry is None:
            return False
        applied, until, known_hash, known_token = entry
        return (applied, known_hash, known_token) == (role, password_hash, token) and (
            until > self.clock()
        )

    def apply(self, username: str, role: str, until: float, token: str = "") -> bool:
        """Bring ``username`` to ``role`` (made if new), unless done already within ``until``;
        :class:`Disabled` for a person stack-users disabled, :class:`RoleMissing` when the MLflow
        role is not there. One user-row read when remembered (the same read MLflow's admin check
        makes, once per request: tracking_server/request_memo.py). Whether the user's row or
        roles changed (then rows read earlier in this request are stale)."""
        user = self._existing(username)
        if user is not None and self.remembered(username, role, user.password_hash, token):
            return False
        created = user is None
        if user is None:
            user = self._create(username)
        elif not user.is_admin and not self._stack_roles(user):
            with self._lock:
                self._applied.pop(username, None)
            raise Disabled(
                f"{username!r} holds no stack role (disabled with stack-users); an admin "
                "re-enables them with 'stack-users set-role'"
            )
        changed = self._set_role(user, role)
        if changed:
            audit_logger.info(
                "role of %s set to %s from the identity provider's groups",
                username,
                role,
                extra={"audit": True, "action": "oidc_role", "user": username, "role": role},
            )
        with self._lock:
            if len(self._applied) >= MAX_REMEMBERED:
                self._applied.clear()
            self._applied[username] = (role, until, user.password_hash, token)
        return changed or created

    def _existing(self, username: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.store.get_user(username)
        except MlflowException:
            return None

    def _create(self, username: str) -> Any:
        try:
            # A password nobody knows: this person signs in through the provider only.
            self.store.create_user(username, secrets.token_urlsafe(32))
            logger.info("made MLflow user %r for a person signed in by the provider", username)
        except Exception:  # another worker made it first
            if not self.store.has_user(username):
                raise
        return self.store.get_user(username)

    def _stack_roles(self, user: Any) -> dict[str, Any]:
        return {
            r.name: r
            for r in self.store.list_user_roles_for_workspace(user.id, DEFAULT_WORKSPACE)
            if stack_role_of(r.name) is not None
        }

    def _set_role(self, user: Any, role: str) -> bool:
        """Assign ``stack-<role>``, unassign the other stack roles, set the admin flag; whether
        anything changed."""
        changed = False
        wants_admin = ROLES[role].admin
        if bool(user.is_admin) != wants_admin:
            self.store.update_user(user.username, is_admin=wants_admin)
            changed = True
        wanted = None if wants_admin else mlflow_role_name(role)
        have = self._stack_roles(user)
        for name, assigned in have.items():
            if name != wanted:
                self.store.unassign_role_from_user(user.id, assigned.id)
                changed = True
        if wanted is not None and wanted not in have:
            try:
                target = self.store.get_role_by_name(DEFAULT_WORKSPACE, wanted)
            except Exception:
                raise RoleMissing(
                    f"the MLflow role {wanted!r} does not exist in workspace "
                    f"{DEFAULT_WORKSPACE!r}; run the create-users job (or stack-users) to make it"
                ) from None
            self.store.assign_role_to_user(user.id, target.id)
            changed = True
        return changed
