"""The dataset: the shipped CSV is sound; a bad CSV gets one line naming file, line, column."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import DataError, load_grades
from training.make_dataset import make_grades
from training.settings import DEFAULT_DATA


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grades.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "file is empty"),
        ("hours,grade\n", "no data rows"),
        ("hour,grade\n1,50\n", "missing column 'hours' (found: hour, grade)"),
        ("hours,score\n1,50\n", "missing column 'grade'"),
        ("hours,grade\n1,50\nabc,60\n", "line 3, column 'hours': 'abc' is not a number"),
        ("hours,grade\n1,50\n2,\n", "line 3, column 'grade': '(empty)' is not a number"),
        ("hours,grade\n1,50\n2,inf\n", "line 3, column 'grade': 'inf' is not a number"),
        ("hours,grade\n1,50\n-2,60\n", "line 3, column 'hours': -2 is negative"),
        ("hours,grade\n1,50\n2,101\n", "line 3, column 'grade': 101 is outside 0-100"),
        ("hours,grade\n1,-1\n", "line 2, column 'grade': -1 is outside 0-100"),
        ('hours,grade\n1,"50\n', "not a valid CSV"),
    ],
)
def test_bad_csv_gets_one_line_naming_file_line_and_column(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError) as err:
        load_grades(path)
    message = str(err.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_file_says_which_variable_to_set(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found; set TRAINING_DATA"):
        load_grades(tmp_path / "nope.csv")


def test_extra_columns_and_spaces_are_accepted(tmp_path: Path) -> None:
    frame = load_grades(write(tmp_path, "student, hours, grade\nann, 1.5, 50\nbob, 3, 61.5\n"))
    assert frame.to_dict("list") == {"hours": [1.5, 3.0], "grade": [50.0, 61.5]}


class TestShippedDataset:
    def test_loads_with_a_few_hundred_rows(self) -> None:
        frame = load_grades(DEFAULT_DATA)
        assert 200 <= len(frame) <= 1000

    def test_is_what_the_documented_script_generates(self, tmp_path: Path) -> None:
        regenerated = tmp_path / "grades.csv"
        make_grades(rows=300, seed=42).to_csv(regenerated, index=False)
        assert regenerated.read_bytes() == DEFAULT_DATA.read_bytes()

    def test_values_are_plausible(self) -> None:
        frame = load_grades(DEFAULT_DATA)
        assert frame["hours"].between(0, 12).all()
        assert frame["grade"].between(0, 100).all()
        assert frame["hours"].corr(frame["grade"]) > 0.8
