"""The champion/challenger rule."""

from __future__ import annotations

import pytest

from promotion.gate import compare


@pytest.mark.parametrize(
    ("challenger", "champion", "passed"),
    [
        (5.0, 6.0, True),
        (6.0, 6.0, True),  # at least as good
        (6.1, 6.0, False),
        (5.0, None, True),  # nothing in production yet
        (None, 6.0, False),  # a candidate without the metric never wins by default
        (None, None, False),
    ],
)
def test_challenger_must_be_at_least_as_good(
    challenger: float | None, champion: float | None, passed: bool
) -> None:
    decision = compare(challenger, champion)
    assert decision.passed is passed
    assert decision.reason
