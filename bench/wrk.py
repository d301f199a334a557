"""Running wrk (C, keep-alive, Debian's package) and reading its report."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BODY = '{"dataframe_split": {"columns": ["hours"], "data": [[5.0]]}}'
SCRIPT = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int  # non-2xx answers plus socket errors


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk not found: apt-get install wrk (bench/README.md)")
    return path


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def parse(output: str) -> WrkResult:
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if not (p50 and p99 and rps and total):
        raise RuntimeError(f"could not read wrk's report:\n{output}")
    failed = int(non2xx.group(1)) if non2xx else 0
    if sockets:
        failed += sum(int(g) for g in sockets.groups())
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        failed=failed,
    )


def start(
    url: str,
    concurrency: int,
    seconds: float,
    script_text: str = SCRIPT,
    path: str = "/invocations",
    timeout_s: float = 2.0,
) -> subprocess.Popen:
    """wrk against ``url + path`` with a Lua ``script_text`` (default: serving's single-row
    prediction)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(script_text)
    threads = 1 if concurrency < 8 else 2
    return subprocess.Popen(
        [
            require_wrk(),
            "-t",
            str(threads),
            "-c",
            str(concurrency),
            "-d",
            f"{seconds:g}s",
            "--latency",
            "--timeout",
            f"{timeout_s:g}s",
            "-s",
            str(script),
            f"{url.rstrip('/')}{path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(
    url: str,
    concurrency: int,
    seconds: float,
    script_text: str = SCRIPT,
    path: str = "/invocations",
    timeout_s: float = 2.0,
) -> WrkResult:
    process = start(url, concurrency, seconds, script_text, path, timeout_s)
    output, _ = process.communicate(timeout=seconds + 60)
    return parse(output)
