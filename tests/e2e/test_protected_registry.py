"""Who may change the model registry, asked of a real ``mlflow server`` running the stack's app.

The server (``MLFLOW_AUTH=true`` → ``--app-name stack-auth``) and its users come from
test_security.py's module fixture, made by the real create-users job: the trainer has EDIT on
the model, the promoter MANAGE, serving READ. Every user (and nobody) calls every
registry-changing endpoint of MLflow's ModelRegistryService, each on a fresh model with two
versions, ``production`` and ``challenger`` set and tags on both, and gets the intended answer:
only admins hard-delete, only promoters (MANAGE) and admins move ``production``/``previous``,
everything else is what MLflow grants. The list of endpoints is MLflow's own: an endpoint this
test does not classify fails it. Alias moves and refusals leave audit lines in the server log.

The same table holds for people who come through the company's identity provider: the server
also takes a real OpenID provider's tokens (test_security.py's fixture), and ``sso-trainer`` and
``sso-promoter`` call every endpoint with ``Authorization: Bearer`` (their MLflow users made by
their first token, their groups mapped to the stack's roles, granted on each model as the Basic
users are).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import requests
from mlflow.protos.model_registry_pb2 import ModelRegistryService
from mlflow.server.handlers import get_endpoints, get_service_endpoints

from tests.e2e import test_security
from tests.e2e.test_security import ADMIN_PASSWORD, METRICS_PASSWORD, PASSWORDS, Secured
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e

secured = test_security.secured  # the same module-scoped server fixture, started for this module

CREDENTIALS = {"anonymous": None, "admin": ("admin", ADMIN_PASSWORD)} | {
    user: (user, password) for user, password in PASSWORDS.items()
}
# People with bearer tokens from the OpenID provider, and the group each is in.
TOKEN_USERS = {"sso-trainer": "ml-trainers", "sso-promoter": "ml-promoters"}
USERS = ("anonymous", "trainer", "promoter", "serving", "admin", *TOKEN_USERS)
# Each user's permission on the registered model, as tracking_server/bootstrap_users.py grants.
GRANTS = {
    "trainer": "EDIT",
    "promoter": "MANAGE",
    "serving": "READ",
    "sso-trainer": "EDIT",
    "sso-promoter": "MANAGE",
}
PROMOTERS = frozenset({"promoter", "admin", "sso-promoter"})
EDITORS = frozenset({"trainer", "promoter", "admin", "sso-trainer", "sso-promoter"})
ADMIN = frozenset({"admin"})

# ModelRegistryService methods that only read: no case needed, but they must be named here.
READ_ONLY = frozenset(
    {
        "GetRegisteredModel",
        "SearchRegisteredModels",
        "GetLatestVersions",
        "GetModelVersion",
        "SearchModelVersions",
        "GetModelVersionDownloadUri",
        "GetModelVersionByAlias",
    }
)


@dataclass(frozen=True)
class Case:
    """One call of a registry-changing endpoint and who may make it."""

    method: str  # the ModelRegistryService request class
    body: Callable[[str], dict]  # the request, given the fresh model's name
    allowed: frozenset[str]
    stack_rule: bool = False  # refused by the stack's rule (JSON error), not MLflow's own


def _alias(alias: str, version: str = "2") -> Callable[[str], dict]:
    return lambda m: {"name": m, "alias": alias, "version": version}


CASES = {
    # A person with the trainer role creates models of their own (the role's workspace USE:
    # tracking_server/roles.py); the trainer job's user does not.
    "create-model": Case(
        "CreateRegisteredModel", lambda m: {"name": f"{m}-new"}, ADMIN | {"sso-trainer"}
    ),
    # MLflow lets EDIT rename a model (docs/security.md: a known gap, not changed here).
    "rename-model": Case(
        "RenameRegisteredModel", lambda m: {"name": m, "new_name": f"{m}-renamed"}, EDITORS
    ),
    "update-model": Case(
        "UpdateRegisteredModel", lambda m: {"name": m, "description": "x"}, EDITORS
    ),
    "delete-model": Case("DeleteRegisteredModel", lambda m: {"name": m}, ADMIN, True),
    "create-version": Case(
        "CreateModelVersion", lambda m: {"name": m, "source": "SOURCE", "run_id": "RUN"}, EDITORS
    ),
    "update-version": Case(
        "UpdateModelVersion", lambda m: {"name": m, "version": "1", "description": "x"}, EDITORS
    ),
    "transition-stage": Case(
        "TransitionModelVersionStage",
        lambda m: {
            "name": m,
            "version": "2",
            "stage": "Staging",
            "archive_existing_versions": False,
        },
        EDITORS,
    ),
    "delete-version": Case(
        "DeleteModelVersion", lambda m: {"name": m, "version": "1"}, ADMIN, True
    ),
    "set-model-tag": Case(
        "SetRegisteredModelTag", lambda m: {"name": m, "key": "k", "value": "v2"}, EDITORS
    ),
    "set-version-tag": Case(
        "SetModelVersionTag",
        lambda m: {"name": m, "version": "1", "key": "k", "value": "2"},
        EDITORS,
    ),
    "delete-model-tag": Case(
        "DeleteRegisteredModelTag", lambda m: {"name": m, "key": "k"}, EDITORS
    ),
    "delete-version-tag": Case(
        "DeleteModelVersionTag", lambda m: {"name": m, "version": "1", "key": "k"}, PROMOTERS
    ),
    "set-production": Case("SetRegisteredModelAlias", _alias("production"), PROMOTERS, True),
    "set-previous": Case("SetRegisteredModelAlias", _alias("previous"), PROMOTERS, True),
    "set-challenger": Case("SetRegisteredModelAlias", _alias("challenger", "1"), EDITORS),
    "set-other-alias": Case("SetRegisteredModelAlias", _alias("Candidate"), EDITORS),
    "delete-production": Case("DeleteRegisteredModelAlias", _alias("production"), PROMOTERS, True),
    # MLflow itself wants MANAGE to delete any alias: the trainer's only way to move
    # 'challenger' is to set it again.
    "delete-challenger": Case("DeleteRegisteredModelAlias", _alias("challenger"), PROMOTERS),
}


def registry_routes() -> dict[str, tuple[str, str]]:
    """MLflow's own table: request class -> (REST path, HTTP method) of ModelRegistryService."""
    routes: dict[str, tuple[str, str]] = {}
    for path, name, methods in get_service_endpoints(ModelRegistryService, lambda c: c.__name__):
        if path.startswith("/api/2.0/"):
            routes.setdefault(name, (path, methods[0]))
    return routes


