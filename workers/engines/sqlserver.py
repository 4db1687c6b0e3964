"""SQL Server engine: BACKUP DATABASE / LOG to a staging share, RESTORE VERIFYONLY, RESTORE DATABASE.

Statements run on one autocommit connection, drained to the last result set (:mod:`.sqlserver_session`), so
every error surfaces; ``STATS = N`` messages become progress callbacks. Database names are looked up in ``sys.databases`` (bind parameter) before they are quoted
into a statement. Always On databases are backed up on the AG's preferred backup replica: when the server
connected to (a listener reaches the primary) is not it, the engine connects to that replica itself
(:mod:`workers.engines.sqlserver_ag`); log backups too, and log health takes the newest log backup from every
replica's msdb. COMPRESSION and MAXTRANSFERSIZE follow the edition and version
(:mod:`workers.engines.sqlserver_edition`).

Striped backups (``stripes`` > 1) write one media family per file (``name.stripe<i>of<N>.bak``); verify,
file list and restore take every stripe's path (a sequence, named by the stored set, never by the local
``stripes`` setting). BACKUP TO URL is not supported: a staging path must be a directory or UNC share.
Log backups and log health: :mod:`workers.engines.sqlserver_log`; the database lookup and a backup's result:
:mod:`workers.engines.sqlserver_backup`.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import pyodbc

from workers.engines import sqlserver_ag as ag
from workers.engines import sqlserver_perms as perms
from workers.engines import sqlserver_sql as tsql
from workers.engines.base import (SKIPPED_NOT_PREFERRED, BackupResult, Progress, ProgressReporter, RestoreOptions,
                                    RestoreResult, stripe_paths)
from workers.engines.odbc import ConnectFn
from workers.engines.settings import DatabaseSettings
from workers.engines.sqlserver_backup import backup_result, devices_of, online
from workers.engines.sqlserver_edition import DATABASE_ENCRYPTED, SERVER_FACTS, ServerFacts, fit_options
from workers.engines.sqlserver_errors import classify
from workers.engines.sqlserver_log import LogHealth, newest_age, read_log_health
from workers.engines.preflight import TargetState
from workers.engines.sqlserver_preflight import restore_preflight
from workers.engines.sqlserver_restore import SafeRestore
from workers.engines.sqlserver_target import check_db, drop as drop_database, restore_identity
from workers.engines.sqlserver_session import Session as _Session, build_connection_string
from workers.engines.sqlserver_session import progress_from_messages as _progress_from_messages
from workers.runtime.errors import DrError, PermanentError

log = logging.getLogger(__name__)


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
        self._connection_string = build_connection_string(settings)

    # ------------------------------------------------------------------------------------------ public
    def check(self, database: str) -> None:
        with self._session() as session:
            online(session, database, self.server)

    def backup(self, database: str, staging_path: str, progress: Progress | None = None) -> BackupResult:
        started, reporter = time.monotonic(), ProgressReporter(progress)
        devices = stripe_paths(staging_path, self.settings.stripes)
        with self._session() as session:
            name, in_ag = online(session, database, self.server)
            if in_ag and not self.settings.ag_override and not self._preferred(session, name):
                return self._on_preferred_replica(session, name, staging_path, started, tuple(devices),
                                                  lambda engine: engine.backup(name, staging_path, progress))
            statement = tsql.backup_database(name, devices, self._fitted_options(session, name))
            began = datetime.now(timezone.utc)
            session.run(statement, action=f"BACKUP DATABASE {tsql.quote_name(name)}",
                        on_message=_progress_from_messages(reporter), database=name)
            ended = datetime.now(timezone.utc)
            reporter.done()
            history = self._history(session, name, devices[0])
            if self.settings.verify:
                self._verify_after_backup(session, name, devices)
        return backup_result(self.name, self.server, name, staging_path, devices, history, started, began, ended,
                             self.settings.copy_only)

    def backup_log(self, database: str, staging_path: str, progress: Progress | None = None) -> BackupResult:
        """BACKUP LOG of ``database`` (FULL / BULK_LOGGED recovery) to one file, verified like a full backup."""
        started, reporter = time.monotonic(), ProgressReporter(progress)
        with self._session() as session:
            name, in_ag = online(session, database, self.server)
            if in_ag and not self.settings.ag_override and not self._preferred(session, name):
                # Log backups follow the AG's backup preference like full ones; on a secondary they are
                # regular (not COPY_ONLY) and join the database's one log chain.
                return self._on_preferred_replica(session, name, staging_path, started, (staging_path,),
                                                  lambda engine: engine.backup_log(name, staging_path, progress))
            began = datetime.now(timezone.utc)
            session.run(tsql.backup_log(name, [staging_path], self._fitted_options(session, name)),
                        action=f"BACKUP LOG {tsql.quote_name(name)}", on_message=_progress_from_messages(reporter),
                        database=name)
            ended = datetime.now(timezone.utc)
            reporter.done()
            history = self._history(session, name, staging_path)
            if self.settings.verify:
                self._verify_after_backup(session, name, [staging_path])
        return backup_result(self.name, self.server, name, staging_path, [staging_path], history, started, began,
                             ended, False)

    def log_health(self, database: str) -> LogHealth:
        """Recovery model, ``log_reuse_wait_desc`` and the age of the newest log backup (msdb) of ``database``:
        for the "no recent log backup" warning. Best effort: unreadable msdb history gives an unknown age."""
        with self._session() as session:
            health = read_log_health(session, database)
            if self.settings.ag_override:
                return health
            try:
                group = ag.read_group(lambda sql, *p: session.rows(sql, *p, action="read the availability group"),
                                      health.database)
            except DrError as exc:
                log.info("%s: availability group not readable for log health: %s", database, exc.message)
                return health
        if group is None:
            return health
        # Each replica's msdb records only the log backups taken there: the newest across the group counts.
        ages = [health.last_log_backup_age]
        for replica in group.replicas:
            if not replica.connected:
                continue
            try:
                ages.append(self._engine_for(replica).log_health(health.database).last_log_backup_age)
            except DrError as exc:
                log.info("%s: log backup history of replica %s not readable: %s", database, replica.name,
                         exc.message)
        return replace(health, last_log_backup_age=newest_age(ages))

    def verify(self, staging_path: str | Sequence[str]) -> None:
        with self._session() as session:
            self._verify(session, devices_of(staging_path))

    def restore(self, database: str, source_path: str | Sequence[str], *, data_path: str | None = None,
                log_path: str | None = None, progress: Progress | None = None,
                options: RestoreOptions | None = None, logs: Sequence[str] = ()) -> RestoreResult:
        """Pre-flight, exclusive access, optional tail-log backup, RESTORE ... WITH REPLACE from one file or every
        stripe in order, then each of ``logs`` (log backups, LSN order) WITH NORECOVERY and RECOVERY; ONLINE
        checked (:mod:`workers.engines.sqlserver_restore`)."""
        started, reporter = time.monotonic(), ProgressReporter(progress)
        devices = devices_of(source_path)
        with self._session() as session:
            safe = SafeRestore(session, self.server, database, devices, options or RestoreOptions(),
                               self.settings.stats_percent, logs=logs)
            state = safe.restore(data_path, log_path, _progress_from_messages(reporter))
            reporter.done()
            done = safe.outcome
        return RestoreResult(database, devices[0], time.monotonic() - started, self.name, self.server, state,
                             tail_log=done.tail_log, warnings=tuple(done.warnings))

    def preflight_target(self, database: str, options: RestoreOptions) -> None:
        """Before fetching a backup: refuse a target in an availability group or with open sessions (without
        ``force_disconnect``) now rather than after the download; the restore checks again."""
        with self._session() as session:
            safe = SafeRestore(session, self.server, database, [], options, self.settings.stats_percent)
            row = safe.target_row()
            if row is not None:
                safe.check_target(row)

    def restore_preflight(self, databases: list[str], options: RestoreOptions | None = None) -> list[TargetState]:
        """Before a restore changes anything (read only; :mod:`.sqlserver_preflight`): per target, exists?, user
        tables, and each problem (permissions, containment, availability group, open sessions unless
        ``options.force_disconnect``, no log for ``options.tail_log_dir``) with its fix."""
        with self._session() as session:
            return restore_preflight(session, self.server, databases, options=options,
                                     stats_percent=self.settings.stats_percent)

    def check_consistency(self, database: str) -> str:
        """DBCC CHECKDB (database) WITH NO_INFOMSGS, ALL_ERRORMSGS; corruption raises (8939, 8928, ...)."""
        with self._session() as session:
            return check_db(session, database)

    def file_list(self, source_path: str | Sequence[str]) -> list[dict[str, Any]]:
        """RESTORE FILELISTONLY: the backup's logical files (what a restore would MOVE)."""
        with self._session() as session:
            sets = session.run(tsql.filelist_only(devices_of(source_path)), action="RESTORE FILELISTONLY")
        return sets[0] if sets else []

    def restore_identity(self, database: str) -> dict[str, Any]:
        """``database`` ONLINE, and what identifies its last restore (:func:`.sqlserver_target.restore_identity`)."""
        with self._session() as session:
            return restore_identity(session, online(session, database, self.server)[0])

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

    def _preferred(self, session: _Session, name: str) -> bool:
        row = session.first(tsql.PREFERRED_REPLICA, name, action=f"ask whether this is {name!r}'s backup replica")
        return bool(row and row["preferred"])

    def _on_preferred_replica(self, session: _Session, name: str, staging_path: str, started: float,
                              parts: tuple[str, ...], run: Callable[["SqlServerEngine"], BackupResult]
                              ) -> BackupResult:
        """This replica is not the preferred one: ``run`` the backup on the replica the AG's preference picks,
        reached directly (a full one COPY_ONLY on a secondary); a skipped result saying why when no candidate is
        reachable."""
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
            return run(engine)
        reason = ag.nothing_reachable(group, name, unreachable) if group else SKIPPED_NOT_PREFERRED
        log.warning("%s on %s: %s", name, self.server, reason)
        return BackupResult(name, staging_path, 0, time.monotonic() - started, self.name, self.server,
                            skipped_reason=reason, parts=parts)

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

    def _fitted_options(self, session: _Session, name: str) -> tsql.BackupOptions:
        """The configured options as this edition and version support them (COMPRESSION, TDE transfer size)."""
        facts = ServerFacts.from_row(session.first(SERVER_FACTS, action="read the SQL Server edition"))
        row = session.first(DATABASE_ENCRYPTED, name, action=f"ask whether {name!r} uses TDE")
        options, notes = fit_options(self._options(), facts, bool(row and row["is_encrypted"]))
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

    def _options(self) -> tsql.BackupOptions:
        s = self.settings
        return tsql.BackupOptions(compression=s.compression, copy_only=s.copy_only, stats_percent=s.stats_percent,
                                  max_transfer_size=s.max_transfer_size, buffer_count=s.buffer_count)
