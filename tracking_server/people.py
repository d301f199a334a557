"""People's users on the tracking server: their MLflow roles, created, changed and disabled.

Everything goes through the tracking server's REST API as the admin (MLflow's own auth client,
:func:`mlflow.server.get_app_client`), never the auth database: the server's rules (admin-only
user and permission management, the audit) see every change, and the same code works against a
local server, Compose or Kubernetes. The rights themselves are the table in
tracking_server/roles.py; here they become MLflow RBAC roles (``stack-trainer``, …) in the
default workspace, kept equal to the table at every call (:func:`sync_roles`), and a person is
one user assigned one of them.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from stack_common.errors import StackError
from tracking_server.roles import (
    NO_ROLE,
    PERSON_ROLES,
    ROLES,
    mlflow_role_name,
    person_role,
    role_named,
    stack_role_of,
)

logger = logging.getLogger(__name__)

WORKSPACE = "default"  # MLflow's default workspace (mlflow.utils.workspace_utils)
# MLflow names the role holding a user's grants on single resources ``__user_<id>__``.
OWN_ROLE_PREFIX = "__user_"
# A disabled person's password: long, random, never shown, so nothing can sign in with it.
DISABLED_PASSWORD_BYTES = 32


@dataclass(frozen=True)
class Person:
    username: str
    role: str  # a stack role, NO_ROLE (disabled or a job's user), or "admin"
    grants: tuple[str, ...]  # direct grants, e.g. the job users' or what a person created


def new_password() -> str:
    """A password for a new person or a reset: shown once, 24 URL-safe characters."""
    return secrets.token_urlsafe(18)


def sync_roles(auth: Any, experiment_id: str, model_name: str) -> dict[str, int]:
    """Make the MLflow roles carrying the people's stack roles exactly the table; their ids.

    Idempotent: a role or permission already right is left alone, a wrong permission level is
    updated, a permission the table does not have is removed.
    """
    existing = {role.name: role for role in auth.list_roles(WORKSPACE)}
    ids = {}
    for name in PERSON_ROLES:
        role = ROLES[name]
        if role.admin:
            continue  # MLflow's admin flag, not a role
        mlflow_name = mlflow_role_name(name)
        current = existing.get(mlflow_name)
        if current is None:
            current = auth.create_role(WORKSPACE, mlflow_name, description=f"stack: {role.does}")
            logger.info("created MLflow role %s", mlflow_name)
        ids[name] = current.id
        table = {(t, p): level for t, p, level in role.permissions(experiment_id, model_name)}
        missing = dict(table)
        for have in current.permissions:
            key = (have.resource_type, have.resource_pattern)
            if key not in table:
                auth.remove_role_permission(have.id)
                continue
            missing.pop(key, None)
            if table[key] != have.permission:
                auth.update_role_permission(have.id, table[key])
        for (resource_type, pattern), level in missing.items():
            auth.add_role_permission(current.id, resource_type, pattern, level)
    return ids


class People:
    """The admin's operations on people, over an MLflow auth client acting as the admin."""

    def __init__(self, auth: Any, role_ids: dict[str, int]) -> None:
        self.auth = auth
        self.role_ids = role_ids

    def _user(self, username: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.auth.get_user(username)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise StackError(
                    f"no user {username!r} on the tracking server; `stack-users list` shows them"
                ) from None
            raise

    def _role_names(self, username: str) -> list[str]:
        """The names of every MLflow role the user holds (the stack's and any other)."""
        return [role.name for role in self.auth.list_user_roles(username)]

    def _unassign_stack_roles(self, username: str, held: list[str], keep: str | None) -> None:
        """Take away the stack roles among ``held`` but ``keep``; other roles stay."""
        for name in held:
            stack_role = stack_role_of(name)
            if stack_role is not None and stack_role != keep:
                self.auth.unassign_role(username, self.role_ids[stack_role])

    def add(self, username: str, role: str, password: str) -> None:
        from mlflow.exceptions import MlflowException

        role_named(role)
        try:
            self.auth.create_user(username, password)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_ALREADY_EXISTS":
                raise StackError(
                    f"user {username!r} exists; change its role with `stack-users set-role "
                    f"{username} {role}`"
                ) from None
            raise
        self.set_role(username, role)

    def set_role(self, username: str, role: str) -> str:
        """Give the person exactly ``role``; the role they had before."""
        role_named(role)
        user = self._user(username)
        held = self._role_names(username)
        before = person_role(is_admin=user.is_admin, mlflow_roles=held)
        self._unassign_stack_roles(username, held, keep=role)
        if role == "admin":
            self.auth.update_user_admin(username, True)
            return before
        if user.is_admin:
            self.auth.update_user_admin(username, False)
        if mlflow_role_name(role) not in held:
            self.auth.assign_role(username, self.role_ids[role])
        return before

    def disable(self, username: str) -> None:
        """No role, no admin flag, no direct grant, a password nobody knows: the next request is
        refused (403 at once; 401 once each worker's password cache, 60 s by default, expires)."""
        user = self._user(username)
        self._unassign_stack_roles(username, self._role_names(username), keep=None)
        if user.is_admin:
            self.auth.update_user_admin(username, False)
        for grant in self.direct_grants(username):
            self.auth.revoke_user_permission(
                username, grant["resource_type"], grant["resource_pattern"]
            )
        self.auth.update_user_password(username, secrets.token_urlsafe(DISABLED_PASSWORD_BYTES))

    def reset_password(self, username: str, password: str) -> None:
        self._user(username)
        self.auth.update_user_password(username, password)

    def direct_grants(self, username: str) -> list[dict[str, str]]:
        """Grants on single resources outside the stack's roles (MLflow keeps them in a role of
        the user's own, ``__user_<id>__``): the job users', and what a person created."""
        from mlflow.server.auth.routes import LIST_USER_PERMISSIONS

        rows = _admin_get(self.auth, LIST_USER_PERMISSIONS, {"username": username})["permissions"]
        return [row for row in rows if row["role_name"].startswith(OWN_ROLE_PREFIX)]

    def list(self) -> list[Person]:
        from mlflow.server.auth.routes import LIST_USERS

        people = []
        for user in _admin_get(self.auth, LIST_USERS, {})["users"]:
            names = [role["name"] for role in user.get("roles", [])]
            role = person_role(is_admin=user["is_admin"], mlflow_roles=names)
            grants = tuple(
                f"{g['resource_type']} {g['resource_pattern']} {g['permission']}"
                for g in self.direct_grants(user["username"])
            )
            people.append(Person(user["username"], role, grants))
        return sorted(people, key=lambda p: p.username)


def _admin_get(auth: Any, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
    """A GET the auth client has no method for, with the same credentials and TLS settings."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    creds = get_default_host_creds(auth.tracking_uri)
    response = verify_rest_response(http_request(creds, endpoint, "GET", params=params), endpoint)
    return response.json()


__all__ = ["NO_ROLE", "People", "Person", "new_password", "sync_roles"]
