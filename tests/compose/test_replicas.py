"""Every service proven stateless with replicas: docker-compose.scale.yml for real.

One scale stack for the module (three tracking servers, three model servers, HAProxy in front,
one PostgreSQL, one bucket), driven from the host through the balancer's loopback ports while
replicas are killed with ``docker kill``. Each serving replica is also queried directly on its
container IP (the host reaches Docker's bridge network; no image registry needed) to see which
version it serves. Propagation times are printed, not asserted (bench/scale_out.py reports them).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from compose_stack import (
    BASE,
    OFFLINE,
    OFFLINE_SCALE,
    SCALE,
    SCALE_STAND_IN_IMAGES,
    TEST_SECRETS,
    ComposeProject,
    write_env_file,
)

from local_stack.processes import free_port
from tests.helpers import cli_env, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

REPLICAS = 3
BODY = {"dataframe_split": {"columns": ["hours"], "data": [[5.0]]}}
VERIFY_CACHE = """
import os, sys
from pathlib import Path
from serving.cache import ModelCache
print(ModelCache(Path(os.environ["SERVING_CACHE_DIR"])).verify(sys.argv[1], sys.argv[2]))
"""


@dataclass
class ScaleStack:
    compose: ComposeProject
    ui: str
    serving: str
    model: str
    timings: dict[str, float] = field(default_factory=dict)

    def containers(self, service: str) -> list[str]:
        out = self.compose.run("ps", "-q", service, timeout=60).stdout
        return sorted(out.split())

    def replica_urls(self) -> list[str]:
        """Each serving replica's own address on the compose network."""
        urls = []
        for container in self.containers("serving"):
            ip = docker(
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                container,
            ).strip()
            urls.append(f"http://{ip}:8080")
        return urls

    def env(self, user: str) -> dict[str, str]:
        return cli_env(
            self.ui,
            self.model,
            MLFLOW_TRACKING_USERNAME=user,
            MLFLOW_TRACKING_PASSWORD=TEST_SECRETS[f"STACK_{user.upper()}_PASSWORD"],
            SERVER_WAIT_SECONDS="60",
            PROMOTED_BY=user,
        )

    def train(self, data_dir: Path) -> str:
        """Train and register as the trainer; the new version."""
        trained = run_cli(
            "training",
            "--print-version",
            env=self.env("trainer") | {"STACK_DATA_DIR": str(data_dir)},
            timeout=600,
        )
        assert trained.code == 0, trained.stderr
        return trained.stdout.strip()

    def ensure_production(self, data_dir: Path) -> str:
        """The version in production, trained and promoted first if there is none: each test
        of this module stands alone, in any order."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            return (
                MlflowClient(self.ui).get_model_version_by_alias(self.model, "production").version
            )
        except MlflowException:
            version = self.train(data_dir)
            assert self.registry("promote", "--version", version, "--force") == 0
            return version

    def registry(self, *args: str) -> int:
        return run_cli("promotion", *args, env=self.env("promoter"), timeout=300).code


def docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def served_version(url: str) -> str | None:
    try:
        response = requests.post(f"{url}/invocations", json=BODY, timeout=5)
    except requests.RequestException:
        return None
    return response.headers.get("X-Model-Version") if response.ok else None


def wait_healthy(container: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while docker("inspect", "-f", "{{.State.Health.Status}}", container).strip() != "healthy":
        assert time.monotonic() < deadline, f"{container} not healthy after {timeout_s:g}s"
        time.sleep(1)


class VersionWatch:
    """Polls every replica directly, all the time: which versions each one ever served, and
    when each first served a given version."""

    def __init__(self, urls: list[str], period_s: float = 0.1) -> None:
        self.urls = urls
        self.period_s = period_s
        self.seen: dict[str, set[str]] = {url: set() for url in urls}
        self.first: dict[tuple[str, str], float] = {}
        self.latest: dict[str, str | None] = {url: None for url in urls}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(u,), daemon=True) for u in urls]

    def _poll(self, url: str) -> None:
        while not self._stop.is_set():
            version = served_version(url)
            if version is not None:
                self.seen[url].add(version)
                self.first.setdefault((url, version), time.monotonic())
                self.latest[url] = version
            self._stop.wait(self.period_s)

    def __enter__(self) -> VersionWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def wait_all_on(
        self, version: str, since: float, timeout_s: float = 120
    ) -> tuple[float, float]:
        """Seconds from ``since`` until the first and the last replica served ``version``."""
        deadline = time.monotonic() + timeout_s
        while not all(self.latest[url] == version for url in self.urls):
            assert time.monotonic() < deadline, f"not all replicas on v{version}: {self.latest}"
            time.sleep(0.05)
        times = [self.first.get((url, version), since) - since for url in self.urls]
        return min(times), max(times)

    def wait_settled_on(self, version: str, settle_s: float = 20, timeout_s: float = 240) -> None:
        """Until every replica has served ``version`` for ``settle_s`` in a row: a replica whose
        poll saw a passing alias may be loading that version meanwhile, and then comes back."""
        deadline = time.monotonic() + timeout_s
        settled_since: float | None = None
        while True:
            now = time.monotonic()
            if all(self.latest[url] == version for url in self.urls):
                settled_since = settled_since or now
                if now - settled_since >= settle_s:
                    return
            else:
                settled_since = None
            assert now < deadline, f"replicas not settled on v{version}: {self.latest}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleStack]:
    missing = [
        image
        for image in SCALE_STAND_IN_IMAGES
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    ]
    override = os.environ.get("STACK_COMPOSE_OVERRIDE", OFFLINE)
    if override and missing:
        pytest.skip(f"stand-in images {', '.join(missing)} missing: run build-images.sh")
    files = (BASE, SCALE, override, OFFLINE_SCALE) if override else (BASE, SCALE)
    name = uuid.uuid4().hex[:8]
    ui_port, serving_port = free_port(), free_port()
    env_file = write_env_file(
        tmp_path_factory.mktemp("scale") / "compose.env",
        {
            **TEST_SECRETS,
            "MODEL_NAME": f"replicas-{name}",
            "MLFLOW_EXPERIMENT_NAME": f"replicas-{name}",
            "MLFLOW_UI_PORT": str(ui_port),
            "SERVING_API_PORT": str(serving_port),
            "SERVING_POLL_SECONDS": "1",
        },
    )
    compose = ComposeProject(f"stacktestscale{name}", env_file, files)
    with compose.lifecycle(wait_timeout_s=480):
        stack = ScaleStack(
            compose,
            f"http://127.0.0.1:{ui_port}",
            f"http://127.0.0.1:{serving_port}",
            f"replicas-{name}",
        )
        yield stack
        print("replica timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in stack.timings.items()))
    print("compose timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in compose.timings.items()))


@pytest.fixture(autouse=True)
def as_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's own MLflow client reads and writes the registry as the admin."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TEST_SECRETS["MLFLOW_AUTH_ADMIN_PASSWORD"])


@pytest.mark.timeout(900)
def test_three_tracking_replicas_starting_at_once_on_a_fresh_database_migrate_it_once(
    scale: ScaleStack,
) -> None:
    assert len(scale.containers("tracking-server")) == REPLICAS
    logs = scale.compose.logs("tracking-server", tail=2000)
    assert logs.count("migrating the backend store schema") == 1, logs
    assert logs.count("schema already at head") == REPLICAS - 1, logs
    assert logs.count("created the auth database") == 1, logs
    assert requests.get(f"{scale.ui}/health", timeout=10).text == "OK"  # through the balancer


@pytest.mark.timeout(900)
def test_serving_replicas_downloading_the_same_version_at_once_each_end_with_a_verified_cache(
    scale: ScaleStack, tmp_path: Path
) -> None:
    urls = scale.replica_urls()
    assert len(urls) == REPLICAS
    version = scale.train(tmp_path)
    with VersionWatch(urls) as watch:
        moved = time.monotonic()
        assert scale.registry("promote", "--version", version, "--force") == 0
        first, last = watch.wait_all_on(version, moved, timeout_s=240)
    scale.timings["v1 (download) on first replica"] = first
    scale.timings["v1 (download) on last replica"] = last
    for container in scale.containers("serving"):
        out = docker("exec", container, "python", "-c", VERIFY_CACHE, scale.model, version)
        assert out.strip() == "True", container


@pytest.mark.timeout(900)
def test_production_moved_every_replica_follows_and_none_serves_a_rejected_version(
    scale: ScaleStack, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    # A new version: production's registered again (MLflow copies its run and files).
    # Training is covered by the test that kills a tracking replica; here only the registry
    # and serving matter.
    old = scale.ensure_production(tmp_path)
    admin = MlflowClient(scale.ui)
    new = admin.create_model_version(scale.model, f"models:/{scale.model}/{old}").version
    # A version far worse on the test metric: the gate refuses it.
    experiment = admin.get_experiment_by_name(scale.model).experiment_id
    run = admin.create_run(experiment, run_name="worse")
    admin.log_metric(run.info.run_id, "test_rmse", 1e9)
    admin.set_terminated(run.info.run_id)
    source = f"runs:/{run.info.run_id}/model"
    rejected = admin.create_model_version(scale.model, source, run_id=run.info.run_id).version
    urls = scale.replica_urls()
    with VersionWatch(urls) as watch:
        assert scale.registry("promote", "--version", rejected) != 0  # refused by the gate
        moved = time.monotonic()
        assert scale.registry("promote", "--version", new) == 0
        first, last = watch.wait_all_on(new, moved)
        scale.timings["v2 on first replica"] = first
        scale.timings["v2 on last replica"] = last
        scale.timings["propagation spread"] = last - first

        # Two quick moves in a row: back to the old one, at once forward to the new again.
        assert scale.registry("rollback") == 0
        assert scale.registry("promote", "--version", new) == 0
        watch.wait_settled_on(new)
    assert all(rejected not in seen for seen in watch.seen.values()), watch.seen
    assert set().union(*watch.seen.values()) <= {old, new}, watch.seen


@pytest.mark.timeout(900)
def test_one_serving_replica_killed_under_load_fails_no_request(
    scale: ScaleStack, tmp_path: Path
) -> None:
    version = scale.ensure_production(tmp_path)
    for url in scale.replica_urls():  # every replica serves before the load starts
        deadline = time.monotonic() + 240
        while served_version(url) != version:
            assert time.monotonic() < deadline, f"{url} not serving v{version}"
            time.sleep(1)
    victim = scale.containers("serving")[1]
    stop = threading.Event()

    def load() -> tuple[int, list[str]]:
        ok, failures = 0, []
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(f"{scale.serving}/invocations", json=BODY, timeout=30)
                    if response.ok:
                        ok += 1
                    else:
                        failures.append(f"{response.status_code} {response.text[:100]}")
                except requests.RequestException as exc:
                    failures.append(repr(exc))
        return ok, failures

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(load) for _ in range(4)]
        time.sleep(3)
        docker("kill", victim)
        time.sleep(8)
        stop.set()
        results = [client.result(timeout=120) for client in clients]
    served = sum(ok for ok, _ in results)
    failures = [failure for _, fails in results for failure in fails]
    print(f"serving replica killed under load: {served} requests answered, {len(failures)} failed")
    assert served > 0 and failures == [], failures[:5]
    docker("start", victim)
    wait_healthy(victim)


@pytest.mark.timeout(900)
def test_training_and_registry_through_the_balancer_survive_a_tracking_replica_killed(
    scale: ScaleStack, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    scale.ensure_production(tmp_path / "first")
    client = MlflowClient(scale.ui)
    before = {v.version for v in client.search_model_versions(f"name='{scale.model}'")}
    victim = scale.containers("tracking-server")[0]
    stop = threading.Event()
    reads: list[str] = []

    def registry_reads() -> None:
        while not stop.is_set():
            reads.append(client.get_model_version_by_alias(scale.model, "production").version)
            client.search_model_versions(f"name='{scale.model}'")

    trainings = 1
    with ThreadPoolExecutor(2) as pool:
        reader = pool.submit(registry_reads)
        trainer = pool.submit(lambda: [scale.train(tmp_path / str(i)) for i in range(trainings)])
        time.sleep(2)
        docker("kill", victim)
        time.sleep(5)
        docker("start", victim)
        trainer.result(timeout=600)  # every training run succeeded (raises otherwise)
        wait_healthy(victim)
        stop.set()
        reader.result(timeout=120)  # every registry read succeeded
    assert reads and len(set(reads)) == 1  # nobody moved production meanwhile

    versions = client.search_model_versions(f"name='{scale.model}'")
    added = sorted(int(v.version) for v in versions if v.version not in before)
    assert added == list(range(max(map(int, before)) + 1, max(map(int, before)) + 1 + trainings))
    run_ids = [v.run_id for v in versions if v.version not in before]
    assert len(run_ids) == len(set(run_ids)) == trainings, "a run registered twice"
    experiment = client.get_experiment_by_name(scale.model).experiment_id
    running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert running == [], [r.info.run_id for r in running]
