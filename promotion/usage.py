"""``stack-registry usage``: what each experiment and each registered model holds in the bucket.

Read through the tracking server's artifact proxy with the caller's own rights, so it needs no
bucket credentials: a promoter (READ on the experiment) sees what the team's runs cost before
asking an admin to run the clean-up (``stack-cleanup``, docs/buckets.md). It lists every
folder once, one request each, so it is meant for a report now and then, not for a dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mlflow.entities import ViewType


@dataclass(frozen=True)
class Usage:
    kind: str  # 'experiment' or 'model'
    name: str
    bytes: int
    items: int  # runs and logged models of an experiment; versions of a model


def tree_bytes(list_dir: Callable[[str | None], Iterable[Any]], path: str | None = None) -> int:
    """The size of every file below ``path``, listing one folder at a time."""
    total = 0
    for info in list_dir(path):
        total += tree_bytes(list_dir, info.path) if info.is_dir else int(info.file_size or 0)
    return total


def location_bytes(uri: str) -> int:
    """Bytes below an artifact URI (a run's root, a logged model's location)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if not uri:
        return 0
    return tree_bytes(get_artifact_repository(uri).list_artifacts)


def _pages(search: Callable[..., Any], **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        items += list(page)
        token = page.token
        if not token:
            return items


def experiment_usage(client: Any, measure: Callable[[str], int] = location_bytes) -> list[Usage]:
    """Per active experiment: its runs' artifacts (deleted runs included: their files stay in
    the bucket until gc) and its logged models' files."""
    usages = []
    for exp in _pages(client.search_experiments, view_type=ViewType.ACTIVE_ONLY, max_results=100):
        runs = _pages(
            client.search_runs,
            experiment_ids=[exp.experiment_id],
            run_view_type=ViewType.ALL,
            max_results=1000,
        )
        models = _pages(client.search_logged_models, experiment_ids=[exp.experiment_id])
        size = sum(measure(run.info.artifact_uri) for run in runs)
        size += sum(measure(model.artifact_location) for model in models)
        usages.append(Usage("experiment", exp.name, size, len(runs) + len(models)))
    return usages


def version_location(client: Any, source: str, run_id: str | None) -> str:
    """Where a version's files are: its logged model's location, or the run path it names."""
    if source.startswith("models:/m-"):
        model_id = source.removeprefix("models:/").split("/", 1)[0]
        return client.get_logged_model(model_id).artifact_location
    if source.startswith("runs:/"):
        run, _, path = source.removeprefix("runs:/").partition("/")
        root = client.get_run(run or run_id).info.artifact_uri
        return f"{root}/{path}" if path else root
    return source


def model_usage(client: Any, measure: Callable[[str], int] = location_bytes) -> list[Usage]:
    """Per registered model: the files of its versions (a location two versions share counted
    once)."""
    usages = []
    for model in _pages(client.search_registered_models, max_results=100):
        name = model.name.replace("'", "\\'")
        versions = _pages(client.search_model_versions, filter_string=f"name = '{name}'")
        locations = {version_location(client, mv.source or "", mv.run_id) for mv in versions}
        size = sum(measure(location) for location in locations)
        usages.append(Usage("model", model.name, size, len(versions)))
    return usages


def human(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    units = ["KiB", "MiB", "GiB", "TiB"]
    value /= 1024
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"
