"""``stack-serve``: resolve ``models:/<name>@<alias>``, cache it, run ``mlflow models serve``.

The process replaces itself with MLflow's own scoring server (exec), so the endpoints and
request formats are exactly MLflow's: /ping, /health, /version, /invocations.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

import click

from serving.cache import ModelCache
from serving.model_source import fetch_production
from serving.settings import ServingSettings
from stack_common.errors import cli_errors
from stack_common.logs import setup_logging

logger = logging.getLogger("serving")


def serve_command(model_path: str, settings: ServingSettings) -> list[str]:
    return [
        "mlflow",
        "models",
        "serve",
        "--model-uri",
        model_path,
        "--env-manager",
        "local",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
    ]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--fetch-only", is_flag=True, help="Download into the cache, print the path, exit.")
@cli_errors
def main(fetch_only: bool) -> None:
    """Serve the model version that carries the production alias (see .env.example)."""
    setup_logging()
    settings = ServingSettings.from_env()
    cache = ModelCache(settings.cache_dir, settings.cache_keep_versions, settings.cache_max_bytes)
    entry = fetch_production(settings, cache)
    if fetch_only:
        click.echo(str(entry.path))
        return
    cmd = serve_command(str(entry.path), settings)
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    logger.info(
        "serving %s version %s on http://%s:%s",
        settings.model_name,
        entry.version,
        settings.host,
        settings.port,
    )
    os.execvpe(shutil.which("mlflow", path=env["PATH"]) or "mlflow", cmd, env)


if __name__ == "__main__":
    main()
