"""How long a model takes to reach a serving replica: through the proxy, straight from the bucket,
and from a warm cache.

One run starts, on 127.0.0.1 only, a moto S3 server and a tracking server that proxies its
artifacts to it (``s3://bench/artifacts``), exactly as in production with a real bucket. Then for
each size (a pyfunc model with one padding file of that size, random bytes):

- ``upload``: ``mlflow.pyfunc.log_model`` through the proxy, one streamed PUT per file (the
  default), and again with ``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true`` (parts go to presigned
  bucket URLs);
- ``proxy``: ``mlflow.artifacts.download_artifacts("models:/name/version")`` with
  ``MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false``: the tracking server reads the bucket (boto3,
  into its temp dir), then streams each file to the client;
- ``presigned``: the same call with ``MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=true``, which is also
  MLflow 3.17's default when the server proxies S3: the server only signs URLs, the client reads
  the bucket in 100 MB ranges;
- ``direct``: the same objects read with boto3 ``download_file`` and its default transfer
  settings (8 MB ranges, 10 threads), exactly what the tracking server does in ``proxy``, and
  what a client in direct mode does; ``direct_stream``: one plain GET per object;
- ``cold``: ``serving.model_source.fetch_production`` into an empty cache with the serving
  defaults: alias lookup, download, sha256 of every file, atomic rename;
- ``warm``: ``fetch_production`` again with a new ModelCache on the same folder, as a restarted
  replica does: alias lookup plus checksum verification, no download;
- ``local``: upload and download of the same model with a second tracking server whose
  artifacts are a local folder (the baseline without a bucket).

moto materialises the whole object for every ranged GET, so 8 MB ranges of a 1 GB object cost
it 128 full reads: ``direct`` and ``proxy`` are slow here for that reason alone, which
``direct_stream`` shows. ``proxy / direct`` compares the same boto3 reads with and without the
extra hop through the tracking server.

Each timing is the median of ``--repeat`` runs. Results: a table on stdout,
``bench/results/model_fetch.json`` and ``bench/results/model_fetch.png``.

    .venv/bin/python bench/model_fetch.py --sizes 1MB,100MB          # quick, ~1 min
    .venv/bin/python bench/model_fetch.py                            # full: 1MB,100MB,1GB
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path

warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mlflow  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from local_stack.processes import free_port, start_tracking_server, wait_until_up  # noqa: E402
from serving.cache import ModelCache  # noqa: E402
from serving.model_source import fetch_production  # noqa: E402
from serving.settings import ServingSettings  # noqa: E402
from stack_common.tracking import apply_client_defaults  # noqa: E402
from tests.buckets import create_bucket, list_objects, s3_client, start_moto_s3  # noqa: E402

logger = logging.getLogger("bench.model_fetch")

BUCKET = "bench"
PREFIX = "artifacts"
UNITS = {"KB": 1024, "MB": 1024**2, "GB": 1024**3}
WRITE_BLOCK = 64 * 1024**2
STREAM_THRESHOLD = 64 * 1024**3  # above any object here: one GET per object
PRESIGNED_ENV = "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B") + "B"
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(float(text.removesuffix(unit)) * factor)
    return int(text.removesuffix("B"))


class PaddedModel(mlflow.pyfunc.PythonModel):
    """A pyfunc whose weight is one big file, like a real model's weights."""

    def load_context(self, context):
        self.padding_bytes = os.path.getsize(context.artifacts["padding"])

    def predict(self, context, model_input, params=None):
        return [self.padding_bytes] * len(model_input)


