"""The clean-up's rules: which versions retention removes, what gc is asked, sizes shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from promotion.usage import human, tree_bytes
from tracking_server.cleanup import (
    DAY_MS,
    GC_DELETED,
    CleanupSettings,
    gc_command,
    retention_plan,
)

NOW = 1_800_000_000_000.0


@dataclass
class Version:
    version: str
    age_days: float
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    name: str = "m"
    source: str = "models:/m-abc"

    @property
    def creation_timestamp(self) -> float:
        return NOW - self.age_days * DAY_MS

    @property
    def last_updated_timestamp(self) -> float:
        return self.creation_timestamp


def planned(*versions: Version, days: float = 30) -> list[str]:
    return [r.version for r in retention_plan(versions, days, NOW)]


def test_old_unaliased_versions_go_and_young_or_aliased_ones_stay() -> None:
    assert planned(
        Version("1", 90, aliases=["production"]),
        Version("2", 90),
        Version("3", 5),
        Version("4", 40, aliases=["challenger"]),
    ) == ["2"]


@pytest.mark.parametrize(
    ("tags", "kept"),
    [
        ({"promoted_at": "2027-01-14T00:00:00+00:00"}, True),  # 1 day before NOW
        ({"rolled_back_at": "2027-01-14T00:00:00+00:00"}, True),
        ({"stack.promoted_at": str(int(NOW - DAY_MS))}, True),
        ({"promoted_at": "2026-01-01T00:00:00+00:00"}, False),  # over a year ago
        ({"promoted_at": "not a date"}, True),  # unreadable: kept, never guessed away
        ({}, False),
    ],
)
def test_a_version_promoted_within_the_window_stays(tags: dict[str, str], kept: bool) -> None:
    assert planned(Version("7", 400, tags=tags)) == ([] if kept else ["7"])


def test_the_plan_is_in_version_order_and_names_the_logged_model() -> None:
    plan = retention_plan([Version("10", 90), Version("9", 90)], 30, NOW)
    assert [r.version for r in plan] == ["9", "10"]
    assert plan[0].logged_model_id == "m-abc"
    assert (
        retention_plan([Version("1", 90, source="runs:/r/model")], 30, NOW)[0].logged_model_id
        is None
    )


def test_gc_asks_mlflow_for_the_window_and_nothing_when_zero() -> None:
    settings = CleanupSettings.from_env({"MLFLOW_BACKEND_STORE_URI": "sqlite:////x/mlflow.db"})
    assert gc_command(settings, 30)[-2:] == ["--older-than", "30d"]
    assert gc_command(settings, 0.5)[-2:] == ["--older-than", "0.5d"]
    assert "--older-than" not in gc_command(settings, 0)
    assert gc_command(settings, 0)[2:4] == ["mlflow", "gc"]


def test_what_mlflow_gc_prints_is_recognised() -> None:
    line = "Run with ID 0123abc has been permanently deleted."
    match = GC_DELETED.match(line)
    assert match is not None and match.groups() == ("Run", "0123abc")
    assert GC_DELETED.match("Logged model with ID m-1 has been permanently deleted.")


def test_retention_is_off_until_its_window_is_set() -> None:
    assert CleanupSettings.from_env({}).retention_days is None
    assert CleanupSettings.from_env({"STACK_RETENTION_DAYS": "90"}).retention_days == 90


def test_sizes_add_up_through_folders_and_read_as_people_do() -> None:
    tree = {
        None: [
            SimpleNamespace(path="a", is_dir=True),
            SimpleNamespace(path="b", is_dir=False, file_size=10),
        ],
        "a": [SimpleNamespace(path="a/c", is_dir=False, file_size=5)],
    }
    assert tree_bytes(lambda path: tree[path]) == 15
    assert [human(n) for n in (0, 1023, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 GiB",
    ]
