"""The user story of docs/compose.md, for real: containers, a database, a bucket, HTTP.

One compose project with its own name, .env and free loopback ports: build, ``up -d --wait``,
train with ``run --rm trainer``, promote with ``run --rm promoter promote``, predict from the
host, find the artifacts in the bucket, restart (``down`` keeping the volumes, ``up``) and find
runs, versions and aliases again; ``down -v`` at the end even on failure.

Then the disaster-recovery runbook of docs/backup.md on the same stack (one lifecycle, the
expensive part, for both stories): ``run --rm backup create`` (last line: the ID) into a host
folder bind-mounted as the runbook does; ``down -v`` deletes the database and bucket volumes and
serving's cache; ``up -d --wait`` starts an empty stack; ``stop tracking-server serving``,
``run --rm backup restore --yes ID``, ``up -d --wait``: every run, param, tag, version, alias,
user, permission and artifact byte is back, and serving answers from the restored
``production`` version. One changed byte in the backup on the host: ``verify`` and ``restore``
fail with one line naming the file.

Locked down (docs/security.md): the tracking server answers 401 to anyone without the right
password (curl from the host), the trainer, the promoter and serving each log in as their own
user, serving's user may not move an alias or write a run (403), the users and their grants
live in PostgreSQL and survive the restart, and our containers cannot write their root
filesystem.

Watched (docs/monitoring.md): the stack runs with the ``monitoring`` profile, and its real
Prometheus scrapes both jobs (``up`` = 1, the tracking server as the scrape-only user); after N
predictions the PromQL sum of ``serving_requests_total`` for the served version rose by exactly
N; the switch to version 2 shows in ``serving_model_info`` and ``serving_model_switches_total``;
every query of the Grafana dashboard (deploy/grafana/) returns data.

Here it runs on the offline stand-ins (tests/compose/offline.yml). Their S3 store (moto) keeps
objects in memory, so after the restart the bucket is new and empty: the restart checks what
PostgreSQL and the serving cache volume keep. Against real MinIO (STACK_COMPOSE_OVERRIDE="" on
a machine that can pull the images) the artifacts are checked again after the restart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from compose_stack import (
    BASE,
    OFFLINE,
    OFFLINE_TLS,
    TEST_SECRETS,
    TLS,
    ComposeProject,
    write_env_file,
)
from prometheus_client.parser import text_string_to_metric_families

from local_stack.processes import free_port
from tests.backup_drill import corrupt_largest_artifact, full_snapshot
from tests.monitoring import DASHBOARD, Prometheus, dashboard_queries, has_data

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

LIST_BUCKET = """
import json, os, boto3
bucket = os.environ["MLFLOW_ARTIFACTS_DESTINATION"].split("/")[2]
s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
print(json.dumps([o["Key"] for page in pages for o in page.get("Contents", [])]))
"""
CREDENTIALS_IN_ENV = """
import json, os
secrets = ("AWS_", "GOOGLE_", "PG", "MLFLOW_AUTH_", "MLFLOW_FLASK_")
print(json.dumps(sorted(k for k in os.environ if k.startswith(secrets))))
"""
# A read-only root filesystem refuses the write (EROFS); the auth ini is the server's alone.
LOCKED_DOWN = """
import errno, glob, json, os
try:
    open("/home/app/probe", "w")
    root = "writable"
except OSError as exc:
    root = errno.errorcode[exc.errno]
modes = [oct(os.stat(p).st_mode & 0o777) for p in glob.glob("/tmp/mlflow-basic-auth-*.ini")]
print(json.dumps({"root": root, "uid": os.getuid(), "ini_modes": modes}))
"""
PROMOTION_WAIT_S = 120.0
SCRAPE_INTERVAL_S = 5.0  # deploy/prometheus/prometheus.yml
BACKUP_UID = 10001  # the backup image's user, when the tests run as root


# Where Caddy keeps its internal CA's root certificate (make ca-cert exports it).
CADDY_ROOT = "/data/caddy/pki/authorities/local/root.crt"


def invoke(port: int, hours: float) -> requests.Response:
    response = requests.post(
        f"http://127.0.0.1:{port}/invocations",
        json={"dataframe_split": {"columns": ["hours"], "data": [[hours]]}},
        timeout=10,
    )
    response.raise_for_status()
    return response


def predict(port: int, hours: float) -> float:
    [prediction] = invoke(port, hours).json()["predictions"]
    return float(prediction)


def wait_for_version(port: int, version: str, timeout_s: float) -> float:
    """Poll /invocations until ``version`` answers; its prediction for 5 hours."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = invoke(port, 5)
            if response.headers.get("X-Model-Version") == version:
                [prediction] = response.json()["predictions"]
                return float(prediction)
        except (requests.RequestException, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"serving did not answer with version {version} in time")
        time.sleep(2)


