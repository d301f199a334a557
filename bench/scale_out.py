"""Scale-out benchmark: serving behind HAProxy with 1, 2 and 3 replicas, and how long a move of
the alias ``production`` takes to reach every replica (docker-compose.scale.yml, for real).

One scale stack (tests/compose/compose_stack.py brings it up and takes it down): a version is
trained and promoted from the host through the balancer, then, with 1, 2 and 3 serving replicas
running (the others stopped; HAProxy's health checks take them out), wrk measures requests/s and
p50/p99 through the balancer; a single replica addressed directly (no balancer) is the peer in
the same run. Then ``production`` is moved back and forth N times while every replica is polled
directly: the time from the move to the first and to the last replica answering with the new
version, and their spread. Writes bench/results/scale_out.json and bench/results/scale_out.png.

    .venv/bin/python bench/scale_out.py [--seconds 10] [--moves 5]

Uses the offline stand-in images unless STACK_COMPOSE_OVERRIDE="" (a machine that can pull).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import click
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "compose"))

from compose_stack import (  # noqa: E402
    BASE,
    OFFLINE,
    OFFLINE_SCALE,
    SCALE,
    TEST_SECRETS,
    ComposeProject,
    write_env_file,
)

from bench import wrk  # noqa: E402
from local_stack.processes import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BODY = json.loads(wrk.BODY)
CONCURRENCY = 16


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=300, check=True
    ).stdout


def cli(module: str, *args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=os.environ | {"LOG_LEVEL": "WARNING"} | env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def version_of(url: str) -> str | None:
    try:
        response = requests.post(f"{url}/invocations", json=BODY, timeout=5)
        return response.headers.get("X-Model-Version") if response.ok else None
    except requests.RequestException:
        return None


def ip_of(container: str) -> str:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    return docker("inspect", "-f", fmt, container).strip()


def wait_serving(urls: list[str], version: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while any(version_of(url) != version for url in urls):
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not all on version {version}")
        time.sleep(0.5)


def propagation(urls: list[str], move, version: str) -> tuple[float, float]:
    """Seconds from ``move()`` returning to the first and the last replica serving ``version``."""
    first: dict[str, float] = {}
    done = threading.Event()

    def poll(url: str) -> None:
        while not done.is_set():
            if version_of(url) == version:
                first.setdefault(url, time.monotonic())
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=poll, args=(url,), daemon=True) for url in urls]
    move()
    moved = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    done.set()
    if len(first) != len(urls):
        raise RuntimeError(f"version {version} did not reach every replica")
    times = sorted(t - moved for t in first.values())
    return times[0], times[-1]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = ["direct (1)"] + [f"balancer ({n})" for n in (1, 2, 3)]
    rps = [results["direct_one_replica"]["rps"]] + [
        results["through_balancer"][str(n)]["rps"] for n in (1, 2, 3)
    ]
    left.bar(labels, rps, color=["grey", "tab:blue", "tab:blue", "tab:blue"])
    left.set_ylabel("requests/s (wrk, c=16)")
    left.set_title("serving throughput by replica count")
    moves = results["propagation"]["moves"]
    right.plot([m["first_s"] for m in moves], "o-", label="first replica")
    right.plot([m["last_s"] for m in moves], "s-", label="last replica")
    right.set_xlabel("move")
    right.set_ylabel("seconds after the alias moved")
    right.set_title(f"alias propagation (poll {results['serving_poll_s']:g}s)")
    right.legend()
    fig.suptitle(results["machine"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@click.command()
@click.option("--seconds", default=10.0, show_default=True, help="wrk duration per point.")
@click.option("--repeats", default=2, show_default=True, help="wrk runs per point (median).")
@click.option("--moves", default=5, show_default=True, help="Alias moves timed.")
@click.option("--poll", default=1.0, show_default=True, help="SERVING_POLL_SECONDS.")
def main(seconds: float, repeats: int, moves: int, poll: float) -> None:
    wrk.require_wrk()
    override = os.environ.get("STACK_COMPOSE_OVERRIDE", OFFLINE)
    files = (BASE, SCALE, override, OFFLINE_SCALE) if override else (BASE, SCALE)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    ui_port, serving_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    env_file = write_env_file(
        workdir / "compose.env",
        {
            **TEST_SECRETS,
            "MODEL_NAME": name,
            "MLFLOW_EXPERIMENT_NAME": name,
            "MLFLOW_UI_PORT": str(ui_port),
            "SERVING_API_PORT": str(serving_port),
            "SERVING_POLL_SECONDS": f"{poll:g}",
        },
    )
    compose = ComposeProject(f"stacktestbench{uuid.uuid4().hex[:6]}", env_file, files)
    ui, balancer = f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{serving_port}"
    common = {"MLFLOW_TRACKING_URI": ui, "MODEL_NAME": name, "MLFLOW_EXPERIMENT_NAME": name}
    trainer = common | {
        "MLFLOW_TRACKING_USERNAME": "trainer",
        "MLFLOW_TRACKING_PASSWORD": TEST_SECRETS["STACK_TRAINER_PASSWORD"],
        "STACK_DATA_DIR": str(workdir / "train"),
    }
    promoter = common | {
        "MLFLOW_TRACKING_USERNAME": "promoter",
        "MLFLOW_TRACKING_PASSWORD": TEST_SECRETS["STACK_PROMOTER_PASSWORD"],
    }
    results: dict = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, shared with other jobs",
        "concurrency": CONCURRENCY,
        "seconds": seconds,
        "repeats": repeats,
        "serving_poll_s": poll,
        "through_balancer": {},
    }
    with compose.lifecycle(wait_timeout_s=480):
        cli("training", env=trainer)
        cli("promotion", "promote", env=promoter)
        # Version 2, for the moves: the same model files registered again (no second training,
        # which takes minutes on a loaded machine); serving still fetches and loads it anew.
        from mlflow import MlflowClient

        os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = TEST_SECRETS["MLFLOW_AUTH_ADMIN_PASSWORD"]
        admin = MlflowClient(ui)
        admin.create_model_version(name, f"models:/{name}/1")  # MLflow copies run and files
        containers = sorted(compose.run("ps", "-q", "serving").stdout.split())
        urls = [f"http://{ip_of(c)}:8080" for c in containers]
        wait_serving(urls, "1")

        def measure(url: str) -> dict:
            runs = [wrk.run(url, CONCURRENCY, seconds) for _ in range(repeats)]
            return {
                "rps": statistics.median(r.rps for r in runs),
                "p50_ms": statistics.median(r.p50_ms for r in runs),
                "p99_ms": statistics.median(r.p99_ms for r in runs),
                "failed": sum(r.failed for r in runs),
            }

        results["direct_one_replica"] = measure(urls[0])
        for n in (1, 2, 3):
            for container in containers[n:]:
                docker("stop", container)
            for container in containers[:n]:
                docker("start", container)
            urls = [f"http://{ip_of(c)}:8080" for c in containers[:n]]
            wait_serving(urls, "1")
            time.sleep(4)  # HAProxy: two checks 1 s apart to mark a replica up or down
            results["through_balancer"][str(n)] = measure(balancer)
            click.echo(f"{n} replica(s): {results['through_balancer'][str(n)]}")

        urls = [f"http://{ip_of(c)}:8080" for c in containers]
        timed = []
        for i in range(moves):
            target = "2" if i % 2 == 0 else "1"
            first, last = propagation(
                urls,
                lambda t=target: cli(
                    "promotion", "promote", "--version", t, "--force", env=promoter
                ),
                target,
            )
            timed.append({"version": target, "first_s": first, "last_s": last})
            click.echo(f"move to v{target}: first {first:.2f}s, last {last:.2f}s")
        spreads = [m["last_s"] - m["first_s"] for m in timed]
        results["propagation"] = {
            "moves": timed,
            "median_last_s": statistics.median(m["last_s"] for m in timed),
            "median_spread_s": statistics.median(spreads),
            "max_spread_s": max(spreads),
        }
    one = results["through_balancer"]["1"]["rps"]
    results["ratios"] = {
        f"{n}_vs_1": results["through_balancer"][str(n)]["rps"] / one for n in (2, 3)
    } | {"balancer_1_vs_direct": one / results["direct_one_replica"]["rps"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale_out.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "scale_out.png")
    click.echo(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
