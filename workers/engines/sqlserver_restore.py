"""A SQL Server restore that is safe on a live server: pre-flight checks first, then exclusive access, an optional
tail-log backup, the RESTORE, and the target put back the way it was if anything fails.

The order follows dbatools' Restore-DbaDatabase: read the backup's header (RESTORE HEADERONLY) and refuse what
cannot or must not be restored - a backup from a newer SQL Server version (3169; an older server cannot even
read the header: 3241), a backup of another database than the set names or than the existing target holds,
one without page checksums (production restores; drills only warn, DBCC CHECKDB follows), a partially
contained database on a server with 'contained database authentication' off (12824), a target joined to an
availability group (3104) or with open sessions (3101) - before anything on the server changes. Under
another name the files always MOVE (named after the target, into the given directory or the instance's
default data / log directories), so an OFFLINE original's files are never overwritten under REPLACE.
https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-headeronly-transact-sql
https://learn.microsoft.com/en-us/sql/relational-databases/backup-restore/tail-log-backups-sql-server
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from workers.engines import sqlserver_sql as tsql
from workers.engines.base import ONLINE, RestoreOptions
from workers.engines.odbc import error_numbers, error_parts
from workers.engines.sqlserver_errors import RULES
from workers.engines.sqlserver_log import apply_logs
from workers.engines.sqlserver_target import move_dirs
from workers.runtime.errors import DrError, PermanentError

log = logging.getLogger(__name__)

_SP_CONFIGURE = tsql.ENABLE_CONTAINMENT


@dataclass
class Outcome:
    """What a safe restore did besides the RESTORE itself."""
    tail_log: str | None = None
    warnings: list[str] = field(default_factory=list)


def _numbers(exc: DrError) -> list[int]:
    cause = exc.__cause__
    return error_numbers(error_parts(cause)[1]) if cause is not None else []


def _extend(exc: DrError, text: str) -> None:
    """Add to an error's message (and its str()) without replacing it: the restore's error stays first."""
    exc.message += text
    exc.args = (exc.message,)


def _major(version: Any) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


class SafeRestore:
    """One restore of ``devices`` (every stripe) as ``target`` on an open engine session (``run`` / ``first``),
    then its ``logs`` (log backups in LSN order) WITH NORECOVERY and RECOVERY."""

    def __init__(self, session: Any, server: str, target: str, devices: Sequence[str], options: RestoreOptions,
                 stats_percent: int, say: Callable[[str], None] | None = None, logs: Sequence[str] = ()) -> None:
        self.session, self.server, self.target, self.devices = session, server, target, list(devices)
        self.logs = list(logs)
        self.options, self.stats_percent = options, stats_percent
        self.quoted = tsql.quote_name(target)
        self.outcome = Outcome()
        self._say = say or (lambda line: log.info("%s", line))

    # ----------------------------------------------------------------------------------------- pre-flight
    def instance(self) -> dict[str, Any]:
        return self.session.first(tsql.INSTANCE, action="read the server's version and default paths") or {}

    def header(self, version: str) -> dict[str, Any]:
        """The backup's RESTORE HEADERONLY row; a newer version than the server's is refused (3169)."""
        try:
            sets = self.session.run(tsql.header_only(self.devices), action="RESTORE HEADERONLY")
        except DrError as exc:
            if 3241 in _numbers(exc):
                raise PermanentError(
                    f"SQL Server {version} on {self.server} cannot read the backup's header, the media family is "
                    "incorrectly formed (3241): the backup was taken on a newer SQL Server version (an older "
                    "server cannot read a newer backup, as with 3169) or the file is damaged",
                    hint=RULES[3169][1] + " If both servers run the same version, the file is damaged: restore "
                    "another backup set.") from exc
            raise
        if not sets or not sets[0]:
            raise PermanentError(f"RESTORE HEADERONLY found no backup set in {self.devices[0]}",
                                 hint="The file is not a database backup: check the source path.")
        row = sets[0][0]
        if _major(row.get("SoftwareVersionMajor")) > _major(version):
            made = ".".join(str(row.get(k)) for k in ("SoftwareVersionMajor", "SoftwareVersionMinor",
                                                       "SoftwareVersionBuild"))
            raise PermanentError(f"the backup was taken on SQL Server {made}, newer than {version} on "
                                 f"{self.server}: SQL Server cannot restore it (3169)", hint=RULES[3169][1])
        return row

    def check_backup(self, header: dict[str, Any], existing: dict[str, Any] | None) -> str:
        """The backup's database name against the set's and the target's; checksums. Returns the backup's name."""
        held = str(header.get("DatabaseName") or "")
        o = self.options
        override = " Pass --allow-database-mismatch to restore it anyway."
        if o.expected_database and held.casefold() != o.expected_database.casefold():
            self._refuse_or_warn(f"the backup holds database {held!r}, not {o.expected_database!r} as the backup "
                                 "set says", "The artifact does not hold the database it is named after: restore "
                                 "another backup set." + override)
        if existing is not None and held.casefold() != self.target.casefold():
            self._refuse_or_warn(f"the backup holds database {held!r} and would replace the existing database "
                                 f"{self.target!r} on {self.server}",
                                 "Check --database / --target-database (RESTORE's own safety check, 3154, is "
                                 "off under REPLACE); restore under a new name, or drop the target first." + override)
        if not int(header.get("HasBackupChecksums") or 0):
            text = (f"the backup of {held!r} has no page checksums (taken WITHOUT CHECKSUM): RESTORE cannot prove "
                    "its pages are intact")
            if not (o.allow_no_checksum or o.scratch):
                raise PermanentError(text, hint="Restore a backup taken WITH CHECKSUM (appservice-dr's own "
                                     "backups are), or pass --allow-no-checksum and run DBCC CHECKDB afterwards.")
            self.outcome.warnings.append(text)
        return held

    def _refuse_or_warn(self, text: str, hint: str) -> None:
        if not self.options.allow_database_mismatch:
            raise PermanentError(f"restore of {self.quoted} refused: {text}", hint=hint)
        self.outcome.warnings.append(text + " (--allow-database-mismatch)")

    def check_server(self, header: dict[str, Any]) -> None:
        if not int(header.get("Containment") or 0):
            return
        row = self.session.first(tsql.CONTAINMENT, action="read 'contained database authentication'")
        if row is not None and not int(row.get("value_in_use") or 0):
            raise PermanentError(f"the backup is of a partially contained database and {self.server} has "
                                 "'contained database authentication' off: RESTORE would fail (12824)",
                                 hint=f"As sysadmin on {self.server} run {_SP_CONFIGURE} then restore again.")

    def target_row(self) -> dict[str, Any] | None:
        return self.session.first(tsql.TARGET_DATABASE, self.target, action=f"look up database {self.quoted}")

    def check_target(self, row: dict[str, Any]) -> None:
        """Refuse an availability-group member, and open sessions without --force-disconnect."""
        if int(row.get("in_ag") or 0):
            ag = self.session.first(tsql.TARGET_AG, self.target, action=f"find {self.quoted}'s availability group")
            name = tsql.quote_name(str(ag["ag_name"]), "availability group") if ag else "[<ag>]"
            primary = bool(ag and int(ag.get("is_primary_replica") or 0))
            remove = (f"ALTER AVAILABILITY GROUP {name} REMOVE DATABASE {self.quoted};" if primary else
                      f"ALTER DATABASE {self.quoted} SET HADR OFF; (on this secondary; or on the primary: ALTER "
                      f"AVAILABILITY GROUP {name} REMOVE DATABASE {self.quoted};)")
            raise PermanentError(f"{self.quoted} on {self.server} has joined availability group {name}: RESTORE "
                                 "cannot replace it (3104)",
                                 hint=f"Remove it from the group first: {remove} Restore, then add it back "
                                      f"(ALTER AVAILABILITY GROUP {name} ADD DATABASE {self.quoted}; and seed "
                                      "the secondaries).")
        if str(row.get("state_desc")) != ONLINE or self.options.force_disconnect:
            return
        sessions = self.session.run(tsql.USER_SESSIONS, self.target, action=f"count {self.quoted}'s sessions")
        count = len(sessions[0]) if sessions else 0
        if count:
            raise PermanentError(f"{self.quoted} on {self.server} has {count} open session(s) (e.g. the App "
                                 "Service controllers): RESTORE needs exclusive access (3101)",
                                 hint="Stop the App Service controllers' connections, or rerun with "
                                      "--force-disconnect (ALTER DATABASE ... SET SINGLE_USER WITH ROLLBACK "
                                      "IMMEDIATE: their open transactions roll back).")

    def restore(self, data_path: str | None, log_path: str | None, on_message: Callable[[Any], None]) -> str:
        """The whole restore; returns the database state after it (ONLINE, else it raised)."""
        session, quoted, database = self.session, self.quoted, self.target
        instance = self.instance()
        header = self.header(str(instance.get("version") or "?"))
        existing = self.target_row()
        held = self.check_backup(header, existing)
        self.check_server(header)
        if existing is not None:
            self.check_target(existing)
        sets = session.run(tsql.filelist_only(self.devices), action="RESTORE FILELISTONLY")
        files = sets[0] if sets else []
        if not files:
            raise PermanentError(f"RESTORE FILELISTONLY found no database files in {self.devices[0]}",
                                 hint="The file is not a database backup: check the source path.")
        moves = tsql.plan_moves(database, files, *move_dirs(data_path, log_path, database, held, instance))
        exclusive = self.take_exclusive(existing) if existing is not None else False
        try:
            if existing is not None:
                self.tail_log(existing)
            session.run(tsql.restore_database(database, self.devices, moves, self.stats_percent,
                                              checksum=bool(int(header.get("HasBackupChecksums") or 0)),
                                              recovery=not self.logs),
                        action=f"RESTORE DATABASE {quoted}", on_message=on_message, database=database)
        except DrError as exc:
            if exclusive or self.outcome.tail_log:
                for problem in self.put_back(exclusive):
                    _extend(exc, f"; afterwards {quoted} could not be put back: {problem}")
            if self.outcome.tail_log:
                _extend(exc, f"; the tail-log backup is kept at {self.outcome.tail_log}")
            raise
        self.apply_logs()
        self.finish(exclusive)
        row = session.first(tsql.DATABASE_STATE, database, action=f"check restored database {quoted}")
        state = str(row["state_desc"]) if row else "MISSING"
        if state != ONLINE:
            raise PermanentError(f"restored database {quoted} on {self.server} is {state}, not ONLINE",
                                 hint="Look at the SQL Server error log for the restore; RESTORE ... WITH "
                                      "RECOVERY should leave the database ONLINE.")
        return state

    def apply_logs(self) -> None:
        """The set's log backups after the full (restored WITH NORECOVERY); a failure leaves the target
        RESTORING from the full backup, never put back (the original is already replaced)."""
        if not self.logs:
            return
        try:
            apply_logs(self.session, self.target, self.logs, self.stats_percent)
        except DrError as exc:
            _extend(exc, f"; {self.quoted} is left RESTORING from the full backup (RESTORE DATABASE {self.quoted} "
                         "WITH RECOVERY brings it ONLINE without the later log backups)")
            if self.outcome.tail_log:
                _extend(exc, f"; the tail-log backup is kept at {self.outcome.tail_log}")
            raise

    # ------------------------------------------------------------------------------------ changing things
    def take_exclusive(self, row: dict[str, Any]) -> bool:
        """SET SINGLE_USER WITH ROLLBACK IMMEDIATE when ONLINE and allowed (never on RESTORING: 5052)."""
        if str(row.get("state_desc")) != ONLINE or not self.options.force_disconnect:
            return False
        self.session.run(tsql.single_user(self.target), action=f"end the sessions of {self.quoted}",
                         database=self.target)
        self._say(f"{self.quoted}: other sessions ended (SINGLE_USER WITH ROLLBACK IMMEDIATE)")
        return True

    def check_tail_log(self, row: dict[str, Any]) -> None:
        """--tail-log-backup of an ONLINE target needs a log to back up (not the SIMPLE recovery model)."""
        if str(row.get("recovery_model_desc")) == "SIMPLE":
            raise PermanentError(f"--tail-log-backup: {self.quoted} uses the SIMPLE recovery model, which has no "
                                 "log to back up", hint="Restore without --tail-log-backup (the changes since the "
                                 "backup set are lost), or take a full backup of the database first.")

    def tail_log(self, row: dict[str, Any]) -> None:
        directory = self.options.tail_log_dir
        if not directory:
            return
        if str(row.get("state_desc")) != ONLINE:
            self.outcome.warnings.append(f"no tail-log backup: {self.quoted} is {row.get('state_desc')}")
            return
        self.check_tail_log(row)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        device = tsql.join_path(directory, f"{self.target}_tail_{stamp}.trn")
        self.session.run(tsql.tail_log_backup(self.target, device, self.stats_percent),
                         action=f"BACKUP LOG {self.quoted} (tail-log, NORECOVERY)", database=self.target)
        self.outcome.tail_log = device
        self._say(f"tail-log backup of {self.quoted} kept at {device} ({self.quoted} is now RESTORING)")

    def put_back(self, exclusive: bool) -> list[str]:
        """After a failed restore: a RESTORING target left by the tail-log backup is recovered, a SINGLE_USER
        one set MULTI_USER. Returns what could not be done (never raises: the restore's error comes first)."""
        problems = []
        try:
            row = self.target_row()
            if row is not None and self.outcome.tail_log and str(row.get("state_desc")) == "RESTORING":
                self.session.run(tsql.recover_only(self.target), action=f"recover {self.quoted}",
                                 database=self.target)
                row = self.target_row()
            if exclusive and row is not None and str(row.get("state_desc")) == ONLINE \
                    and str(row.get("user_access_desc")) == "SINGLE_USER":
                self.session.run(tsql.multi_user(self.target), action=f"set {self.quoted} MULTI_USER",
                                 database=self.target)
        except DrError as exc:
            log.warning("restore of %s failed and %s could not be put back: %s", self.quoted, self.quoted,
                        exc.message)
            problems.append(f"{exc.message} (how to fix: {exc.hint})")
        return problems

    def finish(self, exclusive: bool) -> None:
        """After a good restore: a database restored SINGLE_USER (the backup's setting) is opened again."""
        row = self.target_row()
        if exclusive and row is not None and str(row.get("user_access_desc")) == "SINGLE_USER":
            self.session.run(tsql.multi_user(self.target), action=f"set {self.quoted} MULTI_USER",
                             database=self.target)
