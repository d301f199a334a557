"""nginx in front of the scoring pools: one fixed config, limits, and clean error bodies.

The config is the file ``nginx.conf.template`` beside this module, filled in by :func:`render`
(so it reads as nginx config, not as Python building strings).

nginx balances over fixed Unix socket paths ("slots"). A blue/green switch never touches nginx:
the new pool renames its sockets onto the slots (see ``ScoringPool.adopt``), so new connections
reach it while connections to the old pool finish their requests; a request that meets an old
connection closing is retried on another slot. Nothing reloads, so no client connection to
nginx is ever closed by a switch. nginx also enforces the body limit and the request timeout,
serves the status files the supervisor writes (``/served``, ``/health``) and strips Python
stack traces from error answers (``errors.js``). MLflow's own ``build-docker`` image also puts
nginx in front of its scoring server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import string
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serving.canary import canary_slot_paths
from serving.metrics import ACCESS_LOG, METRICS_SOCKET, NGINX_LOG_FORMAT, STATUS_SOCKET
from serving.spawn import die_with_parent
from stack_common.errors import StackError
from stack_common.logs import log_format_from_env

logger = logging.getLogger(__name__)

ERRORS_JS = Path(__file__).with_name("errors.js")
# nginx's config with %{name} placeholders, filled in by render().
NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf.template")
# Idle connections to the scoring processes each nginx worker keeps (a load of up to this many
# concurrent requests per worker reuses them), and how long one connection may be reused: the
# longest a connection made before a switch can still reach the old pool.
UPSTREAM_KEEPALIVE = 32
UPSTREAM_KEEPALIVE_MS = 100
# How long an idle kept connection waits for its next request. Below the supervisor's drain
# (serving.supervisor.DRAIN_S): when an old pool stops, nginx has closed every idle connection
# to it already, so no request races a connection the old pool is closing.
UPSTREAM_IDLE_MS = 500

# "2026/12/01 13:00:00 [warn] 12#12: *5 message": nginx's error log line, level and message.
_NGINX_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] (.*)$")
_NGINX_LEVELS = {
    "emerg": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "crit": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "notice": logging.INFO,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}
nginx_logger = logging.getLogger("serving.nginx")


def log_nginx_line(line: str) -> None:
    """One line of nginx's error log as a record of ``serving.nginx``, at nginx's level."""
    found = _NGINX_LINE.match(line)
    if found is None:
        nginx_logger.warning("%s", line)
        return
    level, message = found.groups()
    nginx_logger.log(_NGINX_LEVELS.get(level, logging.WARNING), "%s", message)


def _relay(stream: object) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        line = raw.decode(errors="replace").rstrip()
        if line:
            log_nginx_line(line)


@dataclass(frozen=True)
class FrontConfig:
    host: str
    port: int
    workers: int
    max_body_mb: int
    request_timeout_s: int
    alias: str
    nginx: str
    njs_module: str
    canary_percent: float = 0.0  # share of /invocations answered by the challenger
    challenger_workers: int = 1


def _json_body(code: str, message: str) -> str:
    """A JSON literal safe to put inside an nginx single-quoted string."""
    return json.dumps({"error_code": code, "message": message}).replace("'", "\\'") + "\\n"


def slot_paths(run_dir: Path, workers: int) -> list[Path]:
    """The fixed socket paths nginx sends traffic to; the serving pool owns them."""
    return [run_dir / f"slot-{i}.sock" for i in range(workers)]


def active_slots(workers: int) -> int:
    """Slots nginx balances over; with two or more, the last one stands by (``backup``: nginx
    sends it a request only when the others failed it, so a dying process still costs no
    request).

    One process fewer than CPUs, because nginx needs CPU too and the batching engine gains
    from concentrating requests: a process sees more of them at once, so batches are larger and
    MLflow's per-call cost is paid fewer times. On the 2-CPU bench machine one busy process
    (plus the standby) against two balanced ones: c=32 2,700-3,400 req/s instead of
    1,350-2,500, c=1 p50 1.7-3.3 ms instead of 2.2-3.9 ms (bench/serving.py's load, the
    same run).
    """
    return max(1, workers - 1)


def canary_route(percent: float) -> str:
    """``$stack_route``: ``canary`` for the canary's share of /invocations, else production."""
    if not percent:
        return "    map $uri $stack_route {\n        default production;\n    }"
    return (
        '    split_clients "${request_id}" $stack_split {\n'
        f"        {percent:g}% canary;\n"
        "        * production;\n"
        "    }\n"
        '    map "$stack_split:$uri" $stack_route {\n'
        '        "canary:/invocations" canary;\n'
        "        default production;\n"
        "    }"
    )


