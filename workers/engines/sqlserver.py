"""SQL Server engine: BACKUP DATABASE to a staging share (or S3 URL), RESTORE VERIFYONLY, RESTORE DATABASE.

Every statement runs with autocommit (BACKUP/RESTORE refuse transactions) and is drained to the last result
set, so a call returns only when SQL Server finished and every error surfaces; ``STATS = N`` messages become
progress callbacks. Database names are looked up in ``sys.databases`` (bind parameter) before they are quoted
into a statement. Always On databases are backed up on the AG's preferred backup replica: when the server
connected to (a listener reaches the primary) is not it, the engine connects to that replica itself
(:mod:`workers.engines.sqlserver_ag`). COMPRESSION and MAXTRANSFERSIZE follow the edition and version
(:mod:`workers.engines.sqlserver_edition`).
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from typing import Any, Callable, Iterator

import pyodbc

from workers.engines import sqlserver_ag as ag
from workers.engines import sqlserver_perms as perms
from workers.engines import sqlserver_sql as tsql
from workers.engines.base import (ONLINE, SKIPPED_NOT_PREFERRED, BackupResult, Progress, ProgressReporter,
                                    RestoreOptions, RestoreResult, locally_readable, require_name, sha256_of,
                                    stripe_paths)
from workers.engines.odbc import ConnectFn, Cursor, Message, clean_text, connection_string, drain, native_number
from workers.engines.settings import DatabaseSettings
from workers.engines.sqlserver_edition import DATABASE_ENCRYPTED, SERVER_FACTS, ServerFacts, fit_options
from workers.engines.sqlserver_errors import classify
from workers.engines.sqlserver_restore import SafeRestore, check_db, drop as drop_database
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

    def rows(self, sql: str, *params: Any, action: str) -> list[dict[str, Any]]:
        """The rows of the first result set."""
        return (self.run(sql, *params, action=action) or [[]])[0]

    def close(self) -> None:
        """Close the connection early (pyodbc: ``cursor.connection``); closing it again later is harmless."""
        with contextlib.suppress(Exception):
            self.cursor.connection.close()


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
                return self._backup_on_preferred_replica(session, name, staging_path, progress, started)
            if tsql.is_url(devices[0]):
                self._ensure_credential(session, devices[0])
            statement = tsql.backup_database(name, devices, self._fitted_options(session, name,
                                                                                 tsql.is_url(devices[0])))
            session.run(statement, action=f"BACKUP DATABASE {tsql.quote_name(name)}",
                        on_message=_progress_from_messages(reporter), database=name)
            reporter.done()
            history = self._history(session, name, devices[0])
            if self.settings.verify:
                self._verify_after_backup(session, name, devices)
        size, checksum = self._measure(devices, history)
        lsn = {k: (str(history[k]) if history.get(k) is not None else None)
               for k in ("first_lsn", "last_lsn", "database_backup_lsn")}
        return BackupResult(name, staging_path, size, time.monotonic() - started, self.name, self.server,
                            checksum=checksum, parts=tuple(devices), **lsn)

    def verify(self, staging_path: str) -> None:
        devices = stripe_paths(staging_path, self.settings.stripes)
        with self._session() as session:
            if tsql.is_url(devices[0]):
                self._ensure_credential(session, devices[0])
            self._verify(session, devices)

    def restore(self, database: str, source_path: str, *, data_path: str | None = None,
                log_path: str | None = None, progress: Progress | None = None,
                options: RestoreOptions | None = None) -> RestoreResult:
        """Pre-flight, exclusive access, optional tail-log backup, RESTORE ... WITH REPLACE, ONLINE checked
        (:mod:`workers.engines.sqlserver_restore`)."""
        started, reporter = time.monotonic(), ProgressReporter(progress)
        devices = stripe_paths(source_path, self.settings.stripes)
        with self._session() as session:
            if tsql.is_url(devices[0]):
                self._ensure_credential(session, devices[0])
            safe = SafeRestore(session, self.server, database, devices, options or RestoreOptions(),
                               self.settings.stats_percent)
            state = safe.restore(data_path, log_path, _progress_from_messages(reporter))
            reporter.done()
            done = safe.outcome
        return RestoreResult(database, source_path, time.monotonic() - started, self.name, self.server, state,
                             tail_log=done.tail_log, warnings=tuple(done.warnings))

    def preflight_target(self, database: str, options: RestoreOptions) -> None:
        """Before fetching a backup: refuse a target in an availability group or with open sessions (without
        ``force_disconnect``) now rather than after the download; the restore checks again."""
        with self._session() as session:
            safe = SafeRestore(session, self.server, database, [], options, self.settings.stats_percent)
            row = safe.target_row()
            if row is not None:
                safe.check_target(row)

    def check_consistency(self, database: str) -> str:
        """DBCC CHECKDB (database) WITH NO_INFOMSGS, ALL_ERRORMSGS; corruption raises (8939, 8928, ...)."""
        with self._session() as session:
            return check_db(session, database)

    def file_list(self, source_path: str) -> list[dict[str, Any]]:
        """RESTORE FILELISTONLY: the backup's logical files (what a restore would MOVE)."""
        devices = stripe_paths(source_path, self.settings.stripes)
        with self._session() as session:
            if tsql.is_url(devices[0]):
                self._ensure_credential(session, devices[0])
            sets = session.run(tsql.filelist_only(devices), action="RESTORE FILELISTONLY")
        return sets[0] if sets else []

    def drop(self, database: str) -> None:
        """Drop ``database`` if it exists (rolling back its sessions; a RESTORING one directly): for scratch
        restores (drills)."""
        with self._session() as session:
            drop_database(session, database)

    def permissions(self) -> tuple[list[perms.Permission], set[str]]:
        """What the login may do on each configured database (read only; :mod:`.sqlserver_perms`), and the
        databases the server does not show."""
        with self._session() as session:
            return perms.read(lambda sql, *p: session.rows(sql, *p, action="read the login's permissions"),
                              self.settings.databases)

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

    def _backup_on_preferred_replica(self, session: _Session, name: str, staging_path: str,
                                     progress: Progress | None, started: float) -> BackupResult:
        """This replica is not the preferred one: back up on the replica the AG's preference picks, reached
        directly (COPY_ONLY on a secondary); a skipped result saying why when no candidate is reachable."""
        group = ag.read_group(lambda sql, *p: session.rows(sql, *p, action="read the availability group"), name)
        session.close()             # not held open to the primary while another replica backs up for hours
        unreachable: dict[str, str] = {}
        for replica in ag.backup_candidates(group) if group else []:
            engine = self._engine_for(replica)
            try:
                engine.check(name)
            except DrError as exc:
                log.warning("%s: preferred backup replica %s unreachable: %s", name, replica.name, exc.message)
                unreachable[replica.name] = exc.message[:200]
                continue
            log.info("%s: %s is not the preferred backup replica (availability group %s, preference %s); "
                     "backing up on %s", name, self.server, group.name, group.preference_text, engine.server)
            return engine.backup(name, staging_path, progress)
        reason = ag.nothing_reachable(group, name, unreachable) if group else SKIPPED_NOT_PREFERRED
        log.warning("%s on %s: %s", name, self.server, reason)
        return BackupResult(name, staging_path, 0, time.monotonic() - started, self.name, self.server,
                            skipped_reason=reason, parts=tuple(stripe_paths(staging_path, self.settings.stripes)))

    def _engine_for(self, replica: ag.AgReplica) -> "SqlServerEngine":
        """An engine connected straight to ``replica`` that backs up there (never follows the AG again)."""
        address = ag.replica_address(replica, self.settings.ag_replica_servers)
        host, _, port = address.partition(",")
        update: dict[str, Any] = {"server": host, "ag_override": True, "multi_subnet_failover": False}
        if port.strip().isdigit():
            update["port"] = int(port)
        if replica.role != "PRIMARY":
            update["copy_only"] = True          # a secondary takes only COPY_ONLY full backups (else 3059)
        return SqlServerEngine(self.settings.model_copy(update=update), connect=self._connect)

    def _fitted_options(self, session: _Session, name: str, url: bool) -> tsql.BackupOptions:
        """The configured options as this edition and version support them (COMPRESSION, TDE transfer size)."""
        facts = ServerFacts.from_row(session.first(SERVER_FACTS, action="read the SQL Server edition"))
        row = session.first(DATABASE_ENCRYPTED, name, action=f"ask whether {name!r} uses TDE")
        options, notes = fit_options(self._options(url), facts, bool(row and row["is_encrypted"]))
        for note in notes:
            log.info("%s on %s: %s", name, self.server, note)
        return options

    def _verify_after_backup(self, session: _Session, name: str, devices: list[str]) -> None:
        """RESTORE VERIFYONLY, which needs CREATE DATABASE: a db_backupoperator-only login gets the
        ``verify_fallback`` (the backup's own CHECKSUM, with a warning) or a clear failure."""
        row = session.first(tsql.MAY_VERIFY, action="check the CREATE DATABASE permission RESTORE VERIFYONLY needs")
        if row and row["may_verify"] == 1:
            self._verify(session, devices)
            return
        grant = f"GRANT CREATE ANY DATABASE TO [{(self.settings.username or '<login>').replace(']', ']]')}];"
        if self.settings.verify_fallback == "fail":
            raise PermanentError(f"backup of {name} on {self.server} written but not verified: the login lacks "
                                 "CREATE DATABASE, which RESTORE VERIFYONLY needs",
                                 hint=f"Run {grant} on the server, or set APPSVC_DR_DATABASE__VERIFY_FALLBACK="
                                      "checksum to rely on BACKUP ... WITH CHECKSUM, or VERIFY=false.")
        log.warning("%s on %s: RESTORE VERIFYONLY skipped (the login lacks CREATE DATABASE); the backup was "
                    "checked only by BACKUP ... WITH CHECKSUM. To verify, run %s", name, self.server, grant)

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

    def _measure(self, devices: list[str], history: dict[str, Any]) -> tuple[int, str | None]:
        if not tsql.is_url(devices[0]) and locally_readable(devices):
            checksum, size = sha256_of(devices)
            return size, checksum
        size = history.get("compressed_backup_size") or history.get("backup_size") or 0
        return int(size), None

    def _options(self, url: bool) -> tsql.BackupOptions:
        s = self.settings
        return tsql.BackupOptions(compression=s.compression, copy_only=s.copy_only, stats_percent=s.stats_percent,
                                  max_transfer_size=s.url_max_transfer_size if url else s.max_transfer_size,
                                  buffer_count=s.buffer_count)

    def _ensure_credential(self, session: _Session, url: str) -> None:
        name = tsql.credential_name(url)
        exists = session.first(tsql.CREDENTIAL_EXISTS, name, action="look up the S3 credential") is not None
        s = self.settings
        if s.s3_access_key is not None and s.s3_secret_key is not None:
            statement = tsql.save_s3_credential(name, s.s3_access_key, s.s3_secret_key.get_secret_value(), exists)
            session.run(statement, action=f"{'ALTER' if exists else 'CREATE'} CREDENTIAL {tsql.quote_name(name)}")
        elif not exists:
            raise PermanentError(f"SQL Server has no credential {name!r} for BACKUP TO URL",
                                 hint=f"Create it on the server (CREATE CREDENTIAL [{name}] WITH IDENTITY = "
                                      "'S3 Access Key', SECRET = '<access key>:<secret key>') or set "
                                      "APPSVC_DR_DATABASE__S3_ACCESS_KEY and APPSVC_DR_DATABASE__S3_SECRET_KEY.")

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
                      ("APP", "appservice-dr"), ("MultiSubnetFailover", "Yes" if s.multi_subnet_failover else None)]
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
