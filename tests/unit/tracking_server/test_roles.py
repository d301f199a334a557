"""The table of rights: one place, read back the same way everywhere."""

from __future__ import annotations

import pytest

from tracking_server.roles import (
    JOB_ROLES,
    NO_ROLE,
    PERSON_ROLES,
    ROLES,
    mlflow_role_name,
    person_role,
    role_named,
    stack_role_of,
)


def test_people_and_jobs_have_separate_roles() -> None:
    assert PERSON_ROLES == ("trainer", "promoter", "reader", "admin")
    assert JOB_ROLES == ("serving", "metrics")


def test_a_trainer_may_create_in_the_workspace_and_nobody_else_may() -> None:
    """Workspace USE is what MLflow asks to create experiments and models (issue 22)."""
    grants = {name: ROLES[name].permissions("7", "m") for name in ROLES}
    assert ("workspace", "*", "USE") in grants["trainer"]
    assert [
        g for n, gs in grants.items() if n != "trainer" for g in gs if g[0] == "workspace"
    ] == []
    assert grants["promoter"] == [("experiment", "7", "READ"), ("registered_model", "m", "MANAGE")]
    assert grants["reader"] == [("experiment", "7", "READ"), ("registered_model", "m", "READ")]
    assert grants["admin"] == [] and ROLES["admin"].admin


@pytest.mark.parametrize(
    ("is_admin", "assigned", "expected"),
    [
        (True, [], "admin"),
        (False, [], NO_ROLE),
        (False, ["stack-reader"], "reader"),
        (False, ["stack-reader", "stack-promoter"], "promoter"),  # the most capable
        (False, ["__user_3__", "stack-trainer"], "trainer"),
        (False, ["stack-admin", "stack-serving", "someone-elses"], NO_ROLE),  # not stack roles
    ],
)
def test_a_persons_role_is_read_back_from_mlflow(
    is_admin: bool, assigned: list[str], expected: str
) -> None:
    assert person_role(is_admin=is_admin, mlflow_roles=assigned) == expected


def test_role_names_round_trip_and_unknown_roles_say_which_exist() -> None:
    for name in ("trainer", "promoter", "reader"):
        assert stack_role_of(mlflow_role_name(name)) == name
    with pytest.raises(ValueError, match="unknown role 'owner': one of trainer, promoter"):
        role_named("owner")
