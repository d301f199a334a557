"""Serving's metrics without processes: names, labels, and counting from nginx's log lines."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.cache import CacheEntry
from serving.front import FrontConfig, render
from serving.metrics import ACCESS_LOG, DURATION_BUCKETS, LogTail, ServingMetrics

MODEL = "grades"


def samples(metrics: ServingMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the exposition by name, as a scraper parses it."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(metrics: ServingMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def metrics(tmp_path: Path) -> ServingMetrics:
    return ServingMetrics(MODEL, "production", tmp_path)


def served(version: str, source: str = "registry") -> dict:
    return {"model_name": MODEL, "version": version, "source": source}


def health(rejected: dict | None = None, degraded: dict | None = None) -> dict:
    return {"rejected_versions": rejected or {}, "degraded": degraded or {}}


def log(tmp_path: Path, *lines: str) -> None:
    with (tmp_path / ACCESS_LOG).open("a") as fh:
        fh.writelines(line + "\n" for line in lines)


def test_every_metric_has_its_name_and_labels(metrics: ServingMetrics, tmp_path: Path) -> None:
    metrics.status(served("3"), health(), pool_started_at=1.0)
    log(tmp_path, "1700000000.100 200 0.003 3")
    metrics.fetched(CacheEntry(tmp_path, "3", 2048, hit=False, seconds=0.4))
    found = samples(metrics)
    expected_labels = {
        "serving_requests_total": {"model", "version", "alias", "status"},
        "serving_request_duration_seconds_bucket": {"model", "version", "le"},
        "serving_request_duration_seconds_count": {"model", "version"},
        "serving_model_info": {"model", "version", "alias", "source"},
        "serving_model_switches_total": {"result"},
        "serving_model_load_seconds": {"model"},
        "serving_cache_hits_total": {"model"},
        "serving_cache_misses_total": {"model"},
        "serving_download_bytes_total": {"model"},
        "serving_download_seconds_count": {"model"},
        "serving_tracking_server_up": set(),
        "serving_process_restarts_total": {"process"},
        "serving_unhealthy": set(),
    }
    for name, labels in expected_labels.items():
        assert name in found, name
        assert {frozenset(s[0]) for s in found[name]} == {frozenset(labels)}, name
    assert found["serving_model_info"] == [
        ({"model": MODEL, "version": "3", "alias": "production", "source": "registry"}, 1.0)
    ]
    assert {s[0]["result"] for s in found["serving_model_switches_total"]} == {
        "switched",
        "rejected",
    }
    assert {s[0]["process"] for s in found["serving_process_restarts_total"]} == {
        "scoring",
        "nginx",
    }
    # No nginx answers on the status socket here: in flight is left out, not made up.
    assert "serving_in_flight_requests" not in found


def test_duration_buckets_from_half_a_millisecond_to_ten_seconds() -> None:
    assert DURATION_BUCKETS[0] == 0.0005
    assert DURATION_BUCKETS[-1] == 10.0
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


def test_requests_counted_by_the_version_that_answered(
    metrics: ServingMetrics, tmp_path: Path
) -> None:
    metrics.status(served("1"), health(), pool_started_at=1.0)
    log(
        tmp_path,
        "1700000000.100 200 0.003 1",
        "1700000000.200 200 0.012 1",
        "1700000000.300 400 0.002 1",
        "1700000000.400 200 0.004 2",
    )
    metrics.drain()
    assert value(metrics, "serving_requests_total", model=MODEL, version="1",
                 alias="production", status="200") == 2  # fmt: skip
    assert value(metrics, "serving_requests_total", model=MODEL, version="1",
                 alias="production", status="400") == 1  # fmt: skip
    assert value(metrics, "serving_requests_total", model=MODEL, version="2",
                 alias="production", status="200") == 1  # fmt: skip
    assert value(metrics, "serving_request_duration_seconds_count", model=MODEL, version="1") == 3
    assert value(metrics, "serving_request_duration_seconds_bucket", model=MODEL, version="1",
                 le="0.005") == 2  # fmt: skip
    metrics.drain()  # nothing counted twice
    assert value(metrics, "serving_request_duration_seconds_count", model=MODEL, version="1") == 3


def test_nginx_own_answers_get_the_version_served_at_that_time(
    metrics: ServingMetrics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serving.metrics.time.time", lambda: 100.0)
    metrics.status(served("1"), health(), pool_started_at=90.0)
    monkeypatch.setattr("serving.metrics.time.time", lambda: 200.0)
    metrics.status(served("2"), health(), pool_started_at=190.0)
    log(tmp_path, "150.000 413 0.000 -", "250.000 503 60.001 -", "50.000 413 0.000 -")
    metrics.drain()
    count = metrics.registry.get_sample_value
    assert count("serving_requests_total", {"model": MODEL, "version": "1",
                 "alias": "production", "status": "413"}) == 2  # fmt: skip
    assert count("serving_requests_total", {"model": MODEL, "version": "2",
                 "alias": "production", "status": "503"}) == 1  # fmt: skip


def test_a_partial_line_waits_for_its_end(metrics: ServingMetrics, tmp_path: Path) -> None:
    metrics.status(served("1"), health(), pool_started_at=1.0)
    with (tmp_path / ACCESS_LOG).open("a") as fh:
        fh.write("1.0 200 0.001 1\n1.0 200 0.0")
    metrics.drain()
    labels = {"model": MODEL, "version": "1"}
    assert metrics.registry.get_sample_value("serving_request_duration_seconds_count", labels) == 1
    with (tmp_path / ACCESS_LOG).open("a") as fh:
        fh.write("02 1\n")
    metrics.drain()
    assert metrics.registry.get_sample_value("serving_request_duration_seconds_count", labels) == 2


def test_switches_rejections_and_restarts(metrics: ServingMetrics) -> None:
    metrics.status(served("1", "cache"), health(), pool_started_at=1.0)
    metrics.status(served("1"), health(), pool_started_at=1.0)  # a status change, same pool
    metrics.status(served("1"), health(), pool_started_at=2.0)  # restarted: not a switch
    assert value(metrics, "serving_model_switches_total", result="switched") == 0
    metrics.status(served("2"), health(), pool_started_at=3.0)
    metrics.status(served("2"), health({"3": "would not load"}), pool_started_at=3.0)
    metrics.status(served("2"), health({"3": "would not load"}), pool_started_at=3.0)
    assert value(metrics, "serving_model_switches_total", result="switched") == 1
    assert value(metrics, "serving_model_switches_total", result="rejected") == 1
    info = [s for s in samples(metrics)["serving_model_info"]]
    assert info == [({"model": MODEL, "version": "2", "alias": "production",
                      "source": "registry"}, 1.0)]  # fmt: skip
    metrics.restarted("scoring")
    metrics.restarted("nginx")
    metrics.restarted("nginx")
    assert value(metrics, "serving_process_restarts_total", process="nginx") == 2


def test_tracking_server_up_follows_health(metrics: ServingMetrics) -> None:
    metrics.status(served("1"), health(), pool_started_at=1.0)
    assert value(metrics, "serving_tracking_server_up") == 1
    metrics.status(served("1"), health(degraded={"tracking_server": "unreachable"}), 1.0)
    assert value(metrics, "serving_tracking_server_up") == 0
    metrics.status(served("1"), health(degraded={"alias": "none"}), 1.0)
    assert value(metrics, "serving_tracking_server_up") == 1


def test_cache_hits_misses_and_downloads(metrics: ServingMetrics, tmp_path: Path) -> None:
    metrics.fetched(CacheEntry(tmp_path, "1", 1000, hit=False, seconds=2.0))
    metrics.fetched(CacheEntry(tmp_path, "1", 1000, hit=True, seconds=0.1))
    metrics.fetched(CacheEntry(tmp_path, "2", 500, hit=False, seconds=1.0))
    assert value(metrics, "serving_cache_hits_total", model=MODEL) == 1
    assert value(metrics, "serving_cache_misses_total", model=MODEL) == 2
    assert value(metrics, "serving_download_bytes_total", model=MODEL) == 1500
    assert value(metrics, "serving_download_seconds_sum", model=MODEL) == 3.0


def test_log_rotation_loses_and_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / ACCESS_LOG
    tail = LogTail(path, grace_s=0.0)
    writer = path.open("a")  # nginx's handle
    writer.write("a\nb\n")
    writer.flush()
    assert tail.read() == ["a", "b"]
    writer.write("c\n")
    writer.flush()

    def reopen() -> None:  # what nginx does on SIGUSR1, a little late
        nonlocal writer
        writer.write("d\n")
        writer.flush()
        writer.close()
        writer = path.open("a")

    tail.rotate(reopen)
    writer.write("e\n")
    writer.flush()
    assert tail.read() == ["c", "d", "e"]
    assert tail.read() == []
    assert not path.with_name(path.name + ".rotated").exists()
    writer.close()
    tail.close()


def _config(tmp_path: Path) -> str:
    return render(
        FrontConfig("127.0.0.1", 8080, 2, 10, 60, "production", "nginx", "/none.so"),
        tmp_path,
        filter_errors=False,
    )


def test_nginx_logs_invocations_and_forwards_metrics(tmp_path: Path) -> None:
    conf = _config(tmp_path)
    assert f"access_log {tmp_path / ACCESS_LOG} stack_invocations if=$stack_invocation;" in conf
    metrics_location = conf.split("location = /metrics {", 1)[1].split("}", 1)[0]
    assert f"proxy_pass http://unix:{tmp_path / 'metrics.sock'};" in metrics_location
    assert "stub_status;" in conf


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "nginx.conf").write_text(_config(tmp_path))
    check = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_batch_rows_are_counted_from_the_scoring_processes_header(
    metrics: ServingMetrics, tmp_path: Path
) -> None:
    metrics.status(served("1"), health(), pool_started_at=1.0)
    log(
        tmp_path,
        "1700000000.100 200 0.002 1 3",
        "1700000000.100 200 0.002 1 3",
        "1700000000.200 200 0.001 1 1",
        "1700000000.300 400 0.001 1 -",
        "1700000000.400 200 0.001 1",  # SERVING_ENGINE=mlflow, or a log from before
    )
    metrics.drain()
    count = metrics.registry.get_sample_value
    labels = {"model": MODEL, "version": "1"}
    assert count("serving_batch_rows_count", labels) == 3
    assert count("serving_batch_rows_sum", labels) == 7
    assert count("serving_batch_rows_bucket", labels | {"le": "2.0"}) == 1
    assert count("serving_requests_total", labels | {"alias": "production", "status": "200"}) == 4