def write_padding(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        left = size
        while left > 0:
            block = min(left, WRITE_BLOCK)
            fh.write(os.urandom(block))
            left -= block


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def median_of(repeat: int, func: Callable[[], float]) -> tuple[float, list[float]]:
    runs = [func() for _ in range(repeat)]
    return statistics.median(runs), runs


def log_padded_model(name: str, padding: Path, multipart: bool) -> tuple[str, str, float]:
    """Log and register the model; ``(version, artifact key prefix, seconds)``."""
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] = "true" if multipart else "false"
    started = time.perf_counter()
    with mlflow.start_run(run_name=f"{name}-{'multipart' if multipart else 'put'}"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=PaddedModel(),
            artifacts={"padding": str(padding)},
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
            registered_model_name=name,
        )
    seconds = time.perf_counter() - started
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] = "false"
    location = MlflowClient().get_logged_model(info.model_id).artifact_location
    # mlflow-artifacts:/<experiment>/models/<id>/artifacts -> <PREFIX>/<experiment>/models/...
    key_prefix = f"{PREFIX}/{location.split(':', 1)[1].lstrip('/')}/"
    return str(info.registered_model_version), key_prefix, seconds


def fresh_dir(parent: Path, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def measure_local(
    name: str, padding: Path, local_url: str, repeat: int, work: Path
) -> tuple[dict[str, float], list[float]]:
    """Upload and download the same model with a tracking server whose store is a folder."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(local_url)
    mlflow.set_registry_uri(local_url)
    mlflow.set_experiment("model-fetch-bench")
    try:
        version, _, upload_s = log_padded_model(name, padding, multipart=False)

        def download() -> float:
            dst = fresh_dir(work, "local-")
            try:
                return timed(
                    lambda: mlflow.artifacts.download_artifacts(
                        artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)
                    )
                )
            finally:
                shutil.rmtree(dst)

        median, runs = median_of(repeat, download)
        return {"local_upload_s": upload_s, "local_s": median}, runs
    finally:
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)
        mlflow.set_experiment("model-fetch-bench")


def bench_size(
    label: str, size: int, args, moto, work: Path, tracking_url: str, local_url: str
) -> dict:
    name = f"bench-{label.lower()}-{int(time.time())}"
    padding = work / f"padding-{label}.bin"
    logger.info("[%s] writing %d bytes of padding", label, size)
    write_padding(padding, size)
    client = MlflowClient()
    s3 = s3_client(moto)

    version, key_prefix, upload_put_s = log_padded_model(name, padding, multipart=False)
    client.set_registered_model_alias(name, "production", version)
    objects = list_objects(moto, BUCKET, key_prefix)
    model_bytes = sum(objects.values())
    assert model_bytes >= size, f"bucket holds {model_bytes} bytes under {key_prefix}"
    logger.info(
        "[%s] single-PUT upload %.2fs; %d objects in s3://%s",
        label,
        upload_put_s,
        len(objects),
        BUCKET,
    )

    _, mp_prefix, upload_mp_s = log_padded_model(name + "-mp", padding, multipart=True)
    mp_bytes = sum(list_objects(moto, BUCKET, mp_prefix).values())
    assert mp_bytes == model_bytes, (mp_bytes, model_bytes)
    logger.info("[%s] multipart upload %.2fs", label, upload_mp_s)
    local, local_runs = measure_local(name, padding, local_url, args.repeat, work)
    logger.info("[%s] local folder store: %s %s", label, local, [round(r, 3) for r in local_runs])
    for stored in (work / "local-artifacts").iterdir():
        shutil.rmtree(stored, ignore_errors=True)
    padding.unlink()

    def via_mlflow(presigned: bool) -> Callable[[], float]:
        def run() -> float:
            os.environ[PRESIGNED_ENV] = "true" if presigned else "false"
            dst = fresh_dir(work, "mlflow-")
            try:
                return timed(
                    lambda: mlflow.artifacts.download_artifacts(
                        artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)
                    )
                )
            finally:
                os.environ.pop(PRESIGNED_ENV, None)
                shutil.rmtree(dst)

        return run

    def with_boto3(config: TransferConfig) -> Callable[[], float]:
        def run() -> float:
            dst = fresh_dir(work, "boto3-")

            def read_all() -> None:
                for key in objects:
                    target = dst / key.removeprefix(key_prefix)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(BUCKET, key, str(target), Config=config)

            try:
                return timed(read_all)
            finally:
                shutil.rmtree(dst)

        return run

    cache_root = work / f"cache-{label}"
    settings = ServingSettings.from_env(
        {
            "MLFLOW_TRACKING_URI": tracking_url,
            "MODEL_NAME": name,
            "SERVING_CACHE_DIR": str(cache_root),
            "STACK_DATA_DIR": str(work),
            "SERVER_WAIT_SECONDS": "10",
        }
    )

    def cold() -> float:
        shutil.rmtree(cache_root, ignore_errors=True)
        cache = ModelCache(cache_root, progress=False)
        seconds = timed(lambda: fetch_production(settings, cache))
        assert cache.versions(name) == [version]
        return seconds

    def warm() -> float:
        cache = ModelCache(cache_root, progress=False)  # a restarted replica: same disk
        started = time.perf_counter()
        entry = fetch_production(settings, cache)
        seconds = time.perf_counter() - started
        assert entry.hit, "warm fetch downloaded again"
        return seconds

    measures = {
        "proxy_s": via_mlflow(presigned=False),
        "presigned_s": via_mlflow(presigned=True),
        "direct_s": with_boto3(TransferConfig()),
        "direct_stream_s": with_boto3(TransferConfig(multipart_threshold=STREAM_THRESHOLD)),
        "cold_cache_fetch_s": cold,
        "warm_restart_s": warm,
    }
    medians: dict[str, float] = {}
    runs: dict[str, list[float]] = {}
    for key, func in measures.items():
        medians[key], runs[key] = median_of(args.repeat, func)
        logger.info("[%s] %s %.3f %s", label, key, medians[key], [round(r, 3) for r in runs[key]])
    shutil.rmtree(cache_root, ignore_errors=True)
    s3.delete_objects(
        Bucket=BUCKET,
        Delete={"Objects": [{"Key": k} for k in list_objects(moto, BUCKET, key_prefix)]},
    )
    return {
        "label": label,
        "padding_bytes": size,
        "model_bytes": model_bytes,
        "objects": len(objects),
        "upload_put_s": upload_put_s,
        "upload_multipart_s": upload_mp_s,
        **local,
        **medians,
        "proxy_over_direct": medians["proxy_s"] / medians["direct_s"],
        "proxy_over_direct_stream": medians["proxy_s"] / medians["direct_stream_s"],
        "presigned_over_direct_stream": medians["presigned_s"] / medians["direct_stream_s"],
        "mb_per_s": {k: model_bytes / 1e6 / v for k, v in medians.items() if v > 0},
        "runs": runs | {"local_s": local_runs},
    }


COLUMNS = [
    ("local_upload_s", "local up"),
    ("local_s", "local down"),
    ("upload_put_s", "upload PUT"),
    ("upload_multipart_s", "upload MPU"),
    ("proxy_s", "proxy"),
    ("presigned_s", "presigned"),
    ("direct_s", "direct"),
    ("direct_stream_s", "direct 1 GET"),
    ("cold_cache_fetch_s", "cold cache"),
    ("warm_restart_s", "warm restart"),
    ("proxy_over_direct", "proxy/direct"),
]


def table(rows: list[dict]) -> str:
    widths = [max(len(title), 9) for _, title in COLUMNS]
    head = f"{'size':>6} | " + " | ".join(
        f"{title:>{w}}" for (_, title), w in zip(COLUMNS, widths, strict=True)
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for (key, _), w in zip(COLUMNS, widths, strict=True):
            unit = "x" if key.endswith("direct") else "s"
            digits = 3 if r[key] < 1 else 2
            cells.append(f"{r[key]:>{w - 1}.{digits}f}{unit}")
        lines.append(f"{r['label']:>6} | " + " | ".join(cells))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        ("local_upload_s", "local folder store: upload through the server"),
        ("local_s", "local folder store: download through the server"),
        ("upload_put_s", "upload: one PUT through the proxy"),
        ("upload_multipart_s", "upload: multipart, presigned parts"),
        ("proxy_s", "download: through the proxy"),
        ("presigned_s", "download: presigned URLs (MLflow default for S3)"),
        ("direct_s", "download: boto3 direct, 8 MB ranges"),
        ("direct_stream_s", "download: boto3 direct, one GET"),
        ("cold_cache_fetch_s", "serving: cold cache fetch"),
        ("warm_restart_s", "serving: warm restart (hit + sha256)"),
    ]
    fig, ax = plt.subplots(figsize=(12, 6))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))]
        values = [r[key] for r in rows]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(
        range(len(rows)), [f"{r['label']}\n({r['model_bytes'] / 1e6:.0f} MB)" for r in rows]
    )
    ax.set_yscale("log")
    ax.set_ylabel("seconds (log scale, median)")
    ax.set_title("Model fetch: tracking-server proxy vs direct S3 (moto) vs warm cache, loopback")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1MB,100MB,1GB", help="comma list, e.g. 1MB,100MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch (default: a tmp dir)")
    parser.add_argument(
        "--timeout", type=int, default=600, help="MLFLOW_HTTP_REQUEST_TIMEOUT of the client"
    )
    parser.add_argument(
        "--replot", action="store_true", help="only redraw the PNG from --out/model_fetch.json"
    )
    args = parser.parse_args(argv)
    if args.replot:
        rows = json.loads((args.out / "model_fetch.json").read_text())["rows"]
        print(table(rows))
        plot(rows, args.out / "model_fetch.png")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("urllib3", "botocore", "alembic", "mlflow", "serving", "stack_common"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)  # the cloudpickle notice
    sizes = [(s.strip(), parse_size(s)) for s in args.sizes.split(",") if s.strip()]

    work = args.workdir or Path(tempfile.mkdtemp(prefix="model-fetch-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Through the proxy, the server fetches a whole file from the bucket before the first byte:
    # with the clients' 60 s read timeout the 1 GB case fails here (ReadTimeout, retried 4 times).
    # 600 s is what serving uses for downloads (SERVING_DOWNLOAD_TIMEOUT_SECONDS).
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(args.timeout)
    # Multipart from S3's smallest part size up, so the 100 MB model is split too.
    os.environ.setdefault("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(5 * 1024**2))
    apply_client_defaults()
    moto = start_moto_s3(free_port(), work / "moto.log")
    tracking = local = None
    try:
        create_bucket(moto, BUCKET)
        server_env = moto.env | {"MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/{PREFIX}"}
        tracking = start_tracking_server(
            work / "stack", free_port(), work / "tracking.log", server_env
        )
        (work / "local-artifacts").mkdir()
        local_env = {"MLFLOW_ARTIFACTS_DESTINATION": str(work / "local-artifacts")}
        local = start_tracking_server(
            work / "stack-local", free_port(), work / "tracking-local.log", local_env
        )
        wait_until_up(tracking, "/health", 180)
        wait_until_up(local, "/health", 180)
        os.environ.update(moto.env)  # for the boto3 'direct' reads only
        mlflow.set_tracking_uri(tracking.url)
        mlflow.set_experiment("model-fetch-bench")
        rows = [
            bench_size(label, size, args, moto, work, tracking.url, local.url)
            for label, size in sizes
        ]
    finally:
        for server in (tracking, local):
            if server is not None:
                server.stop()
        moto.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "model_fetch",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {p: package_version(p) for p in ("mlflow", "boto3", "moto")},
        "setup": {
            "bucket": "moto S3 server on 127.0.0.1 (objects in memory)",
            "tracking_server": "mlflow server --serve-artifacts, uvicorn, 2 workers, 127.0.0.1",
            "local_store": "a second tracking server, artifacts in a local folder (same disk)",
            "repeat": args.repeat,
            "client_env": {
                k: os.environ.get(k)
                for k in (
                    "MLFLOW_HTTP_REQUEST_TIMEOUT",
                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                    "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE",
                    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE",
                )
            },
        },
        "rows": rows,
    }
    json_path = args.out / "model_fetch.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "model_fetch.png")
    print(f"wrote {json_path} and {args.out / 'model_fetch.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
