"""Shadow and canary benchmark: what seeing the challenger on live traffic costs production.

Measures, in one run on this machine, with wrk (keep-alive, single-row requests), requests/s
and p50/p99 latency at concurrency 1, 8 and 32 for
  (a) plain         `mlflow models serve -m models:/<name>@production --env-manager local`,
                    the peer a user would pick instead (it has no challenger at all)
  (b) stack         `stack-serve`, no challenger
  (c) stack_shadow  the same with SERVING_SHADOW_ALIAS=challenger, SERVING_SHADOW_PERCENT=100:
                    every answered request is mirrored to the challenger after its answer
                    (stack_shadow_10: SERVING_SHADOW_PERCENT=10)
  (d) stack_canary  the same with SERVING_CANARY_PERCENT=10 (the challenger answers a tenth)
(b) and (c) are measured twice, alternating, and their medians compared: the shadow's cost on
p50 is the figure issue 24 asks for ("within a few percent of no shadow"). Also reports how
many requests the shadow mirrored and dropped (its queue is bounded: under a load the
challenger cannot keep up with, mirrors are dropped rather than slowing production). Writes
bench/results/shadow.json and bench/results/shadow.png.

    .venv/bin/python bench/shadow.py [--seconds 8]
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from bench.serving import MODEL, RESULTS, Servers, first_answer  # noqa: E402
from local_stack.processes import free_port, start_tracking_server, wait_until_up  # noqa: E402
from promotion.aliases import promote  # noqa: E402
from stack_common.tracking import connect  # noqa: E402
from training.pipeline import run_training  # noqa: E402
from training.settings import TrainingSettings  # noqa: E402

CONCURRENCY = (1, 8, 32)
CONFIGS = {
    "stack": {},
    "stack_shadow": {"SERVING_SHADOW_ALIAS": "challenger", "SERVING_SHADOW_PERCENT": "100"},
    "stack_shadow_10": {"SERVING_SHADOW_ALIAS": "challenger", "SERVING_SHADOW_PERCENT": "10"},
    "stack_canary": {"SERVING_SHADOW_ALIAS": "challenger", "SERVING_CANARY_PERCENT": "10"},
}
# Alternating A/B rounds of the two configurations whose difference is the result.
ORDER = (
    "plain",
    *("stack", "stack_shadow", "stack_shadow_10") * 2,
    "stack_canary",
)


def shadow_counts(url: str) -> dict[str, float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    counts = {"mirrored": 0.0, "dropped": 0.0, "canary_answered": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "serving_challenger_requests_total":
                key = "mirrored" if sample.labels["mode"] == "shadow" else "canary_answered"
                counts[key] += sample.value
            elif sample.name == "serving_shadow_dropped_total":
                counts["dropped"] += sample.value
    return counts


def wait_for_challenger(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        challenger = requests.get(f"{url}/health", timeout=5).json().get("challenger", {})
        if challenger.get("version"):
            return
        time.sleep(0.2)
    raise RuntimeError("the challenger did not load")


def measure(url: str, seconds: float) -> dict[str, dict[str, float]]:
    wrk.run(url, 8, 2)  # warm-up
    found: dict[str, dict[str, float]] = {"rps": {}, "p50_ms": {}, "p99_ms": {}, "failed": {}}
    for c in CONCURRENCY:
        result = wrk.run(url, c, seconds)
        found["rps"][str(c)] = result.rps
        found["p50_ms"][str(c)] = result.p50_ms
        found["p99_ms"][str(c)] = result.p99_ms
        found["failed"][str(c)] = result.failed
        print(f"    c={c:<3} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms", flush=True)
    return found


def median_of(rounds: list[dict], metric: str) -> dict[str, float]:
    return {str(c): statistics.median(r[metric][str(c)] for r in rounds) for c in CONCURRENCY}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["p50_ms"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - len(names) / 2 + 0.5) * width for j in range(len(CONCURRENCY))]
        for ax, metric in zip(axes, ("p50_ms", "rps"), strict=True):
            ax.bar(xs, [results[metric][name][str(c)] for c in CONCURRENCY], width, label=name)
    titles = ("p50 latency ms (lower is better)", "requests/s (higher is better)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xticks(range(len(CONCURRENCY)), [f"c={c}" for c in CONCURRENCY])
        ax.set_title(title)
        ax.legend()
    fig.suptitle("production with and without a challenger beside it (wrk, keep-alive)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@click.command()
@click.option("--seconds", default=8.0, show_default=True, help="wrk duration per point.")
@click.option("--output", "stem", default="shadow", show_default=True, help="Result file stem.")
def main(seconds: float, stem: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    wrk.require_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    tracking = start_tracking_server(work / "stack", free_port(), work / "tracking.log")
    servers = Servers(work, tracking.url)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        wait_until_up(tracking, "/health", 180)
        train_env = {
            "MLFLOW_TRACKING_URI": tracking.url,
            "MODEL_NAME": MODEL,
            "MLFLOW_EXPERIMENT_NAME": MODEL,
        }
        run_training(TrainingSettings.from_env(train_env))
        client = connect(tracking.url, 10)
        promote(client, MODEL, reason="benchmark")
        challenger = run_training(TrainingSettings.from_env(train_env)).version
        client.set_registered_model_alias(MODEL, "challenger", challenger)
        cache = work / "cache"

        rounds: dict[str, list[dict]] = {name: [] for name in ("plain", *CONFIGS)}
        mirrored: dict[str, dict[str, float]] = {}
        for name in ORDER:
            print(f"{name} ...", flush=True)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            if name == "plain":
                process: subprocess.Popen = servers.plain(port)
            else:
                process = servers.stack(port, cache, CONFIGS[name])
            first_answer(url, process)
            if name != "plain" and CONFIGS[name]:
                wait_for_challenger(url)
            rounds[name].append(measure(url, seconds))
            if name != "plain":
                mirrored[name] = shadow_counts(url)
            servers.stop(process)

        results: dict = {"p50_ms": {}, "p99_ms": {}, "rps": {}}
        for name, measured in rounds.items():
            for metric in results:
                results[metric][name] = median_of(measured, metric)
        results["failed_requests"] = {
            name: sum(sum(r["failed"].values()) for r in measured)
            for name, measured in rounds.items()
        }
        results["p50_ratio_to_stack"] = {
            name: {
                str(c): results["p50_ms"][name][str(c)] / results["p50_ms"]["stack"][str(c)]
                for c in CONCURRENCY
            }
            for name in CONFIGS
            if name != "stack"
        }
        results["challenger_requests"] = mirrored
        results["machine"] = {"cpus": os.cpu_count(), "wrk_seconds": seconds}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
        plot(results, RESULTS / f"{stem}.png")
        print(json.dumps({k: results[k] for k in ("p50_ms", "p50_ratio_to_stack")}, indent=1))
        print(f"\nwrote {RESULTS / stem}.json and .png")
    except BaseException:
        print(f"benchmark failed; logs kept in {work}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        servers.stop_all()
        tracking.stop()


if __name__ == "__main__":
    main()
