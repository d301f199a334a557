"""The stack of tests/e2e/test_oidc.py and test_team_over_https.py: a real OIDC provider and a
real tracking server with ``STACK_OIDC_ISSUER`` set, and how a test speaks to them as a person
with a bearer token."""

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
from tests.helpers import cli_env, run_cli
from tests.oidc_provider import Provider, run_provider

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


@contextmanager
def signed_stack(
    root: Path, groups: Mapping[str, str], extra_env: Mapping[str, str] | None = None
) -> Iterator[Signed]:
    """The provider, the server (``admin=ml-admins`` plus ``groups``: role -> group; more
    settings in ``extra_env``), and the team's experiment, model and the stack's MLflow roles
    on them, made by the real create-users job as in Compose."""
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
                **(extra_env or {}),
            },
        )
        try:
            wait_until_up(service, "/health", STARTUP_TIMEOUT_S)
            model = f"test-{uuid.uuid4().hex[:10]}"
            jobs = cli_env(
                service.url,
                model,
                MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
                STACK_SERVING_PASSWORD="serving-oidc-e2e-secret",
            )
            created = run_cli("tracking_server.bootstrap_users", env=jobs)
            assert created.code == 0, created.stderr
            found = requests.get(
                f"{service.url}/api/2.0/mlflow/experiments/get-by-name",
                params={"experiment_name": model},
                auth=("admin", ADMIN_PASSWORD),
                timeout=10,
            )
            assert found.status_code == 200, found.text
            experiment_id = found.json()["experiment"]["experiment_id"]
            yield Signed(service.url, provider, model, experiment_id, root / "tracking.log")
        finally:
            service.stop()


def b64_json(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