class Registry:
    """Calls as any user, and fresh models set up by the admin for a case to destroy."""

    def __init__(self, secured: Secured) -> None:
        self.secured = secured
        self.admin = requests.Session()
        self.admin.auth = CREDENTIALS["admin"]
        assert secured.provider is not None
        self.tokens = {
            user: secured.provider.id_token(user, {"preferred_username": user, "groups": [group]})
            for user, group in TOKEN_USERS.items()
        }
        for user in TOKEN_USERS:  # the first token makes the person's MLflow user
            made = self.call(user, "GET", "/api/2.0/mlflow/users/current", {})
            assert made.status_code == 200, made.text
        self.run_id, self.source = self._run()
        self.shared_model = self.fresh_model()

    def call(self, user: str, method: str, path: str, body: dict) -> requests.Response:
        send = {"params": body} if method == "GET" else {"json": body}
        if user in TOKEN_USERS:
            send |= {"headers": {"Authorization": f"Bearer {self.tokens[user]}"}}
        else:
            send |= {"auth": CREDENTIALS[user]}
        return requests.request(method, f"{self.secured.url}{path}", timeout=30, **send)

    def _admin(self, method: str, path: str, body: dict) -> dict:
        answer = self.admin.request(method, f"{self.secured.url}/api/{path}", json=body, timeout=30)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)
        return answer.json()

    def _run(self) -> tuple[str, str]:
        run = self._admin(
            "POST", "2.0/mlflow/runs/create", {"experiment_id": self.secured.experiment_id()}
        )["run"]["info"]
        return run["run_id"], f"{run['artifact_uri']}/model"

    def fresh_model(self) -> str:
        """Versions 1 and 2, production -> 1, challenger -> 2, tag 'k' on the model and v1;
        each user granted its usual permission on it."""
        name = f"{self.secured.model}-{uuid.uuid4().hex[:8]}"
        self._admin("POST", "2.0/mlflow/registered-models/create", {"name": name})
        for user, permission in GRANTS.items():
            self._admin(
                "POST",
                "3.0/mlflow/users/permissions/grant",
                {
                    "username": user,
                    "resource_type": "registered_model",
                    "resource_id": name,
                    "permission": permission,
                },
            )
        for _ in range(2):
            self._admin(
                "POST",
                "2.0/mlflow/model-versions/create",
                {"name": name, "source": self.source, "run_id": self.run_id},
            )
        for alias, version in (("production", "1"), ("challenger", "2")):
            body = {"name": name, "alias": alias, "version": version}
            self._admin("POST", "2.0/mlflow/registered-models/alias", body)
        self._admin(
            "POST",
            "2.0/mlflow/registered-models/set-tag",
            {"name": name, "key": "k"} | {"value": "v"},
        )
        self._admin(
            "POST",
            "2.0/mlflow/model-versions/set-tag",
            {"name": name, "version": "1", "key": "k", "value": "v"},
        )
        return name

    def alias_version(self, name: str, alias: str) -> str | None:
        answer = self.admin.get(
            f"{self.secured.url}/api/2.0/mlflow/registered-models/alias",
            params={"name": name, "alias": alias},
            timeout=30,
        )
        return answer.json()["model_version"]["version"] if answer.status_code == 200 else None


