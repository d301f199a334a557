"""Serving benchmark: plain `mlflow models serve` vs this stack's serving vs a minimal ceiling.

Measures, in one run on this machine, with wrk (keep-alive, single-row requests):
requests/s and p50/p99 latency at concurrency 1, 8 and 32 for
  (a) plain    `mlflow models serve -m models:/<name>@production --env-manager local` (defaults
               otherwise; the default virtualenv env manager needs a network this machine lacks)
  (b) stack    `stack-serve` (nginx + MLflow scoring processes, following the alias)
  (c) ceiling  a minimal Starlette app calling scikit-learn on a NumPy array (bench/ceiling_app.py)
  (d) mlserver MLServer with its MLflow runtime (adaptive batching: 32 rows / 2 ms, one process),
               installed by the bench into a throwaway virtualenv of its own (pinned below)
plus cold start to first answer for (a), (b) and (d), with a breakdown of one scoring process's
start (interpreter, imports, model load, first prediction), promotion-to-new-version time (alias
set -> first answer from that version, 5 times) and failed requests during those switches under
load at concurrency 8. Prints a table, writes bench/results/serving.json and
bench/results/serving.png.

    .venv/bin/python bench/serving.py [--seconds 10] [--repeats 3] [--mlserver-venv DIR]
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
SERVERS = ("plain", "stack", "mlserver", "mlserver_v2", "ceiling")
PEERS = ("plain", "mlserver", "mlserver_v2")
MLSERVER_PINS = ("mlserver==1.7.1", "mlserver-mlflow==1.7.1", "mlflow==3.17.2")
MLSERVER_BATCH = {"max_batch_size": 32, "max_batch_time": 0.002}
# The same single-row prediction in MLServer's V2 inference protocol.
V2_SCRIPT = wrk.SCRIPT.replace(
    wrk.BODY, '{"inputs": [{"name": "hours", "shape": [1], "datatype": "FP64", "data": [5.0]}]}'
)
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

    def stack(
        self, port: int, cache: Path, extra: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """``extra``: more serving settings (bench/shadow.py: a challenger beside it)."""
        env = self.env | {
            "MODEL_NAME": MODEL,
            "SERVING_PORT": str(port),
            "SERVING_CACHE_DIR": str(cache),
            "LOG_LEVEL": "WARNING",
            **(extra or {}),
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

    def mlserver(self, port: int, model_path: Path, venv: Path) -> subprocess.Popen:
        """MLServer as its docs serve an MLflow model: a settings folder, ``mlserver start``."""
        folder = self.work / f"mlserver-{port}"
        folder.mkdir()
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,  # one process, as measured in issue 13
        }
        model = {
            "name": MODEL,
            "implementation": "mlserver_mlflow.MLflowRuntime",
            "parameters": {"uri": str(model_path)},
            **MLSERVER_BATCH,
        }
        (folder / "settings.json").write_text(json.dumps(settings))
        (folder / "model-settings.json").write_text(json.dumps(model))
        cmd = [str(venv / "bin" / "mlserver"), "start", str(folder)]
        env = self.env | {"PATH": f"{venv / 'bin'}{os.pathsep}{self.env.get('PATH', '')}"}
        env.pop("PYTHONPATH", None)
        return self._keep(launch(cmd, env, self.work / "mlserver.log"))

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


def mlserver_venv_path(path: Path) -> Path:
    """A virtualenv with MLServer's pinned versions (and this stack's scikit-learn, which the
    model needs); made once, reused when it already answers ``mlserver --version``."""
    mlserver = path / "bin" / "mlserver"
    if (
        mlserver.exists()
        and subprocess.run([mlserver, "--version"], capture_output=True).returncode == 0
    ):
        return path
    sklearn = next(
        line.strip()
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line.lower().startswith("scikit-learn==")
    )
    print(f"installing {', '.join(MLSERVER_PINS)} into {path} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(path / "bin" / "pip"), "install", "-q", *MLSERVER_PINS, sklearn], check=True
    )
    return path


BREAKDOWN = """
import json, sys, time
started = time.time()
import mlflow.pyfunc
imported = time.time()
model = mlflow.pyfunc.load_model(sys.argv[1])
loaded = time.time()
import pandas as pd
model.predict(pd.DataFrame({"hours": [5.0]}))
predicted = time.time()
print(json.dumps([started, imported, loaded, predicted]))
"""


def cold_start_breakdown(model_path: Path, repeats: int) -> dict[str, float]:
    """Where a scoring process's start goes (medians): the interpreter to its first line,
    ``import mlflow.pyfunc``, loading the model, the first prediction."""
    parts: dict[str, list[float]] = {
        "process_start": [],
        "imports": [],
        "model_load": [],
        "first_prediction": [],
    }
    for _ in range(repeats):
        began = time.time()
        out = subprocess.run(
            [sys.executable, "-c", BREAKDOWN, str(model_path)],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"},
        ).stdout
        started, imported, loaded, predicted = json.loads(out.strip().splitlines()[-1])
        for key, seconds in zip(
            parts,
            (started - began, imported - started, loaded - imported, predicted - loaded),
            strict=True,
        ):
            parts[key].append(seconds)
    return {key: statistics.median(values) for key, values in parts.items()}


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
    print(f"\n{'server':<12}{'conc':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for server in SERVERS:
        for c in CONCURRENCY:
            key = str(c)
            print(
                f"{server:<12}{c:>6}{results['rps'][server][key]:>10.0f}"
                f"{results['p50_ms'][server][key]:>10.2f}{results['p99_ms'][server][key]:>10.2f}"
            )
    print("\nratios (req/s: stack/plain, stack/best peer, stack/ceiling; p99: stack/plain):")
    for c in CONCURRENCY:
        key = str(c)
        rps, p99 = results["rps"], results["p99_ms"]
        best_peer = max(rps[peer][key] for peer in PEERS)
        print(
            f"  c={c:<3} {rps['stack'][key] / rps['plain'][key]:.2f}x   "
            f"{rps['stack'][key] / best_peer:.2f}x   "
            f"{rps['stack'][key] / rps['ceiling'][key]:.2f}x   "
            f"{p99['stack'][key] / p99['plain'][key]:.2f}x"
        )
    cold = results["cold_start_s"]
    print(
        f"\ncold start to first answer: plain {cold['plain']:.2f}s, stack {cold['stack']:.2f}s "
        f"(empty cache), stack {cold['stack_warm_cache']:.2f}s (warm cache), "
        f"mlserver {cold['mlserver']:.2f}s"
    )
    print(
        "one scoring process's start: "
        + ", ".join(
            f"{k.replace('_', ' ')} {v:.2f}s" for k, v in results["cold_start_breakdown_s"].items()
        )
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
    width = 0.16
    for i, server in enumerate(SERVERS):
        xs = [j + (i - 2) * width for j in range(len(CONCURRENCY))]
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
@click.option(
    "--mlserver-venv",
    type=click.Path(path_type=Path),
    default=None,
    help="Where MLServer's virtualenv is made, or reused (default: a throwaway one).",
)
@click.option("--output", "stem", default="serving", show_default=True, help="Result file stem.")
def main(
    seconds: float, repeats: int, switch_seconds: float, mlserver_venv: Path | None, stem: str
) -> None:
    logging.basicConfig(level=logging.WARNING)
    wrk.require_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    venv = mlserver_venv_path(mlserver_venv or work / "mlserver-venv")
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
        model_path = next(warm_cache.glob(f"{MODEL}/1"))
        mlserver_cold = cold_start(
            servers, lambda port: servers.mlserver(port, model_path, venv), repeats
        )
        breakdown = cold_start_breakdown(model_path, repeats)

        print("throughput ...", flush=True)
        ports = {name: free_port() for name in SERVERS if name != "mlserver_v2"}
        running = {
            "plain": servers.plain(ports["plain"]),
            "stack": servers.stack(ports["stack"], warm_cache),
            "mlserver": servers.mlserver(ports["mlserver"], model_path, venv),
            "ceiling": servers.ceiling(ports["ceiling"], model_path),
        }
        results: dict = {"rps": {}, "p50_ms": {}, "p99_ms": {}}
        # MLServer's adaptive batching wraps its V2 `infer` only; its MLflow-protocol
        # /invocations (the request every other server gets) predicts each request alone. So
        # MLServer is measured on both: "mlserver" (/invocations) and "mlserver_v2".
        points = [(name, name, wrk.SCRIPT, "/invocations") for name in running]
        points.insert(3, ("mlserver_v2", "mlserver", V2_SCRIPT, f"/v2/models/{MODEL}/infer"))
        for name, server, script, path in points:
            url = f"http://127.0.0.1:{ports[server]}"
            first_answer(url, running[server])
            wrk.run(url, 8, 2, script, path)  # warm-up
            for metric in results:
                results[metric][name] = {}
            for c in CONCURRENCY:
                measured = wrk.run(url, c, seconds, script, path)
                if measured.failed:  # wrk's req/s counts them too
                    print(f"  {name}: {measured.failed} failed requests at c={c}!", flush=True)
                results["rps"][name][str(c)] = measured.rps
                results["p50_ms"][name][str(c)] = measured.p50_ms
                results["p99_ms"][name][str(c)] = measured.p99_ms
                print(f"  {name:<11} c={c:<3} {measured.rps:8.0f} req/s", flush=True)
        for name in ("plain", "mlserver", "ceiling"):
            servers.stop(running[name])

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
            "mlserver": statistics.median(mlserver_cold),
        }
        results["cold_start_breakdown_s"] = breakdown
        results["promotion_s"] = promotion_s
        results["failed_requests"] = failed
        results["machine"] = {"cpus": os.cpu_count(), "wrk_seconds": seconds}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
        plot(results, RESULTS / f"{stem}.png")
        print_table(results)
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
