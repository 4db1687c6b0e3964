"""Transaction logs of a SQL Server database: is its log backed up, or does it grow unbounded? And applying
log backups after a restore (:func:`apply_logs`).

A database in FULL (or BULK_LOGGED) recovery keeps every log record until a log backup takes it; COPY_ONLY full
backups (this tool's default) never truncate the log. Without someone's ``BACKUP LOG`` the log grows without
bound and the point-in-time RPO is the full-backup interval. Two signals, both read-only:

* ``sys.databases.log_reuse_wait_desc = LOG_BACKUP``: the log is waiting for a log backup right now;
* the newest ``msdb.dbo.backupset`` row with ``type = 'L'``: its ``backup_finish_date`` compared with the
  server's own ``GETDATE()`` (msdb keeps server-local times, so both sides come from the server's clock).

https://learn.microsoft.com/en-us/sql/relational-databases/logs/the-transaction-log-sql-server
(factors that can delay log truncation), https://learn.microsoft.com/en-us/sql/relational-databases/system-tables/backupset-transact-sql
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, Sequence

from workers.engines import sqlserver_sql as tsql
from workers.runtime.errors import DrError

log = logging.getLogger(__name__)

RECOVERY = "SELECT name, recovery_model_desc, log_reuse_wait_desc FROM sys.databases WHERE name = ?"
LAST_LOG_BACKUP = ("SELECT TOP (1) bs.backup_finish_date, GETDATE() AS server_now FROM msdb.dbo.backupset AS bs "
                   "WHERE bs.database_name = ? AND bs.type = 'L' ORDER BY bs.backup_finish_date DESC")
LOGGED_MODELS = ("FULL", "BULK_LOGGED")
NEVER = float("inf")


class _Session(Protocol):
    def first(self, sql: str, *params: Any, action: str) -> dict[str, Any] | None: ...

    def run(self, sql: str, *params: Any, action: str, database: str | None = None) -> Any: ...


@dataclass(frozen=True)
class LogHealth:
    database: str
    recovery_model: str                  # FULL | BULK_LOGGED | SIMPLE
    log_reuse_wait: str                  # sys.databases.log_reuse_wait_desc, e.g. NOTHING, LOG_BACKUP
    last_log_backup_age: float | None    # seconds since the newest log backup; NEVER: none in msdb; None: unknown

    def warning(self, max_age_minutes: int) -> tuple[str, str] | None:
        """(reason, text) when the log is not being backed up, else None. ``max_age_minutes`` 0: never."""
        if max_age_minutes <= 0 or self.recovery_model.upper() not in LOGGED_MODELS:
            return None
        model = f"{self.database} is in {self.recovery_model} recovery"
        if self.log_reuse_wait.upper() == "LOG_BACKUP":
            return "log-reuse-wait", (f"{model} and its transaction log waits for a log backup "
                                      "(log_reuse_wait_desc = LOG_BACKUP): the log grows until one runs")
        age = self.last_log_backup_age
        if age == NEVER:
            return "no-log-backup", f"{model} and msdb records no log backup of it: the log is never truncated"
        if age is not None and age > max_age_minutes * 60:
            return "log-backup-overdue", (f"{model} and its newest log backup finished {age / 3600:.1f} h ago "
                                          f"(more than {max_age_minutes} min)")
        return None


def read_log_health(session: _Session, database: str) -> LogHealth:
    row = session.first(RECOVERY, database, action=f"read the recovery model of {database!r}") or {}
    age: float | None
    try:
        last = session.first(LAST_LOG_BACKUP, database, action="read msdb log backup history")
        age = NEVER if last is None else _seconds_between(last.get("backup_finish_date"), last.get("server_now"))
    except DrError as exc:         # history is advisory: the backup itself succeeded
        log.warning("cannot read the log backup history of %s: %s", database, exc.message)
        age = None
    return LogHealth(str(row.get("name") or database), str(row.get("recovery_model_desc") or "UNKNOWN"),
                     str(row.get("log_reuse_wait_desc") or "UNKNOWN"), age)


def newest_age(ages: Sequence[float | None]) -> float | None:
    """The age of the newest log backup among several msdb histories (an AG's replicas): the smallest known
    age; NEVER when every known history has none; None when no history could be read."""
    known = [age for age in ages if age is not None]
    return min(known) if known else None


def _seconds_between(finished: object, now: object) -> float | None:
    if isinstance(finished, datetime) and isinstance(now, datetime):
        return max(0.0, (now - finished).total_seconds())
    return None


def apply_logs(session: _Session, database: str, logs: Sequence[str], stats_percent: int) -> None:
    """RESTORE LOG each of ``logs`` (in LSN order) WITH NORECOVERY onto ``database`` (restored WITH
    NORECOVERY), then RESTORE DATABASE ... WITH RECOVERY. A gap in the chain is SQL Server's 4305 / 4326."""
    quoted = tsql.quote_name(database)
    for device in logs:
        session.run(tsql.restore_log(database, [device], stats_percent), action=f"RESTORE LOG {quoted}",
                    database=database)
    session.run(tsql.recover_only(database), action=f"RESTORE DATABASE {quoted} WITH RECOVERY",
                database=database)
