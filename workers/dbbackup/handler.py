"""The database backup worker.

backup-due naming databases → one database-backup-requested per configured database (each retries and fails
on its own) → engine backup to the staging location, verified → artifact-ready (the upload worker stores it)
+ database-backed-up (size, duration, engine, server, LSNs).

A database skipped on purpose (Always On: this server is not the preferred backup replica) is not a failure of
the job: only database-backed-up with ``skipped_reason`` is emitted, no artifact. The catalog records the skip
in the backup set, keeps the set incomplete (waiting for that database) and sends the operator one warning
with how to fix it (see ``workers/catalog/skips.py``).

Exactly one backup per (set, database): the fan-out's requests get ids derived from the backup-due (a redelivered
one fans out the same events), and a request for a database the set has (or is getting) a backup of runs no
second one (``workers/dbbackup/once.py``).
"""
from __future__ import annotations

import os
import tempfile

from contracts import (ArtifactReady, ArtifactReadyPayload, BackupDue, DatabaseBackedUp, DatabaseBackedUpPayload,
                       DatabaseBackupRequested, DatabaseBackupRequestedPayload, Envelope)
from workers.artifacts.jobs import JobKey, follow_up
from workers.dbbackup.once import StagingJobs
from workers.engines.base import BackupResult, DatabaseEngine
from workers.engines.factory import build_engine
from workers.engines.settings import DatabaseSettings
from workers.runtime.errors import PermanentError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.storage.local import make_private_dirs
from workers.storage.settings import StagingSettings
from workers.storage.staged import DATABASE_DIR_SETTING, Root, is_unc, join, locate

WORKER = "db-backup"
SOURCE = f"worker:{WORKER}"


def artifact_name(engine: str, database: str) -> str:
    return f"{database}.bak" if engine == "sqlserver" else f"{database}.dump"


class DbBackupHandler:
    def __init__(self, database: DatabaseSettings, staging: StagingSettings, engine: DatabaseEngine, *,
                 jobs: StagingJobs | None = None) -> None:
        self.database, self.staging, self.engine = database, staging, engine
        self.jobs = jobs or StagingJobs(staging, source=SOURCE)   # job records: in the staging directory

    def backup_due(self, event: BackupDue, ctx: JobContext) -> list[Envelope]:
        if "databases" not in event.payload.components:
            return []
        try:
            self.jobs.prune()
        except Exception as exc:  # noqa: BLE001 - housekeeping never fails the fan-out
            ctx.logger.warning("could not prune old job records: %s", exc)
        return [follow_up(event, DatabaseBackupRequested, DatabaseBackupRequestedPayload(database=db), source=SOURCE,
                          part=db) for db in self.database.databases]

    def backup_one(self, event: DatabaseBackupRequested, ctx: JobContext) -> list[Envelope]:
        database = event.payload.database
        configured = self.database.databases
        if database not in configured:            # before any connection: an event may not pick the database
            raise PermanentError(f"database {database[:128]!r} is not configured for backup (configured: "
                                 f"{', '.join(configured)})",
                                 hint="Only databases in APPSVC_DR_DATABASE__DATABASES are backed up: add it there "
                                      "if it is genuine, or fix the producer of database-backup-requested.")
        name = artifact_name(self.engine.name, database)
        job = JobKey(event.stamp, event.correlation_id, "databases", name)
        return self.jobs.once(event, job, ctx, lambda: self._backup_one(event, ctx, database, name))

    def _backup_one(self, event: DatabaseBackupRequested, ctx: JobContext, database: str,
                    name: str) -> list[Envelope]:
        staged_name = f"{event.stamp}-{event.correlation_id}-{name}"

        def progress(percent: int) -> None:
            ctx.logger.info("%s: %d%% backed up", database, percent)

        result, staged = self._backup(database, staged_name, progress)
        backed_up = follow_up(event, DatabaseBackedUp, DatabaseBackedUpPayload(
            database=result.database, engine=self.engine.name, server=result.server, size=result.size,  # type: ignore
            duration_seconds=round(result.duration, 3), staged_path=None if result.skipped else staged,
            skipped_reason=result.skipped_reason, first_lsn=result.first_lsn, last_lsn=result.last_lsn,
            database_backup_lsn=result.database_backup_lsn), source=SOURCE)
        if result.skipped:
            ctx.logger.warning("%s on %s not backed up (%s): backup set %s/%s waits for it; the catalog notifies "
                               "the operator", database, result.server, result.skipped_reason, event.stamp,
                               event.correlation_id)
            return [backed_up]
        ctx.progress("backed-up", result.size)
        sha = result.checksum.split(":", 1)[1] if result.checksum and result.checksum.startswith("sha256:") else None
        ready = follow_up(event, ArtifactReady, ArtifactReadyPayload(
            component="databases", name=name, staged_path=staged, size=result.size if sha else None, sha256=sha,
            delete_staged=True), source=SOURCE)
        return [ready, backed_up]

    def _backup(self, database: str, staged_name: str, progress) -> tuple[BackupResult, str]:
        directory = self.staging.database_dir
        staged = join(directory, staged_name)
        if self.engine.name == "sqlserver" or not is_unc(directory):
            if not is_unc(directory):
                make_private_dirs(directory)
            return self.engine.backup(database, staged, progress), staged
        # pg_dump writes locally: dump to a private temp dir, then stream it onto the staging share
        with tempfile.TemporaryDirectory(prefix="appsvc-dr-dump-") as tmp:
            local = os.path.join(tmp, staged_name)
            result = self.engine.backup(database, local, progress)
            with locate(staged, self.staging, [Root(directory, DATABASE_DIR_SETTING)]) as (backend, key), \
                    open(local, "rb") as source:
                backend.put(key, source, size=result.size)
        return result, staged


SPEC = WorkerSpec(WORKER, {BackupDue: DbBackupHandler.backup_due,
                           DatabaseBackupRequested: DbBackupHandler.backup_one}, concurrency=2)


def build_db_backup_worker(*, database: DatabaseSettings, staging: StagingSettings) -> WorkerSpec:
    handler = DbBackupHandler(database, staging, build_engine(database))
    return SPEC.bind(handler)