@pytest.fixture(scope="module")
def registry(secured: Secured) -> Registry:
    return Registry(secured)


def test_every_registry_endpoint_is_classified() -> None:
    """A ModelRegistryService method MLflow adds must be placed by this test, or it fails."""
    methods = {m.input_type.name for m in ModelRegistryService.DESCRIPTOR.methods}
    classified = READ_ONLY | {case.method for case in CASES.values()}
    assert methods == classified, (
        f"unclassified: {methods - classified}, gone: {classified - methods}"
    )
    # Every mutating method has a route in MLflow's handler table, found by this test.
    routes = registry_routes()
    assert {case.method for case in CASES.values()} <= set(routes)


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("case_id", list(CASES))
def test_each_user_gets_the_intended_answer(registry: Registry, case_id: str, user: str) -> None:
    case = CASES[case_id]
    path, method = registry_routes()[case.method]
    expected = 401 if user == "anonymous" else 200 if user in case.allowed else 403
    # A refused call changes nothing: those share one model (a wrongly allowed one fails here).
    name = registry.fresh_model() if expected == 200 else registry.shared_model
    body = case.body(name)
    if "source" in body:
        body |= {"source": registry.source, "run_id": registry.run_id}
    answer = registry.call(user, method, path, body)
    assert answer.status_code == expected, (case_id, user, answer.status_code, answer.text[:300])
    if expected == 403 and case.stack_rule:
        # MLflow's JSON error for a permission failure, with the stack's reason.
        error = answer.json()
        assert error["error_code"] == "PERMISSION_DENIED", error
        assert error["message"].startswith("Permission denied: "), error
    elif expected == 403:
        assert answer.text == "Permission denied"  # MLflow's own refusal, untouched
    if case.method == "SetRegisteredModelAlias":
        moved = registry.alias_version(name, body["alias"])
        assert (moved == body["version"]) == (expected == 200) or body["alias"] == "challenger"


# Every path MLflow routes to a guarded handler (REST and the UI's ajax-api, any version).
GUARDED = {
    "SetRegisteredModelAlias": "set-production",
    "DeleteRegisteredModelAlias": "delete-production",
    "DeleteRegisteredModel": "delete-model",
    "DeleteModelVersion": "delete-version",
}


def _guarded_routes() -> list[tuple[str, str, str]]:
    from mlflow.protos import model_registry_pb2

    found = []
    for name, case_id in GUARDED.items():
        request_class = getattr(model_registry_pb2, name)
        for path, hit, methods in get_endpoints(lambda c, rc=request_class: c is rc):
            if hit is True:
                found += [(case_id, path, method) for method in methods]
    return found


@pytest.mark.parametrize(("case_id", "path", "method"), _guarded_routes())
def test_every_route_to_a_guarded_handler_is_guarded(
    registry: Registry, case_id: str, path: str, method: str
) -> None:
    case = CASES[case_id]
    name = registry.shared_model
    refused = registry.call("trainer", method, path, case.body(name))
    assert refused.status_code == 403, (path, refused.text[:300])
    assert registry.alias_version(name, "production") == "1"


