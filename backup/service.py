"""create, list, verify and restore: what ``stack-backup`` does, without the command line."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backup.databases import Database
from backup.manifest import (
    MANIFEST,
    CorruptBackup,
    Entry,
    Manifest,
    check_id,
    new_id,
    sha256_file,
)
from backup.manifest import Database as DumpedDatabase
from backup.settings import BackupSettings
from backup.storage import Store
from stack_common.errors import StackError

logger = logging.getLogger(__name__)

MANIFEST_SUM = "manifest.sha256"


class Stack:
    """The live stack the settings describe: two databases and the artifact store."""

    def __init__(self, settings: BackupSettings) -> None:
        password = settings.pgpassword.get_secret_value() if settings.pgpassword else None
        self.settings = settings
        self.backend = Database(settings.backend_store_uri, "backend", password)
        self.auth = Database(settings.auth_database_uri, "auth", password)
        self.artifacts = Store(settings.artifacts_destination, "the artifact store")
        self.backups = Store(settings.target, "the backup target")

    @property
    def artifacts_kind(self) -> str:
        dest = self.settings.artifacts_destination
        return "s3" if dest.startswith("s3://") else "gcs" if dest.startswith("gs://") else "local"


# --- create --------------------------------------------------------------------------------
def create(settings: BackupSettings) -> Manifest:
    """One backup: databases first (their snapshot is the recovery point), then every object.

    Artifacts are written before the runs that reference them are committed, so objects listed
    after the database snapshot cover every run in it; newer objects are harmless extras.
    """
    stack = Stack(settings)
    if not stack.backend.exists():
        raise StackError(
            f"{stack.backend.describe()} does not exist; check MLFLOW_BACKEND_STORE_URI "
            "(and STACK_DATA_DIR): there is nothing to back up"
        )
    stack.backups.check_writable()
    backup_id = new_id()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="stack-backup-") as scratch_name:
        scratch = Path(scratch_name)

        def store(local: Path, path: str) -> Entry:
            entry = Entry.of(path, local)
            stack.backups.put(local, f"{backup_id}/{path}")
            return entry

        def dump(db: Database) -> DumpedDatabase:
            local = scratch / f"{db.role}.{db.suffix}"
            db.dump(local, settings.pg_dump)
            entry = store(local, f"databases/{db.role}.{db.suffix}")
            local.unlink()
            logger.info("backed up %s (%d bytes)", db.describe(), entry.size)
            return DumpedDatabase(db.kind, db.name, entry)

        backend = dump(stack.backend)
        auth = dump(stack.auth) if stack.auth.exists() else None
        if auth is None:
            logger.info("no auth database (%s): basic auth is off", stack.auth.describe())

        entries = []
        for key, _size in stack.artifacts.walk():
            local = stack.artifacts.fetch(key, scratch / "objects")
            entries.append(store(local, f"artifacts/{key}"))
            if not stack.artifacts.local_root:
                local.unlink(missing_ok=True)
        logger.info("backed up %d artifact objects", len(entries))

        manifest = Manifest(
            id=backup_id,
            created=created,
            backend=backend,
            auth=auth,
            artifacts_store=stack.artifacts_kind,
            artifacts=entries,
        )
        text = scratch / MANIFEST
        text.write_text(manifest.to_json())
        checksum = scratch / MANIFEST_SUM
        checksum.write_text(f"{sha256_file(text)}  {MANIFEST}\n")
        stack.backups.put(checksum, f"{backup_id}/{MANIFEST_SUM}")
        stack.backups.put(text, f"{backup_id}/{MANIFEST}")  # last: the backup is complete
    return manifest


# --- list and verify -----------------------------------------------------------------------
@dataclass
class Listing:
    complete: list[Manifest] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def load(stack: Stack, backup_id: str, scratch: Path) -> Manifest:
    check_id(backup_id)
    manifest = stack.backups.fetch(f"{backup_id}/{MANIFEST}", scratch)
    if not manifest.is_file():
        raise StackError(
            f"no complete backup {backup_id!r} in {stack.backups.uri}; `stack-backup list` "
            "shows the backups there"
        )
    checksum = stack.backups.read_text(f"{backup_id}/{MANIFEST_SUM}", scratch)
    if checksum is None or checksum.split()[0] != sha256_file(manifest):
        raise CorruptBackup(
            f"backup file '{MANIFEST}' of {backup_id} does not match {MANIFEST_SUM}; the backup "
            "is corrupted: use another one"
        )
    return Manifest.from_json(manifest.read_text(), f"{MANIFEST} of {backup_id}")


def list_backups(settings: BackupSettings) -> Listing:
    stack = Stack(settings)
    listing = Listing()
    with tempfile.TemporaryDirectory(prefix="stack-backup-") as scratch:
        for name in stack.backups.children():
            try:
                listing.complete.append(load(stack, name, Path(scratch) / name))
            except StackError:
                listing.incomplete.append(name)
    return listing


def verify(settings: BackupSettings, backup_id: str) -> Manifest:
    """Re-read every file of the backup and check its size and sha256."""
    stack = Stack(settings)
    with tempfile.TemporaryDirectory(prefix="stack-backup-") as scratch_name:
        scratch = Path(scratch_name)
        manifest = load(stack, backup_id, scratch)
        for entry in manifest.files:
            local = stack.backups.fetch(f"{backup_id}/{entry.path}", scratch / "files")
            entry.check(local)
            if not stack.backups.local_root:
                local.unlink(missing_ok=True)
    return manifest


# --- restore -------------------------------------------------------------------------------
@dataclass
class Plan:
    """What a restore would replace in a non-empty stack."""

    backend: dict[str, int]
    auth: dict[str, int]
    objects: int

    @property
    def empty(self) -> bool:
        return not (self.backend or self.auth or self.objects)

    def describe(self) -> str:
        parts = []
        for label, counts in (("backend store", self.backend), ("auth database", self.auth)):
            if counts:
                parts.append(f"{label}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
        if self.objects:
            parts.append(f"artifact store: {self.objects} objects")
        return "; ".join(parts)


def plan(settings: BackupSettings) -> Plan:
    stack = Stack(settings)
    return Plan(
        backend=stack.backend.contents(),
        auth=stack.auth.contents(),
        objects=sum(1 for _ in stack.artifacts.walk()),
    )


@dataclass
class Restored:
    manifest: Manifest
    written: int
    unchanged: int
    extra: int


def restore(settings: BackupSettings, backup_id: str) -> Restored:
    """Verify the whole backup, then replace both databases, then write back the objects.

    Nothing is touched until every checksum matched. Each database is replaced atomically
    (one transaction, or one rename); objects are written missing-or-different only, so a
    restore that stopped half-way is finished by running it again.
    """
    stack = Stack(settings)
    manifest = verify(settings, backup_id)
    running = settings.data_dir / "run" / "services.json"  # written by `stack-local up`
    if stack.backend.kind == "sqlite" and running.exists():
        raise StackError(
            f"the local stack runs ({running}); stop it first (make down), then restore"
        )
    for db in (stack.backend, stack.auth):
        busy = db.other_connections()
        if busy:
            raise StackError(
                f"{db.describe()} has {busy} other connection(s): stop the tracking server "
                "first (docker compose stop tracking-server serving), then restore"
            )
    with tempfile.TemporaryDirectory(prefix="stack-backup-") as scratch_name:
        scratch = Path(scratch_name)
        targets = [(stack.backend, manifest.backend)]
        if manifest.auth:
            targets.append((stack.auth, manifest.auth))
        for db, dumped in targets:
            local = stack.backups.fetch(f"{backup_id}/{dumped.file.path}", scratch / "db")
            dumped.file.check(local)  # again: it may have changed since verify
            db.restore(local, settings.pg_restore, settings.psql)
            logger.info("restored %s", db.describe())
        if manifest.auth is None and stack.auth.exists():
            logger.warning("the backup has no auth database; %s left alone", stack.auth.describe())

        present = dict(stack.artifacts.walk())
        written = unchanged = 0
        for entry in manifest.artifacts:
            key = entry.path.removeprefix("artifacts/")
            if present.get(key) == entry.size and _same(stack.artifacts, key, entry, scratch):
                unchanged += 1
                continue
            local = stack.backups.fetch(f"{backup_id}/{entry.path}", scratch / "objects")
            entry.check(local)
            stack.artifacts.put(local, key)
            written += 1
        keys = {entry.path.removeprefix("artifacts/") for entry in manifest.artifacts}
        extra = len(set(present) - keys)
    return Restored(manifest, written, unchanged, extra)


def _same(store: Store, key: str, entry: Entry, scratch: Path) -> bool:
    local = store.fetch(key, scratch / "current")
    try:
        digest = sha256_file(local) if local.is_file() else None
    finally:
        if not store.local_root:
            local.unlink(missing_ok=True)
    return digest == entry.sha256
