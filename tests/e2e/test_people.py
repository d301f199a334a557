"""A team's people, one user each: the admin runs ``stack-users`` against a real server with auth.

The story of issue 22's "one identity per person": the admin adds Alice (trainer), Bob (promoter)
and Carol (reader). Alice works like an MLflow user (her own experiment and model, runs in the
team's experiment) but cannot touch ``production``; Bob promotes and the version says it was
him; Carol reads and creates nothing until she is made a trainer; Alice leaves and is disabled,
and her next request is refused. Bad input gets one line.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from local_stack.processes import free_port, start_tracking_server, wait_until_up
from tests.conftest import STARTUP_TIMEOUT_S
from tests.helpers import CliResult, cli_env, run_cli

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "admin-people-secret"
JOB_PASSWORDS = {"trainer": "trainer-people-secret", "promoter": "promoter-people-secret"}


@dataclass
class Team:
    url: str
    model: str
    root: Path
    passwords: dict[str, str]

    def admin_env(self) -> dict[str, str]:
        return cli_env(self.url, self.model, MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD)

    def users(self, *args: str, stdin_text: str | None = None) -> CliResult:
        return run_cli(
            "tracking_server.users_cli", *args, env=self.admin_env(), stdin_text=stdin_text
        )

    def call(self, user: str, method: str, path: str, payload: dict | None = None):
        auth = (user, self.passwords[user])
        if method == "GET":
            return requests.get(f"{self.url}{path}", params=payload, auth=auth, timeout=20)
        return requests.request(method, f"{self.url}{path}", json=payload, auth=auth, timeout=20)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    root = tmp_path_factory.mktemp("people")
    service = start_tracking_server(
        root / "stack",
        free_port(),
        root / "tracking.log",
        {
            "MLFLOW_AUTH": "true",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "people-flask-secret-key",
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # A disabled password is refused at once, not after the per-worker cache's minute.
            "MLFLOW_AUTH_CACHE_TTL_SECONDS": "0",
        },
    )
    try:
        wait_until_up(service, "/health", STARTUP_TIMEOUT_S)
        team = Team(service.url, f"team-{uuid.uuid4().hex[:8]}", root, dict(JOB_PASSWORDS))
        jobs = team.admin_env() | {
            f"STACK_{user.upper()}_PASSWORD": pw for user, pw in JOB_PASSWORDS.items()
        }
        created = run_cli("tracking_server.bootstrap_users", env=jobs)
        assert created.code == 0, created.stderr
        yield team
    finally:
        service.stop()


def _added(team: Team, name: str, role: str) -> None:
    added = team.users("add", name, "--role", role)
    assert added.code == 0, added.stderr
    [password] = re.findall(r"password \(shown once, give it to \w+\): (\S+)", added.stdout)
    team.passwords[name] = password


def _experiment_id(team: Team, user: str) -> str:
    found = team.call(
        user, "GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": team.model}
    )
    assert found.status_code == 200, found.text
    return found.json()["experiment"]["experiment_id"]


def _new_version(team: Team, user: str, model: str) -> str:
    """A run in the team's experiment and a version of ``model`` from it, as ``user``."""
    run = team.call(
        user,
        "POST",
        "/api/2.0/mlflow/runs/create",
        {"experiment_id": _experiment_id(team, user)},
    )
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    version = team.call(
        user,
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        {"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id},
    )
    assert version.status_code == 200, version.text
    return version.json()["model_version"]["version"]


def test_each_person_works_under_their_own_name_and_role(team: Team) -> None:
    _added(team, "alice", "trainer")
    promoter_password = "bob-chose-this-password"
    added = team.users(
        "add", "bob", "--role", "promoter", "--password-stdin", stdin_text=f"{promoter_password}\n"
    )
    assert added.code == 0, added.stderr
    assert "shown once" not in added.stdout  # his own password is never printed
    team.passwords["bob"] = promoter_password
    _added(team, "carol", "reader")

    # Alice trains like an MLflow user: her own experiment and model, which she manages...
    own = team.call(
        "alice", "POST", "/api/2.0/mlflow/experiments/create", {"name": f"alice-{team.model}"}
    )
    assert own.status_code == 200, own.text
    own_model = f"alice-{team.model}"
    created = team.call(
        "alice", "POST", "/api/2.0/mlflow/registered-models/create", {"name": own_model}
    )
    assert created.status_code == 200, created.text
    renamed = team.call(
        "alice",
        "PATCH",
        "/api/2.0/mlflow/registered-models/update",
        {"name": own_model, "description": "mine"},
    )
    assert renamed.status_code == 200, renamed.text
    # ... and the team's: a run and a new version of the team's model, which she may not promote.
    version = _new_version(team, "alice", team.model)
    refused = team.call(
        "alice",
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        {"name": team.model, "alias": "production", "version": version},
    )
    assert refused.status_code == 403, refused.text
    assert "protected" in refused.json()["message"]
    deleted = team.call(
        "alice",
        "DELETE",
        "/api/2.0/mlflow/model-versions/delete",
        {"name": team.model, "version": version},
    )
    assert deleted.status_code == 403, deleted.text

    # Bob promotes; the version says it was Bob, and so does the audit line.
    promoted = team.call(
        "bob",
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        {"name": team.model, "alias": "production", "version": version},
    )
    assert promoted.status_code == 200, promoted.text
    got = team.call(
        "bob", "GET", "/api/2.0/mlflow/model-versions/get", {"name": team.model, "version": version}
    )
    tags = {t["key"]: t["value"] for t in got.json()["model_version"]["tags"]}
    assert tags["stack.promoted_by"] == "bob", tags
    log = (team.root / "tracking.log").read_text()
    assert re.search(rf"allowed set_alias '?{team.model}'?@'?production'?.* by '?bob", log), log[
        -2000:
    ]

    # Carol reads the team's work, creates nothing, moves nothing.
    assert _experiment_id(team, "carol")
    for path, payload in (
        ("/api/2.0/mlflow/experiments/create", {"name": f"carol-{team.model}"}),
        ("/api/2.0/mlflow/runs/create", {"experiment_id": _experiment_id(team, "carol")}),
    ):
        assert team.call("carol", "POST", path, payload).status_code == 403, path

    listed = team.users("list")
    assert listed.code == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()}
    assert rows["alice"] == "trainer" and rows["bob"] == "promoter" and rows["carol"] == "reader"
    assert rows["admin"] == "admin"
    assert "alice" in listed.stdout and "experiment" in listed.stdout  # what Alice created

    # Carol becomes a trainer: now she creates her own experiment.
    changed = team.users("set-role", "carol", "trainer")
    assert changed.code == 0 and "reader -> trainer" in changed.stdout, changed.stderr
    mine = team.call(
        "carol", "POST", "/api/2.0/mlflow/experiments/create", {"name": f"carol-{team.model}"}
    )
    assert mine.status_code == 200, mine.text

    # Alice leaves: her next request is refused, her work stays.
    disabled = team.users("disable", "alice")
    assert disabled.code == 0, disabled.stderr
    for path, payload in (
        ("/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": team.model}),
        ("/api/2.0/mlflow/registered-models/get", {"name": own_model}),
    ):
        assert team.call("alice", "GET", path, payload).status_code == 401, path
    assert (
        team.call(
            "bob",
            "GET",
            "/api/2.0/mlflow/model-versions/get",
            {"name": team.model, "version": version},
        ).status_code
        == 200
    )

    # A new password for Carol works at once.
    reset = team.users("reset-password", "carol")
    assert reset.code == 0, reset.stderr
    [team.passwords["carol"]] = re.findall(r"give it to carol\): (\S+)", reset.stdout)
    assert _experiment_id(team, "carol")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("add", "dave", "--role", "owner"), "'owner' is not one of"),
        (("set-role", "nobody-here", "reader"), "no user 'nobody-here'"),
        (("add", "erin", "--role", "reader", "--password-stdin"), "at least 12"),
    ],
    ids=["unknown-role", "unknown-user", "short-password"],
)
def test_bad_input_is_one_line(team: Team, args: tuple[str, ...], says: str) -> None:
    done = team.users(*args, stdin_text="short\n")
    assert done.code != 0
    [line] = done.error_lines  # one line (click adds its usage hint for a wrong argument)
    assert says in line, done.stderr
