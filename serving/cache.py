"""A local cache of model versions for ephemeral disks, keyed by model name and version.

A download goes to a temporary folder and becomes an entry only by an atomic rename once every
file is written and checksummed, so a crash mid-download never leaves a half model behind. An
entry is verified against its checksums before reuse; a corrupt one is discarded and fetched
again. The alias last seen is remembered so serving can start while the registry is unreachable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = ".stack-manifest.json"
ALIASES = "aliases.json"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    version: str
    size_bytes: int
    hit: bool
    seconds: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class ModelCache:
    def __init__(self, root: Path, keep_versions: int = 3, max_bytes: int = 0) -> None:
        self.root = root
        self.keep_versions = keep_versions
        self.max_bytes = max_bytes

    def _model_dir(self, name: str) -> Path:
        return self.root / name

    def entry_path(self, name: str, version: str) -> Path:
        return self._model_dir(name) / str(version)

    def verify(self, name: str, version: str) -> bool:
        entry = self.entry_path(name, version)
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
        except (OSError, ValueError):
            return False
        return manifest.get("files") == _checksums(entry)

    def fetch(
        self, name: str, version: str, download: Callable[[Path], None], source: str = ""
    ) -> CacheEntry:
        """Return the cached entry, downloading it with ``download(folder)`` when needed."""
        started = time.monotonic()
        entry = self.entry_path(name, version)
        if entry.exists():
            if self.verify(name, version):
                size = _folder_size(entry)
                logger.info("cache hit: %s version %s (%d bytes) at %s", name, version, size, entry)
                return CacheEntry(entry, str(version), size, True, time.monotonic() - started)
            logger.warning("cache entry %s failed verification; downloading again", entry)
            shutil.rmtree(entry, ignore_errors=True)

        model_dir = self._model_dir(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".partial-{version}-", dir=model_dir))
        try:
            download(staging)
            files = _checksums(staging)
            if not files:
                raise RuntimeError(f"download of {name} version {version} produced no files")
            size = _folder_size(staging)
            manifest = {
                "model_name": name,
                "version": str(version),
                "source": source,
                "files": files,
                "size_bytes": size,
                "downloaded_at": time.time(),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
            try:
                os.rename(staging, entry)
            except OSError:
                if not self.verify(name, version):  # lost a race to a sound entry? keep that one
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        seconds = time.monotonic() - started
        logger.info(
            "downloaded %s version %s from %s: %.1f MB in %.2fs (%.1f MB/s)",
            name,
            version,
            source or "registry",
            size / 1e6,
            seconds,
            size / 1e6 / seconds if seconds else 0.0,
        )
        return CacheEntry(entry, str(version), size, False, seconds)

    def versions(self, name: str) -> list[str]:
        model_dir = self._model_dir(name)
        if not model_dir.is_dir():
            return []
        found = [p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        return sorted(found, key=int)

    def evict(self, name: str, protect: str) -> list[str]:
        """Drop the oldest versions beyond the count or size limit, never ``protect``."""
        removed: list[str] = []
        candidates = [v for v in self.versions(name) if v != str(protect)]
        sizes = {v: _folder_size(self.entry_path(name, v)) for v in self.versions(name)}

        def over_limits() -> bool:
            kept = [v for v in sizes if v not in removed]
            too_many = len(kept) > self.keep_versions
            too_big = self.max_bytes > 0 and sum(sizes[v] for v in kept) > self.max_bytes
            return too_many or too_big

        for version in candidates:  # oldest first
            if not over_limits():
                break
            shutil.rmtree(self.entry_path(name, version), ignore_errors=True)
            removed.append(version)
            logger.info("evicted %s version %s from the cache", name, version)
        for stale in (
            self._model_dir(name).glob(".partial-*") if self._model_dir(name).is_dir() else []
        ):
            shutil.rmtree(stale, ignore_errors=True)
        return removed

    def remember_alias(self, name: str, alias: str, version: str) -> None:
        path = self._model_dir(name) / ALIASES
        path.parent.mkdir(parents=True, exist_ok=True)
        known = self._aliases(name)
        known[alias] = str(version)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, path)

    def cached_alias(self, name: str, alias: str) -> str | None:
        version = self._aliases(name).get(alias)
        if version is not None and self.verify(name, version):
            return version
        return None

    def _aliases(self, name: str) -> dict[str, str]:
        try:
            return json.loads((self._model_dir(name) / ALIASES).read_text())
        except (OSError, ValueError):
            return {}
