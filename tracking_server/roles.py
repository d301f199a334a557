"""The stack's roles: what each kind of user may do, in one table.

MLflow's basic-auth app knows users, an admin flag and per-resource grants (READ < USE < EDIT <
MANAGE); it has no roles. The stack's roles are named sets of grants on the team's experiment and
registered model (plus the admin flag), and every way a user comes to exist applies this table:
the ``create-users`` job for the job users (tracking_server/bootstrap_users.py), ``stack-users``
for people (tracking_server/users_cli.py) and the OpenID Connect sign-in, whose groups map to
roles. A user's role is read back from its grants (:func:`role_of`), so MLflow's user store stays
the one truth and nothing else needs backing up.

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


# MLflow needs EDIT on a registered model to set any alias (the trainer's 'challenger') and
# MANAGE to delete one (promotion moves 'challenger' away): see docs/security.md.
ROLES: dict[str, Role] = {
    "trainer": Role(EDIT, EDIT, "logs runs, registers versions"),
    "promoter": Role(READ, MANAGE, "reads runs' metrics, moves aliases"),
    "reader": Role(READ, READ, "reads runs, models and aliases"),
    "admin": Role(None, None, "everything: users, permissions, deletes", admin=True),
    "serving": Role(READ, READ, "reads the alias and downloads the model", person=False),
    # Prometheus: no permission on anything; tracking_server/stack_auth.py lets it scrape.
    "metrics": Role(None, None, "reads the tracking server's /metrics, nothing else", person=False),
}

PERSON_ROLES: tuple[str, ...] = tuple(name for name, role in ROLES.items() if role.person)
JOB_ROLES: tuple[str, ...] = tuple(name for name, role in ROLES.items() if not role.person)

# A user with no grant on either resource and no admin flag: disabled by stack-users (or the
# metrics job's user, which the tracking server recognises by name, not by grants).
NO_ROLE = "none"


def role_named(name: str) -> Role:
    """The role called ``name``, or a one-line error naming the roles there are."""
    try:
        return ROLES[name]
    except KeyError:
        raise ValueError(f"unknown role {name!r}: one of {', '.join(ROLES)}") from None


def role_of(*, is_admin: bool, experiment: str | None, model: str | None) -> str:
    """The person's role these grants amount to: exact matches of the table, else ``custom``.

    ``serving`` and ``reader`` have the same grants; a person is shown as ``reader``.
    """
    if is_admin:
        return "admin"
    if experiment is None and model is None:
        return NO_ROLE
    for name in PERSON_ROLES:
        role = ROLES[name]
        if not role.admin and (role.experiment, role.model) == (experiment, model):
            return name
    return "custom"
