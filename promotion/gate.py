"""The champion/challenger rule, kept free of MLflow so it can be tested on its own."""

from __future__ import annotations

from dataclasses import dataclass

GATE_METRIC = "test_rmse"  # lower is better


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def compare(challenger_rmse: float | None, champion_rmse: float | None) -> GateDecision:
    """A challenger replaces the champion when it is at least as good on the test metric."""
    if challenger_rmse is None:
        return GateDecision(False, f"the candidate has no {GATE_METRIC} metric")
    if champion_rmse is None:
        return GateDecision(True, "no current production version to beat")
    if challenger_rmse <= champion_rmse:
        return GateDecision(
            True, f"{GATE_METRIC} {challenger_rmse:.4f} <= production's {champion_rmse:.4f}"
        )
    return GateDecision(
        False, f"{GATE_METRIC} {challenger_rmse:.4f} is worse than production's {champion_rmse:.4f}"
    )
