"""`make env`: a newcomer's .env with every empty secret filled in, never over an existing one."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_env.py"


def make_env(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--example", str(ROOT / ".env.example")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assignments(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))


def test_every_empty_secret_and_user_gets_its_own_random_value(tmp_path: Path) -> None:
    result = make_env(tmp_path)
    assert result.returncode == 0, result.stderr
    example = (ROOT / ".env.example").read_text()
    written = (tmp_path / ".env").read_text()
    empty = [name for name, value in assignments(example).items() if value == ""]
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in empty and "MINIO_ROOT_USER" in empty
    values = assignments(written)
    for name in empty:
        assert len(values[name]) >= 12, name  # MLflow's basic auth: 12+ characters
    assert len({values[name] for name in empty}) == len(empty)  # no value shared
    assert values["MINIO_ROOT_USER"].startswith("minio-")
    # Everything else, comments included, is the template's.
    assert len(written.splitlines()) == len(example.splitlines())
    assert {k: v for k, v in values.items() if k not in empty} == {
        k: v for k, v in assignments(example).items() if k not in empty
    }
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600


def test_two_runs_give_different_secrets(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    assert make_env(first).returncode == make_env(second).returncode == 0
    a = assignments((first / ".env").read_text())["POSTGRES_PASSWORD"]
    b = assignments((second / ".env").read_text())["POSTGRES_PASSWORD"]
    assert a != b


def test_an_existing_env_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=the-one-the-volume-has\n")
    result = make_env(tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: .env exists") and "make env" in line
    assert (tmp_path / ".env").read_text() == "POSTGRES_PASSWORD=the-one-the-volume-has\n"
