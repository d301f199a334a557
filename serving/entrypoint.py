"""``stack-serve``: serve ``models:/<name>@<alias>`` and follow the alias as it moves.

The engine is MLflow's own scoring server (the command ``mlflow models serve --env-manager
local`` runs), so the endpoints and request formats are exactly MLflow's: /ping, /version and
/invocations, with /health and /served reporting on the stack itself.
"""

from __future__ import annotations

import click

from serving.cache import ModelCache
from serving.model_source import configure_client, fetch_production
from serving.settings import ServingSettings
from serving.supervisor import build_supervisor
from stack_common.errors import cli_errors
from stack_common.logs import add_context, setup_logging


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--fetch-only", is_flag=True, help="Download into the cache, print the path, exit.")
@cli_errors
def main(fetch_only: bool) -> None:
    """Serve the model version that carries the production alias (see .env.example)."""
    setup_logging()
    settings = ServingSettings.from_env()
    configure_client(settings)  # MLflow's client settings, once, before any MLflow call
    cache = ModelCache(settings.cache_dir, settings.cache_keep_versions, settings.cache_max_bytes)
    if fetch_only:
        click.echo(str(fetch_production(settings, cache).path))
        return
    supervisor = build_supervisor(settings, cache)
    # JSON lines name the model and the version being served (LOG_FORMAT=json).
    add_context(
        model=settings.model_name,
        version=lambda: supervisor.active.version if supervisor.active else None,
    )
    supervisor.run()


if __name__ == "__main__":
    main()
