"""Alias moves on the Model Registry, with who/when/why recorded as version tags.

``production`` is what serving follows; ``previous`` keeps the version it replaced so that a
rollback is one command; ``challenger`` marks the newest trained candidate. A person may move
``production`` in the MLflow UI instead: serving resolves the alias the same way.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from promotion.gate import GATE_METRIC, GateDecision, compare
from stack_common.errors import StackError

logger = logging.getLogger(__name__)

PRODUCTION, PREVIOUS, CHALLENGER = "production", "previous", "challenger"


class PromotionError(StackError):
    pass


@dataclass(frozen=True)
class AliasMove:
    model_name: str
    version: str
    replaced: str | None
    reason: str


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            require_model(client, name)
            return None
        raise


def require_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise PromotionError(
                f"registered model {name!r} does not exist; train one first (stack-train) "
                "or check MODEL_NAME"
            ) from None
        raise


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    require_model(client, name)
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PromotionError(
                f"model {name!r} has no version {version!r}; list versions with "
                "'stack-registry status'"
            ) from None
        raise


def gate_metric(client: MlflowClient, mv: ModelVersion) -> float | None:
    if not mv.run_id:
        return None
    return client.get_run(mv.run_id).data.metrics.get(GATE_METRIC)


def _stamp(
    client: MlflowClient, mv: ModelVersion, action: str, reason: str, actor: str | None
) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {
        f"{action}_by": actor or getpass.getuser(),
        f"{action}_at": now,
        f"{action}_reason": reason,
    }.items():
        client.set_model_version_tag(mv.name, mv.version, key, value)


def _move_production(
    client: MlflowClient, target: ModelVersion, action: str, reason: str, actor: str | None
) -> AliasMove:
    current = version_by_alias(client, target.name, PRODUCTION)
    if current is not None and current.version == target.version:
        return AliasMove(target.name, target.version, None, f"already in production; {reason}")
    _stamp(client, target, action, reason, actor)
    client.set_registered_model_alias(target.name, PRODUCTION, target.version)
    if current is not None:
        client.set_registered_model_alias(target.name, PREVIOUS, current.version)
    logger.info(
        "%s: %r production -> version %s (was %s): %s",
        action,
        target.name,
        target.version,
        current.version if current else "none",
        reason,
    )
    return AliasMove(target.name, target.version, current.version if current else None, reason)


def promote(
    client: MlflowClient,
    name: str,
    version: str | None = None,
    force: bool = False,
    reason: str = "",
    actor: str | None = None,
    live_check: Callable[[ModelVersion], GateDecision] | None = None,
) -> AliasMove:
    """Point ``production`` at ``version`` (default: the ``challenger``) if it passes the gate.

    ``actor`` is stamped on the version as ``promoted_by`` (default: the login name).
    ``live_check`` judges the version's live figures (promotion/evidence.py) after the offline
    gate; ``force`` skips both, and what they said is kept in the reason.
    """
    if version is None:
        target = version_by_alias(client, name, CHALLENGER)
        if target is None:
            raise PromotionError(
                f"model {name!r} has no version with alias {CHALLENGER!r}; train a new one "
                "(stack-train) or pass --version"
            )
    else:
        target = get_version(client, name, version)
    if target.status != "READY":
        raise PromotionError(
            f"version {target.version} of {name!r} is {target.status}, not READY; it cannot serve"
        )
    champion = version_by_alias(client, name, PRODUCTION)
    decision = compare(
        gate_metric(client, target),
        gate_metric(client, champion) if champion and champion.version != target.version else None,
    )
    if not decision.passed and not force:
        raise PromotionError(
            f"version {target.version} of {name!r} not promoted: {decision.reason}; "
            "use --force to promote anyway"
        )
    live = live_check(target) if live_check is not None else None
    if live is not None and not live.passed and not force:
        raise PromotionError(f"refused: {live.reason}; --force promotes anyway")
    why = f"{reason}; {decision.reason}" if reason else decision.reason
    if live is not None:
        why = f"{why}; {live.reason}" if live.passed else f"{why}; refused: {live.reason}"
    if not decision.passed or (live is not None and not live.passed):
        why = f"forced: {why}"
    move = _move_production(client, target, "promoted", why, actor)
    challenger = version_by_alias(client, name, CHALLENGER)
    if challenger is not None and challenger.version == target.version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return move


def rollback(
    client: MlflowClient, name: str, reason: str = "", actor: str | None = None
) -> AliasMove:
    """Move ``production`` back to ``previous``; the version left becomes ``previous``."""
    target = version_by_alias(client, name, PREVIOUS)
    if target is None:
        raise PromotionError(
            f"model {name!r} has no version with alias {PREVIOUS!r}; nothing to roll back to "
            "(promote a specific version with 'stack-registry promote --version N')"
        )
    return _move_production(client, target, "rolled_back", reason or "rollback", actor)
