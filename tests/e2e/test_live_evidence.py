"""A promoter asks for live evidence: ``stack-registry promote`` refuses a challenger that has
not seen enough live traffic or failed too much of it, in one line and with production unmoved,
and promotes it once the evidence is there; ``stack-registry live`` shows the figures first.

Against a real tracking server; serving's /metrics are two real replicas' ``prometheus_client``
registries over HTTP (tests/live_metrics.py) with the metric names serving exposes, so the test
says exactly how many requests each replica saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from local_stack.processes import Service, free_port
from promotion.cli import cli
from tests.live_metrics import Replica, two_replicas

pytestmark = pytest.mark.e2e


@pytest.fixture
def replicas(unique_name: str) -> Iterator[tuple[Replica, Replica]]:
    with two_replicas(unique_name) as both:
        yield both


def _version(client: MlflowClient, name: str, experiment_id: str, rmse: float) -> str:
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "test_rmse", rmse)
    client.set_terminated(run.info.run_id)
    source = f"runs:/{run.info.run_id}/model"
    return client.create_model_version(name, source, run.info.run_id).version


def _registry(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(cli, args, env=env)


def _refused(result: Result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    [line] = result.stderr.splitlines()
    for fragment in fragments:
        assert fragment in line, line
    return line


def test_promote_waits_for_live_evidence_and_live_shows_it(
    shared_tracking_server: Service,
    unique_name: str,
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    client = MlflowClient(shared_tracking_server.url, registry_uri=shared_tracking_server.url)
    experiment_id = client.create_experiment(unique_name)
    client.create_registered_model(unique_name)
    v1 = _version(client, unique_name, experiment_id, rmse=6.0)
    v2 = _version(client, unique_name, experiment_id, rmse=5.0)
    client.set_registered_model_alias(unique_name, "production", v1)
    client.set_registered_model_alias(unique_name, "challenger", v2)
    env = {
        "MLFLOW_TRACKING_URI": shared_tracking_server.url,
        "MODEL_NAME": unique_name,
        "SERVER_WAIT_SECONDS": "20",
        "PROMOTION_LIVE_METRICS_URL": f"{first.url},{second.url}",
        "PROMOTION_MIN_LIVE_REQUESTS": "200",
    }

    def production() -> str:
        return client.get_model_version_by_alias(unique_name, "production").version

    # Production answers; the challenger sees 100 mirrored and 50 canary requests.
    first.answer(v1, 500, 0.004)
    second.answer(v1, 500, 0.006)
    first.challenge(v2, "shadow", 100, 0.003)
    first.compare(v2, [0.0, 0.5, 1.0])
    second.challenge(v2, "canary", 50, 0.02)
    second.canary_active.labels(unique_name, "challenger", v2).set(1)
    _refused(
        _registry(["promote"], env),
        f"refused: version {v2} has 150 live requests (shadow and canary), the gate asks for "
        "200 (PROMOTION_MIN_LIVE_REQUESTS): let it see more traffic",
    )
    assert production() == v1

    # 60 more, 5 of them failed: 2.4% > 1%.
    second.challenge(v2, "canary", 60, 0.02, errors=5)
    _refused(_registry(["promote"], env), "failed 2.4% of its 210 live requests", "allows 1%")
    assert production() == v1

    # What the promoter reads before deciding: production beside the challenger.
    shown = _registry(["live"], env)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[1].split()[:5] == ["production", v1, "answers", "1000", "0%"]
    assert lines[2].split()[:5] == ["challenger", v2, "both", "210", "2.4%"]
    assert lines[2].split()[-1] == "active"
    rows = [json.loads(line) for line in _registry(["live", "--json"], env).stdout.splitlines()]
    both = next(row for row in rows if row["who"] == "challenger" and row["mode"] == "both")
    assert both["mean_abs_difference"] == pytest.approx(0.5)
    # p99 falls in the canary's bucket (10, 50] ms, above the 100 shadow requests.
    assert both["p99_seconds"] == pytest.approx(0.01 + 0.04 * (0.99 * 210 - 100) / 110)

    # The promoter accepts a higher error rate: promoted, the evidence in the line and the tag.
    accepted = _registry(["promote"], env | {"PROMOTION_MAX_LIVE_ERROR_RATE": "0.05"})
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.count("\n") == 1
    assert "210 live requests, error rate 2.4%, mean abs difference 0.5" in accepted.stdout
    assert production() == v2
    tags = client.get_model_version(unique_name, v2).tags
    assert "210 live requests" in tags["promoted_reason"]

    # Metrics that cannot be read refuse too; --force promotes and keeps why it was refused.
    v3 = _version(client, unique_name, experiment_id, rmse=4.0)
    gone = f"http://127.0.0.1:{free_port()}/metrics"
    dead = env | {"PROMOTION_LIVE_METRICS_URL": gone}
    _refused(_registry(["promote", "--version", v3], dead), "refused:", gone, "--force")
    assert production() == v2
    forced = _registry(["promote", "--version", v3, "--force", "--reason", "hotfix"], dead)
    assert forced.exit_code == 0, forced.output
    assert production() == v3
    reason = client.get_model_version(unique_name, v3).tags["promoted_reason"]
    assert reason.startswith("forced: hotfix") and "refused:" in reason and gone in reason
