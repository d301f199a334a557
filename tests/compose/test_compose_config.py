"""The compose files and the Dockerfile, checked without starting anything.

``docker compose config`` must accept every combination the docs name (base, base+aws, base+gcs,
base+offline) and resolve it to what the stack promises: only the UI and serving published, on
loopback; healthchecks; start-up order; bucket credentials only where they are needed; MLflow's
basic auth on, each client its own user, the admin's password only where it is needed; our
containers on read-only root filesystems. A missing secret must stop Compose with the variable's
name. The one Dockerfile must pass hadolint, pin what the lock pins and build every image on
its shared base stage.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from compose_stack import (
    AWS,
    BASE,
    GCS,
    OFFLINE,
    OFFLINE_SCALE,
    ROOT,
    SCALE,
    TEST_SECRETS,
    TLS,
    ComposeError,
    ComposeProject,
    write_env_file,
)

COMBINATIONS = {
    "base": (BASE,),
    "aws": (BASE, AWS),
    "gcs": (BASE, GCS),
    "offline": (BASE, OFFLINE),
}
CLOUD_ENV = {
    "ARTIFACTS_BUCKET": "acme-mlflow-artifacts",
    "AWS_DEFAULT_REGION": "eu-west-1",
}
# One Dockerfile at the root; each service that builds an image names its target stage.
DOCKERFILE = "Dockerfile"
IMAGE_TARGETS = {
    "tracking-server": "tracking-server",
    "create-bucket": "tracking-server",
    "create-users": "tracking-server",
    "trainer": "trainer",
    "promoter": "trainer",
    "serving": "serving",
    "backup": "backup",
}
LONG_RUNNING = ("postgres", "minio", "tracking-server", "serving")
CREDENTIAL_PREFIXES = ("AWS_", "GOOGLE_", "MINIO_", "PGPASSWORD", "MLFLOW_S3_")
# The admin's password and the server's secret key: the server and the user-creating job only.
AUTH_SECRETS = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
# Our images: run as uid 10001 on a read-only root filesystem with a tmpfs /tmp.
OUR_SERVICES = (
    "create-bucket",
    "tracking-server",
    "create-users",
    "trainer",
    "promoter",
    "serving",
    "backup",
    "cleanup",
)
# Who logs in to MLflow as whom (STACK_<ROLE>_USERNAME defaults).
CLIENT_USERS = {"trainer": "trainer", "promoter": "promoter", "serving": "serving"}
# The clients of the tracking server: no bucket or database credentials.
CLIENTS = ("trainer", "promoter", "serving")

# The compose checks need the docker CLI (not an engine); the Dockerfile checks do not.
needs_compose = pytest.mark.usefixtures("compose_cli")


def resolved(files: tuple[str, ...], env_file: Path, profiles: tuple[str, ...] = ()) -> dict:
    return ComposeProject("stackconfig", env_file, files, profiles).config()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    key = tmp_path / "gcp-sa-key.json"
    key.write_text("{}")
    return key


@pytest.fixture(scope="module")
def resolved_combinations(compose_cli, tmp_path_factory) -> dict[str, dict]:
    """Every combination resolved once: the rules below read the same configs."""
    folder = tmp_path_factory.mktemp("combinations")
    key = folder / "gcp-sa-key.json"
    key.write_text("{}")
    env = write_env_file(
        folder / "test.env", {**TEST_SECRETS, **CLOUD_ENV, "GCP_SA_KEY_FILE": str(key)}
    )
    return {name: resolved(files, env) for name, files in COMBINATIONS.items()}


@pytest.fixture(params=sorted(COMBINATIONS))
def combination(request, resolved_combinations) -> tuple[str, dict]:
    """(name, resolved services) of each combination in turn."""
    return request.param, resolved_combinations[request.param]["services"]


def test_every_combination_has_our_services_and_minio_only_where_it_runs(combination) -> None:
    name, services = combination
    assert set(OUR_SERVICES) | {"postgres"} <= set(services)
    assert ("minio" in services) == (name in ("base", "offline"))


def test_only_the_ui_and_serving_are_published_and_only_on_loopback(combination) -> None:
    _, services = combination
    for service_name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (service_name, port)
    published = {(s, p["target"]) for s, svc in services.items() for p in svc.get("ports", [])}
    # Only the UI/API and serving: PostgreSQL, the S3 API and MinIO's console stay inside.
    assert published == {("tracking-server", 5000), ("serving", 8080)}


def test_long_running_services_have_a_healthcheck_and_restart_unless_stopped(
    combination,
) -> None:
    _, services = combination
    for service_name in LONG_RUNNING:
        if service_name in services:
            assert services[service_name]["healthcheck"]["test"], service_name
            assert services[service_name]["restart"] == "unless-stopped", service_name


def test_tracking_server_starts_after_a_healthy_postgres_and_the_bucket_job(combination) -> None:
    _, services = combination
    depends_on = services["tracking-server"]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["create-bucket"]["condition"] == "service_completed_successfully"
    assert services["create-bucket"]["restart"] == "no"


def test_clients_start_after_a_healthy_tracking_server(combination) -> None:
    _, services = combination
    for client in ("trainer", "serving"):
        assert services[client]["depends_on"]["tracking-server"]["condition"] == "service_healthy"


def test_trainer_and_promoter_run_only_on_demand(combination) -> None:
    _, services = combination
    assert services["trainer"]["profiles"] == ["jobs"]
    assert services["promoter"]["profiles"] == ["jobs"]


def test_tracking_server_runs_basic_auth_with_its_own_auth_database(combination) -> None:
    _, services = combination
    env = services["tracking-server"]["environment"]
    assert env["MLFLOW_AUTH"] == "true"
    auth_db = env["MLFLOW_AUTH_DATABASE_URI"]
    assert auth_db.startswith("postgresql+psycopg2://") and auth_db.endswith("/mlflow_auth")
    assert TEST_SECRETS["POSTGRES_PASSWORD"] not in auth_db


def test_users_are_made_by_a_one_shot_job_once_the_server_is_healthy_before_serving(
    combination,
) -> None:
    _, services = combination
    users_job = services["create-users"]
    assert users_job["restart"] == "no"
    assert users_job["image"] == services["tracking-server"]["image"]
    assert users_job["depends_on"]["tracking-server"]["condition"] == "service_healthy"
    # serving starts with `up`, so only after the users exist; the jobs run after `up`.
    assert services["serving"]["depends_on"]["create-users"]["condition"] == (
        "service_completed_successfully"
    )


def test_each_client_logs_in_as_its_own_user_with_the_password_the_users_job_sets(
    combination,
) -> None:
    _, services = combination
    users_job_env = services["create-users"]["environment"]
    for client, user in CLIENT_USERS.items():
        client_env = services[client]["environment"]
        assert client_env["MLFLOW_TRACKING_USERNAME"] == user
        password = client_env["MLFLOW_TRACKING_PASSWORD"]
        assert password == TEST_SECRETS[f"STACK_{client.upper()}_PASSWORD"]
        assert users_job_env[f"STACK_{client.upper()}_PASSWORD"] == password


def test_admin_password_only_in_the_server_and_the_users_job_secret_key_only_in_the_server(
    combination,
) -> None:
    _, services = combination

    def holders(secret: str) -> list[str]:
        return [s for s in services if secret in services[s].get("environment", {})]

    assert holders("MLFLOW_AUTH_ADMIN_PASSWORD") == ["create-users", "tracking-server"]
    assert holders("MLFLOW_FLASK_SERVER_SECRET_KEY") == ["tracking-server"]
    # Under any name: the admin's password reaches the clean-up job too (gc deletes as admin).
    admin = TEST_SECRETS["MLFLOW_AUTH_ADMIN_PASSWORD"]
    by_value = sorted(s for s in services if admin in services[s].get("environment", {}).values())
    assert by_value == ["cleanup", "create-users", "tracking-server"]


def test_our_containers_run_as_the_image_user_on_a_read_only_root_filesystem(
    combination,
) -> None:
    _, services = combination
    for service_name in OUR_SERVICES:
        service = services[service_name]
        assert service.get("read_only") is True, f"{service_name}: root filesystem not read-only"
        assert any(t.startswith("/tmp:") for t in service["tmpfs"]), service_name
        assert service.get("user") in (None, "10001", "10001:10001"), service_name


def test_servers_listen_on_every_interface_of_their_container(combination) -> None:
    _, services = combination
    assert services["tracking-server"]["environment"]["MLFLOW_HOST"] == "0.0.0.0"
    assert services["serving"]["environment"]["SERVING_HOST"] == "0.0.0.0"


def test_tracking_server_proxies_the_artifacts_the_bucket_job_made_a_bucket_for(
    combination,
) -> None:
    _, services = combination
    env = services["tracking-server"]["environment"]
    assert env["MLFLOW_SERVE_ARTIFACTS"] == "true"
    bucket_job = services["create-bucket"]["environment"]
    assert bucket_job["MLFLOW_ARTIFACTS_DESTINATION"] == env["MLFLOW_ARTIFACTS_DESTINATION"]


def test_backend_store_password_reaches_the_server_only_as_pgpassword(combination) -> None:
    _, services = combination
    env = services["tracking-server"]["environment"]
    uri = env["MLFLOW_BACKEND_STORE_URI"]
    assert uri.startswith("postgresql+psycopg2://") and "@postgres:5432/" in uri
    assert TEST_SECRETS["POSTGRES_PASSWORD"] not in uri
    assert env["PGPASSWORD"] == TEST_SECRETS["POSTGRES_PASSWORD"]


def test_clients_reach_the_tracking_server_and_hold_no_store_or_admin_credentials(
    combination,
) -> None:
    _, services = combination
    for client in CLIENTS:
        client_env = services[client]["environment"]
        assert client_env["MLFLOW_TRACKING_URI"] == "http://tracking-server:5000"
        leaked = [k for k in client_env if k.startswith(CREDENTIAL_PREFIXES + AUTH_SECRETS)]
        assert not leaked, f"{client} must not hold bucket, database or admin secrets: {leaked}"


def test_serving_waits_for_a_production_version_instead_of_crash_looping(combination) -> None:
    _, services = combination
    assert float(services["serving"]["environment"]["SERVING_ALIAS_WAIT_SECONDS"]) >= 3600


def test_every_image_builds_from_the_one_dockerfile_with_its_target(combination) -> None:
    _, services = combination
    stages = dockerfile_stages()
    for service_name, target in IMAGE_TARGETS.items():
        build = services[service_name]["build"]
        assert Path(build["context"]) == ROOT, service_name
        assert build["dockerfile"] == DOCKERFILE, service_name
        assert build["target"] == target, service_name
        assert target in stages, f"{service_name}: no stage {target!r} in {DOCKERFILE}"
        assert "PYTHON_IMAGE" in build["args"], service_name
    # One base for all: otherwise the shared dependency layer would not be shared.
    bases = {services[s]["build"]["args"]["PYTHON_IMAGE"] for s in IMAGE_TARGETS}
    assert len(bases) == 1, bases


def test_services_of_one_target_run_one_image(combination) -> None:
    _, services = combination
    for service_name, target in IMAGE_TARGETS.items():
        assert services[service_name]["image"] == services[target]["image"], service_name


@needs_compose
@pytest.mark.parametrize(
    "host", ["tracking-server:5000", "tracking-server", "localhost:5000", "127.0.0.1:54321"]
)
def test_tracking_server_accepts_the_host_headers_it_will_get(env_file, host: str) -> None:
    """MLflow 3.5+ answers 403 to unknown Host headers: check with MLflow's own matcher."""
    from mlflow.server.security_utils import is_allowed_host_header

    env = resolved((BASE,), env_file())["services"]["tracking-server"]["environment"]
    allowed = [h.strip() for h in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    assert is_allowed_host_header(allowed, host)
    assert not is_allowed_host_header(allowed, "evil.example:5000")


@needs_compose
def test_base_pins_the_real_images_and_keeps_data_in_named_volumes(env_file) -> None:
    config = resolved((BASE,), env_file())
    services = config["services"]
    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", services["postgres"]["image"])
    assert re.fullmatch(
        r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", services["minio"]["image"]
    )
    # Debian pinned: the backup's pg_dump must be at least PostgreSQL 16 (docs/backup.md).
    assert services["tracking-server"]["build"]["args"]["PYTHON_IMAGE"] == (
        "python:3.12-slim-trixie"
    )
    mounts = {
        s: [(v["type"], v["source"]) for v in services[s].get("volumes", [])]
        for s in ("postgres", "minio")
    }
    assert mounts == {
        "postgres": [("volume", "postgres-data")],
        "minio": [("volume", "minio-data")],
    }
    assert "ports" not in services["minio"]  # console: an override of your own (security.md)
    env = services["tracking-server"]["environment"]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow-artifacts/"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] == TEST_SECRETS["MINIO_ROOT_USER"]
    assert services["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"


@needs_compose
def test_backup_job_reads_what_the_server_reads_and_writes_a_host_folder(env_file) -> None:
    """Backups must survive `down -v`: a bind mount of a host folder, never a volume; the
    container runs as the folder's owner (BACKUP_UID), and reads the same stores."""
    services = resolved((BASE,), env_file(BACKUP_UID="1234", BACKUP_GID="1234"))["services"]
    backup, tracking = services["backup"], services["tracking-server"]
    assert backup["profiles"] == ["jobs"] and backup["entrypoint"] == ["stack-backup"]
    assert backup["user"] == "1234:1234"
    assert "tracking-server" not in backup.get("depends_on", {})  # restore needs it stopped
    [mount] = backup["volumes"]
    assert mount["type"] == "bind" and mount["target"] == backup["environment"]["BACKUP_DIR"]
    assert Path(mount["source"]) == ROOT / "backups"
    for name in (
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_AUTH_DATABASE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
        "MLFLOW_S3_ENDPOINT_URL",
        "PGPASSWORD",
        "AWS_ACCESS_KEY_ID",
    ):
        assert backup["environment"][name] == tracking["environment"][name], name
    assert not [k for k in backup["environment"] if k.startswith(AUTH_SECRETS)]
    assert backup["build"]["args"]["PYTHON_IMAGE"] == "python:3.12-slim-trixie"
    assert services["backup"]["image"].startswith("mlflow-stack/backup:")
    assert services["backup"]["user"] != "0:0"
    default = resolved((BASE,), env_file(name="default.env"))["services"]["backup"]
    assert default["user"] == "10001:10001"


@needs_compose
def test_published_ports_follow_the_env(env_file) -> None:
    path = env_file(MLFLOW_UI_PORT="15000", SERVING_API_PORT="18080")
    services = resolved((BASE,), path)["services"]
    published = {
        s: sorted(p["published"] for p in svc.get("ports", []))
        for s, svc in services.items()
        if svc.get("ports")
    }
    assert published == {"tracking-server": ["15000"], "serving": ["18080"]}


@needs_compose
def test_aws_overlay_uses_the_bucket_and_the_default_credential_chain(env_file) -> None:
    services = resolved((BASE, AWS), env_file(**CLOUD_ENV))["services"]
    for name in ("create-bucket", "tracking-server"):
        env = services[name]["environment"]
        assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://acme-mlflow-artifacts/")
        assert "MLFLOW_S3_ENDPOINT_URL" not in env  # AWS itself, not MinIO
        assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
        # Empty keys: boto3 skips them and finds the instance or task role.
        assert env["AWS_ACCESS_KEY_ID"] == "" and env["AWS_SECRET_ACCESS_KEY"] == ""
    assert "depends_on" not in services["create-bucket"]
    keyed = env_file(name="keys.env", **CLOUD_ENV, AWS_ACCESS_KEY_ID="AKIAEXAMPLE")
    env = resolved((BASE, AWS), keyed)["services"]["tracking-server"]["environment"]
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE"


@needs_compose
def test_gcs_overlay_mounts_the_key_read_only(env_file, key_file) -> None:
    path = env_file(**CLOUD_ENV, GCP_SA_KEY_FILE=str(key_file))
    services = resolved((BASE, GCS), path)["services"]
    for name in ("create-bucket", "tracking-server"):
        service = services[name]
        env = service["environment"]
        assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("gs://acme-mlflow-artifacts/")
        assert not [k for k in env if k.startswith(("AWS_", "MLFLOW_S3_"))]
        [mount] = service["volumes"]
        assert mount["source"] == str(key_file)
        assert mount["read_only"] is True
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == mount["target"]
    assert "volumes" not in services["serving"] or all(
        v["type"] == "volume" for v in services["serving"]["volumes"]
    )


@needs_compose
def test_offline_override_maps_every_image_to_its_stand_in(env_file) -> None:
    services = resolved((BASE, OFFLINE), env_file())["services"]
    assert services["postgres"]["image"] == "local/postgres:15"
    assert services["minio"]["image"] == "local/s3:moto"
    assert services["minio"]["command"][0] == "moto_server"
    assert "ports" not in services["minio"]
    built = [name for name, service in services.items() if "build" in service]
    assert set(IMAGE_TARGETS) <= set(built)
    for name in built:  # every service built here, a new one included, on the stand-in base
        assert services[name]["build"]["args"]["PYTHON_IMAGE"] == "local/python:3.11-slim", name
        # Tagged apart per checkout (STACK_TEST_IMAGE_TAG), not one shared ':offline' tag.
        assert services[name]["image"].endswith(f":{TEST_SECRETS['STACK_IMAGE_TAG']}"), name


@needs_compose
def test_scale_overlay_puts_three_of_each_stateless_service_behind_the_balancer(
    env_file,
) -> None:
    real = resolved((BASE, SCALE), env_file())["services"]
    assert real["balancer"]["image"].startswith("haproxy:2.6.")  # pinned
    offline = resolved((BASE, SCALE, OFFLINE, OFFLINE_SCALE), env_file())["services"]
    assert offline["balancer"]["image"] == "local/haproxy:2.6"
    for services in (real, offline):
        published = {
            name: sorted((p["host_ip"], p["target"]) for p in svc.get("ports", []))
            for name, svc in services.items()
            if svc.get("ports")
        }
        assert published == {"balancer": [("127.0.0.1", 5000), ("127.0.0.1", 8080)]}
        for name in ("tracking-server", "serving"):
            assert services[name]["deploy"]["replicas"] == 3, name
        assert "balancer" in services["tracking-server"]["environment"][
            "MLFLOW_SERVER_ALLOWED_HOSTS"
        ].split(",")
        assert services["serving"]["environment"]["MLFLOW_TRACKING_URI"] == "http://balancer:5000"
    assert "balancer" not in resolved((BASE, OFFLINE), env_file())["services"]


@needs_compose
def test_monitoring_profile_adds_prometheus_scraping_both_jobs_as_the_scrape_only_user(
    env_file,
) -> None:
    """COMPOSE_PROFILES=monitoring: a pinned Prometheus 2 on loopback with a healthcheck, the
    repo's config and rules mounted read-only, the scrape user's password as a file only it
    reads; the tracking server lets that user read /metrics; nothing else changes."""
    import yaml

    plain = resolved((BASE,), env_file())["services"]
    assert "prometheus" not in plain  # not without the profile
    services = resolved((BASE,), env_file(PROMETHEUS_PORT="19090"), ("monitoring",))["services"]
    prometheus = services["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v2\.\d+\.\d+", prometheus["image"])
    assert prometheus["profiles"] == ["monitoring"]
    assert prometheus["restart"] == "unless-stopped"
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])
    [port] = prometheus["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "19090", 9090)
    config_mount = next(v for v in prometheus["volumes"] if v["type"] == "bind")
    assert Path(config_mount["source"]) == ROOT / "deploy" / "prometheus"
    assert config_mount["read_only"] is True
    config_file = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert config_file == f"--config.file={config_mount['target']}/prometheus.yml"
    assert prometheus["cap_drop"] == ["ALL"]

    # The password: an environment secret mounted as a file for Prometheus' user alone, and
    # the same value create-users gives the scrape user; no other password reaches Prometheus.
    [secret] = prometheus["secrets"]
    assert (secret["uid"], secret["mode"]) == ("65534", "0400")
    config = ComposeProject("stackconfig", env_file(), (BASE,), ("monitoring",)).config()
    assert config["secrets"][secret["source"]]["environment"] == "STACK_METRICS_PASSWORD"
    assert "environment" not in prometheus
    users = services["create-users"]["environment"]
    assert users["STACK_METRICS_PASSWORD"] == TEST_SECRETS["STACK_METRICS_PASSWORD"]
    scrape_user = users["STACK_METRICS_USERNAME"]
    assert services["tracking-server"]["environment"]["STACK_METRICS_USERNAME"] == scrape_user

    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert set(jobs) == {"serving", "tracking-server"}
    # Each serving container a target of its own (Compose's DNS gives every replica's address).
    assert jobs["serving"]["dns_sd_configs"] == [
        {"names": ["serving"], "type": "A", "port": 8080, "refresh_interval": "10s"}
    ]
    tracking = jobs["tracking-server"]
    assert tracking["static_configs"][0]["targets"] == ["tracking-server:5000"]
    assert tracking["basic_auth"] == {
        "username": scrape_user,
        "password_file": secret["target"],
    }

    offline = resolved((BASE, OFFLINE), env_file(), ("monitoring",))["services"]
    assert offline["prometheus"]["image"] == "local/prometheus:2"


MISSING = [
    ("base", "POSTGRES_PASSWORD"),
    ("base", "MINIO_ROOT_USER"),
    ("base", "MINIO_ROOT_PASSWORD"),
    ("base", "MLFLOW_AUTH_ADMIN_PASSWORD"),
    ("base", "MLFLOW_FLASK_SERVER_SECRET_KEY"),
    ("base", "STACK_TRAINER_PASSWORD"),
    ("base", "STACK_PROMOTER_PASSWORD"),
    ("base", "STACK_SERVING_PASSWORD"),
    ("base", "STACK_METRICS_PASSWORD"),
    ("aws", "MLFLOW_AUTH_ADMIN_PASSWORD"),
    ("aws", "ARTIFACTS_BUCKET"),
    ("aws", "AWS_DEFAULT_REGION"),
    ("gcs", "GCP_SA_KEY_FILE"),
]


@needs_compose
@pytest.mark.parametrize(("combination_name", "variable"), MISSING)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_missing_secret_stops_compose_and_names_it(
    env_file, key_file, combination_name: str, variable: str, how: str
) -> None:
    values: dict[str, str | None] = {**CLOUD_ENV, "GCP_SA_KEY_FILE": str(key_file)}
    values[variable] = None if how == "unset" else ""
    project = ComposeProject("stackconfig", env_file(**values), COMBINATIONS[combination_name])
    result = project.run("config", "--quiet", check=False, timeout=60)
    assert result.returncode != 0
    assert variable in result.stderr
    assert "set it in .env" in result.stderr


@needs_compose
def test_env_example_documents_every_compose_variable_and_works_once_filled(
    tmp_path: Path,
) -> None:
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    used: set[str] = set()
    for name in (BASE, AWS, GCS, TLS):
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / name).read_text()))
    assert not used - documented, f"not in .env.example: {sorted(used - documented)}"

    # `cp .env.example .env` + secrets: the local section's values (127.0.0.1 hosts, no alias
    # wait) must not leak into the containers.
    filled = example
    for key, value in TEST_SECRETS.items():
        filled, count = re.subn(rf"^{key}=.*$", f"{key}={value}", filled, flags=re.MULTILINE)
        assert count == 1, f"{key}= should appear once, uncommented, in .env.example"
    dotenv = tmp_path / ".env"
    dotenv.write_text(filled)
    services = resolved((BASE,), dotenv)["services"]
    serving = services["serving"]["environment"]
    assert serving["SERVING_HOST"] == "0.0.0.0"
    assert serving["MLFLOW_TRACKING_URI"] == "http://tracking-server:5000"
    assert float(serving["SERVING_ALIAS_WAIT_SECONDS"]) >= 3600
    assert services["tracking-server"]["environment"]["MLFLOW_HOST"] == "0.0.0.0"


