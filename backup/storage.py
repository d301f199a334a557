"""Files in any store MLflow's artifact repositories reach: a folder, S3/MinIO or GCS.

Used twice: to read and write the stack's artifact objects, and to hold the backups
themselves (``BACKUP_DIR`` or ``BACKUP_URI``). MLflow's repositories bring the credentials
handling, endpoints (``MLFLOW_S3_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``) and retries.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
from collections.abc import Iterator
from pathlib import Path

from stack_common.errors import StackError, one_line

logger = logging.getLogger(__name__)


def _repository(uri: str):  # -> ArtifactRepository
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(uri)


class Store:
    """A tree of files under ``uri``, addressed by POSIX keys relative to it."""

    def __init__(self, uri: str, label: str) -> None:
        self.uri = uri
        self.label = label  # for messages, e.g. "the artifact store"
        self._repo = None

    @property
    def repo(self):
        if self._repo is None:
            self._repo = _repository(self.uri)
        return self._repo

    @property
    def local_root(self) -> Path | None:
        """The folder, when the store is one (direct file access, no copies)."""
        if "://" not in self.uri:
            return Path(self.uri)
        if self.uri.startswith("file://"):
            return Path(self.uri.removeprefix("file://"))
        return None

    def _fail(self, doing: str, exc: Exception) -> StackError:
        logger.debug("%s failed", doing, exc_info=True)
        return StackError(
            f"{doing} in {self.label} ({self.uri}) failed: {one_line(str(exc), 200)}; check "
            "that it is reachable and the credentials may read and write it"
        )

    def walk(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every file under ``prefix``: (key, size), sorted."""
        root = self.local_root
        if root is not None:
            base = root / prefix if prefix else root
            if not base.is_dir():
                return
            for path in sorted(base.rglob("*")):
                if path.is_file():
                    yield path.relative_to(root).as_posix(), path.stat().st_size
            return
        try:
            infos = sorted(self.repo.list_artifacts(prefix or None), key=lambda i: i.path)
        except Exception as exc:
            raise self._fail(f"listing {prefix or '/'}", exc) from None
        for info in infos:
            if info.is_dir:
                yield from self.walk(info.path)
            else:
                yield info.path, int(info.file_size or 0)

    def fetch(self, key: str, scratch: Path) -> Path:
        """A local file holding the object's bytes (the file itself for a folder store)."""
        root = self.local_root
        if root is not None:
            return root / key
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.repo.download_artifacts(key, dst_path=str(scratch)))
        except Exception as exc:
            if "not found" in str(exc).lower() or "404" in str(exc) or "NoSuchKey" in str(exc):
                return scratch / "missing" / key  # absent: the caller reports it by name
            raise self._fail(f"reading {key!r}", exc) from None

    def put(self, local: Path, key: str) -> None:
        """Write ``local`` as ``key`` (a folder store gets it through a temporary name)."""
        root = self.local_root
        if root is not None:
            target = root / key
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(local, partial)
            partial.replace(target)
            return
        directory, name = posixpath.split(key)
        try:
            if local.name == name:
                self.repo.log_artifact(str(local), directory or None)
            else:
                renamed = local.with_name(f"{local.name}.upload") / name
                renamed.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local, renamed)
                try:
                    self.repo.log_artifact(str(renamed), directory or None)
                finally:
                    shutil.rmtree(renamed.parent, ignore_errors=True)
        except Exception as exc:
            raise self._fail(f"writing {key!r}", exc) from None

    def check_writable(self) -> None:
        """A folder target the current user cannot write fails now, with the fix, not after
        the dumps (a bind mount Docker created for root, say)."""
        root = self.local_root
        if root is None:
            return
        probe = root / f".write-probe-{os.getpid()}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StackError(
                f"{self.label} {root} is not writable by uid {os.getuid()} ({exc.strerror}); "
                "create it as its owner (mkdir -p backups) and, with Compose, set BACKUP_UID and "
                "BACKUP_GID in .env to that owner's (docs/backup.md)"
            ) from None

    def read_text(self, key: str, scratch: Path) -> str | None:
        path = self.fetch(key, scratch)
        return path.read_text() if path.is_file() else None

    def children(self) -> list[str]:
        """The names directly under the root (backup IDs in a backup target)."""
        root = self.local_root
        if root is not None:
            return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        try:
            infos = self.repo.list_artifacts()
            return sorted(posixpath.basename(i.path) for i in infos if i.is_dir)
        except Exception as exc:
            raise self._fail("listing backups", exc) from None
