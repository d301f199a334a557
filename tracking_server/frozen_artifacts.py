"""Registered model versions are immutable: their files cannot be written or deleted but by admins.

The alias rules protect the pointer (``production`` -> version 3); this protects what it points
at. Whoever has EDIT on an experiment may write through the artifact proxy under its runs'
artifacts, and serving loads a version's files again at every cold start: without this rule the
trainer could replace the promoted model's bytes without moving the alias.

A proxied artifact path (``[workspaces/<ws>/]<experiment>/<run id>/artifacts/<file>`` for run
artifacts, ``[workspaces/<ws>/]<experiment>/models/<m-id>/artifacts/<file>`` for a logged model's)
names the run or the logged model it belongs to, so the check costs one registry query on a
write, and nothing on reads:

* under a logged model: refused when some version was registered from it (its ``source`` or
  ``storage_location`` names the model id, or its ``model_id`` is that model);
* under a run's artifacts: refused when some version of that run has its files there (``source``
  ``runs:/<run>/<sub>`` or ``.../<run>/artifacts/<sub>``) and the path is inside ``<sub>`` or
  a parent of it (deleting the parent destroys the version too);
* a delete whose path names neither a run nor a logged model (an experiment's folder, the root)
  could destroy any version below it: refused for non-admins.

A version registered from a location outside these layouts (an arbitrary ``mlflow-artifacts:``
folder) is not recognised: docs/security.md says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")


@dataclass(frozen=True)
class Owner:
    """What a proxied artifact path belongs to: a run (and the path inside its artifacts) or a
    logged model; neither when the path is above them."""

    run_id: str | None = None
    model_id: str | None = None
    inside: tuple[str, ...] = ()


def segments(path: str) -> list[str]:
    return [part for part in path.replace("\\", "/").split("/") if part and part != "."]


def owner_of(path: str) -> Owner:
    """The run or logged model a proxied artifact path is under (see the module docstring)."""
    parts = segments(path)
    for i, part in enumerate(parts):
        if part == "models" and i + 1 < len(parts) and MODEL_ID.match(parts[i + 1]):
            return Owner(model_id=parts[i + 1], inside=tuple(parts[i + 2 :]))
        if RUN_ID.match(part) and i + 1 < len(parts) and parts[i + 1] == "artifacts":
            return Owner(run_id=part, inside=tuple(parts[i + 2 :]))
    return Owner()


def run_subpath(location: str | None, run_id: str) -> tuple[str, ...] | None:
    """Where, inside the run's artifacts, a version's ``source`` keeps its files; None when the
    location is not inside this run's artifacts (e.g. ``models:/m-...``)."""
    if not location:
        return None
    if location.startswith(f"runs:/{run_id}"):
        return tuple(segments(location[len(f"runs:/{run_id}") :]))
    parts = segments(location)
    for i, part in enumerate(parts):
        if part == run_id and i + 1 < len(parts) and parts[i + 1] == "artifacts":
            return tuple(parts[i + 2 :])
    return None


def overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """One path is inside the other (or they are the same)."""
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def covered_by_run_versions(owner: Owner, versions: Iterable[Any]) -> Any | None:
    """The first version of ``owner``'s run whose files the path touches."""
    assert owner.run_id is not None
    for version in versions:
        for location in (version.source, getattr(version, "storage_location", None)):
            sub = run_subpath(location, owner.run_id)
            if sub is not None and overlaps(owner.inside, sub):
                return version
    return None


def names_model(version: Any, model_id: str) -> bool:
    locations = (version.source, getattr(version, "storage_location", None))
    return getattr(version, "model_id", None) == model_id or any(
        location and model_id in segments(location.replace(":", "/")) for location in locations
    )


def protected_version(
    path: str,
    *,
    deleting: bool,
    search_versions: Callable[[str], list[Any]],
    source_run_of_model: Callable[[str], str | None],
) -> str | None:
    """Why a non-admin may not write or delete this proxied artifact path, or None."""
    owner = owner_of(path)
    if owner.model_id is not None:
        found = search_versions(f"source_path LIKE '%{owner.model_id}%'")
        if not found:
            run_id = source_run_of_model(owner.model_id)
            found = search_versions(f"run_id = '{run_id}'") if run_id else []
        hit = next((v for v in found if names_model(v, owner.model_id)), None)
        return None if hit is None else _frozen(hit)
    if owner.run_id is not None:
        hit = covered_by_run_versions(owner, search_versions(f"run_id = '{owner.run_id}'"))
        return None if hit is None else _frozen(hit)
    if deleting:
        return "artifact deletes above a run or a logged model are for admins only"
    return None


def _frozen(version: Any) -> str:
    return (
        f"these files belong to registered model version {version.name!r} "
        f"{version.version}: registered versions are immutable (admins only)"
    )


def workspace_of(path: str, header: str | None) -> str:
    """The workspace whose registry a proxied path belongs to: the one its ``workspaces/<ws>/``
    prefix names, else the request's ``X-MLflow-Workspace``, else ``default``. (This check runs
    before MLflow has resolved the request's workspace.)"""
    parts = segments(path)
    if len(parts) > 1 and parts[0] == "workspaces":
        return parts[1]
    return header or "default"


def registry_lookups(
    workspace: str,
) -> tuple[Callable[[str], list[Any]], Callable[[str], str | None]]:
    """The two reads :func:`protected_version` needs, on the server's own stores, in
    ``workspace`` when workspaces are on (an unknown one finds nothing: refused by the caller's
    ``deleting`` rule only for deletes, so a write to an unknown workspace is MLflow's to
    refuse)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.exceptions import MlflowException
    from mlflow.utils.workspace_context import ServerWorkspaceContext

    from stack_common.mlflow_internals import model_registry_store, tracking_store

    def scoped() -> Any:
        return (
            ServerWorkspaceContext(workspace) if MLFLOW_ENABLE_WORKSPACES.get() else nullcontext()
        )

    def search_versions(filter_string: str) -> list[Any]:
        with scoped():
            store = model_registry_store()
            return list(store.search_model_versions(filter_string, max_results=1000))

    def source_run_of_model(model_id: str) -> str | None:
        try:
            with scoped():
                return tracking_store().get_logged_model(model_id).source_run_id
        except MlflowException:
            return None

    return search_versions, source_run_of_model
