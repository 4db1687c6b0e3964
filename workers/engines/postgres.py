"""PostgreSQL engine: pg_dump -Fc to a staging file, pg_restore --list to verify, pg_restore to restore.

pg_dump writes the archive itself (``--file``, a ``.partial`` name renamed on success): nothing is buffered
in Python, and a seekable file keeps the data offsets pg_restore needs. Connection parameters and the
password travel in ``PG*`` environment variables, never on a command line or in a message. Checks before
and after (database exists, tables and rows after a restore) go through pyodbc and the psqlODBC driver.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from typing import Any, Callable, Iterator

import pyodbc

from workers.engines.base import (BackupResult, Progress, ProgressReporter, RestoreOptions, RestoreResult,
                                  require_name, sha256_of)
from workers.engines.preflight import TargetState
from workers.engines.odbc import ConnectFn, braced, clean_text, error_parts
from workers.engines.postgres_consistency import check_consistency
from workers.engines.postgres_errors import classify
from workers.engines.postgres_stream import restore_streamed
from workers.engines.postgres_preflight import restore_preflight
from workers.engines.postgres_tools import archive_listing, create_private, run_tool
from workers.engines.postgres_text import USER_TABLES, conninfo_value, quote_ident
from workers.engines.settings import DatabaseSettings
from workers.runtime.errors import DrError, PermanentError

log = logging.getLogger(__name__)

NAME_LENGTH = 63                      # NAMEDATALEN - 1, in bytes
_ODBC_UNSAFE = ";{}"                  # psqlODBC takes DATABASE / UID verbatim: no braces, no ';'
_DUMPING = re.compile(r'dumping contents of table "(.+)"$')
_RESTORING = re.compile(r'processing data for table "(.+)"$')


class PostgresEngine:
    """:class:`~workers.engines.base.DatabaseEngine` for PostgreSQL (pg_dump / pg_restore + pyodbc)."""

    name = "postgres"

    def __init__(self, settings: DatabaseSettings, *, connect: ConnectFn | None = None) -> None:
        self.settings = settings
        self._connect = connect or pyodbc.connect
        self.server = f"{settings.server}:{settings.effective_port}"
        self._password = settings.password.get_secret_value() if settings.password is not None else ""
        for kind, value in (("user", settings.username), ("maintenance database", settings.pg_maintenance_db)):
            if value is not None:
                self._valid(kind, value)

    # ------------------------------------------------------------------------------------------ public
    def check(self, database: str) -> None:
        with self._cursor(database) as cursor:
            cursor.execute("SELECT 1").fetchall()

    def backup(self, database: str, staging_path: str, progress: Progress | None = None) -> BackupResult:
        started, reporter = time.monotonic(), ProgressReporter(progress)
        with self._cursor(database) as cursor:      # a clear error for a missing database, and table sizes
            sizes = {f"{r[0]}.{r[1]}": int(r[3] or 0) for r in cursor.execute(USER_TABLES).fetchall() if r[2] == "r"}
        total, done = sum(sizes.values()), [0]

        def on_line(line: str) -> None:
            found = _DUMPING.search(line)
            if found and total:
                reporter(min(99, done[0] * 100 // total))
                done[0] += sizes.get(found.group(1), 0)

        partial = f"{staging_path}.partial"
        create_private(partial)                   # plaintext: 0600 before pg_dump writes the first byte
        argv = [self.settings.pg_dump, "--format=custom", "--verbose", f"--file={partial}"]
        if self.settings.pg_compress is not None:
            argv.append(f"--compress={self.settings.pg_compress}")
        reporter(0)
        try:
            self._run(argv, database, on_line, action=f"pg_dump of {database!r}", setting="PG_DUMP")
            os.replace(partial, staging_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        reporter.done()
        checksum, size = sha256_of([staging_path])
        if self.settings.verify:
            self.verify(staging_path)
        return BackupResult(database, staging_path, size, time.monotonic() - started, self.name, self.server,
                            checksum=checksum, parts=(staging_path,))

    def verify(self, staging_path: str) -> None:
        entries = self._toc(staging_path)
        if not entries:
            raise PermanentError(f"{staging_path} holds no archive entries",
                                 hint="The dump is empty or damaged: take a new backup.")
        if self.settings.pg_verify_data:       # decompress every data block: catches truncation and corruption
            self._run([self.settings.pg_restore, f"--file={os.devnull}", os.path.abspath(staging_path)], None,
                      None, action=f"pg_restore (read all data) of {staging_path}", setting="PG_RESTORE",
                      permanent=True)

    def restore(self, database: str, source_path: str, *, data_path: str | None = None,
                log_path: str | None = None, progress: Progress | None = None,
                options: RestoreOptions | None = None) -> RestoreResult:
        started, reporter = time.monotonic(), ProgressReporter(progress)
        self._valid("database", database)
        if data_path or log_path:
            log.warning("PostgreSQL restores ignore data_path/log_path (files live in the server's tablespaces)")
        entries, held = self._listing(source_path)
        self.check_archive(database, held, options or RestoreOptions())
        expected_tables = sum(1 for kind in entries if kind == "TABLE")
        total, done = max(1, sum(1 for kind in entries if kind == "TABLE DATA")), [0]

        def on_line(line: str) -> None:
            if _RESTORING.search(line):
                reporter(min(99, done[0] * 100 // total))
                done[0] += 1

        self.create(database)
        reporter(0)
        argv = [self.settings.pg_restore, "--clean", "--if-exists", "--no-owner", "--exit-on-error", "--verbose",
                f"--dbname=dbname={conninfo_value(database)}", os.path.abspath(source_path)]
        self._run(argv, None, on_line, action=f"pg_restore into {database!r}", setting="PG_RESTORE")
        reporter.done()
        tables, rows = self.count_rows(database)
        if len(tables) < expected_tables:
            raise PermanentError(f"restore into {database!r} left {len(tables)} tables, the archive has "
                                 f"{expected_tables}", hint="The restore is incomplete: see the pg_restore log.")
        return RestoreResult(database, source_path, time.monotonic() - started, self.name, self.server,
                             tables=len(tables), rows=sum(rows.values()))

    def check_consistency(self, database: str) -> str:
        """amcheck (bt_index_check, verify_heapam) where available, else a full read of every table."""
        return check_consistency(self, database)

    def restores_while_fetching(self, database: str) -> bool:
        """True when ``database`` does not exist on the server: :meth:`restore_streamed` can restore it while its
        archive arrives (an existing one is replaced in place, which keeps its owner, grants and settings)."""
        self._valid("database", database)
        with self._cursor(self.settings.pg_maintenance_db) as cursor:
            return not cursor.execute("SELECT 1 FROM pg_database WHERE datname = ?", database).fetchall()

    def restore_streamed(self, database: str, open_source, *, total: int, verified_head: int,
                         progress: Progress | None = None, options: RestoreOptions | None = None) -> RestoreResult:
        """Restore the new ``database`` from the archive ``open_source()`` yields while it is read, into a scratch
        database renamed once everything is verified (:mod:`workers.engines.postgres_stream`; the source proves
        its first ``verified_head`` bytes before it returns them)."""
        self._valid("database", database)
        return restore_streamed(self, database, open_source, total=total, verified_head=verified_head,
                                options=options, progress=progress)

    def rename(self, database: str, new_name: str) -> None:
        """ALTER DATABASE ... RENAME TO (fails when ``new_name`` exists or ``database`` has sessions)."""
        self._valid("database", new_name)
        with self._cursor(self.settings.pg_maintenance_db) as cursor:
            cursor.execute(f"ALTER DATABASE {quote_ident(database)} RENAME TO {quote_ident(new_name)}")

    def drop(self, database: str) -> None:
        """Drop ``database`` if it exists, ending its sessions (PostgreSQL 13+): for scratch restores (drills)."""
        self._valid("database", database)
        with self._cursor(self.settings.pg_maintenance_db) as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")

    def count_rows(self, database: str) -> tuple[list[str], dict[str, int]]:
        """(user tables, exact row count per ordinary table) through pyodbc."""
        with self._cursor(database) as cursor:
            found = cursor.execute(USER_TABLES).fetchall()
            rows = {}
            for schema, table, kind, _ in found:
                if kind == "r":
                    sql = f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}"
                    rows[f"{schema}.{table}"] = int(cursor.execute(sql).fetchone()[0])
        return [f"{r[0]}.{r[1]}" for r in found], rows

    def restore_preflight(self, databases: list[str], options: RestoreOptions | None = None) -> list[TargetState]:
        """Before a restore changes anything: can this login create, drop and restore ``databases`` here, and
        what does each hold now (:mod:`workers.engines.postgres_preflight`)? Raises if the server cannot be
        reached. ``options`` change nothing here: the one that applies to PostgreSQL (``allow_database_mismatch``)
        is about the archive, which the restore checks."""
        for database in databases:
            self._valid("database", database)
        return restore_preflight(self._cursor, self.server, self.settings.pg_maintenance_db, databases)

    # ----------------------------------------------------------------------------------------- helpers
    def _valid(self, kind: str, name: str) -> str:
        require_name(kind, name, max_length=NAME_LENGTH, forbidden=_ODBC_UNSAFE)
        if name != name.strip() or len(name.encode()) > NAME_LENGTH:
            raise PermanentError(f"invalid {kind} name {name[:80]!r}",
                                 hint=f"PostgreSQL names here are at most {NAME_LENGTH} bytes without "
                                      "leading or trailing spaces.")
        return name

    def _odbc_string(self, database: str) -> str:
        s = self.settings
        parts = [f"DRIVER={braced(s.effective_driver)}", f"SERVER={s.server}", f"PORT={s.effective_port}",
                 f"DATABASE={database}", f"SSLmode={s.effective_pg_sslmode}",
                 f"pqopt={braced(self._pqopt())}"]
        if s.username:
            parts.append(f"UID={s.username}")
        if self._password:
            parts.append(f"PWD={braced(self._password)}")
        return ";".join(parts)

    def _pqopt(self) -> str:
        """Extra libpq options for psqlODBC (the CA file, quoted as a conninfo value)."""
        s = self.settings
        options = f"connect_timeout={s.timeout} application_name=appservice-dr"
        return options + (f" sslrootcert={conninfo_value(s.pg_sslrootcert)}" if s.pg_sslrootcert else "")

    @contextlib.contextmanager
    def _cursor(self, database: str) -> Iterator[Any]:
        self._valid("database", database)
        action = f"connect to PostgreSQL {self.server} database {database!r}"
        try:
            connection = self._connect(self._odbc_string(database), autocommit=True, timeout=self.settings.timeout)
        except pyodbc.Error as exc:
            raise self._classify(exc, action) from None
        try:
            yield connection.cursor()
        except pyodbc.Error as exc:
            raise self._classify(exc, f"query on {self.server} database {database!r}") from None
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def _classify(self, exc: pyodbc.Error, action: str) -> DrError:
        sqlstate, text = error_parts(exc)
        return classify(clean_text(text), action=action, secrets=[self._password],
                        default_transient=sqlstate.startswith("08"))

    def create(self, database: str) -> None:
        with self._cursor(self.settings.pg_maintenance_db) as cursor:
            if cursor.execute("SELECT 1 FROM pg_database WHERE datname = ?", database).fetchall():
                return
            log.info("creating database %r on %s for the restore", database, self.server)
            try:
                cursor.execute(f"CREATE DATABASE {quote_ident(database)}")
            except pyodbc.Error as exc:
                if "already exists" not in error_parts(exc)[1]:        # created meanwhile: fine
                    raise

    def tool_env(self, database: str | None) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=s.server, PGPORT=str(s.effective_port), PGSSLMODE=s.effective_pg_sslmode,
                   PGCONNECT_TIMEOUT=str(s.timeout), PGAPPNAME="appservice-dr")
        if s.pg_sslrootcert:
            env["PGSSLROOTCERT"] = s.pg_sslrootcert
        if s.username:
            env["PGUSER"] = s.username
        if self._password:
            env["PGPASSWORD"] = self._password
        if database is not None:
            env["PGDATABASE"] = database
        return env

    def check_archive(self, target: str, held: str | None, options: RestoreOptions) -> None:
        """The archive must hold the database the set names, and never replace an existing other database."""
        if held is None or options.allow_database_mismatch:
            return
        hint = " Pass --allow-database-mismatch to restore it anyway."
        if options.expected_database and held != options.expected_database:
            raise PermanentError(f"the archive holds database {held!r}, not {options.expected_database!r} as the "
                                 "backup set says", hint="The artifact does not hold the database it is named "
                                 "after: restore another backup set." + hint)
        if target != held and self._has_tables(target):
            raise PermanentError(f"the archive holds database {held!r} and would be restored over the existing "
                                 f"database {target!r}, which holds tables", hint="Check --database / "
                                 "--target-database; restore under a new name (an empty database is fine), or "
                                 "drop the target first." + hint)

    def _has_tables(self, database: str) -> bool:
        """An existing database with user tables (an empty one, e.g. created for the restore, is fine)."""
        with self._cursor(self.settings.pg_maintenance_db) as cursor:
            if not cursor.execute("SELECT 1 FROM pg_database WHERE datname = ?", database).fetchall():
                return False
        with self._cursor(database) as cursor:
            return bool(cursor.execute(USER_TABLES).fetchall())

    def _toc(self, path: str) -> list[str]:
        return self._listing(path)[0]

    def _listing(self, path: str) -> tuple[list[str], str | None]:
        """Kinds of the archive's TOC entries and the name of the database it was dumped from."""
        return archive_listing(self.settings.pg_restore, self.tool_env(None), path)

    def _run(self, argv: list[str], database: str | None, on_line: Callable[[str], None] | None, *,
             action: str, setting: str, permanent: bool = False) -> None:
        """Run a PostgreSQL tool, reading its stderr line by line; raise a classified error on failure."""
        run_tool(argv, self.tool_env(database), on_line, action=action, setting=setting, permanent=permanent,
                 failure=self.failure)

    def failure(self, text: str, *, action: str) -> DrError:
        """A PostgreSQL tool's error output as our error (classified, the password masked)."""
        return classify(text, action=action, secrets=[self._password])
