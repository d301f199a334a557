"""Tracking server benchmark: plain `mlflow server` vs this stack's launcher, with and without auth.

Measures, in one run on this machine, with wrk (keep-alive; Lua scripts for the POSTs and the
basic-auth header): requests/s, p50, p99 and failed requests at concurrency 1, 8 and 32 of
  get     GET  /api/2.0/mlflow/experiments/get-by-name (what every client does first)
  log     POST /api/2.0/mlflow/runs/log-batch, 100 metrics a call (training)
  search  POST /api/2.0/mlflow/runs/search over 20 runs (the UI's run table, promotion)
against
  plain       `mlflow server --port P`, its defaults (uvicorn, 4 workers, no auth; asyncio and
              h11 as `pip install mlflow` gets them: forced, since this venv has uvloop/httptools)
  stack       the launcher (`python -m tracking_server`) as configured by default, no auth
  stack-auth  the launcher with MLFLOW_AUTH=true, requests as a non-admin user (the trainer:
              EDIT on the experiment), MLflow's credential cache at its default TTL
plus, for each ``--layouts`` entry, stack-auth with that worker layout (back to back, so the
machine's other load hits them alike), and the time until the MLflow UI's model page
(``/#/models/<model>``) shows its versions table in headless Chromium, stack-auth vs plain.
Points are measured interleaved (per endpoint and concurrency, every server in turn). SQLite
backend stores, as the local stack runs. Prints a table, writes
bench/results/tracking_server.json and bench/results/tracking_server.png.

    .venv/bin/python bench/tracking_server.py [--seconds 10] [--layouts all|none|a,b]
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402
from local_stack.processes import (  # noqa: E402
    Service,
    base_env,
    free_port,
    start_tracking_server,
    wait_until_up,
)
from tests.helpers import CHROMIUM_ARGS  # noqa: E402

CONCURRENCY = (1, 8, 32)
ENDPOINTS = ("get", "log", "search")
EXPERIMENT = "bench-tracking"
MODEL = "grades-regressor"
SEED_RUNS = 20
VERSIONS = 3
ADMIN_PASSWORD = "bench-admin-secret"
TRAINER = ("trainer", "bench-trainer-secret")
SERVER_SECRETS = {
    "MLFLOW_AUTH": "true",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "bench-flask-secret-key",
    "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
}
# What `pip install mlflow` runs: uvicorn without its [standard] extra picks these.
PLAIN_UVICORN_OPTS = "--loop asyncio --http h11"
# Worker layouts of the launcher compared with --layouts (stack-auth each): env overrides. The
# default layout (uvicorn, 2 workers, uvloop + httptools) is stack-auth itself.
LAYOUTS: dict[str, tuple[str, dict[str, str]]] = {
    "uvicorn-asyncio-2": (
        "uvicorn, 2 workers, asyncio + h11 (the launcher before issue 10)",
        {"MLFLOW_WORKERS": "2", "MLFLOW_UVICORN_OPTS": PLAIN_UVICORN_OPTS},
    ),
    "uvicorn-uvloop-4": (
        "uvicorn, 4 workers, --loop uvloop --http httptools",
        {"MLFLOW_WORKERS": "4", "MLFLOW_UVICORN_OPTS": "--loop uvloop --http httptools"},
    ),
    "uvicorn-asyncio-1": (
        "uvicorn, 1 worker, asyncio + h11 (asyncio binds the socket itself: TCP_NODELAY on)",
        {"MLFLOW_WORKERS": "1", "MLFLOW_UVICORN_OPTS": PLAIN_UVICORN_OPTS},
    ),
    "gunicorn-gthread-2": (
        "gunicorn, 2 gthread workers x 8 threads, MLflow's Flask app",
        {"MLFLOW_WORKERS": "2", "MLFLOW_GUNICORN_OPTS": "-k gthread --threads 8"},
    ),
}
WRK_TIMEOUT_S = 30.0
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
logger = logging.getLogger("bench.tracking_server")


@dataclass
class Target:
    """One server under test and what the load scripts need to talk to it."""

    name: str
    description: str
    service: Service
    auth: tuple[str, str] | None
    experiment_id: str = ""
    run_id: str = ""
    results: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.service.url


def lua_header(auth: tuple[str, str] | None) -> str:
    if auth is None:
        return ""
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return f'wrk.headers["Authorization"] = "Basic {token}"\n'


def script_get(target: Target) -> tuple[str, str]:
    return lua_header(
        target.auth
    ), f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"


def script_search(target: Target) -> tuple[str, str]:
    body = json.dumps({"experiment_ids": [target.experiment_id], "max_results": SEED_RUNS})
    text = (
        'wrk.method = "POST"\n'
        f"wrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + lua_header(target.auth)
    )
    return text, "/api/2.0/mlflow/runs/search"


# Each wrk thread numbers its calls; thread id and counter make every (key, step) unique, so no
# call is a duplicate insert.
_LOG_BATCH = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
function request()
  counter = counter + 1
  local step = tid * 100000000 + counter
  local parts = {}
  for i = 1, 100 do
    parts[i] = string.format('{"key":"m%d","value":%d.5,"timestamp":%d,"step":%d}',
                             i, counter, 1700000000000 + counter, step)
  end
  local body = '{"run_id":"RUN_ID","metrics":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format(nil, nil, nil, body)
end
"""


