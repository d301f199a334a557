"""Consistent copies of the backend and auth databases, and their atomic replacement.

SQLite: :meth:`sqlite3.Connection.backup` (a consistent snapshot even while a server writes)
and, on restore, a copy beside the live file moved over it with one ``rename``.

PostgreSQL: ``pg_dump --format=custom`` (one snapshot transaction). Restore: ``pg_restore
--clean --if-exists`` turns the archive into SQL, which ``psql --single-transaction`` with
``ON_ERROR_STOP`` runs: it commits as a whole or not at all. In between, the script's preamble
loses ``SET transaction_timeout`` (pg_restore 17+ writes it; PostgreSQL 16 and older reject the
unknown setting, and 0 is its default anyway), so the image's client 17 restores into the
Compose server 16. The client's major version must be >= the server's for pg_dump
(docs/backup.md).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
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

    def restore(self, dump: Path, pg_restore: str = "pg_restore", psql: str = "psql") -> None:
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
        self._restore_script(dump, pg_restore, psql)

    def _create(self) -> None:
        from tracking_server.auth import ensure_database

        # Through a connection to the maintenance database 'postgres', as its owner would.
        admin = self._engine_url(self.url).set(database="postgres")
        ensure_database(
            self._engine_url(self.url).render_as_string(hide_password=False),
            admin.render_as_string(hide_password=False),
        )

    def _client_env(self) -> dict[str, str]:
        """libpq's environment: the password via PGPASSWORD, never on the command line."""
        env = dict(os.environ)
        password = self.url.password or self._pgpassword
        if password:
            env["PGPASSWORD"] = str(password)
        return env

    def _dbname(self) -> str:
        conninfo = self.url.set(drivername="postgresql", password=None)
        return f"--dbname={conninfo.render_as_string(hide_password=False)}"

    def _run(self, argv: list[str], tool: str) -> None:
        """Run a PostgreSQL client against this database."""
        try:
            done = subprocess.run(
                [*argv, self._dbname()],
                env=self._client_env(),
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            raise _not_installed(tool) from None
        if done.returncode != 0:
            raise StackError(f"{tool} of {self.describe()} failed: {_reason(done.stderr)}")

    def _restore_script(self, dump: Path, pg_restore: str, psql: str) -> None:
        """pg_restore's SQL, preamble filtered, into psql as one transaction."""
        script = [pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges", "-f", "-"]
        runner = [psql, "--quiet", "--no-psqlrc", "--single-transaction", "-v", "ON_ERROR_STOP=1"]
        env = self._client_env()
        try:
            producer = subprocess.Popen(
                [*script, str(dump)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
        except FileNotFoundError:
            raise _not_installed(pg_restore) from None
        try:
            consumer = subprocess.Popen(
                [*runner, self._dbname()],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
            )
        except FileNotFoundError:
            producer.kill()
            raise _not_installed(psql) from None
        assert producer.stdout is not None and consumer.stdin is not None
        try:
            for line in compatible_script(producer.stdout):
                consumer.stdin.write(line)
        except BrokenPipeError:
            pass  # psql stopped at an error: reported below
        finally:
            consumer.stdin.close()
            producer.stdout.close()
        produced_err = producer.stderr.read().decode(errors="replace") if producer.stderr else ""
        consumed_err = consumer.stderr.read().decode(errors="replace") if consumer.stderr else ""
        if producer.wait() != 0:
            consumer.wait()
            raise StackError(f"pg_restore of {self.describe()} failed: {_reason(produced_err)}")
        if consumer.wait() != 0:
            raise StackError(
                f"restoring {self.describe()} failed and was rolled back (the database is as "
                f"before): {_reason(consumed_err)}"
            )


# Settings pg_restore 17+ writes into the script's preamble that older servers do not know.
_NEWER_SETTINGS = (b"SET transaction_timeout ",)


def compatible_script(lines: Iterable[bytes]) -> Iterator[bytes]:
    """pg_restore's script without settings older servers reject, in its preamble only (the
    SET/set_config lines before the first statement), so table data is never touched."""
    preamble = True
    for line in lines:
        if preamble:
            stripped = line.strip()
            if stripped.startswith(_NEWER_SETTINGS):
                continue
            # psql meta-commands (\restrict, 17.6+), comments, SET and set_config() lines
            if stripped and not stripped.startswith((b"--", b"\\", b"SET ", b"SELECT pg_catalog.")):
                preamble = False
        yield line


def _not_installed(tool: str) -> StackError:
    return StackError(
        f"{tool} is not installed; install the PostgreSQL client (its major version at least "
        "the server's) or use the backup image"
    )


def _reason(stderr: str) -> str:
    lines = stderr.splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    return one_line((errors or lines or ["no output"])[0], 240)