def wait_for_log(stack: ComposeProject, service: str, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in stack.logs(service):
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} did not log {text!r} within {timeout_s:g}s")
        time.sleep(1)


def bucket_keys(stack: ComposeProject) -> list[str]:
    return json.loads(stack.python_in("tracking-server", LIST_BUCKET))


@pytest.fixture
def stack(tmp_path: Path) -> ComposeProject:
    override = os.environ.get("STACK_COMPOSE_OVERRIDE", OFFLINE)
    # With the HTTPS front (docker-compose.tls.yml), its stand-in where the base has one.
    files = (BASE, TLS, override, OFFLINE_TLS) if override == OFFLINE else (BASE, TLS)
    if override and override != OFFLINE:
        files = (BASE, TLS, override)
    name = uuid.uuid4().hex[:8]
    env_file = write_env_file(
        tmp_path / "compose.env",
        {
            **TEST_SECRETS,
            "MODEL_NAME": f"compose-{name}",
            "MLFLOW_EXPERIMENT_NAME": f"compose-{name}",
            "MLFLOW_UI_PORT": str(free_port()),
            "SERVING_API_PORT": str(free_port()),
            "PROMETHEUS_PORT": str(free_port()),
            # A name Caddy's internal CA signs for, on loopback ports of this test's own.
            "STACK_DOMAIN": "localhost",
            "STACK_HTTPS_BIND": "127.0.0.1",
            "STACK_HTTPS_PORT": str(free_port()),
            "STACK_HTTP_PORT": str(free_port()),
        },
    )
    return ComposeProject(f"stacktest{name}", env_file, files, profiles=("monitoring",))


