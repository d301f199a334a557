"""How far the challenger's answer is from production's, for one mirrored request.

Both answers are MLflow's scoring protocol (``{"predictions": ...}``, or a bare list). Their
leaves are compared in order: two floats (or a float and an int) give an absolute difference,
the distribution a promoter reads for a regression; two integers, strings or booleans are
labels, which agree or not. A different number of predictions is a disagreement of every
production prediction: the challenger answered another question.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Comparison:
    absolute_differences: list[float] = field(default_factory=list)
    agree: int = 0
    disagree: int = 0


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from _leaves(value[key])
    else:
        yield value


def _predictions(body: bytes) -> list[Any]:
    parsed = json.loads(body)
    if isinstance(parsed, dict) and "predictions" in parsed:
        parsed = parsed["predictions"]
    return list(_leaves(parsed))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare(production: bytes, challenger: bytes) -> Comparison:
    """ValueError when either answer is not JSON."""
    ours, theirs = _predictions(production), _predictions(challenger)
    result = Comparison()
    if len(ours) != len(theirs):
        result.disagree = max(1, len(ours))
        return result
    for a, b in zip(ours, theirs, strict=True):
        labels = isinstance(a, int) and isinstance(b, int)  # bools are ints: labels too
        if _is_number(a) and _is_number(b) and not labels:
            result.absolute_differences.append(abs(float(a) - float(b)))
        elif a == b:
            result.agree += 1
        else:
            result.disagree += 1
    return result
