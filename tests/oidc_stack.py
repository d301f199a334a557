"""The stack of tests/e2e/test_oidc.py: a real OIDC provider and a real tracking server with
``STACK_OIDC_ISSUER`` set, and how a test speaks to them as a person with a bearer token."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from local_stack.processes import free_port, start_tracking_server, wait_until_up
from tests.conftest import STARTUP_TIMEOUT_S
from tests.oidc_provider import Provider, run_provider
from tracking_server.roles import PERSON_ROLES, ROLES, mlflow_role_name

ADMIN_PASSWORD = "admin-oidc-e2e-secret"
CLIENT_ID = "mlflow-stack-e2e"


@dataclass
class Signed:
    url: str
    provider: Provider
    model: str
    experiment_id: str
    log: Path

    def api(self, path: str) -> str:
        return f"{self.url}/api/2.0/mlflow/{path}"

    def token(self, person: str, *groups: str) -> str:
        return self.provider.id_token(
            person,
            {
                "preferred_username": person,
                "email": f"{person}@example.com",
                "groups": list(groups),
            },
        )

    def get(self, path: str, token: str, **params: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.get(self.api(path), params=params, headers=headers, timeout=10)

    def client(self, monkeypatch: pytest.MonkeyPatch, token: str) -> MlflowClient:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        return MlflowClient(self.url)


def make_mlflow_roles(auth_db: Path, experiment_id: str, model: str) -> None:
    """The stack's MLflow roles in the default workspace, as the create-users job makes them."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{auth_db}")
    for name in PERSON_ROLES:
        if ROLES[name].admin:
            continue
        role = store.create_role(mlflow_role_name(name), "default")
        for resource, pattern, permission in ROLES[name].permissions(experiment_id, model):
            store.add_role_permission(role.id, resource, pattern, permission)
    store.engine.dispose()


@contextmanager
def signed_stack(root: Path, groups: Mapping[str, str]) -> Iterator[Signed]:
    """The provider, the server (``admin=ml-admins`` plus ``groups``: role -> group), a team
    experiment and model made by the admin, the stack's MLflow roles on them."""
    with run_provider(CLIENT_ID) as provider:
        roles = ",".join(f"{role}={group}" for role, group in groups.items())
        service = start_tracking_server(
            root / "stack",
            free_port(),
            root / "tracking.log",
            {
                "MLFLOW_AUTH": "true",
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "oidc-e2e-flask-secret",
                "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "STACK_OIDC_ISSUER": provider.issuer,
                "STACK_OIDC_CLIENT_ID": CLIENT_ID,
                "STACK_OIDC_CLIENT_SECRET": "oidc-e2e-client-secret",
                "STACK_OIDC_ROLES": f"admin=ml-admins,{roles}",
                "TMPDIR": str(root),
            },
        )
        try:
            wait_until_up(service, "/health", STARTUP_TIMEOUT_S)
            model = f"test-{uuid.uuid4().hex[:10]}"
            admin = requests.Session()
            admin.auth = ("admin", ADMIN_PASSWORD)
            created = admin.post(
                f"{service.url}/api/2.0/mlflow/experiments/create", json={"name": model}, timeout=10
            )
            assert created.status_code == 200, created.text
            experiment_id = created.json()["experiment_id"]
            made = admin.post(
                f"{service.url}/api/2.0/mlflow/registered-models/create",
                json={"name": model},
                timeout=10,
            )
            assert made.status_code == 200, made.text
            make_mlflow_roles(root / "stack" / "basic_auth.db", experiment_id, model)
            yield Signed(service.url, provider, model, experiment_id, root / "tracking.log")
        finally:
            service.stop()


def b64_json(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