def script_log(target: Target) -> tuple[str, str]:
    text = _LOG_BATCH.replace("RUN_ID", target.run_id) + lua_header(target.auth)
    return text, "/api/2.0/mlflow/runs/log-batch"


SCRIPTS = {"get": script_get, "log": script_log, "search": script_search}


def start_plain(work: Path) -> Service:
    folder = work / "plain"
    folder.mkdir()
    port = free_port()
    env = base_env(folder) | {"MLFLOW_UVICORN_OPTS": PLAIN_UVICORN_OPTS}
    log = work / "plain.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Service("plain", process, log, f"http://127.0.0.1:{port}")


def start_stack(work: Path, name: str, env: dict[str, str]) -> Service:
    env = {"LOG_LEVEL": "WARNING"} | env
    return start_tracking_server(work / name, free_port(), work / f"{name}.log", env)


def seed(target: Target) -> None:
    """The experiment with SEED_RUNS runs (params, metrics, tags), one run for log_batch, and
    a model with VERSIONS versions; users and grants first on a server with auth."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    if target.auth is not None:
        env = {
            "MLFLOW_TRACKING_URI": target.url,
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
            "MODEL_NAME": MODEL,
            "STACK_TRAINER_PASSWORD": TRAINER[1],
            "PATH": os.environ["PATH"],
        }
        done = subprocess.run(
            [sys.executable, "-m", "tracking_server.bootstrap_users"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bootstrap_users failed on {target.name}: {done.stderr}")
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = TRAINER
    try:
        client = MlflowClient(target.url)
        quiet = contextlib.redirect_stdout(io.StringIO())  # MLflow prints a link per run
        quiet.__enter__()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        target.experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        )
        now = int(time.time() * 1000)
        for i in range(SEED_RUNS):
            run = client.create_run(target.experiment_id, run_name=f"seed-{i}")
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(f"metric_{k}", i * k, now, 0) for k in range(5)],
                params=[Param(f"param_{k}", str(i + k)) for k in range(5)],
                tags=[RunTag("bench", "seed")],
            )
            client.set_terminated(run.info.run_id)
        target.run_id = client.create_run(target.experiment_id, run_name="load").info.run_id
        if target.auth is None:
            client.create_registered_model(MODEL)
        for i in range(VERSIONS):
            client.create_model_version(
                MODEL, f"runs:/{target.run_id}/model", run_id=target.run_id, tags={"n": str(i)}
            )
    finally:
        quiet.__exit__(None, None, None)
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)


def measure(target: Target, endpoint: str, concurrency: int, seconds: float) -> dict:
    text, path = SCRIPTS[endpoint](target)
    # wrk's default 2 s timeout would count slow answers as failures; MLflow's clients wait.
    result = wrk.run(target.url, concurrency, seconds, text, path, timeout_s=WRK_TIMEOUT_S)
    return {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "requests": result.requests,
        "errors": result.failed,
    }


def check_answers(target: Target) -> None:
    """One request of each kind must succeed before timing: wrk counts a 401 as fast."""
    auth = target.auth
    api = f"{target.url}/api/2.0/mlflow"
    answers = [
        requests.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": EXPERIMENT}, auth=auth
        ),
        requests.post(
            f"{api}/runs/search", json={"experiment_ids": [target.experiment_id]}, auth=auth
        ),
        requests.post(
            f"{api}/runs/log-batch",
            json={
                "run_id": target.run_id,
                "metrics": [{"key": "x", "value": 1, "timestamp": 1, "step": 0}],
            },
            auth=auth,
        ),
    ]
    for answer in answers:
        if answer.status_code != 200:
            raise RuntimeError(
                f"{target.name}: {answer.request.url} -> {answer.status_code}: {answer.text[:200]}"
            )


def ui_render_s(target: Target, repeats: int, chromium: str) -> list[float]:
    """Seconds from navigating to ``/#/models/<model>`` (new browser context: empty cache) until
    the versions table shows its rows."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for _ in range(repeats + 1):  # the first is a warm-up of the browser itself
                credentials = (
                    {"username": "admin", "password": ADMIN_PASSWORD} if target.auth else None
                )
                context = browser.new_context(
                    viewport={"width": 1400, "height": 900}, http_credentials=credentials
                )
                page = context.new_page()
                began = time.monotonic()
                # With auth, workspaces are on: the UI asks for one unless the URL names it.
                query = "?workspace=default" if target.auth else ""
                page.goto(f"{target.url}/#/models/{MODEL}{query}")
                page.get_by_role("link", name="Version 1").first.wait_for(timeout=60_000)
                times.append(time.monotonic() - began)
                context.close()
        finally:
            browser.close()
    return times[1:]


