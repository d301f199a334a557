"""The disaster-recovery runbook of docs/backup.md, as written, on one Compose stack.

Build and ``up``; train two versions as the trainer and promote the first as the promoter;
``run --rm backup create`` (last line: the ID). Then everything goes: ``down -v`` deletes the
database and bucket volumes and serving's cache; ``up -d --wait`` starts an empty stack.
``stop tracking-server serving``, ``run --rm backup restore --yes ID``, ``up -d --wait``: every
run, param, tag, version, alias, user, permission and artifact byte is back, and serving
answers from the restored ``production`` version. Then one changed byte in the backup on the
host: ``verify`` and ``restore`` fail with one line naming the file.

One stack lifecycle (the expensive part): the backups live in a host folder of the test,
bind-mounted as the runbook does, so they survive ``down -v``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from compose_stack import TEST_SECRETS, ComposeProject
from test_compose_stack import PROMOTION_WAIT_S, settings_of, stack, wait_for_version

from tests.backup_drill import full_snapshot

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]
__all__ = ["stack"]  # the fixture, shared with the Compose story

BACKUP_UID = 10001  # the image's user, when the tests run as root


def backup_folder(stack: ComposeProject, tmp_path: Path) -> Path:
    """The host folder of the backups, writable by the container's user (BACKUP_UID)."""
    folder = tmp_path / "backups"
    folder.mkdir()
    values = {"BACKUP_HOST_DIR": str(folder)}
    if os.getuid() == 0:  # as a root user would: hand the folder to the image's user
        os.chown(folder, BACKUP_UID, BACKUP_UID)
    else:  # as the README says: run the container as the folder's owner
        values |= {"BACKUP_UID": str(os.getuid()), "BACKUP_GID": str(os.getgid())}
    with stack.env_file.open("a") as env:
        env.writelines(f"{key}={value}\n" for key, value in values.items())
    return folder


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


@pytest.mark.timeout(2400)
def test_compose_backup_restores_everything_after_down_v(
    stack: ComposeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = backup_folder(stack, tmp_path)
    settings = settings_of(stack)
    ui = f"http://127.0.0.1:{settings['MLFLOW_UI_PORT']}"
    serving_port = int(settings["SERVING_API_PORT"])
    model = settings["MODEL_NAME"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TEST_SECRETS["MLFLOW_AUTH_ADMIN_PASSWORD"])
    # The host cannot reach the bucket's endpoint (minio:9000): every byte via the proxy.
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    with stack.lifecycle():
        stack.run("run", "--rm", "-T", "trainer", step="run trainer")
        stack.run("run", "--rm", "-T", "promoter", "promote", step="promote")
        stack.run("run", "--rm", "-T", "trainer", step="run trainer (v2)")
        answer = wait_for_version(serving_port, "1", PROMOTION_WAIT_S)
        before = full_snapshot(ui, model, model, tmp_path / "before")
        assert before["aliases"] == {"production": "1", "challenger": "2"}

        made = stack.run("run", "--rm", "-T", "backup", "create", step="backup create")
        backup_id = made.stdout.strip().splitlines()[-1]
        assert (folder / backup_id / "manifest.json").is_file(), made.stdout + made.stderr
        stored = b"".join(p.read_bytes() for p in (folder / backup_id).rglob("*") if p.is_file())
        for name, secret in TEST_SECRETS.items():
            assert name == "STACK_IMAGE_TAG" or secret.encode() not in stored, name

        # Disaster: the volumes go; the stack starts again, empty.
        stack.down(volumes=True)
        stack.up(step="up --wait (empty)")
        stack.run("stop", "tracking-server", "serving", step="stop")
        started = time.monotonic()
        restored = stack.run(
            "run", "--rm", "-T", "backup", "restore", "--yes", backup_id, step="backup restore"
        )
        assert f"restored {backup_id}" in restored.stdout, restored.stdout + restored.stderr
        stack.timings["restore"] = time.monotonic() - started
        stack.up(step="up --wait (restored)")

        after = full_snapshot(ui, model, model, tmp_path / "after")
        assert after == before
        # serving's cache went with `down -v`: this answer comes from the restored bucket.
        assert wait_for_version(serving_port, "1", PROMOTION_WAIT_S) == answer

        # One changed byte on the host: verify and restore name the file and change nothing.
        victim = max(
            (p for p in (folder / backup_id / "artifacts").rglob("*") if p.is_file()),
            key=lambda p: p.stat().st_size,
        )
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
        key = victim.relative_to(folder / backup_id).as_posix()
        for args in (("verify", backup_id), ("restore", "--yes", backup_id)):
            failed = stack.run("run", "--rm", "-T", "backup", *args, check=False)
            assert failed.returncode == 1, args
            [line] = error_lines(failed.stderr)
            assert key in line and "corrupted" in line, line
    print("backup drill timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in stack.timings.items()))
