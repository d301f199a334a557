"""Serving benchmark: plain `mlflow models serve` vs this stack's serving vs a minimal ceiling.

Measures, in one run on this machine, with wrk (keep-alive, single-row requests):
requests/s and p50/p99 latency at concurrency 1, 8 and 32 for
  (a) plain    `mlflow models serve -m models:/<name>@production --env-manager local` (defaults
               otherwise; the default virtualenv env manager needs a network this machine lacks)
  (b) stack    `stack-serve` (nginx + MLflow scoring processes, following the alias)
  (c) ceiling  a minimal Starlette app calling scikit-learn on a NumPy array (bench/ceiling_app.py)
plus cold start to first answer for (a) and (b), promotion-to-new-version time (alias set ->
first answer from that version, 5 times) and failed requests during those switches under load
at concurrency 8. Prints a table, writes bench/results/serving.json and bench/results/serving.png.

    .venv/bin/python bench/serving.py [--seconds 10] [--repeats 3]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from local_stack.processes import (  # noqa: E402
    base_env,
    free_port,
    start_tracking_server,
    stop_group,
    wait_until_up,
)
from promotion.aliases import promote  # noqa: E402
from stack_common.tracking import connect  # noqa: E402
from training.pipeline import run_training  # noqa: E402
from training.settings import TrainingSettings  # noqa: E402

MODEL = "bench-grades"
CONCURRENCY = (1, 8, 32)
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
logger = logging.getLogger("bench.serving")


def first_answer(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    body = json.loads(wrk.BODY)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering")
        try:
            if requests.post(f"{url}/invocations", json=body, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def launch(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class Servers:
    """Starts the three servers under comparison; remembers them to stop them."""

    def __init__(self, work: Path, tracking_uri: str) -> None:
        self.work = work
        self.env = base_env(work / "stack") | {"MLFLOW_TRACKING_URI": tracking_uri}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.running: list[subprocess.Popen] = []

    def plain(self, port: int) -> subprocess.Popen:
        cmd = [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}@production",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        return self._keep(launch(cmd, self.env, self.work / "plain.log"))

    def stack(self, port: int, cache: Path) -> subprocess.Popen:
        env = self.env | {
            "MODEL_NAME": MODEL,
            "SERVING_PORT": str(port),
            "SERVING_CACHE_DIR": str(cache),
            "LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable, "-m", "serving"]
        return self._keep(launch(cmd, env, self.work / "stack.log"))

    def ceiling(self, port: int, model_path: Path) -> subprocess.Popen:
        env = self.env | {"MODEL_PATH": str(model_path), "PYTHONPATH": str(ROOT)}
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "bench.ceiling_app:app",
        ]
        return self._keep(launch(cmd, env, self.work / "ceiling.log"))

    def _keep(self, process: subprocess.Popen) -> subprocess.Popen:
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        stop_group(process.pid)
        process.wait()
        self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(self.running):
            self.stop(process)


def cold_start(servers: Servers, start, repeats: int) -> list[float]:
    """Seconds from starting a server process to its first 200 answer, ``repeats`` times."""
    times = []
    for _ in range(repeats):
        port = free_port()
        began = time.monotonic()
        process = start(port)
        first_answer(f"http://127.0.0.1:{port}", process)
        times.append(time.monotonic() - began)
        servers.stop(process)
    return times


def answered_version(url: str) -> str | None:
    try:
        response = requests.post(f"{url}/invocations", json=json.loads(wrk.BODY), timeout=5)
        return response.headers.get("X-Model-Version")
    except requests.RequestException:
        return None


def print_table(results: dict) -> None:
    print(f"\n{'server':<10}{'conc':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for server in ("plain", "stack", "ceiling"):
        for c in CONCURRENCY:
            key = str(c)
            print(
                f"{server:<10}{c:>6}{results['rps'][server][key]:>10.0f}"
                f"{results['p50_ms'][server][key]:>10.2f}{results['p99_ms'][server][key]:>10.2f}"
            )
    print("\nratios stack/plain and stack/ceiling (req/s; p99 plain/stack):")
    for c in CONCURRENCY:
        key = str(c)
        rps, p99 = results["rps"], results["p99_ms"]
        print(
            f"  c={c:<3} b/a {rps['stack'][key] / rps['plain'][key]:.2f}x   "
            f"b/c {rps['stack'][key] / rps['ceiling'][key]:.2f}x   "
            f"p99 a/b {p99['plain'][key] / p99['stack'][key]:.2f}x"
        )
    cold = results["cold_start_s"]
    print(
        f"\ncold start to first answer: plain {cold['plain']:.2f}s, stack {cold['stack']:.2f}s "
        f"(empty cache), stack {cold['stack_warm_cache']:.2f}s (warm cache)"
    )
    print(
        "promotion to new version (s): "
        + ", ".join(f"{s:.2f}" for s in results["promotion_s"])
        + f"; median {statistics.median(results['promotion_s']):.2f}s"
    )
    print(f"failed requests during 5 switches at concurrency 8: {results['failed_requests']}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.27
    for i, server in enumerate(("plain", "stack", "ceiling")):
        xs = [j + (i - 1) * width for j in range(len(CONCURRENCY))]
        axes[0].bar(xs, [results["rps"][server][str(c)] for c in CONCURRENCY], width, label=server)
        axes[1].bar(
            xs, [results["p99_ms"][server][str(c)] for c in CONCURRENCY], width, label=server
        )
    for ax, title in zip(
        axes, ("requests/s (higher is better)", "p99 latency ms (lower is better)"), strict=True
    ):
        ax.set_xticks(range(len(CONCURRENCY)), [f"c={c}" for c in CONCURRENCY])
        ax.set_title(title)
        ax.legend()
    fig.suptitle("single-row predictions on this machine (wrk, keep-alive)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@click.command()
@click.option("--seconds", default=10.0, show_default=True, help="wrk duration per point.")
@click.option("--repeats", default=3, show_default=True, help="Cold starts per server.")
@click.option(
    "--switch-seconds",
    default=25.0,
    show_default=True,
    help="Load duration around each of the 5 promotions.",
)
def main(seconds: float, repeats: int, switch_seconds: float) -> None:
    logging.basicConfig(level=logging.WARNING)
    wrk.require_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
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

        print("cold starts ...", flush=True)
        plain_cold = cold_start(servers, servers.plain, repeats)
        stack_cold = cold_start(
            servers, lambda port: servers.stack(port, Path(tempfile.mkdtemp(dir=work))), repeats
        )
        warm_cache = work / "warm-cache"  # the first start fills it
        stack_warm = cold_start(servers, lambda port: servers.stack(port, warm_cache), repeats + 1)[
            1:
        ]

        print("throughput ...", flush=True)
        ports = {name: free_port() for name in ("plain", "stack", "ceiling")}
        running = {
            "plain": servers.plain(ports["plain"]),
            "stack": servers.stack(ports["stack"], warm_cache),
            "ceiling": servers.ceiling(ports["ceiling"], next(warm_cache.glob(f"{MODEL}/1"))),
        }
        results: dict = {"rps": {}, "p50_ms": {}, "p99_ms": {}}
        for name, process in running.items():
            url = f"http://127.0.0.1:{ports[name]}"
            first_answer(url, process)
            wrk.run(url, 8, 2)  # warm-up
            for metric in results:
                results[metric][name] = {}
            for c in CONCURRENCY:
                measured = wrk.run(url, c, seconds)
                results["rps"][name][str(c)] = measured.rps
                results["p50_ms"][name][str(c)] = measured.p50_ms
                results["p99_ms"][name][str(c)] = measured.p99_ms
                print(f"  {name:<8} c={c:<3} {measured.rps:8.0f} req/s", flush=True)
        servers.stop(running["plain"])
        servers.stop(running["ceiling"])

        print("promotions under load ...", flush=True)
        versions = [run_training(TrainingSettings.from_env(train_env)).version for _ in range(5)]
        stack_url = f"http://127.0.0.1:{ports['stack']}"
        promotion_s, failed = [], 0
        for version in versions:
            load = wrk.start(stack_url, 8, switch_seconds)
            time.sleep(1)
            began = time.monotonic()
            client.set_registered_model_alias(MODEL, "production", version)
            while answered_version(stack_url) != version:
                if time.monotonic() - began > switch_seconds - 2:
                    raise RuntimeError(f"version {version} not served within {switch_seconds}s")
                time.sleep(0.05)
            promotion_s.append(time.monotonic() - began)
            output, _ = load.communicate(timeout=switch_seconds + 60)
            failed += wrk.parse(output).failed
            print(f"  version {version}: {promotion_s[-1]:.2f}s", flush=True)

        results["cold_start_s"] = {
            "plain": statistics.median(plain_cold),
            "stack": statistics.median(stack_cold),
            "stack_warm_cache": statistics.median(stack_warm),
        }
        results["promotion_s"] = promotion_s
        results["failed_requests"] = failed
        results["machine"] = {"cpus": os.cpu_count(), "wrk_seconds": seconds}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "serving.json").write_text(json.dumps(results, indent=1) + "\n")
        plot(results, RESULTS / "serving.png")
        print_table(results)
        print(f"\nwrote {RESULTS / 'serving.json'} and {RESULTS / 'serving.png'}")
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
