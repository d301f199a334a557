"""What a backup holds and how to prove it is intact: every file with its size and sha256.

A backup is a folder ``<ID>/`` in the backup target::

    <ID>/databases/backend.(sqlite|dump)   the backend store (SQLite copy or pg_dump -Fc)
    <ID>/databases/auth.(sqlite|dump)      MLflow's users and permissions, if the stack has any
    <ID>/artifacts/<key>                   every artifact object, under its key in the store
    <ID>/manifest.json                     written last: a backup without it is incomplete

The manifest is pure data (no URIs with credentials, no environment), so it can be read and
checked anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from stack_common.errors import StackError

FORMAT = 1
MANIFEST = "manifest.json"
_CHUNK = 1024 * 1024
_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


class CorruptBackup(StackError):
    """A file of a backup is missing or does not match its checksum."""


def new_id(now: datetime | None = None) -> str:
    """``20260101T120000Z-1a2b3c``: sorts by time, unique even for two backups in a second."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def check_id(backup_id: str) -> str:
    if not _ID.match(backup_id):
        raise StackError(
            f"{backup_id!r} is not a backup ID (like 20260101T120000Z-1a2b3c); "
            "`stack-backup list` shows them"
        )
    return backup_id


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One file of the backup: ``path`` inside ``<ID>/``, its size and sha256."""

    path: str
    size: int
    sha256: str

    @classmethod
    def of(cls, path: str, local: Path) -> Entry:
        return cls(path=path, size=local.stat().st_size, sha256=sha256_file(local))

    def check(self, local: Path) -> None:
        """Raise :class:`CorruptBackup` naming this file unless ``local`` is its exact bytes."""
        if not local.is_file():
            raise CorruptBackup(f"backup file {self.path!r} is missing; the backup is unusable")
        size = local.stat().st_size
        if size != self.size:
            raise CorruptBackup(
                f"backup file {self.path!r} has {size} bytes, the manifest says {self.size}; "
                "the backup is corrupted: use another one"
            )
        if sha256_file(local) != self.sha256:
            raise CorruptBackup(
                f"backup file {self.path!r} does not match its sha256 in the manifest; "
                "the backup is corrupted: use another one"
            )


@dataclass(frozen=True)
class Database:
    """A dumped database: ``kind`` sqlite or postgresql, and its file in the backup."""

    kind: str
    name: str
    file: Entry


@dataclass
class Manifest:
    id: str
    created: str
    backend: Database
    auth: Database | None
    artifacts_store: str  # s3, gcs or local: informative only
    artifacts: list[Entry] = field(default_factory=list)
    format: int = FORMAT

    @property
    def files(self) -> list[Entry]:
        dbs = [self.backend.file] + ([self.auth.file] if self.auth else [])
        return dbs + self.artifacts

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Manifest:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise CorruptBackup(
                    f"{source} has format {data.get('format')!r}, this stack-backup reads "
                    f"format {FORMAT}; use the stack-backup version that wrote it"
                )

            def database(raw: dict | None) -> Database | None:
                if raw is None:
                    return None
                return Database(raw["kind"], raw["name"], Entry(**raw["file"]))

            backend = database(data["backend"])
            assert backend is not None
            return cls(
                id=check_id(data["id"]),
                created=data["created"],
                backend=backend,
                auth=database(data["auth"]),
                artifacts_store=data["artifacts_store"],
                artifacts=[Entry(**raw) for raw in data["artifacts"]],
            )
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise CorruptBackup(
                f"{source} is unreadable ({type(exc).__name__}: {exc}); the backup is "
                "corrupted: use another one"
            ) from None