def print_table(results: dict) -> None:
    servers = results["servers"]
    print(
        f"\n{'server':<22}{'endpoint':<8}{'c':>4}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'err':>6}"
    )
    for endpoint in ENDPOINTS:
        for c in CONCURRENCY:
            for name in servers:
                point = results["load"][name][endpoint][str(c)]
                print(
                    f"{name:<22}{endpoint:<8}{c:>4}{point['rps']:>9.0f}{point['p50_ms']:>9.2f}"
                    f"{point['p99_ms']:>9.2f}{point['errors']:>6}"
                )
    print("\nratios to plain (req/s):")
    for name in servers:
        if name == "plain":
            continue
        cells = [
            f"{e} c={c}: {results['ratios'][name][e][str(c)]:.2f}x"
            for e in ENDPOINTS
            for c in CONCURRENCY
        ]
        print(f"  {name:<22}" + ", ".join(cells))
    if results.get("ui_s"):
        ui = results["ui_s"]
        print(
            "\nUI model page to versions table (median s): "
            + ", ".join(f"{name} {statistics.median(times):.2f}" for name, times in ui.items())
        )
    print("\ntargets (stack-auth):")
    for line in results["targets"]:
        print(f"  {line}")


def targets(results: dict) -> list[str]:
    load = results["load"]
    auth, plain = load["stack-auth"], load["plain"]
    p50 = auth["get"]["1"]["p50_ms"]
    lines = [
        f"{'met ' if p50 <= 5 else 'MISSED'} p50 at c=1 (get) {p50:.2f} ms <= 5 ms",
    ]
    for endpoint in ENDPOINTS:
        ours, theirs = auth[endpoint]["8"]["rps"], plain[endpoint]["8"]["rps"]
        lines.append(
            f"{'met ' if ours >= theirs else 'MISSED'} req/s at c=8 ({endpoint}) "
            f"{ours:.0f} >= plain's {theirs:.0f} ({ours / theirs:.2f}x)"
        )
    errors = sum(p["errors"] for e in auth.values() for p in e.values())
    lines.append(f"{'met ' if errors == 0 else 'MISSED'} errors {errors} == 0")
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = list(results["servers"])
    fig, axes = plt.subplots(2, len(ENDPOINTS), figsize=(5 * len(ENDPOINTS), 7.5))
    width = 0.8 / len(servers)
    for col, endpoint in enumerate(ENDPOINTS):
        for i, name in enumerate(servers):
            xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(CONCURRENCY))]
            points = [results["load"][name][endpoint][str(c)] for c in CONCURRENCY]
            axes[0][col].bar(xs, [p["rps"] for p in points], width, label=name)
            axes[1][col].bar(xs, [p["p50_ms"] for p in points], width, label=name)
        for row, title in enumerate(("req/s (higher is better)", "p50 ms (lower is better, log)")):
            ax = axes[row][col]
            ax.set_xticks(range(len(CONCURRENCY)), [f"c={c}" for c in CONCURRENCY])
            ax.set_title(f"{endpoint}: {title}", fontsize=10)
        axes[1][col].set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("tracking server on this machine (wrk, keep-alive; SQLite)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: dict) -> str:
    """The README's table: req/s (p50 / p99 ms) per endpoint and concurrency, a column a server."""
    servers = list(results["servers"])
    lines = [
        "| req/s (p50 / p99 ms) | " + " | ".join(servers) + " |",
        "|---" * (1 + len(servers)) + "|",
    ]
    for e in ENDPOINTS:
        for c in CONCURRENCY:
            cells = []
            for name in servers:
                p = results["load"][name][e][str(c)]
                errors = f", {p['errors']} err" if p["errors"] else ""
                cells.append(f"{p['rps']:.0f} ({p['p50_ms']:.1f} / {p['p99_ms']:.0f}{errors})")
            lines.append(f"| {e} c={c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layout_names(value: str) -> list[str]:
    if value == "all":
        return list(LAYOUTS)
    if value in ("", "none"):
        return []
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in LAYOUTS]
    if unknown:
        raise click.BadParameter(f"unknown layouts {unknown}; choose from {', '.join(LAYOUTS)}")
    return names


@click.command()
@click.option("--seconds", default=10.0, show_default=True, help="wrk duration per point.")
@click.option(
    "--layouts",
    default="all",
    show_default=True,
    help=f"Layouts also measured with auth: all, none or a comma list of {', '.join(LAYOUTS)}.",
)
@click.option(
    "--ui-repeats", default=5, show_default=True, help="UI page loads per server (0: skip)."
)
@click.option("--output", default="tracking_server", show_default=True, help="Result file stem.")
@click.option(
    "--report", is_flag=True, help="Only print the tables and redraw the PNG from the JSON."
)
def main(seconds: float, layouts: str, ui_repeats: int, output: str, report: bool) -> None:
    logging.basicConfig(level=logging.WARNING)
    if report:
        results = json.loads((RESULTS / f"{output}.json").read_text())
        plot(results, RESULTS / f"{output}.png")
        print_table(results)
        print("\n" + markdown(results))
        return
    wrk.require_wrk()
    chosen = layout_names(layouts)
    work = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started: list[Target] = []
    try:
        started.append(
            Target(
                "plain", "mlflow server --port P (its defaults, no auth)", start_plain(work), None
            )
        )
        started.append(
            Target(
                "stack",
                "the launcher's defaults (uvicorn, 2 workers, uvloop + httptools), no auth",
                start_stack(work, "stack", {}),
                None,
            )
        )
        started.append(
            Target(
                "stack-auth",
                "the launcher's defaults, MLFLOW_AUTH=true (requests as the trainer)",
                start_stack(work, "stack-auth", SERVER_SECRETS),
                TRAINER,
            )
        )
        for name in chosen:
            description, env = LAYOUTS[name]
            service = start_stack(work, f"auth-{name}", SERVER_SECRETS | env)
            started.append(Target(f"auth {name}", f"{description}, auth", service, TRAINER))
        for target in started:
            wait_until_up(target.service, "/health", 180)
            seed(target)
            check_answers(target)
            for endpoint in ENDPOINTS:  # warm-up: imports, caches, connection pools
                measure(target, endpoint, 8, min(2.0, seconds))
        print("load ...", flush=True)
        load: dict = {t.name: {e: {} for e in ENDPOINTS} for t in started}
        for endpoint in ENDPOINTS:
            for c in CONCURRENCY:
                for target in started:
                    point = measure(target, endpoint, c, seconds)
                    load[target.name][endpoint][str(c)] = point
                    print(
                        f"  {target.name:<22} {endpoint:<7} c={c:<3} {point['rps']:8.0f} req/s "
                        f"p50 {point['p50_ms']:7.2f} ms  errors {point['errors']}",
                        flush=True,
                    )
        ui: dict = {}
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if ui_repeats and chromium:
            print("UI ...", flush=True)
            by_name = {t.name: t for t in started}
            for _ in range(1):
                for name in ("plain", "stack-auth"):
                    ui[name] = ui_render_s(by_name[name], ui_repeats, chromium)
        elif ui_repeats:
            print("chromium not found: UI timing skipped", file=sys.stderr)
        results: dict = {
            "benchmark": "tracking_server",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "wrk_seconds": seconds,
            },
            "versions": {"mlflow": _version("mlflow"), "uvicorn": _version("uvicorn")},
            "servers": {t.name: t.description for t in started},
            "load": load,
            "ratios": {
                t.name: {
                    e: {
                        str(c): _ratio(
                            load[t.name][e][str(c)]["rps"], load["plain"][e][str(c)]["rps"]
                        )
                        for c in CONCURRENCY
                    }
                    for e in ENDPOINTS
                }
                for t in started
            },
            "ui_s": ui,
            "ui_median_s": {name: statistics.median(times) for name, times in ui.items()},
        }
        results["targets"] = targets(results)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{output}.json").write_text(json.dumps(results, indent=1) + "\n")
        plot(results, RESULTS / f"{output}.png")
        print_table(results)
        print("\n" + markdown(results))
        print(f"\nwrote {RESULTS / output}.json and .png")
    except BaseException:
        print(f"benchmark failed; logs kept in {work}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        for target in started:
            target.service.stop()


def _ratio(ours: float, theirs: float) -> float | None:
    return ours / theirs if theirs else None


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