def settings_of(stack: ComposeProject) -> dict[str, str]:
    lines = stack.env_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def curl_status(url: str, *args: str) -> int:
    """The HTTP status curl gets from the host."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args, url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return int(out.stdout)


def check_https_front(stack: ComposeProject, model: str, tmp_path: Path) -> None:
    """Issue 22's front: the UI/API and serving over HTTPS with the internal CA's root, plain
    HTTP redirected, and the MLflow client verifying the certificate (never skipping it)."""
    from mlflow import MlflowClient

    settings = settings_of(stack)
    https = f"https://localhost:{settings['STACK_HTTPS_PORT']}"
    ca = tmp_path / "stack-ca.crt"
    ca.write_text(stack.run("exec", "-T", "front", "cat", CADDY_ROOT).stdout)
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    health = requests.get(f"{https}/health", verify=str(ca), timeout=30)
    assert health.text == "OK" and "max-age" in health.headers["Strict-Transport-Security"]
    answer = requests.post(
        f"{https}/serving/invocations",
        json={"dataframe_split": {"columns": ["hours"], "data": [[5.0]]}},
        verify=str(ca),
        timeout=30,
    )
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1", answer.text
    redirect = requests.get(
        f"http://localhost:{settings['STACK_HTTP_PORT']}/", allow_redirects=False, timeout=30
    )
    assert redirect.status_code in (301, 308) and redirect.headers["Location"].startswith(
        "https://"
    )
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without the root
        requests.get(f"{https}/health", timeout=30)
    # The MLflow client from the host, as the trainer, over HTTPS with the CA file only.
    env = {
        "MLFLOW_TRACKING_SERVER_CERT_PATH": str(ca),
        "MLFLOW_TRACKING_USERNAME": "trainer",
        "MLFLOW_TRACKING_PASSWORD": TEST_SECRETS["STACK_TRAINER_PASSWORD"],
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        client = MlflowClient(https)
        assert client.get_model_version_by_alias(model, "production").version == "1"
        experiment = client.get_experiment_by_name(model).experiment_id
        run = client.create_run(experiment, run_name="over https")
        client.log_param(run.info.run_id, "transport", "https")
        client.log_metric(run.info.run_id, "m", 1.0)
        client.set_terminated(run.info.run_id)
        assert client.get_run(run.info.run_id).data.params == {"transport": "https"}
        # A teammate's machine downloads the production model with no extra variable: the
        # server offers no presigned URL naming minio:9000, every byte comes through the front.
        patch.delenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", raising=False)
        patch.setenv("MLFLOW_TRACKING_URI", https)
        patch.setenv("MLFLOW_TRACKING_USERNAME", "serving")
        patch.setenv("MLFLOW_TRACKING_PASSWORD", TEST_SECRETS["STACK_SERVING_PASSWORD"])
        import mlflow.artifacts

        started = time.monotonic()
        local = mlflow.artifacts.download_artifacts(
            f"models:/{model}@production", dst_path=str(tmp_path / "outside-client")
        )
        assert (Path(local) / "MLmodel").is_file() and time.monotonic() - started < 60


def check_locked_down(stack: ComposeProject, ui: str, model: str) -> None:
    """Who may do what, from the host, against the running stack."""
    secrets = TEST_SECRETS
    search = f"{ui}/api/2.0/mlflow/experiments/search?max_results=1"
    assert curl_status(search) == 401  # no credentials
    assert curl_status(search, "-u", "serving:wrong-password-here") == 401
    assert curl_status(search, "-u", f"serving:{secrets['STACK_SERVING_PASSWORD']}") == 200
    assert curl_status(f"{ui}/health") == 200  # healthchecks need no password

    serving = ("serving", secrets["STACK_SERVING_PASSWORD"])
    alias = {"name": model, "alias": "production", "version": "1"}
    moved = requests.post(
        f"{ui}/api/2.0/mlflow/registered-models/alias", json=alias, auth=serving, timeout=10
    )
    assert moved.status_code == 403, moved.text
    experiment = requests.get(
        f"{ui}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": model},
        auth=serving,
        timeout=10,
    ).json()["experiment"]["experiment_id"]
    run = requests.post(
        f"{ui}/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment},
        auth=serving,
        timeout=10,
    )
    assert run.status_code == 403, run.text

    check_registry_integrity(ui, model)
    check_a_person_added(stack, ui, model)

    for service in ("tracking-server", "serving"):
        state = json.loads(stack.python_in(service, LOCKED_DOWN))
        assert state["root"] == "EROFS" and state["uid"] == 10001, (service, state)
    assert json.loads(stack.python_in("tracking-server", LOCKED_DOWN))["ini_modes"] == ["0o600"]


def check_a_person_added(stack: ComposeProject, ui: str, model: str) -> None:
    """Issue 22: the admin adds a person with the create-users image, as the README says; they
    read the team's model under their own name and may not move production."""
    added = stack.run(
        "run", "--rm", "-T", "create-users", "stack-users", "add", "alice", "--role", "trainer",
        step="stack-users add",
    )  # fmt: skip
    [password] = re.findall(r"give it to alice\): (\S+)", added.stdout)
    alice = ("alice", password)
    got = requests.get(
        f"{ui}/api/2.0/mlflow/registered-models/get", params={"name": model}, auth=alice, timeout=10
    )
    assert got.status_code == 200, got.text
    moved = requests.post(
        f"{ui}/api/2.0/mlflow/registered-models/alias",
        json={"name": model, "alias": "production", "version": "1"},
        auth=alice,
        timeout=10,
    )
    assert moved.status_code == 403, moved.text


