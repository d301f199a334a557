"""The digest of a version's files: the same wherever the folder is and however it is listed,
different as soon as a byte or a file changes; and serving's check of a download against it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from serving.model_source import FilesDoNotMatch, digest_check
from serving.settings import ServingSettings
from stack_common.model_digest import files_digest, folder_checksums, folder_digest


def model_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    return root


def test_the_digest_does_not_depend_on_where_the_folder_is_or_its_order(tmp_path: Path) -> None:
    one = folder_digest(model_folder(tmp_path / "a"))
    assert one == folder_digest(model_folder(tmp_path / "b"))
    checksums = folder_checksums(tmp_path / "a")
    assert files_digest(dict(reversed(list(checksums.items())))) == one
    assert set(checksums) == {"MLmodel", "sub/weights.bin"}


def test_a_changed_byte_an_added_file_or_a_renamed_one_change_the_digest(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    before = folder_digest(folder)
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x02" + b"\x00\x01" * 99)
    changed = folder_digest(folder)
    (folder / "extra.py").write_text("import os\n")
    added = folder_digest(folder)
    (folder / "extra.py").rename(folder / "other.py")
    assert len({before, changed, added, folder_digest(folder)}) == 4


def test_serving_adds_its_manifest_beside_the_files_without_changing_the_digest(
    tmp_path: Path,
) -> None:
    folder = model_folder(tmp_path / "m")
    before = folder_digest(folder)
    (folder / ".stack-manifest.json").write_text("{}")
    assert folder_digest(folder) == before


def check_with(monkeypatch: pytest.MonkeyPatch, recorded: str | None):
    monkeypatch.setattr("serving.model_source.recorded_digest", lambda settings, v: recorded)
    return digest_check(ServingSettings.from_env({}), "3")


def test_a_download_whose_files_differ_from_the_recorded_digest_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checksums = folder_checksums(model_folder(tmp_path / "m"))
    check_with(monkeypatch, files_digest(checksums))(checksums)  # the same files: kept
    with pytest.raises(FilesDoNotMatch, match="version 3: files do not match"):
        check_with(monkeypatch, "0" * 64)(checksums)


def test_a_version_without_a_recorded_digest_is_served_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checksums = folder_checksums(model_folder(tmp_path / "m"))
    with caplog.at_level(logging.WARNING, logger="serving.model_source"):
        check_with(monkeypatch, None)(checksums)
    assert "served unverified" in caplog.text


def test_the_file_mlflow_adds_to_every_models_download_is_not_part_of_the_model(
    tmp_path: Path,
) -> None:
    from mlflow.store.artifact.models_artifact_repo import REGISTERED_MODEL_META_FILE_NAME

    from stack_common.model_digest import DOWNLOAD_META_FILE

    assert DOWNLOAD_META_FILE == REGISTERED_MODEL_META_FILE_NAME, "MLflow renamed the file"
    folder = model_folder(tmp_path / "m")
    before = folder_digest(folder)
    (folder / DOWNLOAD_META_FILE).write_text("model_name: m\nmodel_version: 1\n")
    assert folder_digest(folder) == before
    assert files_digest(folder_checksums(folder) | {DOWNLOAD_META_FILE: "x"}) == before
