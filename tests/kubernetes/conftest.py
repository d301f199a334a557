"""Rendering the Kubernetes manifests once per session, as `kubectl apply -k` would see them.

No cluster can run here (no image registry, no kubelet), so the tests check everything that
can be checked offline: kustomize renders every overlay, the objects validate against the
Kubernetes schemas, and the project's own policy holds. Each overlay's secrets.env is
git-ignored; the render uses a copy of the tree with placeholder values in it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "aws", "gcs")


class Rendered:
    """The objects one kustomization renders to, with lookups the policy tests need."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.objects: list[dict] = [doc for doc in yaml.safe_load_all(text) if doc]

    def of_kind(self, kind: str) -> list[dict]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert found, f"{self.name}: no {kind} {name}"
        return found[0]

    def pod_specs(self) -> list[tuple[str, dict]]:
        """(workload name, pod spec) of every Deployment, StatefulSet, Job and CronJob."""
        specs = []
        for obj in self.objects:
            spec = obj.get("spec", {})
            if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
                specs.append((obj["metadata"]["name"], spec["template"]["spec"]))
            elif obj["kind"] == "CronJob":
                specs.append(
                    (obj["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"])
                )
        return specs


def kubectl_missing_reason() -> str | None:
    if shutil.which("kubectl") is None:
        return "kubectl is not installed (it ships kustomize: `kubectl kustomize`)"
    return None


def render(directory: Path) -> str:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rendered]]:
    """base, each overlay, and dev with the optional Ingress component, rendered."""
    reason = kubectl_missing_reason()
    if reason:
        pytest.skip(reason)
    tree = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    for overlay in OVERLAYS:
        example = tree / "overlays" / overlay / "secrets.env.example"
        lines = example.read_text().splitlines()
        (example.parent / "secrets.env").write_text(
            "".join(
                f"{line}placeholder-{index}\n" if line.endswith("=") else f"{line}\n"
                for index, line in enumerate(lines)
            )
        )
    with_ingress = tree / "overlays" / "dev-ingress"
    with_ingress.mkdir()
    (with_ingress / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../dev]\n"
        "components: [../../components/ingress, ../../components/cert-manager]\n"
    )
    rendered = {"base": Rendered("base", render(tree / "base"))}
    for overlay in (*OVERLAYS, "dev-ingress"):
        rendered[overlay] = Rendered(overlay, render(tree / "overlays" / overlay))
    yield rendered