def check_registry_integrity(ui: str, model: str) -> None:
    """Issue 20 against the real stack: the trainer cannot replace production's files, the
    promoter cannot grant MANAGE, a DELETE checked against one model cannot act on another."""
    secrets = TEST_SECRETS
    admin = ("admin", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"])
    trainer = ("trainer", secrets["STACK_TRAINER_PASSWORD"])
    promoter = ("promoter", secrets["STACK_PROMOTER_PASSWORD"])
    api = f"{ui}/api/2.0/mlflow"
    production = requests.get(
        f"{api}/registered-models/alias",
        params={"name": model, "alias": "production"},
        auth=admin,
        timeout=10,
    ).json()["model_version"]
    found = re.search(r"m-[0-9a-f]{32}", f"{production.get('model_id')} {production['source']}")
    assert found, production  # the trainer registers its logged model
    model_id = found.group(0)
    logged = requests.get(f"{api}/logged-models/{model_id}", auth=admin, timeout=10).json()
    files = logged["model"]["info"]["artifact_uri"].split(":", 1)[1].lstrip("/")
    replaced = requests.put(
        f"{ui}/api/2.0/mlflow-artifacts/artifacts/{files}/MLmodel",
        data=b"not the model",
        auth=trainer,
        timeout=10,
    )
    assert replaced.status_code == 403, replaced.text
    granted = requests.post(
        f"{ui}/api/3.0/mlflow/users/permissions/grant",
        json={
            "username": "trainer",
            "resource_type": "registered_model",
            "resource_id": model,
            "permission": "MANAGE",
        },
        auth=promoter,
        timeout=10,
    )
    assert granted.status_code == 403, granted.text
    confused = requests.delete(
        f"{api}/registered-models/alias",
        params={"name": model, "alias": "nonexistent"},
        data=json.dumps({"name": model, "alias": "production"}),
        headers={"Content-Type": ""},
        auth=promoter,
        timeout=10,
    )
    assert confused.status_code == 400, confused.text
    still = requests.get(
        f"{api}/registered-models/alias",
        params={"name": model, "alias": "production"},
        auth=admin,
        timeout=10,
    )
    assert still.json()["model_version"]["version"] == production["version"]
    # An unknown scheme is a 401, never a 500; the job users reach no native route but theirs.
    digest = requests.get(
        f"{api}/experiments/search",
        params={"max_results": 1},
        headers={"Authorization": 'Digest username="admin", realm="mlflow"'},
        timeout=10,
    )
    assert digest.status_code == 401, digest.text
    for user in ("metrics", "serving"):
        login = (user, secrets[f"STACK_{user.upper()}_PASSWORD"])
        config = requests.get(f"{ui}/ajax-api/3.0/mlflow/assistant/config", auth=login, timeout=10)
        jobs = requests.post(f"{ui}/ajax-api/3.0/jobs/search", json={}, auth=login, timeout=10)
        assert (config.status_code, jobs.status_code) == (403, 403), (user, config.text, jobs.text)


def backup_folder(stack: ComposeProject, tmp_path: Path) -> Path:
    """The host folder of the backups, writable by the container's user (BACKUP_UID)."""
    folder = tmp_path / "backups"
    folder.mkdir()
    values = {"BACKUP_HOST_DIR": str(folder)}
    if os.getuid() == 0:  # as a root user would: hand the folder to the image's user
        os.chown(folder, BACKUP_UID, BACKUP_UID)
    else:  # as the README says: run the container as the folder's owner
        values |= {"BACKUP_UID": str(os.getuid()), "BACKUP_GID": str(os.getgid())}
    with stack.env_file.open("a") as env:
        env.writelines(f"{key}={value}\n" for key, value in values.items())
    return folder


def served_by_serving(port: int, model: str, version: str) -> float:
    """serving's own count of the answers ``version`` gave, from its /metrics."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "serving_requests_total"
        and (sample.labels.get("model"), sample.labels.get("version")) == (model, version)
    )


def check_both_jobs_scraped(prometheus: Prometheus) -> None:
    """``up`` = 1: serving answered, and the tracking server let the scrape-only user in."""
    for job in ("serving", "tracking-server"):
        query = f'up{{job="{job}"}}'
        prometheus.wait(f"{query} == 1", lambda query=query: prometheus.value(query) == 1.0)


def check_exact_count(
    prometheus: Prometheus, port: int, model: str, version: str, predictions: int
) -> None:
    """After N predictions, the PromQL sum for the served version rose by exactly N."""
    served = f'sum(serving_requests_total{{job="serving", model="{model}", version="{version}"}})'
    time.sleep(1)  # nginx logs an answer just after sending it
    before = served_by_serving(port, model, version)
    prometheus.wait(f"{served} == {before:g}", lambda: prometheus.value(served) == before)
    for i in range(predictions):
        assert invoke(port, i % 10).headers["X-Model-Version"] == version
    after = before + predictions
    prometheus.wait(f"{served} == {after:g}", lambda: prometheus.value(served) == after)
    time.sleep(3 * SCRAPE_INTERVAL_S)  # more scrapes: nothing counted twice
    assert prometheus.value(served) == after


def check_switch_seen(prometheus: Prometheus, model: str, version: str, switched: float) -> None:
    """The new version is the only one in serving_model_info; one more switch counted."""
    info = f'serving_model_info{{job="serving", model="{model}", alias="production"}} == 1'
    prometheus.wait(
        f"{info}: version {version} alone",
        lambda: [s["metric"]["version"] for s in prometheus.query(info)] == [version],
    )
    switches = 'sum(serving_model_switches_total{job="serving", result="switched"})'
    prometheus.wait(
        f"{switches} == {switched + 1:g}", lambda: prometheus.value(switches) == switched + 1
    )
    rejected = 'sum(serving_model_switches_total{job="serving", result="rejected"})'
    assert prometheus.value(rejected) == 0


def check_dashboard_queries(prometheus: Prometheus, port: int) -> None:
    """Every query of the Grafana dashboard returns data from the real Prometheus."""
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    # The Challenger row needs a challenger on live traffic, which this stack does not run
    # (SERVING_SHADOW_ALIAS unset); its metric names are checked offline
    # (tests/unit/deploy/test_monitoring_files.py).
    queries = [query for query in queries if query.row != "Challenger"]
    assert len(queries) >= 10
    for i in range(20):  # traffic inside every rate window
        invoke(port, i % 10)
    for query in queries:
        prometheus.wait(
            f"data for panel {query.panel!r} ({query.ref}: {query.promql()})",
            lambda query=query: has_data(prometheus.query(query.promql())),
            timeout_s=90,
            every_s=2,
        )


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


def check_restore_after_down_v(
    stack: ComposeProject, folder: Path, backup_id: str, before: dict, tmp_path: Path
) -> None:
    """The runbook after the disaster, then one changed byte in the backup."""
    settings = settings_of(stack)
    ui = f"http://127.0.0.1:{settings['MLFLOW_UI_PORT']}"
    model = settings["MODEL_NAME"]
    stack.down(volumes=True)
    stack.up(step="up --wait (empty)")
    stack.run("stop", "tracking-server", "serving", step="stop")
    started = time.monotonic()
    restored = stack.run(
        "run", "--rm", "-T", "backup", "restore", "--yes", backup_id, step="backup restore"
    )
    assert f"restored {backup_id}" in restored.stdout, restored.stdout + restored.stderr
    stack.timings["restore"] = time.monotonic() - started
    stack.up(step="up --wait (restored)")

    assert full_snapshot(ui, model, model, tmp_path / "after") == before
    # serving's cache went with `down -v`: this answer comes from the restored bucket.
    wait_for_version(int(settings["SERVING_API_PORT"]), "2", PROMOTION_WAIT_S)

    # One changed byte on the host: verify and restore name the file and change nothing.
    key = corrupt_largest_artifact(folder / backup_id)
    for args in (("verify", backup_id), ("restore", "--yes", backup_id)):
        failed = stack.run("run", "--rm", "-T", "backup", *args, check=False)
        assert failed.returncode == 1, args
        [line] = error_lines(failed.stderr)
        assert key in line and "corrupted" in line, line


@pytest.mark.timeout(2700)
def test_compose_stack_trains_promotes_serves_survives_a_restart_and_restores_a_backup(
    stack: ComposeProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    settings = settings_of(stack)
    ui_port, serving_port = int(settings["MLFLOW_UI_PORT"]), int(settings["SERVING_API_PORT"])
    ui = f"http://127.0.0.1:{ui_port}"
    prometheus = Prometheus(f"http://127.0.0.1:{settings['PROMETHEUS_PORT']}")
    model = settings["MODEL_NAME"]
    in_memory_bucket = OFFLINE in stack.files
    # This test's own MLflow client reads the registry as the admin.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TEST_SECRETS["MLFLOW_AUTH_ADMIN_PASSWORD"])
    # No MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD here: the host cannot reach the bucket's
    # endpoint (minio:9000), and the server tells clients not to try (STACK_PRESIGNED_TRANSFERS).
    folder = backup_folder(stack, tmp_path)
    with stack.lifecycle():
        # Up: the tracking server answers on the loopback UI port; serving waits, and says so.
        assert requests.get(f"{ui}/health", timeout=10).text == "OK"
        wait_for_log(stack, "serving", "waiting for a production version")
        assert json.loads(stack.python_in("serving", CREDENTIALS_IN_ENV)) == []
        users = stack.logs("create-users")
        for user in ("trainer", "promoter", "serving"):
            assert f"user '{user}' ({user}: " in users and "created" in users, users

        # Train + register as the trainer; promote as the promoter.
        trained = stack.run("run", "--rm", "-T", "trainer", step="run trainer")
        assert f"registered '{model}' version 1" in trained.stdout, trained.stdout
        promoted = stack.run("run", "--rm", "-T", "promoter", "promote", step="promote")
        assert f"{model}@production -> version 1" in promoted.stdout, promoted.stdout
        check_locked_down(stack, ui, model)

        # Serving picks the promotion up by itself and answers from the host.
        started = time.monotonic()
        grade = wait_for_version(serving_port, "1", PROMOTION_WAIT_S)
        stack.timings["serving picks up v1"] = time.monotonic() - started
        assert 0 <= grade <= 100
        if "STACK_HTTPS_PORT" in settings:
            check_https_front(stack, model, tmp_path)
        assert predict(serving_port, 8) >= predict(serving_port, 2)

        # Prometheus (profile monitoring) scrapes both jobs and counts every prediction once.
        started = time.monotonic()
        check_both_jobs_scraped(prometheus)
        check_exact_count(prometheus, serving_port, model, "1", predictions=37)
        switched = 'sum(serving_model_switches_total{job="serving", result="switched"})'
        switched_before = prometheus.value(switched)
        assert switched_before is not None
        stack.timings["prometheus checks (v1)"] = time.monotonic() - started

        # A second version, promoted: serving follows the alias without a restart.
        stack.run("run", "--rm", "-T", "trainer", step="run trainer (v2)")
        stack.run("run", "--rm", "-T", "promoter", "promote", step="promote v2")
        started = time.monotonic()
        assert 0 <= wait_for_version(serving_port, "2", PROMOTION_WAIT_S) <= 100
        stack.timings["serving switches to v2"] = time.monotonic() - started
        started = time.monotonic()
        check_switch_seen(prometheus, model, "2", switched_before)
        check_dashboard_queries(prometheus, serving_port)
        stack.timings["prometheus checks (v2, dashboard)"] = time.monotonic() - started

        # The artifacts went to the bucket through the tracking server's proxy.
        keys = bucket_keys(stack)
        assert any(k.endswith("/MLmodel") for k in keys), keys
        assert any(k.endswith("/requirements.txt") for k in keys), keys

        client = MlflowClient(tracking_uri=ui)
        run_ids = {v.version: v.run_id for v in client.search_model_versions(f"name='{model}'")}
        assert set(run_ids) == {"1", "2"}
        assert client.get_model_version(model, "2").tags["promoted_by"] == "promoter"

        # A backup of the running stack (docs/backup.md); no secret is in it.
        before = full_snapshot(ui, model, model, tmp_path / "before")
        assert before["aliases"]["production"] == "2"
        made = stack.run("run", "--rm", "-T", "backup", "create", step="backup create")
        backup_id = made.stdout.strip().splitlines()[-1]
        assert (folder / backup_id / "manifest.json").is_file(), made.stdout + made.stderr
        stored = b"".join(p.read_bytes() for p in (folder / backup_id).rglob("*") if p.is_file())
        for name, secret in TEST_SECRETS.items():
            assert name == "STACK_IMAGE_TAG" or secret.encode() not in stored, name

        # Restart keeping the volumes: runs, versions, aliases, users and grants live in
        # PostgreSQL; create-users runs again and finds nothing to change.
        stack.down(volumes=False)
        stack.up(step="up --wait (restart)")
        assert "(unchanged)" in stack.logs("create-users")
        client = MlflowClient(tracking_uri=ui)
        for run_id in run_ids.values():
            assert client.get_run(run_id).info.status == "FINISHED"
        assert client.get_model_version_by_alias(model, "production").version == "2"
        assert client.get_model_version_by_alias(model, "previous").version == "1"
        status = stack.run("run", "--rm", "-T", "promoter", "production-version", step="status")
        assert status.stdout.strip().splitlines()[-1] == "2"
        # Serving comes back with the promoted version (from its cache volume if need be).
        assert 0 <= wait_for_version(serving_port, "2", PROMOTION_WAIT_S) <= 100
        if in_memory_bucket:
            # moto: the bucket was recreated, without the model's files
            assert not any(k.endswith("/MLmodel") for k in bucket_keys(stack))
        else:
            assert set(keys) <= set(bucket_keys(stack))  # MinIO keeps them in its volume

        # Disaster: the volumes go (`down -v`); the backup brings everything back.
        check_restore_after_down_v(stack, folder, backup_id, before, tmp_path)

    print("compose story timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in stack.timings.items()))
