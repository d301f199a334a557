"""The stack's roles: what each kind of user may do, in one table.

MLflow's basic-auth app knows users, an admin flag and per-resource grants (READ < USE < EDIT <
MANAGE); it has no roles. The stack's roles are named sets of grants on the team's experiment and
registered model (plus the admin flag), and every way a user comes to exist applies this table:
the ``create-users`` job for the job users (direct grants: tracking_server/bootstrap_users.py),
``stack-users`` for people (tracking_server/users_cli.py) and the OpenID Connect sign-in, whose
groups map to roles. A person's role is an MLflow RBAC role (``stack-trainer``, …) in the default
workspace, assigned to their user: MLflow's user store stays the one truth (the UI's admin pages
show it, backups keep it) and nothing else needs storing.

The finer rules (protected aliases, admin-only deletes and permission management, immutable
registered versions) are enforced by the tracking server for every identity, whatever its role:
tracking_server/stack_auth.py.
"""

from __future__ import annotations

from dataclasses import dataclass

# MLflow's permission names, as its auth API takes them.
READ, USE, EDIT, MANAGE = "READ", "USE", "EDIT", "MANAGE"


@dataclass(frozen=True)
class Role:
    experiment: str | None  # permission on the team's experiment: its runs, models, artifacts
    model: str | None  # permission on the team's registered model: its versions and aliases
    does: str
    admin: bool = False  # MLflow's admin flag: everything, the registry rules' exceptions too
    person: bool = True  # a role for people (stack-users, sign-in); False: a job's user
    # A workspace-wide grant (MLflow takes USE or MANAGE only): USE lets a person create their
    # own experiments and models (MLflow then gives them MANAGE on what they created) and read
    # every experiment and model of the workspace.
    workspace: str | None = None

    def permissions(self, experiment_id: str, model_name: str) -> list[tuple[str, str, str]]:
        """``(resource_type, resource_pattern, permission)`` of the MLflow role that carries
        this role on the team's experiment and model."""
        grants = []
        if self.workspace is not None:
            grants.append(("workspace", "*", self.workspace))
        if self.experiment is not None:
            grants.append(("experiment", experiment_id, self.experiment))
        if self.model is not None:
            grants.append(("registered_model", model_name, self.model))
        return grants


# MLflow needs EDIT on a registered model to set any alias (the trainer's 'challenger') and
# MANAGE to delete one (promotion moves 'challenger' away): see docs/security.md.
ROLES: dict[str, Role] = {
    "trainer": Role(
        EDIT, EDIT, "logs runs, registers versions, creates own experiments", workspace=USE
    ),
    "promoter": Role(READ, MANAGE, "reads runs' metrics, moves aliases"),
    "reader": Role(READ, READ, "reads runs, models and aliases"),
    "admin": Role(None, None, "everything: users, permissions, deletes", admin=True),
    "serving": Role(READ, READ, "reads the alias and downloads the model", person=False),
    # Prometheus: no permission on anything; tracking_server/stack_auth.py lets it scrape.
    "metrics": Role(None, None, "reads the tracking server's /metrics, nothing else", person=False),
}

PERSON_ROLES: tuple[str, ...] = tuple(name for name, role in ROLES.items() if role.person)
JOB_ROLES: tuple[str, ...] = tuple(name for name, role in ROLES.items() if not role.person)

# A person with no stack role and no admin flag: disabled by stack-users (or a job's user).
NO_ROLE = "none"

# People's roles live in MLflow's own RBAC (roles in a workspace, users assigned to them), so
# the UI's admin pages show them; the name of the MLflow role that carries a stack role:
MLFLOW_ROLE_PREFIX = "stack-"


def mlflow_role_name(role: str) -> str:
    return f"{MLFLOW_ROLE_PREFIX}{role}"


def stack_role_of(mlflow_role: str) -> str | None:
    """The stack role an MLflow role name carries, or None for a role the stack did not make."""
    if not mlflow_role.startswith(MLFLOW_ROLE_PREFIX):
        return None
    name = mlflow_role[len(MLFLOW_ROLE_PREFIX) :]
    return name if name in ROLES and ROLES[name].person and not ROLES[name].admin else None


def role_named(name: str) -> Role:
    """The role called ``name``, or a one-line error naming the roles there are."""
    try:
        return ROLES[name]
    except KeyError:
        raise ValueError(f"unknown role {name!r}: one of {', '.join(ROLES)}") from None


def person_role(*, is_admin: bool, mlflow_roles: list[str]) -> str:
    """A person's stack role: ``admin`` by MLflow's flag, else the stack role they are assigned
    (the most capable when several), else :data:`NO_ROLE` (disabled, or a job's user)."""
    if is_admin:
        return "admin"
    assigned = {stack_role_of(name) for name in mlflow_roles} - {None}
    for name in ("promoter", "trainer", "reader"):
        if name in assigned:
            return name
    return NO_ROLE
