"""The restore drill of docs/backup.md on the local stack, for real.

A local stack with basic auth on: users made by the create-users job, two versions trained as
the trainer, one promoted as the promoter. ``make backup`` (``stack-backup create``) while it
runs; then the disaster: stop it and delete its data folder. ``stack-backup restore`` into the
empty folder, start again: every run, metric, param, tag, version, alias, user, permission and
artifact byte is back, and serving answers from the restored ``production`` version. Then a
backup with one changed byte: ``verify`` and ``restore`` fail with one line naming the file,
and the stack is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from local_stack.processes import free_port
from tests.backup_drill import USERS, corrupt_largest_artifact, full_snapshot
from tests.e2e.test_local_stack import first_answer, processes_using, stack_local
from tests.helpers import cli_env, run_cli

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "admin-drill-secret"
PASSWORDS = {user: f"{user}-drill-secret" for user in USERS}
AUTH = {
    "MLFLOW_AUTH": "true",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "drill-flask-secret-key",
    "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
}
MODEL = "drill-model"


def stack_backup(*args: str, data_dir: Path, backups: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backup", *args],
        env=dict(os.environ)
        | {"STACK_DATA_DIR": str(data_dir), "BACKUP_DIR": str(backups), "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def as_user(ui: str, user: str) -> dict[str, str]:
    return cli_env(
        ui, MODEL, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=PASSWORDS[user]
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "logs" not in p.parts and "run" not in p.parts
    }


@pytest.mark.timeout(1200)
def test_local_backup_survives_losing_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, backups = tmp_path / "data", tmp_path / "backups"
    ports = {"MLFLOW_PORT": str(free_port()), "SERVING_PORT": str(free_port())}
    ui = f"http://127.0.0.1:{ports['MLFLOW_PORT']}"
    serving = f"http://127.0.0.1:{ports['SERVING_PORT']}"
    up_env = {
        **ports,
        **AUTH,
        "MODEL_NAME": MODEL,
        # serving starts with `up`, before the job users exist: it reads as the admin here
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
    }
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # this test reads as the admin
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    try:
        up = stack_local("up", data_dir=data_dir, **up_env)
        assert up.returncode == 0, up.stdout + up.stderr
        users = cli_env(ui, MODEL, MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
        users |= {f"STACK_{u.upper()}_PASSWORD": pw for u, pw in PASSWORDS.items()}
        created = run_cli("tracking_server.bootstrap_users", env=users)
        assert created.code == 0, created.stderr

        # Two versions trained, the first promoted (the second waits as 'challenger').
        trained = run_cli("training", env=as_user(ui, "trainer"))
        assert trained.code == 0, trained.stderr
        promoted = run_cli("promotion", "promote", env=as_user(ui, "promoter"))
        assert promoted.code == 0, promoted.stderr
        assert run_cli("training", env=as_user(ui, "trainer")).code == 0
        answer = first_answer(serving, [5])
        before = full_snapshot(ui, MODEL, MODEL, tmp_path / "before")
        assert before["aliases"] == {"production": "1", "challenger": "2"}
        assert len(before["runs"]) == 2 and before["artifacts"]
        assert before["users"]["promoter"]["model"] == "MANAGE"

        # The backup, taken while the stack runs; its ID alone on the last line.
        made = stack_backup("create", data_dir=data_dir, backups=backups)
        assert made.returncode == 0, made.stderr
        backup_id = made.stdout.strip().splitlines()[-1]
        listed = stack_backup("list", data_dir=data_dir, backups=backups)
        assert backup_id in listed.stdout, listed.stdout
        assert stack_backup("verify", backup_id, data_dir=data_dir, backups=backups).returncode == 0
        stored = b"".join(p.read_bytes() for p in (backups / backup_id).rglob("*") if p.is_file())
        for secret in (ADMIN_PASSWORD, *PASSWORDS.values(), AUTH["MLFLOW_FLASK_SERVER_SECRET_KEY"]):
            assert secret.encode() not in stored, "a plaintext secret in the backup"

        # A restore under the running stack is refused.
        busy = stack_backup("restore", "--yes", backup_id, data_dir=data_dir, backups=backups)
        assert busy.returncode == 1 and "make down" in busy.stderr, busy.stderr

        # Disaster: the stack stops and its whole data folder is gone.
        assert stack_local("down", data_dir=data_dir).returncode == 0
        shutil.rmtree(data_dir)

        restored = stack_backup("restore", backup_id, data_dir=data_dir, backups=backups)
        assert restored.returncode == 0, restored.stderr  # an empty stack needs no --yes
        assert f"restored {backup_id}" in restored.stdout

        up = stack_local("up", data_dir=data_dir, **up_env)
        assert up.returncode == 0, up.stdout + up.stderr
        after = full_snapshot(ui, MODEL, MODEL, tmp_path / "after")
        assert after == before
        model_url = f"{ui}/api/2.0/mlflow/registered-models/get?name={MODEL}"
        for user, password in PASSWORDS.items():  # their password hashes came back too
            assert requests.get(model_url, auth=(user, password), timeout=10).ok, user
        again = first_answer(serving, [5])
        assert (again.model_version, again.grades) == ("1", answer.grades)

        # Restoring over a stack that holds something needs --yes, and says what it replaces.
        assert stack_local("down", data_dir=data_dir).returncode == 0
        refused = stack_backup("restore", backup_id, data_dir=data_dir, backups=backups)
        assert refused.returncode == 1
        [line] = error_lines(refused)
        assert "not empty" in line and "2 runs" in line and "--yes" in line

        # One changed byte in the backup: verify and restore name the file; nothing changes.
        key = corrupt_largest_artifact(backups / backup_id)
        state = tree_digest(data_dir)
        for args in (("verify", backup_id), ("restore", "--yes", backup_id)):
            failed = stack_backup(*args, data_dir=data_dir, backups=backups)
            assert failed.returncode == 1, args
            [line] = error_lines(failed)
            assert key in line and "corrupted" in line, line
        assert tree_digest(data_dir) == state
    finally:
        stack_local("down", data_dir=data_dir)
    assert processes_using(data_dir) == []
