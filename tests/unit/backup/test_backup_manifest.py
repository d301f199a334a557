"""The backup's manifest and checksums: what makes a changed byte impossible to miss."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup.manifest import (
    CorruptBackup,
    Database,
    Entry,
    Manifest,
    check_id,
    new_id,
    sha256_file,
)
from backup.settings import BackupSettings
from backup.storage import Store
from stack_common.errors import ConfigError, StackError


def manifest_with(tmp_path: Path) -> tuple[Manifest, dict[str, Path]]:
    files = {
        "databases/backend.sqlite": b"backend bytes",
        "artifacts/1/abc/artifacts/model/MLmodel": b"flavors: {}\n",
        "artifacts/1/abc/artifacts/model/model.pkl": bytes(range(256)) * 10,
    }
    local = {}
    for path, data in files.items():
        local[path] = tmp_path / path
        local[path].parent.mkdir(parents=True, exist_ok=True)
        local[path].write_bytes(data)
    manifest = Manifest(
        id=new_id(),
        created="2026-01-01T00:00:00+00:00",
        backend=Database(
            "sqlite",
            "mlflow.db",
            Entry.of("databases/backend.sqlite", local["databases/backend.sqlite"]),
        ),
        auth=None,
        artifacts_store="local",
        artifacts=[Entry.of(p, local[p]) for p in files if p.startswith("artifacts/")],
    )
    return manifest, local


def test_sha256_of_a_file_is_hashlibs_over_its_bytes_read_in_chunks(tmp_path: Path) -> None:
    big = tmp_path / "big"
    data = b"x" * (3 * 1024 * 1024 + 17)  # more than one read chunk
    big.write_bytes(data)
    assert sha256_file(big) == hashlib.sha256(data).hexdigest()


def test_an_intact_file_passes_its_check(tmp_path: Path) -> None:
    manifest, local = manifest_with(tmp_path)
    for entry in manifest.files:
        entry.check(local[entry.path])
    assert manifest.size == sum(p.stat().st_size for p in local.values())


def test_one_changed_byte_fails_with_one_line_naming_the_file(tmp_path: Path) -> None:
    manifest, local = manifest_with(tmp_path)
    victim = manifest.artifacts[1]
    data = bytearray(local[victim.path].read_bytes())
    data[100] ^= 0x01  # same size, one bit different
    local[victim.path].write_bytes(bytes(data))
    with pytest.raises(CorruptBackup) as failed:
        victim.check(local[victim.path])
    message = str(failed.value)
    assert victim.path in message and "sha256" in message and "\n" not in message
    assert isinstance(failed.value, StackError)  # the CLI prints it as one `Error:` line


def test_a_truncated_or_missing_file_is_named_too(tmp_path: Path) -> None:
    manifest, local = manifest_with(tmp_path)
    entry = manifest.backend.file
    local[entry.path].write_bytes(b"backend")
    with pytest.raises(CorruptBackup, match=r"databases/backend\.sqlite.*bytes"):
        entry.check(local[entry.path])
    local[entry.path].unlink()
    with pytest.raises(CorruptBackup, match=r"databases/backend\.sqlite.*missing"):
        entry.check(local[entry.path])


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest, _ = manifest_with(tmp_path)
    again = Manifest.from_json(manifest.to_json(), "manifest.json")
    assert again == manifest


def test_an_unreadable_manifest_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    manifest, _ = manifest_with(tmp_path)
    raw = json.loads(manifest.to_json())
    del raw["artifacts"]
    for text in ("{not json", json.dumps(raw), json.dumps({**raw, "format": 99})):
        with pytest.raises(CorruptBackup) as failed:
            Manifest.from_json(text, "manifest.json of X")
        assert "manifest.json of X" in str(failed.value) and "\n" not in str(failed.value)


def test_backup_ids_sort_by_time_and_reject_anything_else() -> None:
    early = new_id(datetime(2026, 1, 1, 9, 0, tzinfo=UTC))
    late = new_id(datetime(2026, 1, 1, 10, 0, tzinfo=UTC))
    assert early < late and check_id(early) == early
    for bad in ("latest", "../etc", early + "/x", ""):
        with pytest.raises(StackError, match="not a backup ID"):
            check_id(bad)


def test_a_folder_store_lists_every_file_with_its_size(tmp_path: Path) -> None:
    _, local = manifest_with(tmp_path)
    found = dict(Store(str(tmp_path), "test").walk("artifacts"))
    assert found == {p: local[p].stat().st_size for p in local if p.startswith("artifacts/")}


def test_settings_default_to_the_local_stack_and_read_the_services_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "")  # empty = unset (a .env template)
    settings = BackupSettings.from_env()
    assert settings.backend_store_uri == f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"
    assert settings.auth_database_uri == f"sqlite:///{tmp_path / 'data' / 'basic_auth.db'}"
    assert settings.artifacts_destination == str(tmp_path / "data" / "artifacts")
    assert settings.target == str(Path("backups").resolve())

    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql+psycopg2://mlflow@db:5432/mlflow")
    monkeypatch.setenv("BACKUP_URI", "s3://backups/stack/")
    settings = BackupSettings.from_env()
    assert settings.auth_database_uri.endswith("@db:5432/mlflow_auth")
    assert settings.target == "s3://backups/stack"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BACKUP_URI", "ftp://host/backups"),
        ("MLFLOW_BACKEND_STORE_URI", "mysql://u@h/db"),
        ("MLFLOW_S3_ENDPOINT_URL", "minio:9000"),
    ],
)
def test_unusable_settings_name_the_variable(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        BackupSettings.from_env()


def test_pg17_settings_leave_the_preamble_and_nothing_else() -> None:
    """pg_restore 17 writes SET transaction_timeout, which PostgreSQL 16 rejects; data rows
    that happen to read the same stay."""
    from backup.databases import compatible_script

    script = [
        b"--\n",
        b"\\restrict abc123\n",
        b"SET statement_timeout = 0;\n",
        b"SET transaction_timeout = 0;\n",
        b"SELECT pg_catalog.set_config('search_path', '', false);\n",
        b"DROP TABLE IF EXISTS public.runs;\n",
        b"COPY public.tags (value) FROM stdin;\n",
        b"SET transaction_timeout = 0;\n",
        b"\\.\n",
    ]
    out = list(compatible_script(script))
    assert out == script[:3] + script[4:]


def test_an_unwritable_backup_folder_fails_at_once_with_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root writes anyway: a file where the folder should be
            folder.chmod(0o700)
            folder.rmdir()
            folder.write_text("")
        with pytest.raises(StackError, match=r"not writable by uid \d+ .*BACKUP_UID"):
            Store(str(folder), "BACKUP_DIR").check_writable()
    finally:
        if folder.is_dir():
            folder.chmod(0o700)