@needs_compose
def test_env_example_leaves_the_secrets_empty(tmp_path: Path) -> None:
    """A copied .env.example is refused until the secrets are filled in: no working default."""
    dotenv = tmp_path / ".env"
    dotenv.write_text((ROOT / ".env.example").read_text())
    result = ComposeProject("stackconfig", dotenv).run("config", "--quiet", check=False)
    assert result.returncode != 0
    assert "set it in .env" in result.stderr


@needs_compose
def test_make_env_gives_a_dotenv_compose_accepts(tmp_path: Path) -> None:
    """The README's first Compose step: `make env`, then `docker compose up` needs no edit."""
    made = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_env.py"),
            "--example",
            ".env.example",
            "--output",
            str(tmp_path / ".env"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    result = ComposeProject("stackconfig", tmp_path / ".env").run("config", "--quiet", check=False)
    assert result.returncode == 0, result.stderr


# --- Dockerfiles -------------------------------------------------------------------------------


def hadolint() -> Path:
    return Path(sys.executable).with_name("hadolint")


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    instructions: list[str] = []
    pending = ""
    for line in (ROOT / DOCKERFILE).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        instructions.append(pending)
        pending = ""
    return instructions


def dockerfile_stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (what it starts FROM, its instructions), in the file's order."""
    stages: dict[str, tuple[str, list[str]]] = {}
    for instruction in dockerfile_instructions():
        found = re.fullmatch(r"FROM (\S+) AS (\S+)", instruction)
        if found:
            stages[found[2]] = (found[1], [])
        elif stages:
            stages[next(reversed(stages))][1].append(instruction)
    return stages


def stage_chain(target: str) -> list[str]:
    """The stages a target builds on, the first stage first, the target last."""
    stages = dockerfile_stages()
    chain = [target]
    while stages[chain[0]][0] in stages:
        chain.insert(0, stages[chain[0]][0])
    return chain


TARGETS = sorted(set(IMAGE_TARGETS.values()))


def test_dockerfile_passes_hadolint() -> None:
    try:
        result = subprocess.run(
            [str(hadolint()), "--no-color", DOCKERFILE],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except OSError as exc:
        pytest.skip(f"hadolint cannot run here ({hadolint()}): {exc}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_service_folders_hold_no_dockerfile_of_their_own() -> None:
    """One Dockerfile: a copy in a service folder would drift from the shared base again."""
    copies = [
        str(path.relative_to(ROOT))
        for folder in ("tracking_server", "training", "serving", "backup", "promotion")
        for path in (ROOT / folder).glob("Dockerfile*")
    ]
    assert not copies


def test_dockerfile_base_image_is_a_build_argument_used_once() -> None:
    instructions = dockerfile_instructions()
    # python:3.12-slim, or a Debian-pinned variant of it (trixie: the backup's PostgreSQL client)
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.12-slim(-\w+)?", instructions[0])
    assert instructions[1] == "FROM ${PYTHON_IMAGE} AS base"
    froms = [i for i in instructions if i.startswith("FROM ")]
    assert [i for i in froms if "${PYTHON_IMAGE}" in i] == [instructions[1]]


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_is_built_on_the_shared_base_stage(target: str) -> None:
    """Identical by construction: every target's chain of stages starts at ``base``, so the
    dependency layer is the same layer in every image, not a copy kept alike by hand."""
    assert stage_chain(target)[0] == "base"


def test_every_stage_but_base_starts_from_a_stage_defined_above_it() -> None:
    """A FROM naming no earlier stage would pull an image of that name instead."""
    stages = dockerfile_stages()
    names = list(stages)
    for name, (parent, _) in stages.items():
        if name != "base":
            assert parent in names[: names.index(name)], f"{name} starts FROM {parent}"


def test_dockerfile_uses_no_buildkit_only_syntax() -> None:
    text = (ROOT / DOCKERFILE).read_text()
    assert "--mount" not in text and "<<" not in text, "classic builder: no BuildKit syntax"
    assert not text.startswith("# syntax="), "classic builder: no frontend directive"


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_runs_as_a_non_root_user(target: str) -> None:
    instructions = dockerfile_stages()[target][1]
    user = [i for i in instructions if i.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("0", "root")


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_installs_its_dependencies_before_copying_the_source(target: str) -> None:
    """Source edits must not reinstall the dependencies: every pip install from the lock in
    the target's chain comes before its first COPY of the project's code."""
    stages = dockerfile_stages()
    chain = [i for name in stage_chain(target) for i in stages[name][1]]
    installs = [
        n for n, i in enumerate(chain) if "pip install --no-cache-dir -c requirements.lock" in i
    ]
    copies = [n for n, i in enumerate(chain) if i.startswith("COPY stack_common/")]
    assert installs and copies
    assert max(installs) < min(copies), "dependencies must be installed before the source"


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_dockerfile_pins_what_the_lock_pins() -> None:
    lock = lock_pins()
    pins = dict(
        re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s\\]*)", (ROOT / DOCKERFILE).read_text())
    )
    assert pins, "runtime dependencies must be pinned"
    for name, version in pins.items():
        key = name.lower().replace("_", "-")
        if key in lock:  # setuptools builds the wheel; the lock lists what runs
            assert lock[key] == version, f"{DOCKERFILE}: {name}=={version}, lock has {lock[key]}"


def test_dockerignore_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed <= {
        "pyproject.toml",
        "requirements.lock",
        "stack_common",
        "tracking_server",
        "training",
        "promotion",
        "serving",
        "backup",
    }


@needs_compose
def test_https_front_is_one_setting_away_and_the_server_accepts_the_domain(env_file) -> None:
    services = resolved((BASE, TLS), env_file(STACK_DOMAIN="mlflow.example.com"))["services"]
    front = services["front"]
    assert front["image"].startswith("caddy:2.")  # the official image, pinned
    assert {p["target"] for p in front["ports"]} == {443, 80}
    assert front["environment"]["STACK_TLS"] == "internal"  # Caddy's own CA unless told
    env = services["tracking-server"]["environment"]
    assert "mlflow.example.com" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] == "https://mlflow.example.com"
    # Everything else is published exactly as without the front: the UI and serving, loopback.
    for name, service in services.items():
        if name != "front":
            assert all(p["host_ip"] == "127.0.0.1" for p in service.get("ports", [])), name
    caddyfile = (ROOT / "deploy" / "caddy" / "Caddyfile").read_text()
    assert "Strict-Transport-Security" in caddyfile and "tls {$STACK_TLS:internal}" in caddyfile


@needs_compose
def test_https_front_without_a_domain_stops_compose_and_says_what_to_set(env_file) -> None:
    with pytest.raises(ComposeError, match="STACK_DOMAIN"):
        resolved((BASE, TLS), env_file())