def test_promoter_promotes_and_rolls_back_with_the_cli_but_trainer_cannot(
    secured: Secured, registry: Registry
) -> None:
    """The real stack-registry CLI, as each user, on a model trained by the trainer."""
    for _ in range(2):
        trained = run_cli("training", "--print-version", env=secured.env("trainer"))
        assert trained.code == 0, trained.stderr
    refused = run_cli("promotion", "promote", "--version", "1", env=secured.env("trainer"))
    assert refused.code == 1
    [line] = refused.error_lines
    assert "PERMISSION_DENIED" in line and "'production' is protected" in line, line

    promoter = secured.env("promoter")
    for version in ("1", "2"):
        promoted = run_cli("promotion", "promote", "--version", version, "--force", env=promoter)
        assert promoted.code == 0, promoted.stderr
    assert registry.alias_version(secured.model, "production") == "2"
    rolled = run_cli("promotion", "rollback", env=promoter)
    assert rolled.code == 0, rolled.stderr or rolled.stdout
    assert registry.alias_version(secured.model, "production") == "1"
    assert registry.alias_version(secured.model, "previous") == "2"
    # The server marks every version a protected alias was moved to (retention keeps them)...
    for version in ("1", "2"):
        answer = registry.call(
            "admin",
            "GET",
            "/api/2.0/mlflow/model-versions/get",
            {"name": secured.model, "version": version},
        )
        tags = {t["key"]: t["value"] for t in answer.json()["model_version"].get("tags", [])}
        assert tags["stack.promoted_at"].isdigit(), tags
        # ... and who moved it: the authenticated user, whatever the client claims.
        assert tags["stack.promoted_by"] == "promoter", tags


def _audit_lines(secured: Secured, model: str) -> list[str]:
    log = (secured.root / "tracking.log").read_text()
    return [ln for ln in log.splitlines() if "tracking_server.audit" in ln and model in ln]