def canary_upstream(config: FrontConfig, run_dir: Path) -> str:
    """The canary's slots, kept-alive like production's."""
    if not config.canary_percent:
        return ""
    servers = [
        f"        server unix:{sock} max_fails=0;"
        for sock in canary_slot_paths(run_dir, config.challenger_workers)
    ]
    return "\n".join(
        [
            "    upstream challenger {",
            *servers,
            f"        keepalive {UPSTREAM_KEEPALIVE};",
            f"        keepalive_time {UPSTREAM_KEEPALIVE_MS}ms;",
            f"        keepalive_timeout {UPSTREAM_IDLE_MS}ms;",
            "    }",
        ]
    )


# Every answer of the canary but a success is taken back and asked of production (@fallback):
# MLflow answers 400 for a model that raises, so a 5xx rule alone would let a failing canary's
# errors reach clients. Where production refuses the request too, the client gets its answer.
CANARY_INTERCEPTED = "400 401 403 404 405 408 409 413 415 422 429 500 501 502 503 504"


def canary_location(config: FrontConfig, filter_errors: bool) -> str:
    """@canary asks the challenger; whatever it does not answer with success, @fallback asks
    production (as ``location /`` does), in the same client request."""
    if not config.canary_percent:
        return ""
    filters = (
        "            js_header_filter errors.headers;\n            js_body_filter errors.body;\n"
        if filter_errors
        else ""
    )
    common = (
        "            add_header X-Request-ID $stack_request_id always;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header X-Request-ID $stack_request_id;\n"
        f"            proxy_read_timeout {config.request_timeout_s}s;\n"
        f"            proxy_send_timeout {config.request_timeout_s}s;\n"
        "            proxy_next_upstream error timeout non_idempotent;\n"
    )
    return (
        "        location @canary {\n"
        "            recursive_error_pages on;\n"
        "            proxy_intercept_errors on;\n"
        f"            error_page {CANARY_INTERCEPTED} = @fallback;\n"
        "            proxy_pass http://challenger;\n"
        f"{common}"
        f"            proxy_next_upstream_tries {config.challenger_workers};\n"
        "            # A stopped canary's slots are gone by design: not an error worth a line.\n"
        "            error_log stderr crit;\n"
        "        }\n"
        "        location @fallback {\n"
        "            recursive_error_pages on;\n"
        "            error_page 413 @too_large;\n"
        "            error_page 502 503 504 @unavailable;\n"
        "            proxy_pass http://scoring;\n"
        f"{common}"
        f"            proxy_next_upstream_tries {max(2, config.workers)};\n"
        f"{filters}"
        "        }"
    )


class NginxTemplate(string.Template):
    """``%{name}`` placeholders: nginx's own variables are ``$name``, so the template cannot use
    string.Template's dollar sign without escaping every one of them."""

    delimiter = "%"


