"""Load on the tracking server: concurrent clients logging metrics and registering versions.

Each client process opens a run and, for ``--duration`` seconds, sends ``log_batch`` calls of
``--metrics`` values (one step each) and, every ``--register-every`` batches, registers a new
version of the registered model. Afterwards every logged value is read back and compared
exactly, and every registered version is looked up. Prints requests/s and p50/p99 latency per
operation, writes bench/results/tracking_load.json and a latency plot.

    .venv/bin/python bench/tracking_load.py [--clients 8] [--duration 180] [--backend-store-uri …]
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local_stack.processes import free_port, start_tracking_server, wait_until_up  # noqa: E402
from stack_common.tracking import apply_client_defaults  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODEL = "load-test"


def client_process(args: tuple[str, int, float, int, int]) -> dict:
    """One client: returns what it logged and how long each call took."""
    uri, index, duration, metrics, register_every = args
    apply_client_defaults()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    run_id = client.create_run(experiment, run_name=f"client-{index}").info.run_id
    source = f"runs:/{run_id}/model"
    logged: dict[str, list[tuple[int, float]]] = {}
    latencies: dict[str, list[float]] = {"log_batch": [], "register": []}
    versions: list[str] = []
    deadline = time.monotonic() + duration
    step = 0
    while time.monotonic() < deadline:
        now_ms = int(time.time() * 1000)
        batch = []
        for m in range(metrics):
            value = index * 1e6 + step * 1e3 + m + 0.125  # exact in binary floating point
            batch.append(Metric(f"m{m}", value, now_ms, step))
            logged.setdefault(f"m{m}", []).append((step, value))
        began = time.perf_counter()
        client.log_batch(run_id, metrics=batch)
        latencies["log_batch"].append(time.perf_counter() - began)
        step += 1
        if step % register_every == 0:
            began = time.perf_counter()
            mv = client.create_model_version(MODEL, source, run_id=run_id)
            latencies["register"].append(time.perf_counter() - began)
            versions.append(str(mv.version))
    client.set_terminated(run_id)

    lost = 0  # read everything back
    for key, expected in logged.items():
        history = {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
        lost += sum(1 for item in expected if item not in history)
    missing_versions = 0
    for version in versions:
        if client.get_model_version(MODEL, version).run_id != run_id:
            missing_versions += 1
    return {
        "latencies": latencies,
        "values_logged": sum(len(v) for v in logged.values()),
        "values_lost": lost,
        "versions": len(versions),
        "versions_lost": missing_versions,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@click.command()
@click.option("--clients", default=8, show_default=True, help="Concurrent client processes.")
@click.option("--duration", default=180.0, show_default=True, help="Seconds of load.")
@click.option("--metrics", default=10, show_default=True, help="Metric values per log_batch.")
@click.option("--register-every", default=20, show_default=True, help="Batches per new version.")
@click.option("--backend-store-uri", default="", help="Default: SQLite in a temporary folder.")
@click.option("--workers", default=2, show_default=True, help="Tracking server workers.")
def main(
    clients: int,
    duration: float,
    metrics: int,
    register_every: int,
    backend_store_uri: str,
    workers: int,
) -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    env = {"MLFLOW_WORKERS": str(workers)}
    if backend_store_uri:
        env["MLFLOW_BACKEND_STORE_URI"] = backend_store_uri
    tracking = start_tracking_server(work / "stack", free_port(), work / "tracking.log", env)
    try:
        wait_until_up(tracking, "/health", 180)
        from mlflow import MlflowClient

        admin = MlflowClient(tracking.url)
        admin.create_experiment(MODEL)
        admin.create_registered_model(MODEL)
        print(f"{clients} clients for {duration:g}s against {tracking.url} ...", flush=True)
        started = time.monotonic()
        args = [(tracking.url, i, duration, metrics, register_every) for i in range(clients)]
        with multiprocessing.get_context("spawn").Pool(clients) as pool:
            outcomes = pool.map(client_process, args)
        elapsed = time.monotonic() - started

        results: dict = {"clients": clients, "duration_s": duration, "operations": {}}
        for op in ("log_batch", "register"):
            lat = [x for o in outcomes for x in o["latencies"][op]]
            results["operations"][op] = {
                "count": len(lat),
                "rps": len(lat) / elapsed,
                "p50_ms": statistics.median(lat) * 1000 if lat else None,
                "p99_ms": percentile(lat, 0.99) * 1000 if lat else None,
            }
        results["values_logged"] = sum(o["values_logged"] for o in outcomes)
        results["values_lost"] = sum(o["values_lost"] for o in outcomes)
        results["versions_registered"] = sum(o["versions"] for o in outcomes)
        results["versions_lost"] = sum(o["versions_lost"] for o in outcomes)
        results["versions_listed"] = len(admin.search_model_versions(f"name='{MODEL}'"))
        results["backend"] = backend_store_uri.split(":", 1)[0] if backend_store_uri else "sqlite"

        print(f"\n{'operation':<12}{'count':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
        for op, row in results["operations"].items():
            if row["count"]:
                print(
                    f"{op:<12}{row['count']:>8}{row['rps']:>9.1f}"
                    f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
                )
        print(
            f"\nmetric values logged {results['values_logged']}, lost {results['values_lost']}; "
            f"versions registered {results['versions_registered']}, lost "
            f"{results['versions_lost']}, listed {results['versions_listed']}"
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "tracking_load.json").write_text(json.dumps(results, indent=1) + "\n")
        plot(outcomes, RESULTS / "tracking_load.png")
        print(f"wrote {RESULTS / 'tracking_load.json'} and {RESULTS / 'tracking_load.png'}")
        if results["values_lost"] or results["versions_lost"]:
            raise SystemExit("data was lost under load")
    finally:
        tracking.stop()
        shutil.rmtree(work, ignore_errors=True)


def plot(outcomes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for op in ("log_batch", "register"):
        lat = [x * 1000 for o in outcomes for x in o["latencies"][op]]
        if lat:
            ax.hist(lat, bins=60, alpha=0.6, label=op, log=True)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("calls")
    ax.set_title("tracking server under concurrent clients")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
