"""The db-backup handler's decisions with a stand-in engine: fan-out, hand-over to upload, skipped replicas."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from contracts import BackupDue, BackupDuePayload, DatabaseBackupRequested, DatabaseBackupRequestedPayload
from workers.dbbackup.handler import SOURCE, DbBackupHandler
from workers.dbbackup.once import StagingJobs
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


def make_handler(engine: StubEngine, records: Path) -> DbBackupHandler:
    """The staging share is not reachable here: the job records go to a local directory instead."""
    return DbBackupHandler(DatabaseSettings(databases=["appservice_hosting", "appservice_metering"]),
                           StagingSettings(database_dir=r"\\fs1\staging\dr"), engine,
                           jobs=StagingJobs(StagingSettings(database_dir=str(records)), source=SOURCE))


def test_backup_due_fans_out_one_job_per_database_and_ignores_other_components(tmp_path):
    handler = make_handler(StubEngine(), tmp_path)
    due = BackupDue(source="t", stamp="s1", correlation_id="set-1", payload=BackupDuePayload(backup_set_id="set-1"))
    jobs = handler.backup_due(due, ctx())
    assert [j.payload.database for j in jobs] == ["appservice_hosting", "appservice_metering"]
    assert all(j.correlation_id == "set-1" and j.causation_id == due.event_id for j in jobs)
    only_files = BackupDue(source="t", stamp="s1", correlation_id="set-2",
                           payload=BackupDuePayload(backup_set_id="set-2", components=("fileshare",)))
    assert handler.backup_due(only_files, ctx()) == []


def test_sql_server_writes_to_the_unc_staging_share_and_hands_the_file_to_upload(tmp_path):
    engine = StubEngine()
    job = DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                  payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
    ready, backed = make_handler(engine, tmp_path).backup_one(job, ctx())
    assert engine.calls == [("appservice_hosting", r"\\fs1\staging\dr\s1-set-1-appservice_hosting.bak")]
    assert ready.type == "artifact-ready" and ready.payload.staged_path == engine.calls[0][1]
    assert (ready.payload.component, ready.payload.name) == ("databases", "appservice_hosting.bak")
    assert ready.payload.sha256 == "ab" * 32 and ready.payload.size == 4096 and ready.payload.delete_staged
    assert backed.payload.first_lsn == "42000000001" and backed.payload.server == "sql1,1433"


def test_not_the_preferred_replica_is_reported_not_failed_and_nothing_is_uploaded(tmp_path):
    job = DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                  payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
    [backed] = make_handler(StubEngine(skipped=True), tmp_path).backup_one(job, ctx())
    assert backed.type == "database-backed-up" and backed.payload.skipped_reason == SKIPPED_NOT_PREFERRED
    assert backed.payload.staged_path is None


def test_a_striped_backup_hands_every_stripe_to_upload_as_its_own_artifact_with_the_backup_facts(tmp_path):
    # Given a SQL Server backup in three stripes on the simulated server
    from tests.unit.sqlserver_sim import make
    engine, sim = make(tmp_path, stripes=3, databases=["appservice_hosting"])
    handler = DbBackupHandler(engine.settings, StagingSettings(database_dir=r"\\fileserver\staging\stamp1"), engine,
                              jobs=StagingJobs(StagingSettings(database_dir=str(tmp_path / "jobs")), source=SOURCE))
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


class NoPrune(StagingJobs):
    def __init__(self) -> None:
        super().__init__(StagingSettings(), source=SOURCE)

    def prune(self, now=None) -> int:
        return 0


def test_a_redelivered_backup_due_fans_out_the_same_requests():
    due = BackupDue(source="t", stamp="s1", correlation_id="set-1", payload=BackupDuePayload(backup_set_id="set-1"))
    handler = DbBackupHandler(DatabaseSettings(databases=["a", "b"]), StagingSettings(), StubEngine(),
                              jobs=NoPrune())
    # When the same backup-due is handled twice
    first, second = handler.backup_due(due, ctx()), handler.backup_due(due, ctx())
    # Then the requests carry the same ids (one per database), so downstream sees the same events
    assert [j.event_id for j in first] == [j.event_id for j in second] and len({j.event_id for j in first}) == 2


def test_a_second_request_for_a_backed_up_database_re_emits_the_result_without_a_second_backup(tmp_path):
    engine = StubEngine()
    handler = make_handler(engine, tmp_path)
    requests = [DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                        payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
                for _ in range(2)]                    # two events (a backup-due published twice)
    ready, backed = handler.backup_one(requests[0], ctx())
    # When the other request arrives after the backup finished
    again_ready, again_backed = handler.backup_one(requests[1], JobContext(
        "db-backup", "db-backup:other", 0, logging.LoggerAdapter(logging.getLogger("t"), {}), threading.Event()))
    # Then the engine ran once; the result is re-emitted for the new request
    assert len(engine.calls) == 1
    assert (again_ready.payload, again_backed.payload) == (ready.payload, backed.payload)
    assert again_ready.causation_id == requests[1].event_id and again_ready.event_id != ready.event_id


def test_job_records_of_old_sets_are_pruned_and_recent_ones_kept(tmp_path):
    # Given the job records of a set backed up 15 days ago and of one backed up now
    handler = make_handler(StubEngine(), tmp_path)
    for set_id in ("old-set", "new-set"):
        request = DatabaseBackupRequested(source="t", stamp="s1", correlation_id=set_id,
                                          payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
        handler.backup_one(request, ctx())
    old = tmp_path / ".jobs/s1+old-set+appservice_hosting.bak+done.json"
    stale = time.time() - 15 * 86400
    os.utime(old, (stale, stale))
    # When the next backup-due fans out (it prunes)
    handler.backup_due(BackupDue(source="t", stamp="s1", correlation_id="set-3",
                                 payload=BackupDuePayload(backup_set_id="set-3")), ctx())
    # Then only the old set's record is gone
    assert not old.exists()
    assert (tmp_path / ".jobs/s1+new-set+appservice_hosting.bak+done.json").exists()


def test_a_second_request_for_a_striped_backup_re_emits_every_stripe_with_its_own_id_and_no_warning_again(tmp_path):
    # Given a striped backup of a FULL-recovery database nobody backs up the log of (one log-health warning)
    from tests.unit.sqlserver_sim import make
    engine, sim = make(tmp_path, stripes=3, databases=["appservice_hosting"])
    handler = DbBackupHandler(engine.settings, StagingSettings(database_dir=r"\\fileserver\staging\stamp1"), engine,
                              jobs=StagingJobs(StagingSettings(database_dir=str(tmp_path / "jobs")), source=SOURCE))
    requests = [DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                        payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
                for _ in range(2)]
    first = handler.backup_one(requests[0], ctx())
    # When another request for the same set and database arrives
    again = handler.backup_one(requests[1], ctx())
    # Then SQL Server backed up once; the three stripes are re-emitted, each with its own id
    assert len(sim.statements("BACKUP DATABASE")) == 1
    names = [e.payload.name for e in again if e.type == "artifact-ready"]
    assert names == [e.payload.name for e in first if e.type == "artifact-ready"] and len(names) == 3
    assert len({e.event_id for e in again}) == len(again) == 4          # three stripes and database-backed-up
    # And the log warning went out with the backup only
    assert [e.type for e in first].count("job-failed") == 1 and "job-failed" not in [e.type for e in again]


def test_a_job_record_planted_in_the_staging_directory_is_not_re_emitted_and_the_backup_runs(tmp_path, caplog):
    # Given done records written into the staging directory's .jobs/ by someone else: one that names the secrets
    # file (an artifact-ready the upload worker would store and delete), one with no backup in it (the database
    # would look backed up with nothing stored) and one naming another staged file under this job's own name
    engine = StubEngine()
    handler = make_handler(engine, tmp_path)
    (tmp_path / ".jobs").mkdir()
    own = r"\\fs1\staging\dr\s1-set-1-appservice_hosting.bak"
    ready = {"component": "databases", "name": "appservice_hosting.bak", "staged_path": own, "delete_staged": True}
    backed = {"database": "appservice_hosting", "engine": "sqlserver", "server": "evil", "size": 1,
              "duration_seconds": 1, "staged_path": own}
    planted = {"set-1": [{"type": "artifact-ready", "payload": {**ready, "component": "secrets",
                                                                "name": "SystemSecrets.json"}}],
               "set-2": [{"type": "database-backed-up", "payload": backed}],
               "set-3": [{"type": "artifact-ready", "payload": {**ready, "staged_path": r"\\fs1\staging\dr\x.bak"}},
                         {"type": "database-backed-up", "payload": backed}],
               "set-4": [{"type": "artifact-ready", "payload": {**ready, "name": "appservice_metering.bak"}}]}
    for set_id, events in planted.items():
        (tmp_path / f".jobs/s1+{set_id}+appservice_hosting.bak+done.json").write_text(
            json.dumps({"format": 1, "events": events}))
    # When a request for each set arrives
    caplog.set_level(logging.WARNING, logger="appsvc_dr.dbbackup")
    for set_id in planted:
        request = DatabaseBackupRequested(source="t", stamp="s1", correlation_id=set_id,
                                          payload=DatabaseBackupRequestedPayload(database="appservice_hosting"))
        out = handler.backup_one(request, ctx())
        # Then the planted record is ignored: the database is backed up and only its own backup is handed over
        [got] = [e for e in out if e.type == "artifact-ready"]
        expected = rf"\\fs1\staging\dr\s1-{set_id}-appservice_hosting.bak"
        assert (got.payload.component, got.payload.name, got.payload.staged_path) == \
            ("databases", "appservice_hosting.bak", expected)
        assert engine.calls[-1] == ("appservice_hosting", expected)
    assert len(engine.calls) == 4
    warnings = [r.getMessage() for r in caplog.records if "ignoring job record" in r.getMessage()]
    assert len(warnings) == 4 and "SystemSecrets.json" in warnings[0] and "names no backup" in warnings[1]
    # And the record is now the worker's own: a further request re-emits it without a backup
    again = handler.backup_one(DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                                       payload=DatabaseBackupRequestedPayload(
                                                           database="appservice_hosting")), ctx())
    assert len(engine.calls) == 4 and [e.payload.staged_path for e in again if e.type == "artifact-ready"] == \
        [r"\\fs1\staging\dr\s1-set-1-appservice_hosting.bak"]


def test_a_damaged_job_record_is_warned_about_once_and_the_backup_runs(tmp_path, caplog):
    engine = StubEngine()
    handler = make_handler(engine, tmp_path)
    (tmp_path / ".jobs").mkdir()
    (tmp_path / ".jobs/s1+set-1+appservice_hosting.bak+done.json").write_text("{not json")
    caplog.set_level(logging.WARNING, logger="appsvc_dr.dbbackup")
    out = handler.backup_one(DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                                     payload=DatabaseBackupRequestedPayload(
                                                         database="appservice_hosting")), ctx())
    assert len(engine.calls) == 1 and [e.type for e in out][0] == "artifact-ready"
    assert [r.getMessage() for r in caplog.records].count(
        "ignoring damaged job record .jobs/s1+set-1+appservice_hosting.bak+done.json: the backup runs again") == 1
