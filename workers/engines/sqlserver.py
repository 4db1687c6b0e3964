"""SQL Server engine: BACKUP DATABASE to a staging share, RESTORE VERIFYONLY, RESTORE DATABASE.

Every statement runs with autocommit (BACKUP/RESTORE refuse transactions) and is drained to the last result
set, so a call returns only when SQL Server finished and every error surfaces; ``STATS = N`` messages become
progress callbacks. Database names are looked up in ``sys.databases`` (bind parameter) before they are quoted
into a statement. Always On databases are backed up only on the preferred backup replica.

Striped backups (``stripes`` > 1) write one media family per file (``name.stripe<i>of<N>.bak``); verify,
file list and restore take every stripe's path (a sequence, named by the stored set, never by the local
``stripes`` setting). BACKUP TO URL is not supported: a staging path must be a directory or UNC share.
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import pyodbc

from workers.engines import sqlserver_sql as tsql
from workers.engines.base import (ONLINE, SKIPPED_NOT_PREFERRED, BackupResult, Progress, ProgressReporter,
                                    RestoreResult, locally_readable, require_name, sha256_of, stripe_paths)
from workers.engines.sqlserver_log import LogHealth, apply_logs, read_log_health
from workers.engines.odbc import ConnectFn, Cursor, Message, clean_text, connection_string, drain, native_number
from workers.engines.settings import DatabaseSettings
from workers.engines.sqlserver_errors import classify
from workers.runtime.errors import ConfigurationError, DrError, PermanentError, TransientError

log = logging.getLogger(__name__)

PROGRESS = 3211                                  # "%d percent processed." (the text is translated, the number not)
_PERCENT = re.compile(r"(?<!\d)(\d{1,3})(?!\d)")
_LOGIN_HINT = ("Check APPSVC_DR_DATABASE__DATABASES: names are matched exactly against sys.databases on "
               "APPSVC_DR_DATABASE__SERVER (and the login must be allowed to see the database).")


class _Session:
    """One autocommit connection: runs statements, drains them, maps errors where they happen."""

    def __init__(self, cursor: Cursor, login: str | None = None) -> None:
        self.cursor = cursor
        self.login = login
        self.recent: list[Message] = []

    def run(self, sql: str, *params: Any, action: str, on_message: Callable[[Message], None] | None = None,
            database: str | None = None) -> list[list[dict[str, Any]]]:
        self.recent = []

        def seen(message: Message) -> None:
            self.recent.append(message)
            log.debug("%s: %s", action, clean_text(message[1]))
            if on_message is not None:
                on_message(message)

        try:
            self.cursor.execute(sql, *params)
            return drain(self.cursor, seen)
        except pyodbc.Error as exc:
            raise classify(exc, action=action, recent=self.recent, login=self.login, database=database) from exc

    def first(self, sql: str, *params: Any, action: str) -> dict[str, Any] | None:
        sets = self.run(sql, *params, action=action)
        return sets[0][0] if sets and sets[0] else None


def _progress_from_messages(reporter: ProgressReporter) -> Callable[[Message], None]:
    def on_message(message: Message) -> None:
        found = _PERCENT.search(clean_text(message[1])) if native_number(message) == PROGRESS else None
        if found:
            reporter(int(found.group(1)))
    return on_message


class SqlServerEngine:
    """:class:`~workers.engines.base.DatabaseEngine` for SQL Server through pyodbc.

    ``connect`` defaults to :func:`pyodbc.connect`; tests pass the simulator's (tests/sqlsim). Staging paths
    are paths *as SQL Server sees them* (a UNC share); size and checksum come from the files when this process
    can read them too, else from msdb backup history (no checksum).
    """

    name = "sqlserver"

    def __init__(self, settings: DatabaseSettings, *, connect: ConnectFn | None = None) -> None:
        self.settings = settings
        self._connect = connect or pyodbc.connect
        port = settings.effective_port
        self.server = settings.server if "\\" in settings.server else f"{settings.server},{port}"
        self._connection_string = self._build_connection_string()

    # ------------------------------------------------------------------------------------------ public
    def check(self, database: str) -> None:
        with self._session() as session:
            self._online(session, database)

    def backup(self, database: str, staging_path: str, progress: Progress | None = None) -> BackupResult:
        started, reporter = time.monotonic(), ProgressReporter(progress)
        devices = stripe_paths(staging_path, self.settings.stripes)
        with self._session() as session:
            name, in_ag = self._online(session, database)
            if in_ag and not self.settings.ag_override and not self._preferred(session, name):
                log.info("%s on %s: not the preferred backup replica, skipped", name, self.server)
                return BackupResult(name, staging_path, 0, time.monotonic() - started, self.name, self.server,
                                    skipped_reason=SKIPPED_NOT_PREFERRED, parts=tuple(devices))
            statement = tsql.backup_database(name, devices, self._options())
            began = datetime.now(timezone.utc)
            session.run(statement, action=f"BACKUP DATABASE {tsql.quote_name(name)}",
                        on_message=_progress_from_messages(reporter), database=name)
            ended = datetime.now(timezone.utc)
            reporter.done()
            history = self._history(session, name, devices[0])
            if self.settings.verify:
                self._verify(session, devices)
        size, checksum, parts = self._measure(devices, history)
        lsn = {k: (str(history[k]) if history.get(k) is not None else None)
               for k in ("first_lsn", "last_lsn", "database_backup_lsn")}
        return BackupResult(name, staging_path, size, time.monotonic() - started, self.name, self.server,
                            checksum=checksum, parts=tuple(devices), part_checksums=parts,
                            server_version=tsql.version_of(history), started_at=began.isoformat(),
                            finished_at=ended.isoformat(), copy_only=self.settings.copy_only, **lsn)

    def backup_log(self, database: str, staging_path: str, progress: Progress | None = None) -> BackupResult:
        """BACKUP LOG of ``database`` (FULL / BULK_LOGGED recovery) to one file, verified like a full backup."""
        started, reporter = time.monotonic(), ProgressReporter(progress)
        with self._session() as session:
            name, _ = self._online(session, database)
            began = datetime.now(timezone.utc)
            session.run(tsql.backup_log(name, [staging_path], self._options()),
                        action=f"BACKUP LOG {tsql.quote_name(name)}", on_message=_progress_from_messages(reporter),
                        database=name)
            ended = datetime.now(timezone.utc)
            reporter.done()
            history = self._history(session, name, staging_path)
            if self.settings.verify:
                self._verify(session, [staging_path])
        size, checksum, _ = self._measure([staging_path], history)
        lsn = {k: (str(history[k]) if history.get(k) is not None else None)
               for k in ("first_lsn", "last_lsn", "database_backup_lsn")}
        return BackupResult(name, staging_path, size, time.monotonic() - started, self.name, self.server,
                            checksum=checksum, parts=(staging_path,), server_version=tsql.version_of(history),
                            started_at=began.isoformat(), finished_at=ended.isoformat(), copy_only=False, **lsn)

    def log_health(self, database: str) -> LogHealth:
        """Recovery model, ``log_reuse_wait_desc`` and the age of the newest log backup (msdb) of ``database``:
        for the "no recent log backup" warning. Best effort: unreadable msdb history gives an unknown age."""
        with self._session() as session:
            return read_log_health(session, database)

    def verify(self, staging_path: str | Sequence[str]) -> None:
        with self._session() as session:
            self._verify(session, _devices(staging_path))

    def restore(self, database: str, source_path: str | Sequence[str], *, data_path: str | None = None,
                log_path: str | None = None, progress: Progress | None = None,
                logs: Sequence[str] = ()) -> RestoreResult:
        """Restore from ``source_path``: one file, or every stripe of a striped backup in order; then, WITH
        NORECOVERY until the last, each of ``logs`` (log backups, in LSN order) and RECOVERY."""
        started, reporter = time.monotonic(), ProgressReporter(progress)
        quoted = tsql.quote_name(database)
        devices = _devices(source_path)
        source_path = devices[0]
        data_path = data_path or self.settings.restore_data_path
        log_path = log_path or self.settings.restore_log_path
        with self._session() as session:
            sets = session.run(tsql.filelist_only(devices), action="RESTORE FILELISTONLY")
            files = sets[0] if sets else []
            if not files:
                raise PermanentError(f"RESTORE FILELISTONLY found no database files in {source_path}",
                                     hint="The file is not a database backup: check the source path.")
            moves = tsql.plan_moves(database, files, data_path, log_path)
            session.run(tsql.restore_database(database, devices, moves, self.settings.stats_percent,
                                              recovery=not logs),
                        action=f"RESTORE DATABASE {quoted}", on_message=_progress_from_messages(reporter),
                        database=database)
            if logs:
                apply_logs(session, database, logs, self.settings.stats_percent)
            reporter.done()
            row = session.first(tsql.DATABASE_STATE, database, action=f"check restored database {quoted}")
        state = str(row["state_desc"]) if row else "MISSING"
        if state != ONLINE:
            raise PermanentError(f"restored database {quoted} on {self.server} is {state}, not ONLINE",
                                 hint="Look at the SQL Server error log for the restore; RESTORE ... WITH "
                                      "RECOVERY should leave the database ONLINE.")
        return RestoreResult(database, source_path, time.monotonic() - started, self.name, self.server, state)

    def file_list(self, source_path: str | Sequence[str]) -> list[dict[str, Any]]:
        """RESTORE FILELISTONLY: the backup's logical files (what a restore would MOVE)."""
        with self._session() as session:
            sets = session.run(tsql.filelist_only(_devices(source_path)), action="RESTORE FILELISTONLY")
        return sets[0] if sets else []

    def drop(self, database: str) -> None:
        """Drop ``database`` if it exists (rolling back its sessions): for scratch restores (drills)."""
        with self._session() as session:
            row = session.first(tsql.DATABASE_STATE, database, action=f"look up database {database!r}")
            for statement in tsql.drop_database(str(row["name"])) if row else []:
                session.run(statement, action=statement.split(" WITH ")[0], database=str(row["name"]))

    # ----------------------------------------------------------------------------------------- helpers
    @contextlib.contextmanager
    def _session(self) -> Iterator[_Session]:
        try:
            connection = self._connect(self._connection_string, autocommit=True, timeout=self.settings.timeout)
        except pyodbc.Error as exc:
            raise classify(exc, action=f"connect to SQL Server {self.server}") from None
        try:
            connection.timeout = self.settings.query_timeout
            yield _Session(connection.cursor(), login=self.settings.username)
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def _online(self, session: _Session, database: str) -> tuple[str, bool]:
        """(name as sys.databases spells it, in an availability group?) or raise."""
        require_name("database", database, max_length=tsql.SYSNAME_LENGTH)
        row = session.first(tsql.DATABASE_STATE, database, action=f"look up database {database!r}")
        if row is None:
            raise PermanentError(f"database {database!r} does not exist on {self.server}", hint=_LOGIN_HINT)
        name, state = str(row["name"]), str(row["state_desc"])
        if state == "RECOVERING":
            raise TransientError(f"database {name!r} on {self.server} is RECOVERING",
                                 hint="SQL Server is still recovering the database; the job is retried.")
        if state != ONLINE:
            raise PermanentError(f"database {name!r} on {self.server} is {state}, not ONLINE",
                                 hint="Bring the database ONLINE (ALTER DATABASE ... SET ONLINE, or repair it) "
                                      "or remove it from APPSVC_DR_DATABASE__DATABASES.")
        return name, bool(row["in_ag"])

    def _preferred(self, session: _Session, name: str) -> bool:
        row = session.first(tsql.PREFERRED_REPLICA, name, action=f"ask whether this is {name!r}'s backup replica")
        return bool(row and row["preferred"])

    def _verify(self, session: _Session, devices: list[str]) -> None:
        session.run(tsql.verify_only(devices), action="RESTORE VERIFYONLY")

    def _history(self, session: _Session, name: str, device: str) -> dict[str, Any]:
        """LSNs and sizes from msdb; best effort: the backup already succeeded, so no msdb error (transient or
        permanent) may fail the job - a retry would only take a second full backup."""
        try:
            return session.first(tsql.BACKUP_HISTORY, name, device, action="read msdb backup history") or {}
        except DrError as exc:
            log.warning("backup of %s finished but msdb history is unreadable: %s", name, exc.message)
            return {}

    @staticmethod
    def _measure(devices: list[str], history: dict[str, Any]) -> tuple[int, str | None, tuple[str, ...]]:
        """(size, SHA-256 of the stripes concatenated, SHA-256 of each stripe) when this process can read the
        files, else (msdb's size, None, ())."""
        if locally_readable(devices):
            each = [sha256_of([d]) for d in devices]
            checksum = each[0][0] if len(each) == 1 else None
            return sum(n for _, n in each), checksum, tuple(c for c, _ in each)
        size = history.get("compressed_backup_size") or history.get("backup_size") or 0
        return int(size), None, ()

    def _options(self) -> tsql.BackupOptions:
        s = self.settings
        return tsql.BackupOptions(compression=s.compression, copy_only=s.copy_only, stats_percent=s.stats_percent,
                                  max_transfer_size=s.max_transfer_size, buffer_count=s.buffer_count)

    def _build_connection_string(self) -> str:
        s = self.settings
        driver = s.effective_driver
        freetds = "freetds" in driver.lower()
        instance = "\\" in s.server
        pairs: list[tuple[str, str | None]] = [("DRIVER", driver)]
        if freetds:
            pairs += [("SERVER", s.server), ("PORT", None if instance else str(s.effective_port)),
                      ("DATABASE", "master"), ("TDS_Version", "7.4"), ("ClientCharset", "UTF-8"),
                      ("Encryption", "request" if s.encrypt == "no" else "require")]
        else:
            pairs += [("SERVER", s.server if instance else f"tcp:{s.server},{s.effective_port}"),
                      ("DATABASE", "master"), ("Encrypt", s.encrypt),
                      ("TrustServerCertificate", "yes" if s.trust_server_certificate else "no"),
                      ("APP", "appservice-dr")]
        password = s.password.get_secret_value() if s.password is not None else None
        if s.auth == "kerberos":
            pairs.append(("Trusted_Connection", "yes"))
        elif freetds:
            if s.auth != "sql":
                raise ConfigurationError(f"database.auth = {s.auth} needs the Microsoft ODBC driver, not FreeTDS",
                                         hint="Set APPSVC_DR_DATABASE__DRIVER='ODBC Driver 18 for SQL Server' "
                                              "or use auth = sql / kerberos.")
        if s.auth in ("sql", "entra-password"):
            if not s.username:
                raise ConfigurationError(f"database.auth = {s.auth} needs database.username",
                                         hint="Set APPSVC_DR_DATABASE__USERNAME and APPSVC_DR_DATABASE__PASSWORD.")
            pairs += [("UID", s.username), ("PWD", password)]
        if s.auth == "entra-password":
            pairs.append(("Authentication", "ActiveDirectoryPassword"))
        elif s.auth == "entra-msi":
            pairs += [("Authentication", "ActiveDirectoryMsi"), ("UID", s.username)]
        return connection_string(pairs, always_brace=("DRIVER", "PWD"))


def _devices(source: str | Sequence[str]) -> list[str]:
    """One path, or every stripe's path in order (as named by the stored set)."""
    devices = [source] if isinstance(source, str) else list(source)
    if not devices:
        raise PermanentError("no backup file given", hint="Pass the staged backup's path (every stripe of it).")
    return devices
