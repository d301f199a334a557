"""One digest for a model version's files, computed the same way where they are registered and
where they are served.

The tracking server records it as a version tag when the version is registered
(tracking_server/version_digest.py); serving recomputes it over what it downloaded and refuses
files that do not match (serving/model_source.py). A file changed in the bucket behind the
stack's back, by anyone, is therefore never served. The digest is sha256 over a manifest of
every file (its path relative to the model's folder, with ``/``, and the file's own sha256),
sorted by path, so it does not depend on listing order or on where the folder lies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

# The model version tag holding the digest; ``stack.`` tags are for admins and the server only.
DIGEST_TAG = "stack.files_sha256"
# Files serving itself adds beside a model's (its cache manifest) are not the model's.
IGNORED_PREFIX = ".stack-"
# Nor is the file MLflow writes into every ``models:/`` download, naming the model and version
# (``mlflow.store.artifact.models_artifact_repo.REGISTERED_MODEL_META_FILE_NAME``; a unit test
# checks the name).
DOWNLOAD_META_FILE = "registered_model_meta"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_digest(checksums: Mapping[str, str]) -> str:
    """The digest of ``{relative path: sha256}`` (files a download added left out)."""
    paths = sorted(path for path in checksums if model_file(path))
    manifest = "".join(f"{path}\t{checksums[path]}\n" for path in paths)
    return hashlib.sha256(manifest.encode()).hexdigest()


def model_file(relative: str) -> bool:
    """Whether a file of a downloaded folder is the model's, not one a download added."""
    return not (
        relative.rsplit("/", 1)[-1].startswith(IGNORED_PREFIX) or relative == DOWNLOAD_META_FILE
    )


def folder_checksums(folder: Path) -> dict[str, str]:
    checksums = {}
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and model_file(relative):
            checksums[relative] = file_sha256(path)
    return checksums


def folder_digest(folder: Path) -> str:
    """The digest of every file below ``folder``."""
    return files_digest(folder_checksums(folder))