def render(config: FrontConfig, run_dir: Path, filter_errors: bool) -> str:
    """nginx's config: the template file filled in; ``substitute`` raises on a missing value."""
    too_large = _json_body(
        "REQUEST_TOO_LARGE",
        f"request body over {config.max_body_mb} MB; send smaller batches "
        "(limit: SERVING_MAX_BODY_MB)",
    )
    unavailable = _json_body(
        "MODEL_UNAVAILABLE",
        f"the model did not answer within {config.request_timeout_s}s or is restarting; retry",
    )
    active = active_slots(config.workers)
    return NginxTemplate(NGINX_TEMPLATE.read_text()).substitute(
        user_directive="user root;" if os.geteuid() == 0 else "",
        load_module_directive=f"load_module {config.njs_module};" if filter_errors else "",
        js_import_directive=(
            f"js_import errors from {run_dir / 'errors.js'};" if filter_errors else ""
        ),
        js_filter_directives=(
            "js_header_filter errors.headers;\n            js_body_filter errors.body;"
            if filter_errors
            else ""
        ),
        workers=active,
        run_dir=run_dir,
        host=config.host,
        port=config.port,
        alias=config.alias,
        max_body_mb=config.max_body_mb,
        request_timeout_s=config.request_timeout_s,
        next_upstream_tries=max(2, config.workers),
        upstream_keepalive=UPSTREAM_KEEPALIVE,
        upstream_keepalive_ms=UPSTREAM_KEEPALIVE_MS,
        upstream_idle_ms=UPSTREAM_IDLE_MS,
        upstream_servers="\n".join(
            f"        server unix:{sock} max_fails=0{'' if i < active else ' backup'};"
            for i, sock in enumerate(slot_paths(run_dir, config.workers))
        ),
        log_format=NGINX_LOG_FORMAT,
        access_log=run_dir / ACCESS_LOG,
        metrics_socket=run_dir / METRICS_SOCKET,
        status_socket=run_dir / STATUS_SOCKET,
        too_large_body=too_large,
        unavailable_body=unavailable,
        canary_route=canary_route(config.canary_percent),
        canary_upstream=canary_upstream(config, run_dir),
        canary_location=canary_location(config, filter_errors),
    )


class Front:
    def __init__(self, config: FrontConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.process: subprocess.Popen | None = None
        nginx = shutil.which(config.nginx)
        if nginx is None:
            raise StackError(
                f"nginx not found (SERVING_NGINX={config.nginx!r}); install it "
                "(apt-get install nginx libnginx-mod-http-js) or set SERVING_NGINX"
            )
        self.nginx = nginx
        self.filter_errors = Path(config.njs_module).is_file()
        if not self.filter_errors:
            logger.warning(
                "nginx njs module %s not found: error answers keep MLflow's stack traces "
                "(apt-get install libnginx-mod-http-js)",
                config.njs_module,
            )
        (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ERRORS_JS, run_dir / "errors.js")

    @property
    def conf_path(self) -> Path:
        return self.run_dir / "nginx.conf"

    @property
    def slots(self) -> list[Path]:
        return slot_paths(self.run_dir, self.config.workers)

    def _write(self) -> None:
        staged = self.conf_path.with_suffix(".new")
        staged.write_text(render(self.config, self.run_dir, self.filter_errors))
        check = subprocess.run(
            [self.nginx, "-t", "-q", "-p", str(self.run_dir), "-c", str(staged)],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise StackError(f"nginx rejected its config: {check.stderr.strip()}")
        os.replace(staged, self.conf_path)

    def start(self, timeout_s: float = 15.0) -> None:
        self._kill_leftovers()
        # A killed nginx leaves its Unix socket behind, and bind() refuses an existing path.
        (self.run_dir / STATUS_SOCKET).unlink(missing_ok=True)
        self._write()
        # Its own process group, so workers orphaned by a dead master can be found and ended;
        # and it dies with the supervisor rather than keep the port.
        # LOG_FORMAT=json: nginx's messages become JSON lines of the supervisor's log too.
        relay = log_format_from_env() == "json"
        self.process = subprocess.Popen(
            [self.nginx, "-e", "stderr", "-p", str(self.run_dir), "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE if relay else None,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        if relay:
            threading.Thread(
                target=_relay, args=(self.process.stderr,), name="nginx-log", daemon=True
            ).start()
        pid_file = self.run_dir / "nginx.pid"
        deadline = time.monotonic() + timeout_s
        while not pid_file.exists():
            if self.process.poll() is not None:
                raise StackError(
                    f"nginx exited with code {self.process.returncode}; is port "
                    f"{self.config.port} already in use? (SERVING_PORT)"
                )
            if time.monotonic() > deadline:
                raise StackError("nginx did not start")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def _kill_leftovers(self) -> None:
        """End what is left of an earlier nginx (workers outlive a killed master)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        self._kill_leftovers()
