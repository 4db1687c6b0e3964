"""After a full backup of a SQL Server database: is its transaction log backed up? Warn when it is not.

A FULL-recovery database whose log nobody backs up grows its log without bound, and its RPO is the interval of
the full backups (this tool's COPY_ONLY fulls never truncate the log). After each full backup the worker reads
the engine's :class:`~workers.engines.sqlserver_log.LogHealth` and, when it calls for it, returns one
``job-failed`` warning (``severity = warning``, error class ``LogBackupMissing``, ``will_retry`` false) that the
notifier delivers, and counts it in ``appsvc_dr_database_log_warnings_total{database,reason}``; the age of the
newest log backup is ``appsvc_dr_database_log_backup_age_seconds{database}``. The warning's event id derives
from stamp, set and database: a redelivered backup job re-emits the same warning, which consumers deduplicate.
Reading the log state is advisory: a failure there is logged and never fails the (successful) backup.
"""
from __future__ import annotations

import uuid

from contracts import DatabaseBackupRequested, Envelope, JobFailed, JobFailedPayload
from workers.middleware.metrics import Metrics
from workers.runtime.errors import DrError
from workers.runtime.worker import JobContext

ERROR_CLASS = "LogBackupMissing"
_IDS = uuid.UUID("3b0f6a9e-2f4c-4f3e-8d7a-5c1e9b2a7d40")
HINT = ("Back up the transaction log of {database} regularly (SQL Agent / Ola Hallengren's DatabaseBackup "
        "@BackupType = 'LOG', or the DBA's tool): the full backups taken here are COPY_ONLY and never truncate "
        "the log. If point-in-time recovery is not needed, switch it to SIMPLE recovery (ALTER DATABASE ... SET "
        "RECOVERY SIMPLE; not for Always On databases). To tune or silence this check set "
        "APPSVC_DR_DATABASE__LOG_BACKUP_MAX_AGE_MINUTES (0 = off).")


def warning_event_id(stamp: str, set_id: str, database: str) -> uuid.UUID:
    return uuid.uuid5(_IDS, f"{stamp}/{set_id}/{database}")


def check_log(engine, database: str, max_age_minutes: int, event: DatabaseBackupRequested, ctx: JobContext,
              metrics: Metrics, *, worker: str, source: str) -> list[Envelope]:
    """The warning for ``database`` (empty when its log is fine, the check is off or the engine has none)."""
    read = getattr(engine, "log_health", None)
    if read is None or max_age_minutes <= 0:
        return []
    try:
        health = read(database)
    except DrError as exc:
        ctx.logger.warning("%s backed up, but its log state is unreadable: %s", database, exc.message)
        return []
    if health.last_log_backup_age is not None:
        metrics.log_backup_age.labels(database).set(health.last_log_backup_age)
    found = health.warning(max_age_minutes)
    if found is None:
        return []
    reason, text = found
    metrics.log_warnings.labels(database, reason).inc()
    hint = HINT.format(database=database)
    ctx.logger.warning("%s. How to fix: %s", text, hint)
    return [event.follow_up(JobFailed, JobFailedPayload(
        worker=worker, failed_event_id=event.event_id, failed_event_type=event.type, error_class=ERROR_CLASS,
        message=f"{text} (backup set {event.correlation_id}; the full backup itself succeeded)"[:4000],
        attempts=1, will_retry=False, hint=hint[:2000], severity="warning"),
        source=source, event_id=warning_event_id(event.stamp, event.correlation_id, database))]
