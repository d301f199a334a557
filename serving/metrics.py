"""Prometheus metrics of serving: ``GET /metrics`` on the serving port.

Requests are counted where every answer passes: nginx writes one access-log line per answer to
``/invocations`` (its own 413/503s and MLflow's answers alike, a retried request once) and the
supervisor reads that file and counts. That is exact across blue/green switches and across the
scoring processes without touching them: nothing is counted in the scoring processes, so a
retired pool takes nothing with it, and the cost per request is one ``write`` in nginx. The
version of an answer is the ``X-Model-Version`` header its scoring process stamped; an answer
nginx gave by itself (body too large, no model process answered) gets the version served at
that moment. Everything else (the served version, switches, cache, restarts) is reported by the
supervisor, which owns those events. nginx sends ``/metrics`` to a small HTTP server in the
supervisor on a Unix socket; it reads the log to its end before answering, so a scrape sees
every answer nginx had logged.

In flight: nginx's ``stub_status`` count of requests being processed (on an internal Unix
socket), less the scrape itself.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import re
import signal
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from serving import unix_http
from serving.challenger_metrics import ChallengerMetrics

if TYPE_CHECKING:
    from serving.canary import Canary

logger = logging.getLogger(__name__)

# Files in the supervisor's run directory, shared with the nginx config (serving/front.py).
ACCESS_LOG = "invocations.log"
METRICS_SOCKET = "metrics.sock"
STATUS_SOCKET = "nginx-status.sock"
# One line per /invocations answer: when it ended, status, seconds, version that answered, rows
# of the model call that answered it (the batching engine's X-Batch-Rows; "-" when none), then
# "route;statuses;times": production or canary, and each upstream tried ("502, 200": the
# canary's slot failed, production answered) with its time.
NGINX_LOG_FORMAT = (
    "$msec $status $request_time $upstream_http_x_model_version $upstream_http_x_batch_rows "
    "$stack_route;$upstream_status;$upstream_response_time"
)

# Buckets from 0.5 ms to 10 s. nginx measures request time in milliseconds, so the first
# bucket holds the answers under 1 ms.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 10_000, 100_000)
DOWNLOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
ROTATE_BYTES = 16 * 1024 * 1024  # ~250,000 requests; then the log is rotated (USR1)
ROTATED_GRACE_S = 5.0  # nginx workers reopen at once; the rotated file is read this long
DRAIN_EVERY_S = 1.0


class LogTail:
    """Complete lines appended to a file, surviving rotation without losing a line.

    ``rotate`` renames the file away and removes it while holding it open, asks the writer to
    reopen (nginx: SIGUSR1), and keeps reading the old file for ``grace_s`` for lines written
    before every writer has reopened.
    """

    def __init__(self, path: Path, grace_s: float = ROTATED_GRACE_S) -> None:
        self.path = path
        self.grace_s = grace_s
        self._file: Any = None
        self._rest = b""
        self._retired: list[tuple[Any, bytes, float]] = []  # (file, partial line, until)

    def _lines(self, handle: Any, rest: bytes) -> tuple[list[str], bytes]:
        data = rest + handle.read()
        *complete, rest = data.split(b"\n")
        return [line.decode(errors="replace") for line in complete if line], rest

    def read(self) -> list[str]:
        lines: list[str] = []
        still: list[tuple[Any, bytes, float]] = []
        for handle, rest, until in self._retired:
            found, rest = self._lines(handle, rest)
            lines += found
            if time.monotonic() < until:
                still.append((handle, rest, until))
            else:
                handle.close()
        self._retired = still
        if self._file is None:
            try:
                self._file = self.path.open("rb")
            except FileNotFoundError:
                return lines
        found, self._rest = self._lines(self._file, self._rest)
        return lines + found

    def size(self) -> int:
        return 0 if self._file is None else os.fstat(self._file.fileno()).st_size

    def rotate(self, reopen: Callable[[], None]) -> None:
        if self._file is None:
            return
        rotated = self.path.with_name(self.path.name + ".rotated")
        os.replace(self.path, rotated)
        rotated.unlink()  # our handle and nginx's keep the data until closed
        self._retired.append((self._file, self._rest, time.monotonic() + self.grace_s))
        self._file, self._rest = None, b""
        reopen()

    def close(self) -> None:
        for handle, _, _ in self._retired:
            handle.close()
        if self._file is not None:
            self._file.close()
        self._retired, self._file = [], None


class _InFlight:
    """``serving_in_flight_requests`` from nginx's stub_status, read at scrape time."""

    def __init__(self, status_socket: Path) -> None:
        self.status_socket = status_socket

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "serving_in_flight_requests",
            "Requests nginx is answering now (all paths), the scrape itself not counted.",
        )
        try:
            answer = unix_http.request(str(self.status_socket), "GET", "/status", timeout=2)
            writing = int(answer.body.decode().split("Writing:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            return  # nginx restarting: no sample rather than a wrong one
        # stub_status counts this status request and the scrape that asked for it.
        gauge.add_metric([], max(0, writing - 2))
        yield gauge


@dataclass(frozen=True)
class Route:
    """The end of a log line: which route nginx took, and the first upstream's time."""

    canary: bool = False
    first_seconds: float | None = None
    first_status: int | None = None  # None: no answer (no canary slot, refused, timed out)

    @classmethod
    def parse(cls, text: str) -> Route:
        if not text:
            return cls()
        route, statuses, times = text.split(";", 2)
        # "502, 200" (retried on another server), "400 : 200" (intercepted, asked again).
        first_status = re.split(r"[,:]", statuses, maxsplit=1)[0].strip()
        first_time = re.split(r"[,:]", times, maxsplit=1)[0].strip()
        return cls(
            route == "canary",
            float(first_time) if first_time not in ("-", "") else None,
            int(first_status) if first_status.isdigit() else None,
        )


class ServingMetrics:
    """Every serving metric, in a registry of its own (tests make as many as they like)."""

    def __init__(self, model: str, alias: str, run_dir: Path) -> None:
        self.model, self.alias, self.run_dir = model, alias, run_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "serving_requests_total",
            "Answers to /invocations, by the model version that answered and HTTP status.",
            ["model", "version", "alias", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "serving_request_duration_seconds",
            "Time nginx took to answer /invocations (millisecond resolution).",
            ["model", "version"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "serving_batch_rows",
            "Rows of the model call that answered each /invocations request (one observation "
            "per answer: a batch of 3 requests counts 3 times). 1 everywhere: nothing batched.",
            ["model", "version"],
            buckets=BATCH_ROWS_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "serving_model_info",
            "1 for the version serving now; source: registry, or cache when started from it.",
            ["model", "version", "alias", "source"],
            registry=r,
        )
        self.switches = Counter(
            "serving_model_switches",
            "Versions switched to, or rejected (failed to load or predict; never served).",
            ["result"],
            registry=r,
        )
        self.load_seconds = Gauge(
            "serving_model_load_seconds",
            "Seconds from starting the served version's scoring processes to taking traffic.",
            ["model"],
            registry=r,
        )
        self.cache_hits = Counter(
            "serving_cache_hits", "Versions found in the model cache.", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "serving_cache_misses",
            "Versions not in the model cache (downloaded).",
            ["model"],
            registry=r,
        )
        self.download_bytes = Counter(
            "serving_download_bytes", "Bytes of model files downloaded.", ["model"], registry=r
        )
        self.download_seconds = Histogram(
            "serving_download_seconds",
            "Time to download and checksum a version into the cache.",
            ["model"],
            buckets=DOWNLOAD_BUCKETS,
            registry=r,
        )
        self.tracking_up = Gauge(
            "serving_tracking_server_up",
            "1 when the last poll could read the alias from the tracking server, else 0.",
            registry=r,
        )
        self.restarts = Counter(
            "serving_process_restarts",
            "Processes serving restarted after they died: a scoring pool, or nginx.",
            ["process"],
            registry=r,
        )
        self.batched = Gauge(
            "serving_batched",
            "1 when the served version's requests may be merged into one model call "
            "(serving/batch_policy.py; /health says why), else 0.",
            ["model", "version"],
            registry=r,
        )
        self.unhealthy = Gauge(
            "serving_unhealthy",
            "1 when restarts of the scoring processes kept failing and the supervisor gave up "
            "(/health says why), else 0.",
            registry=r,
        )
        r.register(_InFlight(run_dir / STATUS_SOCKET))
        self.challenger = ChallengerMetrics(r, model, DURATION_BUCKETS)
        self.canary: Canary | None = None  # set when a canary may run (serving/canary.py)
        for result in ("switched", "rejected"):
            self.switches.labels(result)
        for process in ("scoring", "nginx"):
            self.restarts.labels(process)
        for counter in (self.cache_hits, self.cache_misses, self.download_bytes):
            counter.labels(model)
        self.tracking_up.set(1)

        self.tail = LogTail(run_dir / ACCESS_LOG)
        self._lock = threading.Lock()
        self._versions: list[tuple[float, str]] = []  # (since, version), by time
        self._served: tuple[str, float] | None = None  # (version, pool started at)
        self._rejected = 0
        self._server: socketserver.UnixStreamServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- requests, from nginx's log -----------------------------------------------------------

    def version_at(self, when: float) -> str:
        """The version serving at ``when`` (epoch seconds): for answers nginx gave itself."""
        if not self._versions:
            return ""
        i = bisect.bisect_right(self._versions, when, key=lambda item: item[0])
        return self._versions[max(0, i - 1)][1]

    def count(self, lines: Iterable[str]) -> None:
        canary = self.canary
        for line in lines:
            try:
                ended, status, seconds, version, *rest = line.split(" ", 5)
                ended_at, took = float(ended), float(seconds)
                rows = int(rest[0]) if rest and rest[0] not in ("-", "") else None
                # Which route: only a canary needs it (nginx logs "production" otherwise).
                route = Route.parse(rest[1]) if canary is not None and len(rest) > 1 else Route()
            except ValueError:
                logger.warning("unreadable nginx log line %r; not counted", line[:200])
                continue
            if version in ("-", ""):
                version = self.version_at(ended_at)
            alias = self.alias
            canary_version = canary.active_version() if canary is not None else None
            if canary is not None and route.canary and canary_version is not None:
                if version == canary_version:  # the canary answered
                    alias = canary.alias
                    canary.canary_answered(version, False, took)
                else:  # it did not answer with success, and production answered
                    first = route.first_status
                    # Both refused the request (4xx): the client's fault, not the canary's.
                    refused_by_both = first is not None and first < 500 and int(status) >= 400
                    canary.canary_answered(canary_version, not refused_by_both, route.first_seconds)
            elif canary is not None:
                canary.production_answered(int(status) >= 500, took)
            self.requests.labels(self.model, version, alias, status).inc()
            self.duration.labels(self.model, version).observe(took)
            if rows is not None:
                self.batch_rows.labels(self.model, version).observe(rows)
        if canary is not None:
            canary.check()

    def drain(self) -> None:
        """Count every line nginx has written so far; rotate the log when it is large."""
        with self._lock:
            self.count(self.tail.read())
            if self.tail.size() > ROTATE_BYTES:
                self.tail.rotate(self._reopen_nginx_logs)
                self.count(self.tail.read())

    def _reopen_nginx_logs(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.run_dir / "nginx.pid").read_text().strip())
            os.kill(pid, signal.SIGUSR1)

    def exposition(self) -> bytes:
        self.drain()
        return generate_latest(self.registry)

    # -- events the supervisor reports --------------------------------------------------------

    def status(self, served: dict, health: dict, pool_started_at: float) -> None:
        """The supervisor wrote its status files: derive the served version, switches,
        rejections and the tracking server's reachability from what they say."""
        version = str(served["version"])
        with self._lock:
            if self._served is None or self._served[1] != pool_started_at:
                if self._served is not None and self._served[0] != version:
                    self.switches.labels("switched").inc()
                self._served = (version, pool_started_at)
                self._versions.append((time.time(), version))
                self.load_seconds.labels(self.model).set(max(0.0, time.time() - pool_started_at))
            self.model_info.clear()
            self.model_info.labels(self.model, version, self.alias, served.get("source", "")).set(1)
            rejected = len(health.get("rejected_versions", {}))
            if rejected > self._rejected:
                self.switches.labels("rejected").inc(rejected - self._rejected)
            self._rejected = rejected
            self.tracking_up.set(0 if "tracking_server" in health.get("degraded", {}) else 1)
            self.unhealthy.set(1 if health.get("status") == "unhealthy" else 0)
            if "batching" in served:
                self.batched.clear()
                self.batched.labels(self.model, version).set(1 if served["batching"]["on"] else 0)

    def fetched(self, entry: Any) -> None:
        """A version came out of the cache (``serving.cache.CacheEntry``)."""
        if entry.hit:
            self.cache_hits.labels(self.model).inc()
            return
        self.cache_misses.labels(self.model).inc()
        self.download_bytes.labels(self.model).inc(entry.size_bytes)
        self.download_seconds.labels(self.model).observe(entry.seconds)

    def restarted(self, process: str) -> None:
        self.restarts.labels(process).inc()

    # -- the endpoint -------------------------------------------------------------------------

    def serve(self) -> None:
        """Answer /metrics on the Unix socket nginx forwards to; count in the background."""
        path = self.run_dir / METRICS_SOCKET
        path.unlink(missing_ok=True)
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                try:
                    body = metrics.exposition()
                except Exception:
                    logger.exception("could not produce /metrics")
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = socketserver.UnixStreamServer(str(path), Handler)
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True),
            threading.Thread(target=self._drain_loop, name="metrics-log", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _drain_loop(self) -> None:
        while not self._stop.wait(DRAIN_EVERY_S):
            try:
                self.drain()
            except Exception:
                logger.exception("counting requests from nginx's log failed")

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self.tail.close()
