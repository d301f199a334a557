"""Locked down, for real: a tracking server running MLflow's basic-auth app, one user per job.

One server (``MLFLOW_AUTH=true``) for the module, its users made by the real create-users job
(``python -m tracking_server.bootstrap_users``) as in Compose. Then, over HTTP and through the
real CLIs: no password or a wrong one gets 401; serving's user reads the model but may not move
an alias or write a run (403); nobody but the admin grants permissions; the trainer trains and
registers, the promoter promotes, and the real ``stack-serve``, logged in as the read-only user,
downloads through the artifact proxy and follows the promotion. The launcher refuses to start
with an unusable secret, in one line that names the variable. docs/security.md has the model.
"""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException

from local_stack.processes import free_port, start_tracking_server, wait_until_up
from stack_common.scoring import predict
from tests.conftest import STARTUP_TIMEOUT_S, ServiceFactory
from tests.helpers import cli_env, run_cli, wait_for_version
from tests.oidc_provider import Provider, run_provider

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "admin-e2e-secret"
PASSWORDS = {
    "trainer": "trainer-e2e-secret",
    "promoter": "promoter-e2e-secret",
    "serving": "serving-e2e-secret",
}
# The scrape-only user (Prometheus): made by create-users, named to the server.
METRICS_PASSWORD = "metrics-e2e-secret"
SERVER_SECRETS = {
    "MLFLOW_AUTH": "true",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "e2e-flask-secret-key",
    "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "STACK_METRICS_USERNAME": "metrics",
}


# Sign-in through a real OpenID provider is on too (tests/oidc_provider.py): its people's
# groups map to the stack's roles, so test_protected_registry.py asks token users as well.
OIDC_CLIENT_ID = "mlflow-stack-security"
OIDC_ROLES = "promoter=ml-promoters,trainer=ml-trainers,reader=ml-readers"