def test_alias_moves_and_refusals_are_audited(registry: Registry) -> None:
    name = registry.fresh_model()
    alias = {"name": name, "alias": "production", "version": "2"}
    path = "/api/2.0/mlflow/registered-models/alias"
    assert registry.call("trainer", "POST", path, alias).status_code == 403
    assert registry.call("promoter", "POST", path, alias).status_code == 200
    assert (
        registry.call(
            "promoter", "DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": name}
        ).status_code
        == 403
    )

    def ours() -> list[str]:  # the admin's setup is audited too: keep the three calls above
        lines = _audit_lines(registry.secured, name)
        return [ln for ln in lines if re.search(r" by (trainer|promoter) ", ln)]

    deadline = time.monotonic() + 30
    while len(ours()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    ours = ours()
    assert len(ours) == 3, _audit_lines(registry.secured, name)
    assert (
        f"refused set_alias {name}@production: 1 -> 2 by trainer (alias 'production' is protected"
        in ours[0]
    )
    assert f"allowed set_alias {name}@production: 1 -> 2 by promoter (200)" in ours[1]
    assert f"refused delete_registered_model {name}: - -> - by promoter (hard deletes" in ours[2]


# --- Issue 20: the holes an audit found, each closed (tracking_server/request_rules.py,
# frozen_artifacts.py, native_gate.py) ---

PREFIXES = ("/api", "/ajax-api")


def _as(user: str) -> tuple[str, str] | None:
    if user == "metrics":
        return ("metrics", METRICS_PASSWORD)
    return CREDENTIALS[user]


def _json_error(answer: requests.Response, code: str) -> None:
    error = answer.json()
    assert error["error_code"] == code, error


def _artifact(registry: Registry, prefix: str, path: str) -> str:
    return f"{registry.secured.url}{prefix}/2.0/mlflow-artifacts/artifacts/{path}"


def _proxied(artifact_uri: str) -> str:
    """``mlflow-artifacts:/1/<run>/artifacts`` -> ``1/<run>/artifacts``."""
    return artifact_uri.split(":", 1)[1].lstrip("/")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_registered_versions_files_are_immutable(registry: Registry, prefix: str) -> None:
    """The trainer (EDIT on the experiment) may not replace, add beside, delete or multipart-upload
    the files of a registered version, run artifacts or logged model alike; its own unregistered
    run's files it writes."""
    model_dir = f"{_proxied(registry.source.rsplit('/', 1)[0])}/model"
    admin_put = requests.put(
        _artifact(registry, prefix, f"{model_dir}/MLmodel"),
        data=b"original",
        auth=CREDENTIALS["admin"],
        timeout=30,
    )
    assert admin_put.status_code == 200, admin_put.text
    logged = registry.admin.post(
        f"{registry.secured.url}/api/2.0/mlflow/logged-models",
        json={"experiment_id": registry.secured.experiment_id(), "name": "model"},
        timeout=30,
    ).json()["model"]["info"]
    registry._admin(
        "POST",
        "2.0/mlflow/model-versions/create",
        {
            "name": registry.shared_model,
            "source": f"models:/{logged['model_id']}",
            "model_id": logged["model_id"],
        },
    )
    logged_dir = _proxied(logged["artifact_uri"])
    trainer = CREDENTIALS["trainer"]
    for target in (f"{model_dir}/MLmodel", f"{model_dir}/extra.pkl", f"{logged_dir}/MLmodel"):
        put = requests.put(_artifact(registry, prefix, target), data=b"x", auth=trainer, timeout=30)
        assert put.status_code == 403, (target, put.status_code, put.text[:300])
        _json_error(put, "PERMISSION_DENIED")
    for target in (model_dir, logged_dir, model_dir.split("/", 1)[0]):
        gone = requests.delete(_artifact(registry, prefix, target), auth=trainer, timeout=30)
        assert gone.status_code == 403, (target, gone.status_code, gone.text[:300])
    for step in ("create", "complete", "abort"):
        mpu = requests.post(
            f"{registry.secured.url}{prefix}/2.0/mlflow-artifacts/mpu/{step}/{model_dir}",
            json={"path": "MLmodel", "num_parts": 1, "upload_id": "u", "parts": []},
            auth=trainer,
            timeout=30,
        )
        assert mpu.status_code == 403, (step, mpu.status_code, mpu.text[:300])
    kept = registry.admin.get(_artifact(registry, prefix, f"{model_dir}/MLmodel"), timeout=30)
    assert kept.content == b"original"

    own = requests.post(
        registry.secured.api("runs/create"),
        json={"experiment_id": registry.secured.experiment_id()},
        auth=trainer,
        timeout=30,
    ).json()["run"]["info"]
    mine = f"{_proxied(own['artifact_uri'])}/model/MLmodel"
    written = requests.put(
        _artifact(registry, prefix, mine), data=b"mine", auth=trainer, timeout=30
    )
    assert written.status_code == 200, written.text
    # (Deleting them is MLflow's own call: it refuses EDIT, the stack adds nothing there.)


def test_a_delete_checked_against_one_model_cannot_act_on_another(registry: Registry) -> None:
    """The body names a model the promoter has no rights on, the query string one it manages:
    400, and the other model keeps its alias."""
    other = f"{registry.secured.model}-other-{uuid.uuid4().hex[:6]}"
    registry._admin("POST", "2.0/mlflow/registered-models/create", {"name": other})
    registry._admin(
        "POST",
        "2.0/mlflow/model-versions/create",
        {"name": other, "source": registry.source, "run_id": registry.run_id},
    )
    alias = {"name": other, "alias": "production", "version": "1"}
    registry._admin("POST", "2.0/mlflow/registered-models/alias", alias)
    for prefix in PREFIXES:
        confused = requests.delete(
            f"{registry.secured.url}{prefix}/2.0/mlflow/registered-models/alias",
            params={"name": registry.shared_model, "alias": "nonexistent"},
            data=f'{{"name": "{other}", "alias": "production"}}',
            headers={"Content-Type": ""},
            auth=CREDENTIALS["promoter"],
            timeout=30,
        )
        assert confused.status_code == 400, (prefix, confused.status_code, confused.text[:300])
        _json_error(confused, "INVALID_PARAMETER_VALUE")
    # The same for a DELETE the registry guard does not govern: the model's tag stays.
    registry._admin(
        "POST", "2.0/mlflow/registered-models/set-tag", {"name": other, "key": "k", "value": "v"}
    )
    untagged = requests.delete(
        f"{registry.secured.url}/api/2.0/mlflow/registered-models/delete-tag",
        params={"name": registry.shared_model, "key": "k"},
        data=f'{{"name": "{other}", "key": "k"}}',
        headers={"Content-Type": ""},
        auth=CREDENTIALS["trainer"],
        timeout=30,
    )
    assert untagged.status_code == 400, untagged.text[:300]
    tags = registry.admin.get(
        registry.secured.api("registered-models/get"), params={"name": other}, timeout=30
    ).json()["registered_model"]["tags"]
    assert {"key": "k", "value": "v"} in tags
    assert registry.alias_version(other, "production") == "1"


PERMISSION_CALLS = [
    ("3.0/mlflow/users/permissions/grant", "POST"),
    ("3.0/mlflow/users/permissions/revoke", "POST"),
    ("2.0/mlflow/registered-models/permissions/create", "POST"),
    ("2.0/mlflow/registered-models/permissions/update", "PATCH"),
    ("2.0/mlflow/registered-models/permissions/delete", "DELETE"),
    ("2.0/mlflow/experiments/permissions/create", "POST"),
    ("2.0/mlflow/users/create", "POST"),
    ("2.0/mlflow/users/update-admin", "PATCH"),
    ("3.0/mlflow/roles/create", "POST"),
]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_only_admins_manage_users_and_permissions(registry: Registry, prefix: str) -> None:
    """The promoter (MANAGE on the model) can neither hand out MANAGE nor revoke serving's READ,
    nor make users or roles; the trainer still cannot move production afterwards."""
    name = registry.shared_model
    body = {
        "name": name,
        "username": "trainer",
        "user_name": "trainer",
        "permission": "MANAGE",
        "resource_type": "registered_model",
        "resource_id": name,
        "password": "a-long-enough-password",
        "is_admin": True,
        "role_name": "r",
    }
    for path, method in PERMISSION_CALLS:
        for user in ("promoter", "trainer"):
            answer = registry.call(user, method, f"{prefix}/{path}", body)
            assert answer.status_code == 403, (path, user, answer.status_code, answer.text[:300])
    move = {"name": name, "alias": "production", "version": "2"}
    moved = registry.call("trainer", "POST", "/api/2.0/mlflow/registered-models/alias", move)
    assert moved.status_code == 403
    # Reading itself stays open to every user.
    me = registry.call("promoter", "GET", f"{prefix}/2.0/mlflow/users/current", {})
    assert me.status_code == 200, me.text[:300]


NATIVE_ROUTES = [
    ("GET", "/ajax-api/3.0/mlflow/assistant/config"),
    ("POST", "/ajax-api/3.0/jobs/search"),
    ("PUT", "/ajax-api/3.0/mlflow/assistant/config"),
]


@pytest.mark.parametrize("user", ["metrics", "serving", "trainer", "promoter", "anonymous"])
def test_native_fastapi_routes_are_for_admins_only(registry: Registry, user: str) -> None:
    for method, path in NATIVE_ROUTES:
        answer = requests.request(
            method, f"{registry.secured.url}{path}", json={}, auth=_as(user), timeout=30
        )
        expected = 401 if user == "anonymous" else 403
        assert answer.status_code == expected, (method, path, answer.status_code, answer.text)
    # The scrape-only user downloads no artifacts either.
    download = requests.get(
        _artifact(registry, "/api", f"{_proxied(registry.source)}/MLmodel"),
        auth=_as("metrics"),
        timeout=30,
    )
    assert download.status_code in (401, 403)


def test_a_forged_name_makes_exactly_one_escaped_audit_line(registry: Registry) -> None:
    """A name holding a newline and a fake 'allowed' line: each refused attempt is one audit
    line, the newline escaped (MLflow itself refuses names with '/' or ':', so none here)."""
    marker = uuid.uuid4().hex[:10]
    forged = (
        f"{marker}\nINFO tracking_server.audit allowed set_alias x@production 1 -> 2 by promoter"
    )
    refused = 0
    for user in ("anonymous", "trainer"):
        answer = registry.call(
            user,
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": forged, "alias": "production", "version": "1"},
        )
        assert answer.status_code in (401, 403, 404), answer.text[:300]
        refused += answer.status_code in (401, 403)
    assert refused >= 1
    log = registry.secured.root / "tracking.log"
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [ln for ln in log.read_text().splitlines() if marker in ln]
        if len(lines) >= refused:
            break
        time.sleep(0.2)
    assert len(lines) == refused, lines
    assert all("\\n" in ln and "tracking_server.audit: refused" in ln for ln in lines), lines
    assert not any(
        ln.startswith("INFO tracking_server.audit allowed") for ln in log.read_text().splitlines()
    )


@pytest.mark.parametrize(
    "header",
    [
        'Digest username="admin", realm="mlflow", nonce="x", response="y"',
        "Bearer abc",
        "Foo",
        "Basic !!",
    ],
    ids=["digest", "bearer", "garbage", "bad-basic"],
)
@pytest.mark.parametrize("path", ["2.0/mlflow/registered-models/alias", "2.0/mlflow/users/current"])
def test_unknown_authentication_schemes_get_401(registry: Registry, header: str, path: str) -> None:
    answer = requests.get(
        f"{registry.secured.url}/api/{path}",
        params={"name": registry.shared_model, "alias": "production"},
        headers={"Authorization": header},
        timeout=30,
    )
    assert answer.status_code == 401, (header, answer.status_code, answer.text[:300])
