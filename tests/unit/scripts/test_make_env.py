"""`make env`: a newcomer's .env with every empty secret filled in, never over an existing one."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
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


def test_make_env_makes_the_backup_folder_the_backup_container_can_write(tmp_path: Path) -> None:
    """A newcomer's `docker compose run --rm backup create` works as written: as root the
    folder goes to the image's user, as a docker-group user the container runs as them."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from make_env import BACKUP_IMAGE_USER, prepare_backups
    finally:
        sys.path.remove(str(SCRIPT.parent))
    template = (ROOT / ".env.example").read_text()
    given: list[tuple] = []
    as_root = prepare_backups(template, tmp_path / "r", 0, 0, chown=lambda *a: given.append(a))
    assert as_root == template and (tmp_path / "r" / "backups").is_dir()
    assert given == [(tmp_path / "r" / "backups", BACKUP_IMAGE_USER, BACKUP_IMAGE_USER)]
    as_user = assignments(prepare_backups(template, tmp_path / "u", 1234, 2345))
    assert (as_user["BACKUP_UID"], as_user["BACKUP_GID"]) == ("1234", "2345")
    assert (tmp_path / "u" / "backups").is_dir()


def test_make_env_run_as_root_leaves_a_backups_folder_owned_by_the_image_user(
    tmp_path: Path,
) -> None:
    import os

    assert make_env(tmp_path).returncode == 0
    folder = tmp_path / "backups"
    assert folder.is_dir()
    if os.getuid() == 0:
        assert (folder.stat().st_uid, folder.stat().st_gid) == (10001, 10001)
