"""The database backup worker.

backup-due naming databases → one database-backup-requested per configured database (each retries and fails
on its own) → engine backup to the staging location, verified → artifact-ready (the upload worker stores it)
+ database-backed-up (size, duration, engine, server, LSNs).

A striped SQL Server backup (``DATABASE__STRIPES`` = N) gives N artifact-ready events, one per stripe file,
named ``<db>.bak.<i>ofN`` (see ``workers/artifacts/stripes.py``): each is uploaded, recorded and its staged
file deleted on its own, and the catalog counts the database once every stripe is stored. Every artifact-ready
of a database backup carries its ``metadata`` (engine, server and its version, LSNs, start and finish, copy-only,
stripe), which the upload worker keeps in the artifact's signed record and the set's manifest.

SQL Server, optional: ``database-log-backup-requested`` for a backup set takes a ``BACKUP LOG`` of the database
into that set's chain (``<db>.log-<last LSN>.trn``, see ``workers/artifacts/logchain.py``); restore applies them.

SQL Server: after a full backup the worker checks that the database's transaction log is backed up by someone
and emits a ``job-failed`` warning when not (see ``workers/dbbackup/loghealth.py``).

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
                       DatabaseBackupRequested, DatabaseBackupRequestedPayload, DatabaseLogBackupRequested, Envelope)
from workers.artifacts.jobs import JobKey, follow_up
from workers.artifacts.logchain import log_name
from workers.artifacts.stripes import stripe_name
from workers.dbbackup.loghealth import check_log
from workers.dbbackup.once import StagingJobs, foreign
from workers.engines.base import BackupResult, DatabaseEngine
from workers.engines.factory import build_engine
from workers.engines.settings import DatabaseSettings
from workers.middleware.metrics import Metrics
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.worker import JobContext, WorkerSpec
from workers.storage.localfs import make_private_dirs
from workers.storage.settings import StagingSettings
from workers.storage.staged import DATABASE_DIR_SETTING, Root, is_unc, join, locate

WORKER = "db-backup"
SOURCE = f"worker:{WORKER}"


def artifact_name(engine: str, database: str) -> str:
    return f"{database}.bak" if engine == "sqlserver" else f"{database}.dump"


def backup_metadata(result: BackupResult) -> dict[str, str | int | bool]:
    """What the set's manifest keeps about a database backup (absent facts left out)."""
    facts = {"database": result.database, "engine": result.engine, "server": result.server,
             "server_version": result.server_version, "backup_type": "full", "copy_only": result.copy_only,
             "first_lsn": result.first_lsn, "last_lsn": result.last_lsn,
             "database_backup_lsn": result.database_backup_lsn, "started_at": result.started_at,
             "finished_at": result.finished_at, "stripes": max(len(result.parts), 1)}
    return {k: v for k, v in facts.items() if v is not None}


def staged_name(event: DatabaseBackupRequested, name: str) -> str:
    """The staged backup's file name: unique per stamp, set and artifact."""
    return f"{event.stamp}-{event.correlation_id}-{name}"


def _sha(checksum: str | None) -> str | None:
    return checksum.split(":", 1)[1] if checksum and checksum.startswith("sha256:") else None


