"""The db-backup handler's decisions with a stand-in engine: fan-out, hand-over to upload, skipped replicas."""
from __future__ import annotations

import logging
import threading

from contracts import BackupDue, BackupDuePayload, DatabaseBackupRequested, DatabaseBackupRequestedPayload
from workers.dbbackup.handler import DbBackupHandler
from workers.engines.base import SKIPPED_NOT_PREFERRED, BackupResult
from workers.engines.settings import DatabaseSettings
from workers.runtime.worker import JobContext
from workers.storage.settings import StagingSettings


class StubEngine:
    """Records the staging path it was given; returns a canned result."""

    name, server = "sqlserver", "sql1,1433"

    def __init__(self, skipped: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.skipped = skipped

    def backup(self, database, staging_path, progress=None):
        self.calls.append((database, staging_path))
        if progress:
            progress(50)
        if self.skipped:
            return BackupResult(database, staging_path, 0, 0.1, self.name, self.server,
                                skipped_reason=SKIPPED_NOT_PREFERRED)
        return BackupResult(database, staging_path, 4096, 2.5, self.name, self.server, first_lsn="42000000001",
                            last_lsn="42000000099", checksum="sha256:" + "ab" * 32)


def ctx() -> JobContext:
    return JobContext("db-backup", "k", 0, logging.LoggerAdapter(logging.getLogger("t"), {}), threading.Event())


def make_handler(engine: StubEngine) -> DbBackupHandler:
    return DbBackupHandler(DatabaseSettings(databases=["appservice_hosting", "appservice_metering"]),
                           StagingSettings(database_dir=r"\\fs1\staging\dr"), engine)


def test_backup_due_fans_out_one_job_per_database_and_ignores_other_components():
    handler = make_handler(StubEngine())
    due = BackupDue(source="t", stamp="s1", correlation_id="set-1", payload=BackupDuePayload(backup_set_id="set-1"))
    jobs = handler.backup_due(due, ctx())
    assert [j.payload.database for j in jobs] == ["appservice_hosting", "appservice_metering"]
    assert all(j.correlation_id == "set-1" and j.causation_id == due.event_id for j in jobs)
    only_files = BackupDue(source="t", stamp="s1", correlation_id="set-2",
                           payload=BackupDuePayload(backup_set_id="set-2", components=("fileshare",)))
    assert handler.backup_due(only_files, ctx()) == []


def test_sql_server_writes_to_the_unc_staging_share_and_hands_the_file_to_upload():
    engine = StubEngine()
    job = DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                  payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
    ready, backed = make_handler(engine).backup_one(job, ctx())
    assert engine.calls == [("appservice_hosting", r"\\fs1\staging\dr\s1-set-1-appservice_hosting.bak")]
    assert ready.type == "artifact-ready" and ready.payload.staged_path == engine.calls[0][1]
    assert (ready.payload.component, ready.payload.name) == ("databases", "appservice_hosting.bak")
    assert ready.payload.sha256 == "ab" * 32 and ready.payload.size == 4096 and ready.payload.delete_staged
    assert backed.payload.first_lsn == "42000000001" and backed.payload.server == "sql1,1433"


def test_not_the_preferred_replica_is_reported_not_failed_and_nothing_is_uploaded():
    job = DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                  payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
    [backed] = make_handler(StubEngine(skipped=True)).backup_one(job, ctx())
    assert backed.type == "database-backed-up" and backed.payload.skipped_reason == SKIPPED_NOT_PREFERRED
    assert backed.payload.staged_path is None


def test_a_striped_backup_hands_every_stripe_to_upload_as_its_own_artifact_with_the_backup_facts(tmp_path):
    # Given a SQL Server backup in three stripes on the simulated server
    from tests.unit.sqlserver_sim import make
    engine, sim = make(tmp_path, stripes=3, databases=["appservice_hosting"])
    handler = DbBackupHandler(engine.settings, StagingSettings(database_dir=r"\\fileserver\staging\stamp1"), engine)
    job = DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                  payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
    # When the job runs
    ready = [e for e in handler.backup_one(job, ctx()) if e.type == "artifact-ready"]
    # Then each stripe file SQL Server wrote is one artifact-ready named <db>.bak.<i>of3, deleted after upload
    assert [r.payload.name for r in ready] == [f"appservice_hosting.bak.{i}of3" for i in (1, 2, 3)]
    assert [r.payload.staged_path for r in ready] == [
        rf"\\fileserver\staging\stamp1\s1-set-1-appservice_hosting.stripe{i}of3.bak" for i in (1, 2, 3)]
    assert all(sim.server.host_path(r.payload.staged_path).is_file() and r.payload.delete_staged for r in ready)
    # And each carries the backup's facts for the set's manifest
    history = sim.server.history[-1]
    meta = ready[1].payload.metadata
    assert (meta["stripe"], meta["stripes"], meta["copy_only"], meta["backup_type"]) == (2, 3, True, "full")
    assert (meta["first_lsn"], meta["last_lsn"]) == (str(history.first_lsn), str(history.last_lsn))
    assert meta["server_version"] == "16.0.4135" and meta["started_at"] <= meta["finished_at"]
