"""The Prometheus configuration and alert rules of deploy/prometheus/, checked by promtool.

``promtool check rules`` must accept every rule file (``*rules*.yml`` / ``*alerts*.yml``, the
globs prometheus.yml loads), ``promtool check config`` the configuration, and ``promtool test
rules`` runs tests/compose/prometheus-rules.test.yml: every alert fires on a synthetic bad
series and stays quiet on a healthy one (tests/unit/deploy/test_monitoring_files.py checks
that every alert has both kinds of case). promtool comes from the ``local/prometheus:2`` image
(Debian's Prometheus 2.42, the oldest the config is written for), run with ``docker run --rm``
and the repository mounted read-only; without a Docker engine the tests skip, saying why.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from compose_stack import ROOT, docker_unavailable_reason

pytestmark = pytest.mark.docker

IMAGE = "local/prometheus:2"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
UNIT_TESTS = Path(__file__).with_name("prometheus-rules.test.yml")


def rule_files() -> list[Path]:
    """The files prometheus.yml's rule_files globs load."""
    found = {*PROMETHEUS_DIR.glob("*rules*.yml"), *PROMETHEUS_DIR.glob("*alerts*.yml")}
    return sorted(found)


@pytest.fixture(scope="module")
def promtool() -> object:
    """``promtool(*args)``: promtool in the stand-in image, the repository at /repo."""
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(f"no Docker engine: {reason}")
    inspected = subprocess.run(
        ["docker", "image", "inspect", IMAGE], capture_output=True, timeout=60
    )
    if inspected.returncode != 0:
        pytest.skip(f"{IMAGE} missing: run ../shared/docker-offline/build-images.sh")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "docker", "run", "--rm", "--network", "none",
                "-v", f"{ROOT}:/repo:ro", "--entrypoint", "promtool", IMAGE, *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip

    return run


def in_container(path: Path) -> str:
    return f"/repo/{path.relative_to(ROOT)}"


def test_every_rule_file_is_accepted_by_promtool(promtool) -> None:
    files = rule_files()
    assert files, f"no *rules*.yml or *alerts*.yml in {PROMETHEUS_DIR}"
    checked = promtool("check", "rules", *map(in_container, files))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_configuration_is_accepted_and_loads_every_rule_file(promtool) -> None:
    checked = promtool("check", "config", in_container(PROMETHEUS_DIR / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for path in rule_files():
        assert f"Checking {in_container(path)}" in checked.stdout, path


def test_each_alert_fires_on_a_bad_series_and_stays_quiet_on_a_healthy_one(promtool) -> None:
    tested = promtool("test", "rules", in_container(UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
