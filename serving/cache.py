"""A local cache of model versions for ephemeral disks, keyed by model name and version.

A download goes to a temporary folder and becomes an entry only by an atomic rename once every
file is written and checksummed, so a crash mid-download never leaves a half model behind. An
entry is verified against its checksums before reuse; a corrupt one is discarded and fetched
again. The alias last seen is remembered so serving can start while the registry is unreachable.

Several processes may share one cache folder (a blue/green pair, a restart overlapping its
predecessor): a ``.partial-*`` folder is removed only once nothing has written to it for
``partial_max_age_s`` (an hour by default), so a download still running elsewhere is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stack_common.model_digest import file_sha256

logger = logging.getLogger(__name__)

MANIFEST = ".stack-manifest.json"
ALIASES = "aliases.json"
PARTIAL_PREFIX = ".partial-"
PARTIAL_MAX_AGE_S = 3600.0


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    version: str
    size_bytes: int
    hit: bool
    seconds: float


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _folder_size(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:  # a file renamed or removed while we walk (download in progress)
            continue
    return total


def _last_write(folder: Path) -> float:
    """The newest modification time of ``folder`` or anything in it."""
    newest = 0.0
    for p in [folder, *folder.rglob("*")]:
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            continue
    return newest


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def _progress(folder: Path, total: int | None, label: str, enabled: bool) -> Iterator[None]:
    """A tqdm bar of the bytes landed in ``folder``, refreshed twice a second."""
    if not enabled:
        yield
        return
    from tqdm import tqdm

    bar = tqdm(
        total=total or None,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
    )
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            bar.n = _folder_size(folder)
            bar.refresh()

    watcher = threading.Thread(target=watch, name="cache-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        bar.n = _folder_size(folder)
        bar.close()


class ModelCache:
    """Versions of models on local disk; see the module docstring for the guarantees.

    ``progress``: show a byte progress bar while downloading; ``None`` = when stderr is a TTY.
    """

    def __init__(
        self,
        root: Path,
        keep_versions: int = 3,
        max_bytes: int = 0,
        partial_max_age_s: float = PARTIAL_MAX_AGE_S,
        progress: bool | None = None,
    ) -> None:
        self.root = Path(root)
        self.keep_versions = keep_versions
        self.max_bytes = max_bytes
        self.partial_max_age_s = partial_max_age_s
        self.progress = progress

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
        self,
        name: str,
        version: str,
        download: Callable[[Path], None],
        source: str = "",
        expected_bytes: int | None = None,
        check: Callable[[dict[str, str]], None] | None = None,
    ) -> CacheEntry:
        """Return the cached entry, downloading it with ``download(folder)`` when needed.

        ``download`` must fill the (empty) folder it is given; if it raises, nothing is kept.
        ``check`` is given the downloaded files' checksums before they become an entry; if it
        raises, nothing is kept either. ``expected_bytes`` only sizes the progress bar.
        """
        started = time.monotonic()
        entry = self.entry_path(name, version)
        if entry.exists():
            if self.verify(name, version):
                size = _folder_size(entry)
                seconds = time.monotonic() - started
                logger.info(
                    "cache hit: %s version %s (%.1f MB) verified in %.2fs at %s",
                    name,
                    version,
                    size / 1e6,
                    seconds,
                    entry,
                )
                return CacheEntry(entry, str(version), size, True, seconds)
            logger.warning("cache entry %s failed verification; downloading again", entry)
            shutil.rmtree(entry, ignore_errors=True)

        model_dir = self._model_dir(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale_partials(name)
        staging = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{version}-", dir=model_dir))
        show = stderr_is_tty() if self.progress is None else self.progress
        try:
            with _progress(staging, expected_bytes, f"{name} v{version}", show):
                download(staging)
            files = _checksums(staging)
            if not files:
                raise RuntimeError(f"download of {name} version {version} produced no files")
            if check is not None:
                check(files)
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
        self.clean_stale_partials(name)
        return removed

    def clean_stale_partials(self, name: str) -> list[Path]:
        """Remove ``.partial-*`` folders nothing has written to for ``partial_max_age_s``.

        A younger one may be a download in progress in another process sharing the cache.
        """
        model_dir = self._model_dir(name)
        if not model_dir.is_dir():
            return []
        cutoff = time.time() - self.partial_max_age_s
        removed = []
        for partial in model_dir.glob(f"{PARTIAL_PREFIX}*"):
            if partial.is_dir() and _last_write(partial) < cutoff:
                shutil.rmtree(partial, ignore_errors=True)
                logger.info("removed stale partial download %s", partial)
                removed.append(partial)
        return removed

    def remember_alias(self, name: str, alias: str, version: str) -> None:
        path = self._model_dir(name) / ALIASES
        path.parent.mkdir(parents=True, exist_ok=True)
        known = self._aliases(name)
        known[alias] = str(version)
        fd, tmp = tempfile.mkstemp(prefix=".aliases-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(known, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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