@dataclass
class Secured:
    """The server under test and how each user talks to it."""

    url: str
    model: str
    root: Path
    scratch: Path  # the server's TMPDIR: where the launcher wrote MLflow's auth ini
    provider: Provider | None = None  # the OpenID provider, when the server takes its tokens

    def api(self, path: str) -> str:
        return f"{self.url}/api/2.0/mlflow/{path}"

    def env(self, user: str, **extra: str) -> dict[str, str]:
        """What a job started as ``user`` gets: MLflow's standard credential variables."""
        return cli_env(
            self.url,
            self.model,
            MLFLOW_TRACKING_USERNAME=user,
            MLFLOW_TRACKING_PASSWORD=PASSWORDS[user],
            STACK_DATA_DIR=str(self.root / user),
            **extra,
        )

    def bootstrap_env(self) -> dict[str, str]:
        env = cli_env(self.url, self.model, MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
        env |= {f"STACK_{user.upper()}_PASSWORD": pw for user, pw in PASSWORDS.items()}
        return env | {"STACK_METRICS_PASSWORD": METRICS_PASSWORD}

    def experiment_id(self) -> str:
        found = requests.get(
            self.api("experiments/get-by-name"),
            params={"experiment_name": self.model},
            auth=("serving", PASSWORDS["serving"]),
            timeout=10,
        )
        found.raise_for_status()
        return found.json()["experiment"]["experiment_id"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    scratch = root / "tmp"
    scratch.mkdir()
    with run_provider(OIDC_CLIENT_ID) as provider:
        oidc = {
            "STACK_OIDC_ISSUER": provider.issuer,
            "STACK_OIDC_CLIENT_ID": OIDC_CLIENT_ID,
            "STACK_OIDC_ROLES": OIDC_ROLES,
        }
        service = start_tracking_server(
            root / "stack",
            free_port(),
            root / "tracking.log",
            SERVER_SECRETS | oidc | {"TMPDIR": str(scratch)},
        )
        try:
            wait_until_up(service, "/health", STARTUP_TIMEOUT_S)
            model = f"test-{uuid.uuid4().hex[:10]}"
            secured = Secured(service.url, model, root, scratch, provider)
            created = run_cli("tracking_server.bootstrap_users", env=secured.bootstrap_env())
            assert created.code == 0, created.stderr
            assert len(created.stdout.splitlines()) == 4, created.stdout
            yield secured
        finally:
            service.stop()


@pytest.mark.parametrize(
    ("secrets", "variable"),
    [
        ({"MLFLOW_FLASK_SERVER_SECRET_KEY": ""}, "MLFLOW_FLASK_SERVER_SECRET_KEY"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": ""}, "MLFLOW_AUTH_ADMIN_PASSWORD"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "MLFLOW_AUTH_ADMIN_PASSWORD"),
    ],
    ids=["no-secret-key", "no-admin-password", "default-password"],
)
def test_launcher_refuses_to_start_without_usable_secrets(
    tmp_path: Path, secrets: dict[str, str], variable: str
) -> None:
    env = SERVER_SECRETS | secrets | {"STACK_DATA_DIR": str(tmp_path), "MLFLOW_PORT": "1"}
    refused = run_cli("tracking_server", env=env, timeout=60)
    assert refused.code == 1
    assert refused.stderr.strip().splitlines() == refused.error_lines, refused.stderr  # one line
    [line] = refused.error_lines
    assert variable in line
    assert not (tmp_path / "mlflow.db").exists()  # refused before touching anything


def test_nobody_gets_in_without_the_right_password(secured: Secured) -> None:
    search = secured.api("experiments/search")
    anonymous = requests.get(search, params={"max_results": 1}, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = requests.get(
        search, params={"max_results": 1}, auth=("serving", "not-the-password"), timeout=10
    )
    assert wrong.status_code == 401
    right = requests.get(
        search, params={"max_results": 1}, auth=("serving", PASSWORDS["serving"]), timeout=10
    )
    assert right.status_code == 200
    # /health stays open: it is what every client's wait-for-server helper polls.
    assert requests.get(f"{secured.url}/health", timeout=10).status_code == 200

    [ini] = secured.scratch.glob("mlflow-basic-auth-*.ini")
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    assert ADMIN_PASSWORD not in ini.read_text()


def test_metrics_are_for_the_admin_and_the_scrape_only_user(secured: Secured) -> None:
    """MLflow's /metrics (docs/monitoring.md) is behind basic auth, and MLflow's fail-closed
    rule (no permission is defined for the path) leaves it to the admin; the stack-auth app
    adds the scrape-only user (STACK_METRICS_USERNAME), who may read it and nothing else."""
    metrics = f"{secured.url}/metrics"
    assert requests.get(metrics, timeout=10).status_code == 401
    as_serving = requests.get(metrics, auth=("serving", PASSWORDS["serving"]), timeout=10)
    assert as_serving.status_code == 403
    scraped = requests.get(metrics, auth=("admin", ADMIN_PASSWORD), timeout=10)
    assert scraped.status_code == 200
    assert "mlflow_http_request_total" in scraped.text

    scraper = ("metrics", METRICS_PASSWORD)
    by_scraper = requests.get(metrics, auth=scraper, timeout=10)
    assert by_scraper.status_code == 200, by_scraper.text
    assert "mlflow_http_request_total" in by_scraper.text
    assert (
        requests.get(metrics, auth=("metrics", "not-the-password"), timeout=10).status_code == 401
    )
    assert requests.post(metrics, auth=scraper, timeout=10).status_code in (403, 405)
    for path in ("experiments/search?max_results=1", "registered-models/search"):
        refused = requests.get(secured.api(path), auth=scraper, timeout=10)
        assert refused.status_code == 403, (path, refused.text)
        assert "scrape-only" in refused.json()["message"]
    assert requests.get(f"{secured.url}/health", auth=scraper, timeout=10).status_code == 200


def test_serving_reads_the_model_but_cannot_move_aliases_or_write_runs(secured: Secured) -> None:
    serving = ("serving", PASSWORDS["serving"])

    def call(method: str, path: str, **kwargs) -> int:
        return requests.request(
            method, secured.api(path), auth=serving, timeout=10, **kwargs
        ).status_code

    assert call("GET", "registered-models/get", params={"name": secured.model}) == 200
    alias = {"name": secured.model, "alias": "production", "version": "1"}
    assert call("POST", "registered-models/alias", json=alias) == 403
    assert call("DELETE", "registered-models/alias", json=alias) == 403
    assert call("POST", "runs/create", json={"experiment_id": secured.experiment_id()}) == 403
    # Nor anywhere else: with workspaces only the admin creates experiments and models.
    assert call("POST", "experiments/create", json={"name": f"{secured.model}-own"}) == 403
    assert call("POST", "registered-models/create", json={"name": f"{secured.model}-own"}) == 403


def test_every_check_still_answers_past_the_short_lane_to_flask(secured: Secured) -> None:
    """The stack's app sends Flask-served requests past MLflow's FastAPI layers
    (tracking_server/flask_lane.py) and remembers the default workspace: MLflow's checks still
    refuse on those paths, and on the native FastAPI routes that keep MLflow's full stack."""
    serving = ("serving", PASSWORDS["serving"])
    by_name = {"experiment_name": secured.model}
    for prefix in ("api", "ajax-api"):
        found = f"{secured.url}/{prefix}/2.0/mlflow/experiments/get-by-name"
        anonymous = requests.get(found, params=by_name, timeout=10)
        assert anonymous.status_code == 401, prefix
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert requests.get(found, params=by_name, auth=serving, timeout=10).status_code == 200
    found = secured.api("experiments/get-by-name")
    # The workspace check: the default workspace, named or not, is served; one that does not
    # exist is refused before any handler runs.
    for _ in range(2):
        named = {"X-MLflow-Workspace": "default"}
        served = requests.get(found, params=by_name, headers=named, auth=serving, timeout=10)
        assert served.status_code == 200, served.text
    missing = {"X-MLflow-Workspace": "no-such-workspace"}
    refused = requests.get(found, params=by_name, headers=missing, auth=serving, timeout=10)
    assert refused.status_code == 404, refused.text
    # A write the user has no permission for, MLflow's security layer (host, CORS, headers).
    update = {"experiment_id": secured.experiment_id(), "new_name": f"{secured.model}-renamed"}
    rename = secured.api("experiments/update")
    assert requests.post(rename, json=update, auth=serving, timeout=10).status_code == 403
    evil_host = {"Host": "evil.example"}
    assert requests.get(found, params=by_name, headers=evil_host, timeout=10).status_code == 403
    cross_origin = {"Origin": "http://evil.example"}
    assert (
        requests.post(secured.api("runs/search"), json={}, headers=cross_origin, timeout=10)
    ).status_code == 403
    answered = requests.get(found, params=by_name, auth=serving, timeout=10)
    assert answered.headers["X-Content-Type-Options"] == "nosniff"
    # Native FastAPI routes: MLflow's FastAPI permission layer still asks for the password.
    artifact = f"{secured.url}/api/2.0/mlflow-artifacts/artifacts/1/x/model.pkl"
    assert requests.get(artifact, timeout=10).status_code == 401
    assert requests.post(f"{secured.url}/v1/traces", data=b"", timeout=10).status_code == 401


def test_a_cli_with_a_wrong_password_says_what_to_set(secured: Secured) -> None:
    wrong = secured.env("promoter") | {"MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    refused = run_cli("promotion", "status", env=wrong)
    assert refused.code == 1
    [line] = refused.error_lines
    assert "refused the credentials (401" in line and "MLFLOW_TRACKING_PASSWORD" in line


def test_only_the_admin_grants_permissions(secured: Secured, monkeypatch) -> None:
    from mlflow.server import get_app_client

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "trainer")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS["trainer"])
    auth = get_app_client("basic-auth", tracking_uri=secured.url)
    with pytest.raises(MlflowException, match=r"403|PERMISSION_DENIED"):
        auth.grant_user_permission("trainer", "registered_model", secured.model, "MANAGE")
    with pytest.raises(MlflowException, match=r"403|PERMISSION_DENIED"):
        auth.create_user("intruder", "intruder-password-1")


def test_create_users_runs_again_without_changing_anything(secured: Secured) -> None:
    again = run_cli("tracking_server.bootstrap_users", env=secured.bootstrap_env())
    assert again.code == 0, again.stderr
    lines = again.stdout.splitlines()
    assert len(lines) == 4 and all("exists" in ln and "(unchanged)" in ln for ln in lines), lines


def test_trainer_registers_promoter_promotes_and_serving_follows(
    secured: Secured, services: ServiceFactory, tmp_path: Path
) -> None:
    trained = run_cli("training", "--print-version", env=secured.env("trainer"))
    assert trained.code == 0, trained.stderr
    assert trained.stdout.strip() == "1"

    # The real stack-serve, as the read-only user, waiting for a promotion (as in Compose).
    serving = services.serving(
        secured.url,
        secured.model,
        data_dir=tmp_path / "serving",
        env={
            "MLFLOW_TRACKING_USERNAME": "serving",
            "MLFLOW_TRACKING_PASSWORD": PASSWORDS["serving"],
            "SERVING_ALIAS_WAIT_SECONDS": "120",
            "SERVING_POLL_SECONDS": "1",
        },
        wait=False,
    )
    promoted = run_cli("promotion", "promote", env=secured.env("promoter"))
    assert promoted.code == 0, promoted.stderr
    assert f"{secured.model}@production -> version 1" in promoted.stdout

    # Serving sees the alias, downloads the version through the tracking server's artifact
    # proxy with its read-only user, and answers.
    wait_for_version(serving.url, "1", timeout_s=120)
    answer = predict(serving.url, [5.0])
    assert answer.model_version == "1" and 0 <= answer.grades[0] <= 100
