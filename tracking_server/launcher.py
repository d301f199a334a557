"""Entry point of the tracking server: environment → checks → ``mlflow server``.

The launcher replaces itself with ``mlflow server`` (exec), so signals from Docker or a
supervisor reach MLflow directly and no wrapper process is left to babysit.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from stack_common.errors import StackError
from stack_common.logs import setup_logging
from tracking_server.artifacts import wait_for_bucket
from tracking_server.auth import prepare_database, write_config
from tracking_server.backend import (
    auth_schema_is_current,
    migration_lock,
    redact,
    upgrade_schema_once,
    wait_for_database,
    wait_for_schema,
)
from tracking_server.oidc_settings import check_oidc, with_oidc
from tracking_server.settings import ServerSettings

logger = logging.getLogger("tracking_server")


def server_command(settings: ServerSettings) -> list[str]:
    """The ``mlflow server`` command line; artifacts are proxied unless turned off."""
    cmd = [
        "mlflow",
        "server",
        "--backend-store-uri",
        settings.backend_store_uri,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
    ]
    if settings.serve_artifacts:
        cmd += ["--serve-artifacts", "--artifacts-destination", settings.artifacts_destination]
    else:
        # Direct mode: clients read and write the bucket themselves and need its credentials.
        cmd += ["--no-serve-artifacts", "--default-artifact-root", settings.artifacts_destination]
    if settings.allowed_hosts:
        cmd += ["--allowed-hosts", settings.allowed_hosts]
    if settings.cors_allowed_origins:
        cmd += ["--cors-allowed-origins", settings.cors_allowed_origins]
    if settings.gunicorn_opts:
        cmd += ["--gunicorn-opts", settings.gunicorn_opts]
    else:
        cmd += ["--uvicorn-opts", settings.uvicorn_opts]
    if settings.app_name:
        cmd += ["--app-name", settings.app_name]
    cmd.append("--enable-workspaces" if settings.workspaces else "--disable-workspaces")
    if settings.prometheus and settings.prometheus_dir is not None:
        cmd += ["--expose-prometheus", str(settings.prometheus_dir)]
    return cmd


PROMETHEUS_PREFIX = "mlflow-prometheus-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prometheus_folder(settings: ServerSettings) -> ServerSettings:
    """The folder where this server's workers keep their Prometheus counts, emptied.

    One per server process: the workers add their files up on every scrape, so files left by
    an earlier process would count its requests again (prometheus-client's multiprocess mode).
    """
    if not settings.prometheus:
        return settings
    folder = settings.prometheus_dir
    if folder is None:
        # Named by our pid, which ``mlflow server`` keeps (exec): folders of servers that
        # are gone are removed here, so restarts do not pile them up in the temp folder.
        tmp = Path(tempfile.gettempdir())
        for old in tmp.glob(f"{PROMETHEUS_PREFIX}*"):
            pid = old.name.removeprefix(PROMETHEUS_PREFIX)
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        folder = tmp / f"{PROMETHEUS_PREFIX}{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    except OSError as exc:  # metrics are not worth refusing to start over
        logger.warning(
            "no /metrics: cannot use %s for Prometheus counts (%s); set MLFLOW_PROMETHEUS_DIR "
            "to a writable folder or MLFLOW_PROMETHEUS=false",
            folder,
            exc,
        )
        return settings.model_copy(update={"prometheus": False, "prometheus_dir": None})
    return settings.model_copy(update={"prometheus_dir": folder})


def migrate(settings: ServerSettings) -> None:
    """Both schema upgrades (backend store, then the auth database) under one advisory lock:
    replicas or a migration Job starting together migrate once, the others find it at head."""
    with migration_lock(settings.backend_store_uri):
        upgrade_schema_once(settings.backend_store_uri)
        if settings.auth is not None:
            logger.info("auth database %s", redact(settings.auth.database_uri))
            prepare_database(settings.auth, settings.backend_store_uri)


def prepare(settings: ServerSettings) -> None:
    wait_for_database(settings.backend_store_uri, settings.backend_wait_s)
    if settings.migrate_on_start:
        migrate(settings)
    else:
        auth = settings.auth
        wait_for_schema(
            settings.backend_store_uri,
            settings.backend_wait_s,
            (lambda: auth_schema_is_current(auth.database_uri)) if auth is not None else None,
        )
    if settings.local_artifacts is not None:
        settings.local_artifacts.mkdir(parents=True, exist_ok=True)
    else:
        wait_for_bucket(settings)


def server_environment(settings: ServerSettings) -> dict[str, str]:
    env = dict(os.environ)
    # The command line carries the worker layout; MLflow would also read these and refuse two.
    env.pop("MLFLOW_UVICORN_OPTS", None)
    env.pop("MLFLOW_GUNICORN_OPTS", None)
    if settings.auth is not None:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_config(with_oidc(settings.auth)))
        env["MLFLOW_AUTH_ADMIN_USERNAME"] = settings.auth.admin_username
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if settings.job_execution else "false"
    if settings.prometheus and settings.prometheus_dir is not None:
        # MLflow passes the folder on as the deprecated lower-case name; this one is current.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(settings.prometheus_dir)
    # The uvicorn/gunicorn executables live beside this interpreter; make sure MLflow finds them.
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--check", is_flag=True, help="Prepare the backend store and print the command.")
@click.option(
    "--migrate-only",
    is_flag=True,
    help="Wait for the database, migrate the backend store (and the auth database), then exit.",
)
def main(check: bool, migrate_only: bool) -> None:
    """Start the MLflow tracking server as configured by the environment (see .env.example)."""
    setup_logging()
    try:
        settings = ServerSettings.from_env()
        check_oidc(auth_on=settings.auth is not None)
        if migrate_only:
            wait_for_database(settings.backend_store_uri, settings.backend_wait_s)
            migrate(settings)
            logger.info("schemas at head: migration done")
            return
        prepare(settings)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    if not check:
        settings = prometheus_folder(settings)
    cmd = server_command(settings)
    logger.info(
        "starting mlflow server: backend %s, artifacts %s (%s), http://%s:%s, %d workers (%s), %s",
        redact(settings.backend_store_uri),
        settings.artifacts_destination,
        "proxied" if settings.serve_artifacts else "direct",
        settings.host,
        settings.port,
        settings.workers,
        f"gunicorn {settings.gunicorn_opts}"
        if settings.gunicorn_opts
        else f"uvicorn {settings.uvicorn_opts}",
        f"basic auth (default permission {settings.auth.default_permission})"
        if settings.auth
        else "no authentication",
    )
    if check:
        click.echo(" ".join(cmd))
        return
    env = server_environment(settings)
    executable = shutil.which(cmd[0], path=env["PATH"]) or cmd[0]
    os.execvpe(executable, cmd, env)


if __name__ == "__main__":
    main()
