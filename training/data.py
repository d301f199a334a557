"""Loading and validating the exam-grade dataset.

Every problem is reported as one line naming the file, the line and the column, because a CSV
usually comes from a spreadsheet export and the fix is to open it at that line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from stack_common.errors import StackError

FEATURE, TARGET = "hours", "grade"
COLUMNS = (FEATURE, TARGET)
GRADE_RANGE = (0.0, 100.0)


class DataError(StackError):
    pass


def file_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _line(index: int) -> int:
    """The 1-based line of a data row in the file (line 1 is the header)."""
    return index + 2


def load_grades(path: Path) -> pd.DataFrame:
    """Read ``path`` and return numeric ``hours`` and ``grade`` columns, or raise DataError."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; set TRAINING_DATA to the CSV to train on")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: file is empty; expected a header 'hours,grade' and rows"
        ) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a valid CSV ({' '.join(str(exc).split())})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        found = ", ".join(raw.columns) or "none"
        raise DataError(
            f"{path}: missing column {missing[0]!r} (found: {found}); "
            f"the header must name the columns {', '.join(COLUMNS)}"
        )
    if raw.empty:
        raise DataError(f"{path}: no data rows under the header; add rows of hours,grade")

    frame = pd.DataFrame(index=raw.index)
    for column in COLUMNS:
        text = raw[column].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        bad = ~np.isfinite(values)
        if bad.any():
            index = bad.idxmax()
            shown = text[index] or "(empty)"
            raise DataError(
                f"{path}: line {_line(index)}, column {column!r}: {shown!r} is not a number"
            )
        frame[column] = values.astype(float)

    negative = frame[FEATURE] < 0
    if negative.any():
        index = negative.idxmax()
        raise DataError(
            f"{path}: line {_line(index)}, column {FEATURE!r}: {frame[FEATURE][index]:g} "
            "is negative; study hours must be 0 or more"
        )
    low, high = GRADE_RANGE
    outside = ~frame[TARGET].between(low, high)
    if outside.any():
        index = outside.idxmax()
        raise DataError(
            f"{path}: line {_line(index)}, column {TARGET!r}: {frame[TARGET][index]:g} "
            f"is outside {low:g}-{high:g}"
        )
    return frame
