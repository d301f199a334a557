"""The stack on Kubernetes, checked offline: what `kubectl apply -k` would send, and our rules.

Every overlay renders; every object validates against the Kubernetes 1.31 schemas (strict:
an unknown field is an error); yamllint passes on the sources; and the project's policy holds
on what is rendered: replicas with a PodDisruptionBudget, an autoscaler for serving, the
migration Job and a server that does not migrate, probes, resources, locked-down containers,
pinned images, no secret values, NetworkPolicies. docs/kubernetes.md says what could not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kubernetes.conftest import KUBERNETES, OVERLAYS, ROOT, Rendered

ALL = ("base", *OVERLAYS, "dev-ingress")
NAMESPACE = "mlflow-stack"
SCALED = ("tracking-server", "serving")  # stateless: replicas, a PDB each


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("name", ALL)
def test_kubernetes_every_overlay_renders_and_validates_against_1_31(
    manifests: dict[str, Rendered], name: str, tmp_path: Path
) -> None:
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(manifests[name].text)
    validator = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run(
        [str(validator), "-k", "1.31.0", "--strict", "--quiet", str(rendered)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_sources_pass_yamllint() -> None:
    linter = Path(sys.executable).with_name("yamllint")
    result = subprocess.run(
        [str(linter), "--strict", "-c", str(KUBERNETES / ".yamllint.yaml"), str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ALL)
def test_kubernetes_stateless_services_run_as_replicas_with_a_disruption_budget(
    manifests: dict[str, Rendered], name: str
) -> None:
    objects = manifests[name]
    budgets = {
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: pdb
        for pdb in objects.of_kind("PodDisruptionBudget")
    }
    for workload in SCALED:
        deployment = objects.get("Deployment", workload)
        assert deployment["spec"]["replicas"] >= 2, workload
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate", workload
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, workload
        assert budgets[workload]["spec"]["minAvailable"] == 1, workload


def test_kubernetes_serving_scales_on_cpu(manifests: dict[str, Rendered]) -> None:
    [hpa] = manifests["base"].of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "serving",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_kubernetes_schema_migrations_run_in_a_job_not_in_the_server(
    manifests: dict[str, Rendered],
) -> None:
    objects = manifests["base"]
    job = objects.get("Job", "migrate")
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["stack-tracking-server", "--migrate-only"]
    [server] = objects.get("Deployment", "tracking-server")["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(server)["MLFLOW_MIGRATE_ON_START"]["value"] == "false"
    assert server["image"] == migrate["image"]  # the Job migrates to the server's own schema


def test_kubernetes_bucket_users_and_backup_jobs_exist(manifests: dict[str, Rendered]) -> None:
    objects = manifests["base"]
    commands = {
        name: objects.get("Job", name)["spec"]["template"]["spec"]["containers"][0]["command"]
        for name in ("create-bucket", "create-users")
    }
    assert commands == {
        "create-bucket": ["python", "-m", "tracking_server.create_bucket"],
        "create-users": ["python", "-m", "tracking_server.bootstrap_users"],
    }
    backup = objects.get("CronJob", "backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert backup["containers"][0]["args"] == ["create"]
    assert "BACKUP_URI" in env_of(backup["containers"][0])
    cleanup = objects.get("CronJob", "cleanup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "stack-cleanup gc" in cleanup["containers"][0]["args"][0]
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_TRACKING_PASSWORD"} <= set(
        env_of(cleanup["containers"][0])
    )


def test_kubernetes_probes_say_when_each_service_can_take_traffic(
    manifests: dict[str, Rendered],
) -> None:
    objects = manifests["base"]
    [server] = objects.get("Deployment", "tracking-server")["spec"]["template"]["spec"][
        "containers"
    ]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert server[probe]["httpGet"]["path"] == "/health", probe
    pod = objects.get("Deployment", "serving")["spec"]["template"]["spec"]
    [serving] = pod["containers"]
    # /ping goes through nginx, which listens only once a version is loaded and checked.
    assert serving["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert "/ping" in " ".join(serving["livenessProbe"]["exec"]["command"])
    # Graceful: out of the Service before SIGTERM, time to finish requests in flight.
    assert serving["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > 10 + 30


def test_kubernetes_model_cache_is_ephemeral_disk_with_a_size_limit(
    manifests: dict[str, Rendered],
) -> None:
    pod = manifests["base"].get("Deployment", "serving")["spec"]["template"]["spec"]
    [serving] = pod["containers"]
    cache_dir = env_of(serving)["SERVING_CACHE_DIR"]["value"]
    [mount] = [m for m in serving["volumeMounts"] if m["mountPath"] == cache_dir]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    limit_gi = int(re.fullmatch(r"(\d+)Gi", volume["emptyDir"]["sizeLimit"]).group(1))
    cache_mb = int(env_of(serving)["SERVING_CACHE_MAX_MB"]["value"])
    assert 0 < cache_mb < limit_gi * 1024  # eviction keeps it below the limit


@pytest.mark.parametrize("name", ALL)
def test_kubernetes_every_container_is_locked_down_with_resources_and_a_pinned_image(
    manifests: dict[str, Rendered], name: str
) -> None:
    for workload, pod in manifests[name].pod_specs():
        pod_security = pod.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, workload
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", workload
        assert pod.get("automountServiceAccountToken") is False, workload
        for container in containers(pod):
            where = f"{workload}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{where}: image {image} has no pinned tag"
        for volume in pod.get("volumes", []):
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), f"{workload}: {volume['name']}"


@pytest.mark.parametrize("name", ALL)
def test_kubernetes_each_workload_has_its_own_service_account(
    manifests: dict[str, Rendered], name: str
) -> None:
    objects = manifests[name]
    accounts = {sa["metadata"]["name"] for sa in objects.of_kind("ServiceAccount")}
    ours = {
        workload: pod.get("serviceAccountName")
        for workload, pod in objects.pod_specs()
        if workload not in ("postgres", "minio")
    }
    assert set(ours.values()) <= accounts
    assert len(set(ours.values())) == len(ours), ours  # none shared


def test_kubernetes_no_secret_value_is_in_the_repository() -> None:
    sources = [p for p in KUBERNETES.rglob("*") if p.is_file() and p.name != "secrets.env"]
    assert sources
    for path in sources:
        text = path.read_text()
        assert not re.search(r"^kind:\s*Secret\s*$", text, re.M), f"{path} holds a Secret"
        if path.name == "secrets.env.example":
            values = [
                line.split("=", 1)[1]
                for line in text.splitlines()
                if "=" in line and not line.startswith("#")
            ]
            assert values and not any(values), f"{path} holds a value"
    for overlay in OVERLAYS:
        secrets = f"deploy/kubernetes/overlays/{overlay}/secrets.env"
        ignored = subprocess.run(["git", "check-ignore", "-q", secrets], cwd=ROOT)
        assert ignored.returncode == 0, f"{secrets} is not git-ignored"


@pytest.mark.parametrize("name", OVERLAYS)
def test_kubernetes_secrets_come_only_from_the_generator(
    manifests: dict[str, Rendered], name: str
) -> None:
    names = [s["metadata"]["name"] for s in manifests[name].of_kind("Secret")]
    assert len(names) == 1 and names[0].startswith("mlflow-stack-secrets-"), names


@pytest.mark.parametrize("name", ALL)
def test_kubernetes_network_policies_deny_by_default_and_fence_the_stores(
    manifests: dict[str, Rendered], name: str
) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in manifests[name].of_kind("NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    serving_egress = policies["serving"]["egress"]
    # Serving reaches the tracking server only (DNS comes from allow-dns).
    assert [rule["to"] for rule in serving_egress] == [
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "tracking-server"}}}]
    ]
    if name.startswith("dev"):
        for store, clients in (
            ("postgres", {"tracking-server", "migrate", "backup", "cleanup"}),
            ("minio", {"tracking-server", "create-bucket", "backup"}),
        ):
            [rule] = policies[store]["ingress"]
            [source] = rule["from"]
            assert set(source["podSelector"]["matchExpressions"][0]["values"]) == clients


@pytest.mark.parametrize(
    ("name", "annotation"),
    [("aws", "eks.amazonaws.com/role-arn"), ("gcs", "iam.gke.io/gcp-service-account")],
)
def test_kubernetes_cloud_overlays_use_workload_identity_not_keys(
    manifests: dict[str, Rendered], name: str, annotation: str
) -> None:
    objects = manifests[name]
    with_identity = {
        sa["metadata"]["name"]
        for sa in objects.of_kind("ServiceAccount")
        if annotation in sa["metadata"].get("annotations", {})
    }
    assert with_identity == {"tracking-server", "create-bucket", "backup"}
    example = KUBERNETES / "overlays" / name / "secrets.env.example"
    assert "AWS_ACCESS_KEY_ID" not in example.read_text()
    [config] = objects.of_kind("ConfigMap")
    scheme = "s3://" if name == "aws" else "gs://"
    assert config["data"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith(scheme)
    assert "MLFLOW_S3_ENDPOINT_URL" not in config["data"]


def test_kubernetes_images_are_the_ones_compose_builds(manifests: dict[str, Rendered]) -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    built = set(re.findall(r"image: (mlflow-stack/[a-z-]+):", compose))
    used = {
        re.sub(r"^.*?(mlflow-stack/[a-z-]+):.*$", r"\1", c["image"])
        for _, pod in manifests["dev"].pod_specs()
        for c in containers(pod)
        if "mlflow-stack/" in c["image"]
    }
    assert used and used <= built, used - built


@pytest.mark.parametrize("name", ALL)
def test_kubernetes_every_object_lands_in_the_stack_namespace(
    manifests: dict[str, Rendered], name: str
) -> None:
    """An object without a namespace would go to `default`, away from its Secret and peers."""
    stray = [
        f"{obj['kind']}/{obj['metadata']['name']}"
        for obj in manifests[name].objects
        if obj["kind"] != "Namespace" and obj["metadata"].get("namespace") != NAMESPACE
    ]
    assert not stray, f"{name}: not in namespace {NAMESPACE}: {stray}"


def checkov_command() -> list[str] | None:
    """checkov lives in its own virtualenv (its pins clash with the stack's): make test
    installs it in .venv-checkov; CHECKOV names another one."""
    for candidate in (os.environ.get("CHECKOV"), str(ROOT / ".venv-checkov" / "bin" / "checkov")):
        if candidate and Path(candidate).is_file():
            return [candidate]
    found = shutil.which("checkov")
    return [found] if found else None


@pytest.mark.parametrize("name", (*OVERLAYS, "dev-ingress"))
def test_kubernetes_overlays_pass_checkov(
    manifests: dict[str, Rendered], name: str, tmp_path: Path
) -> None:
    """Every checkov Kubernetes check passes or is skipped in the manifests with its reason
    (checkov.io/skipN annotations), so a platform team's own checkov run agrees."""
    command = checkov_command()
    if command is None:
        pytest.skip("checkov is not installed: `make test` puts it in .venv-checkov")
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(manifests[name].text)
    result = subprocess.run(
        [
            *command,
            "--framework",
            "kubernetes",
            "--file",
            str(rendered),
            "--output",
            "json",
            "--compact",
            "--quiet",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        # Offline: no mapping or policy download from the vendor's platform.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_NO_UPDATE": "1"},
        cwd=tmp_path,
    )
    report = json.loads(result.stdout)
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert report["summary"]["passed"] > 100, report["summary"]
    assert result.returncode == 0, result.stderr[-2000:]


def test_kubernetes_tools_are_here() -> None:
    """The checks above need kubectl; say so plainly where it is missing."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the Kubernetes checks cannot run")
    version = subprocess.run(
        ["kubectl", "version", "--client"], capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0, version.stderr


@pytest.mark.parametrize("name", ALL)
def test_kubernetes_serving_and_tracking_server_can_be_scraped_by_prometheus(
    manifests: dict[str, Rendered], name: str
) -> None:
    """Scrape annotations on both pod templates name a container port and /metrics; the
    NetworkPolicies let a Prometheus in another namespace reach that port; the tracking server
    names its scrape-only user and create-users may make it (docs/monitoring.md#kubernetes)."""
    objects = manifests[name]
    policies = objects.of_kind("NetworkPolicy")
    for workload in SCALED:
        template = objects.get("Deployment", workload)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", workload
        assert annotations["prometheus.io/path"] == "/metrics", workload
        port = int(annotations["prometheus.io/port"])
        [container] = template["spec"]["containers"]
        assert port in [p["containerPort"] for p in container["ports"]], workload
        labels = template["metadata"]["labels"]
        # Some policy selecting these pods lets any namespace in on that port.
        open_to_scrapers = [
            rule
            for policy in policies
            if all(
                labels.get(k) == v
                for k, v in policy["spec"]["podSelector"].get("matchLabels", {}).items()
            )
            and policy["spec"]["podSelector"]
            for rule in policy["spec"].get("ingress", [])
            if "from" not in rule and any(p["port"] == port for p in rule.get("ports", []))
        ]
        assert open_to_scrapers, f"{workload}: no ingress on {port} for a scraper"
    [server] = objects.get("Deployment", "tracking-server")["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(server)["STACK_METRICS_USERNAME"]["value"] == "metrics"
    [users] = objects.get("Job", "create-users")["spec"]["template"]["spec"]["containers"]
    secret = env_of(users)["STACK_METRICS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret["key"] == "STACK_METRICS_PASSWORD" and secret["optional"] is True


def test_kubernetes_ingress_serves_https_only_with_a_cert_manager_certificate(
    manifests: dict[str, Rendered],
) -> None:
    """Issue 22 on Kubernetes: TLS for both hosts, HTTP redirected, the certificate asked of
    cert-manager's issuer, and MLflow accepting the UI's host."""
    ingress = manifests["dev-ingress"].get("Ingress", "mlflow-stack")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    assert annotations["cert-manager.io/cluster-issuer"]
    [tls] = ingress["spec"]["tls"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert set(tls["hosts"]) == hosts and tls["secretName"] == "mlflow-stack-tls"
    [config] = [
        obj["data"]
        for obj in manifests["dev-ingress"].of_kind("ConfigMap")
        if obj["metadata"]["name"].startswith("stack-config")  # kustomize adds a hash
    ]
    assert "mlflow.example.com" in config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    # Without the component, no Ingress at all.
    assert manifests["dev"].of_kind("Ingress") == []
