"""Regenerate ``training/data/grades.csv`` reproducibly.

The formula (documented in the README): ``grade = 35 + 5 * hours + noise``, with ``hours`` drawn
uniformly from 0 to 12 and rounded to 0.1 h, ``noise`` normal with standard deviation 6 points,
the grade clipped to 0-100 and rounded to 0.1. Seed 42, 300 rows.

    python -m training.make_dataset [--rows 300] [--seed 42] [--out training/data/grades.csv]
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd

DEFAULT_OUT = Path(__file__).parent / "data" / "grades.csv"
INTERCEPT, SLOPE, NOISE_SD, MAX_HOURS = 35.0, 5.0, 6.0, 12.0


def make_grades(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hours = rng.uniform(0, MAX_HOURS, size=rows).round(1)
    grade = (INTERCEPT + SLOPE * hours + rng.normal(0, NOISE_SD, size=rows)).clip(0, 100).round(1)
    return pd.DataFrame({"hours": hours, "grade": grade})


@click.command()
@click.option("--rows", default=300, show_default=True, help="Number of students.")
@click.option("--seed", default=42, show_default=True, help="Random seed.")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def main(rows: int, seed: int, out: Path) -> None:
    """Write the exam-grade dataset as CSV."""
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grades(rows, seed).to_csv(out, index=False)
    click.echo(str(out))


if __name__ == "__main__":
    main()
