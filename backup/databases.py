"""Consistent copies of the backend and auth databases, and their atomic replacement.

SQLite: :meth:`sqlite3.Connection.backup` (a consistent snapshot even while a server writes)
and, on restore, a copy beside the live file moved over it with one ``rename``.

PostgreSQL: ``pg_dump --format=custom`` (one snapshot transaction) and ``pg_restore --clean
--if-exists --single-transaction --exit-on-error``: the restore commits as a whole or not at
all. pg_restore connects to the server and emits only the ``SET`` commands that server knows, so
a dump made by a newer client (17: ``SET transaction_timeout``) restores into PostgreSQL 16 too;
the client's major version must still be >= the server's for pg_dump (docs/backup.md).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL

from stack_common.errors import StackError, one_line

logger = logging.getLogger(__name__)

# Tables whose rows say "this stack holds something" (MLflow's backend and auth schemas).
_CONTENT = {
    "backend": {
        "runs": "SELECT count(*) FROM runs",
        "registered models": "SELECT count(*) FROM registered_models",
        "experiments": "SELECT count(*) FROM experiments WHERE experiment_id <> 0",
    },
    "auth": {"users": "SELECT count(*) FROM users"},
}


class Database:
    """One database of the stack, by SQLAlchemy URI; ``role`` is backend or auth."""

    def __init__(self, uri: str, role: str, pgpassword: str | None = None) -> None:
        self.url: URL = sqlalchemy.engine.make_url(uri)
        self.role = role
        self._pgpassword = pgpassword

    @property
    def kind(self) -> str:
        return self.url.get_backend_name()

    @property
    def name(self) -> str:
        if self.kind == "sqlite":
            return Path(self.url.database or "").name
        return self.url.database or ""

    @property
    def suffix(self) -> str:
        return "sqlite" if self.kind == "sqlite" else "dump"

    @property
    def path(self) -> Path:
        return Path(self.url.database or "")

    def describe(self) -> str:
        where = str(self.path) if self.kind == "sqlite" else f"{self.url.host}/{self.name}"
        return f"the {self.role} database ({self.kind} {where})"

    # --- existence and content -----------------------------------------------------------
    def exists(self) -> bool:
        if self.kind == "sqlite":
            return self.path.is_file()
        admin = self.url.set(database="postgres")
        rows = self._scalar(
            admin,
            "SELECT count(*) FROM pg_database WHERE datname = :name",
            {"name": self.name},
        )
        return bool(rows)

    def contents(self) -> dict[str, int]:
        """Row counts of what the stack holds here ({} for a missing or empty database)."""
        if not self.exists():
            return {}
        found = {}
        for label, sql in _CONTENT[self.role].items():
            try:
                count = self._scalar(self.url, sql)
            except StackError:
                continue  # no such table: an empty schema
            if count:
                found[label] = int(count)
        return found

    def other_connections(self) -> int:
        if self.kind != "postgresql" or not self.exists():
            return 0
        sql = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(self._scalar(self.url, sql) or 0)

    def _engine_url(self, url: URL) -> URL:
        if url.get_backend_name() == "postgresql" and self._pgpassword and not url.password:
            return url.set(password=self._pgpassword)
        return url

    def _scalar(self, url: URL, sql: str, params: dict | None = None):
        engine = sqlalchemy.create_engine(self._engine_url(url), poolclass=sqlalchemy.NullPool)
        try:
            with engine.connect() as conn:
                return conn.execute(sqlalchemy.text(sql), params or {}).scalar()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            reason = one_line(str(getattr(exc, "orig", exc)).splitlines()[0], 200)
            raise StackError(f"{self.describe()} did not answer: {reason}") from None
        finally:
            engine.dispose()

    # --- dump and restore ------------------------------------------------------------------
    def dump(self, target: Path, pg_dump: str = "pg_dump") -> None:
        """A consistent copy of the whole database in ``target``."""
        if self.kind == "sqlite":
            source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            copy = sqlite3.connect(target)
            try:
                with copy:
                    source.backup(copy)
            except sqlite3.Error as exc:
                raise StackError(f"could not copy {self.describe()}: {exc}") from None
            finally:
                copy.close()
                source.close()
            return
        self._run(
            [pg_dump, "--format=custom", "--no-owner", "--no-privileges", f"--file={target}"],
            "pg_dump",
        )

    def restore(self, dump: Path, pg_restore: str = "pg_restore") -> None:
        """Replace the database's contents with ``dump``, all at once or not at all."""
        if self.kind == "sqlite":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staged = self.path.with_name(f".{self.path.name}.restoring")
            staged.unlink(missing_ok=True)
            copy = sqlite3.connect(staged)
            source = sqlite3.connect(f"file:{dump}?mode=ro", uri=True)
            try:
                with copy:
                    source.backup(copy)
            finally:
                source.close()
                copy.close()
            for leftover in ("-wal", "-shm", "-journal"):
                Path(f"{self.path}{leftover}").unlink(missing_ok=True)
            staged.replace(self.path)  # atomic: the old file or the new one, never half
            return
        if not self.exists():
            self._create()
        self._run(
            [
                pg_restore,
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
                str(dump),
            ],
            "pg_restore",
        )

    def _create(self) -> None:
        from tracking_server.auth import ensure_database

        # Through a connection to the maintenance database 'postgres', as its owner would.
        admin = self._engine_url(self.url).set(database="postgres")
        ensure_database(
            self._engine_url(self.url).render_as_string(hide_password=False),
            admin.render_as_string(hide_password=False),
        )

    def _run(self, argv: list[str], tool: str) -> None:
        """Run a PostgreSQL client against this database; the password goes via PGPASSWORD."""
        conninfo = self.url.set(drivername="postgresql", password=None)
        env = dict(os.environ)
        password = self.url.password or self._pgpassword
        if password:
            env["PGPASSWORD"] = str(password)
        argv = [*argv, f"--dbname={conninfo.render_as_string(hide_password=False)}"]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise StackError(
                f"{tool} is not installed; install the PostgreSQL client (its major version "
                "at least the server's) or use the backup image"
            ) from None
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
            reason = one_line((errors or done.stderr.splitlines() or ["no output"])[0], 240)
            raise StackError(f"{tool} of {self.describe()} failed: {reason}")
