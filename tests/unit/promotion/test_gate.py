"""The champion/challenger rule."""

from __future__ import annotations

import pytest

from promotion.gate import GateDecision, compare


@pytest.mark.parametrize(
    ("challenger", "champion", "expected"),
    [
        (5.0, 6.0, GateDecision(True, "test_rmse 5.0000 <= production's 6.0000")),
        # At least as good is good enough.
        (6.0, 6.0, GateDecision(True, "test_rmse 6.0000 <= production's 6.0000")),
        (6.1, 6.0, GateDecision(False, "test_rmse 6.1000 is worse than production's 6.0000")),
        (5.0, None, GateDecision(True, "no current production version to beat")),
        # A candidate without the metric never wins by default, whatever is in production.
        (None, 6.0, GateDecision(False, "the candidate has no test_rmse metric")),
        (None, None, GateDecision(False, "the candidate has no test_rmse metric")),
    ],
)
def test_challenger_must_be_at_least_as_good(
    challenger: float | None, champion: float | None, expected: GateDecision
) -> None:
    assert compare(challenger, champion) == expected