class DbBackupHandler:
    def __init__(self, database: DatabaseSettings, staging: StagingSettings, engine: DatabaseEngine,
                 metrics: Metrics | None = None, *, jobs: StagingJobs | None = None) -> None:
        self.database, self.staging, self.engine = database, staging, engine
        self.metrics = metrics or Metrics()
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

    def _require_configured(self, database: str, event_type: str) -> None:
        configured = self.database.databases
        if database not in configured:            # before any connection: an event may not pick the database
            raise PermanentError(f"database {database[:128]!r} is not configured for backup (configured: "
                                 f"{', '.join(configured)})",
                                 hint="Only databases in APPSVC_DR_DATABASE__DATABASES are backed up: add it there "
                                      f"if it is genuine, or fix the producer of {event_type}.")

    def backup_log(self, event: DatabaseLogBackupRequested, ctx: JobContext) -> list[Envelope]:
        """SQL Server BACKUP LOG into the set's chain: ``<db>.log-<last LSN>.trn`` (see artifacts/logchain.py)."""
        database = event.payload.database
        self._require_configured(database, event.type)
        backup_log = getattr(self.engine, "backup_log", None)
        if backup_log is None:
            raise PermanentError(f"log backups are not supported by the {self.engine.name} engine",
                                 hint="database-log-backup-requested is for SQL Server databases in FULL recovery; "
                                      "stop publishing it for this site.")
        directory = self.staging.database_dir
        if not is_unc(directory):
            make_private_dirs(directory)
        staged = join(directory, f"{event.stamp}-{event.correlation_id}-{database}-{event.event_id.hex[:12]}.trn")
        result = backup_log(database, staged, lambda pct: ctx.logger.info("%s log: %d%% backed up", database, pct))
        if result.skipped:
            # No replica the AG's backup preference allows could take it: retried with backoff, then
            # dead-lettered with this reason (a later log backup still continues the same chain).
            raise TransientError(f"log backup of {database} not taken: {result.skipped_reason}",
                                 hint="Bring a replica the availability group's backup preference allows back "
                                      "online (or reachable from the worker: APPSVC_DR_DATABASE__AG_REPLICA_SERVERS),"
                                      " or change the group's backup preference.")
        ctx.progress("backed-up", result.size)
        name = log_name(database, result.last_lsn, fallback=event.event_id.hex)
        metadata = {**backup_metadata(result), "backup_type": "log"}
        metadata.pop("stripes", None)
        sha = _sha(result.checksum)
        return [follow_up(event, ArtifactReady, ArtifactReadyPayload(
                    component="databases", name=name, staged_path=staged, sha256=sha, delete_staged=True,
                    metadata=metadata, size=result.size if sha else None), source=SOURCE),
                follow_up(event, DatabaseBackedUp, DatabaseBackedUpPayload(
                    database=result.database, engine=self.engine.name, server=result.server,  # type: ignore
                    size=result.size, duration_seconds=round(result.duration, 3), staged_path=staged,
                    first_lsn=result.first_lsn, last_lsn=result.last_lsn, backup_type="log",
                    database_backup_lsn=result.database_backup_lsn), source=SOURCE)]

    def backup_one(self, event: DatabaseBackupRequested, ctx: JobContext) -> list[Envelope]:
        database = event.payload.database
        self._require_configured(database, event.type)
        name = artifact_name(self.engine.name, database)
        job = JobKey(event.stamp, event.correlation_id, "databases", name)
        staged = join(self.staging.database_dir, staged_name(event, name))
        return self.jobs.once(event, job, ctx, lambda: self._backup_one(event, ctx, database, name),
                              lambda done: foreign(done, database=database, name=name, staged=staged))

    def _backup_one(self, event: DatabaseBackupRequested, ctx: JobContext, database: str,
                    name: str) -> list[Envelope]:
        def progress(percent: int) -> None:
            ctx.logger.info("%s: %d%% backed up", database, percent)

        result, staged = self._backup(database, staged_name(event, name), progress)
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
        warnings = check_log(self.engine, result.database, self.database.log_backup_max_age_minutes, event, ctx,
                             self.metrics, worker=WORKER, source=SOURCE)
        return [*self._ready(event, name, staged, result), backed_up, *warnings]

    @staticmethod
    def _ready(event: DatabaseBackupRequested, name: str, staged: str, result: BackupResult) -> list[Envelope]:
        """One artifact-ready per staged file: the backup, or each of its stripes (``<name>.<i>of<N>``, each
        with its own deterministic id: :func:`workers.artifacts.jobs.replay` names them the same way)."""
        metadata = backup_metadata(result)
        if len(result.parts) <= 1:
            files = [(name, staged, _sha(result.checksum), metadata)]
        else:
            sums = result.part_checksums or (None,) * len(result.parts)
            files = [(stripe_name(name, i, len(result.parts)), path, _sha(sums[i - 1]), {**metadata, "stripe": i})
                     for i, path in enumerate(result.parts, start=1)]
        return [follow_up(event, ArtifactReady, ArtifactReadyPayload(
            component="databases", name=artifact, staged_path=path, sha256=sha, delete_staged=True, metadata=facts,
            size=result.size if sha and len(files) == 1 else None), source=SOURCE,
            part=artifact if len(files) > 1 else "") for artifact, path, sha, facts in files]

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
                           DatabaseBackupRequested: DbBackupHandler.backup_one,
                           DatabaseLogBackupRequested: DbBackupHandler.backup_log}, concurrency=2)


def build_db_backup_worker(*, database: DatabaseSettings, staging: StagingSettings,
                           metrics: Metrics | None = None) -> WorkerSpec:
    handler = DbBackupHandler(database, staging, build_engine(database), metrics)
    return SPEC.bind(handler)
