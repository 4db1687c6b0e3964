"""Worker factories used by the runtime tests, in-process and as `appsvc-dr worker tests.integration.sample_workers:X`.

Child processes learn where to leave their traces from APPSVC_DR_TEST_DIR: one file per event id, written
when a job starts (``<id>.started``) and when it finishes (``<id>.done``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from contracts import BackupDue, Envelope, Payload
from workers.app import Deps
from workers.runtime.errors import PermanentError, TransientError
from workers.runtime.worker import WorkerSpec


class PingPayload(Payload):
    n: int


class Ping(Envelope):
    type: Literal["test-ping"] = "test-ping"
    version: Literal[1] = 1
    payload: PingPayload


class Pong(Envelope):
    type: Literal["test-pong"] = "test-pong"
    version: Literal[1] = 1
    payload: PingPayload


def _trace(event: Envelope, suffix: str) -> None:
    directory = Path(os.environ["APPSVC_DR_TEST_DIR"])
    (directory / f"{event.event_id}.{suffix}").write_text(str(os.getpid()))


def slow(deps: Deps) -> WorkerSpec:
    """Consumes backup-due; each job takes APPSVC_DR_TEST_JOB_SECONDS (default 5)."""
    seconds = float(os.environ.get("APPSVC_DR_TEST_JOB_SECONDS", "5"))

    def handle(event, ctx):
        _trace(event, "started")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
        _trace(event, "done")
        return []
    return WorkerSpec("slow", {BackupDue: handle})


def flaky(deps: Deps) -> WorkerSpec:
    """Fails permanently while the file APPSVC_DR_TEST_DIR/broken exists, else succeeds."""

    def handle(event, ctx):
        if (Path(os.environ["APPSVC_DR_TEST_DIR"]) / "broken").exists():
            raise PermanentError("the target store is read-only", hint="Make the store writable, then replay.")
        _trace(event, "done")
        return []
    return WorkerSpec("flaky", {BackupDue: handle})


def transient_once(deps: Deps) -> WorkerSpec:
    def handle(event, ctx):
        _trace(event, f"attempt{ctx.attempt}")
        if ctx.attempt == 0:
            raise TransientError("S3 endpoint timed out")
        _trace(event, "done")
        return []
    return WorkerSpec("transient", {BackupDue: handle})


def standin(deps: Deps) -> WorkerSpec:
    """Runs under the name APPSVC_DR_TEST_WORKER_NAME (a built-in worker's name, so metrics carry the labels the
    dashboard and alerts select on) and consumes backup-due and backup-set-completed. What a job does is named
    by its backup set id, ``<action>-<worker>-<n>``, for this worker only: ``dead`` fails permanently,
    ``retry<K>`` fails transiently on its first K attempts; anything else succeeds. Every job reports 1 MiB read.
    """
    from contracts import BackupSetCompleted
    name = os.environ["APPSVC_DR_TEST_WORKER_NAME"]

    def handle(event, ctx):
        ctx.progress("read", 1 << 20)
        action, _, target = event.correlation_id.partition("-")
        if target.startswith(f"{name}-"):
            if action == "dead":
                raise PermanentError("the share refused access", hint="Grant the backup account read access.")
            if action.startswith("retry") and ctx.attempt < int(action[len("retry"):]):
                raise TransientError("the database server is restarting")
        if name == "db-backup" and action == "ok" and isinstance(event, BackupDue):
            _full_backup_of_simulated_server(deps, event, ctx)
        return []
    return WorkerSpec(name, {BackupDue: handle, BackupSetCompleted: handle})


def _full_backup_of_simulated_server(deps: Deps, event: BackupDue, ctx) -> None:
    """The real db-backup handler backs up appservice_hosting of the simulated SQL Server (tests/sqlsim; FULL
    recovery, no log backup in msdb) and runs its log check, which sets appsvc_dr_database_log_backup_age_seconds
    to +Inf and counts the warning, as db-backup does after each full backup. Its events are not published (the
    scenario's counts stay those of the stand-in jobs)."""
    import tempfile

    from contracts import DatabaseBackupRequested, DatabaseBackupRequestedPayload
    from tests.sqlsim import PASSWORD, Simulator, app_service_server
    from workers.dbbackup.handler import SOURCE, DbBackupHandler
    from workers.dbbackup.once import StagingJobs
    from workers.engines import DatabaseSettings, SqlServerEngine
    from workers.storage.settings import StagingSettings

    with tempfile.TemporaryDirectory(prefix="sqlsim-") as root:
        sim = Simulator(app_service_server(Path(root) / "sql01"))
        settings = DatabaseSettings(server="sql01", username="backup", password=PASSWORD,
                                    databases=["appservice_hosting"])
        records = StagingJobs(StagingSettings(database_dir=str(Path(root) / "jobs")), source=SOURCE)
        handler = DbBackupHandler(settings, StagingSettings(database_dir=r"\\fileserver\staging\stamp1"),
                                  SqlServerEngine(settings, connect=sim.connect), deps.metrics, jobs=records)
        job = event.follow_up(DatabaseBackupRequested, DatabaseBackupRequestedPayload(database="appservice_hosting"),
                              source="db-backup")
        events = handler.backup_one(job, ctx)
    assert any(e.type == "job-failed" for e in events), "the log check gave no warning"


def slow_db_backup(deps: Deps) -> WorkerSpec:
    """The real db-backup worker whose engine waits APPSVC_DR_TEST_JOB_SECONDS (default 0) before each backup,
    leaving ``<database>.<pid>.started`` in APPSVC_DR_TEST_DIR (a worker to kill mid-job)."""
    from workers.dbbackup.handler import SPEC, DbBackupHandler
    from workers.engines.factory import build_engine

    seconds = float(os.environ.get("APPSVC_DR_TEST_JOB_SECONDS", "0"))
    engine = build_engine(deps.settings.database)

    class Held:
        name, server = engine.name, engine.server

        def backup(self, database, staging_path, progress=None):
            (Path(os.environ["APPSVC_DR_TEST_DIR"]) / f"{database}.{os.getpid()}.started").write_text("")
            time.sleep(seconds)
            return engine.backup(database, staging_path, progress)

    return SPEC.bind(DbBackupHandler(deps.settings.database, deps.settings.staging, Held()))
