"""The transaction-log check after a full backup, against the simulated SQL Server: a FULL-recovery database whose
log is not backed up gives one job-failed warning and metrics; the backup itself never fails because of it."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from contracts import DatabaseBackupRequested, DatabaseBackupRequestedPayload
from tests.sqlsim.state import BackupHistory
from tests.unit.sqlserver_sim import DB, make
from tests.unit.test_dbbackup_handler import ctx
from workers.dbbackup.handler import SOURCE, DbBackupHandler
from workers.dbbackup.once import StagingJobs
from workers.dbbackup.loghealth import warning_event_id
from workers.middleware.metrics import Metrics
from workers.storage.settings import StagingSettings


def run(tmp_path, prepare=lambda server: None, **settings):
    engine, sim = make(tmp_path, databases=[DB], **settings)
    prepare(sim.server)
    metrics = Metrics()
    handler = DbBackupHandler(engine.settings, StagingSettings(database_dir=r"\\fileserver\staging\stamp1"), engine,
                              metrics, jobs=StagingJobs(StagingSettings(database_dir=str(tmp_path / "jobs")),
                                                        source=SOURCE))
    job = DatabaseBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                  payload=DatabaseBackupRequestedPayload(database=DB))
    events = handler.backup_one(job, ctx())
    return [e for e in events if e.type == "job-failed"], metrics, events


def warned(metrics: Metrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value("appsvc_dr_database_log_warnings_total",
                                             {"database": DB, "reason": reason})


def age(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("appsvc_dr_database_log_backup_age_seconds", {"database": DB})


def log_backup(hours_ago: float):
    def prepare(server):
        server.history.append(BackupHistory(server.next_id(), DB, r"\\fs\log.trn", 1, 2, 1, 10, 10, False, "L",
                                            finished=datetime.now() - timedelta(hours=hours_ago)))
    return prepare


def test_a_full_recovery_database_never_log_backed_up_gets_one_warning_and_a_metric(tmp_path):
    warnings, metrics, events = run(tmp_path)
    [w] = warnings
    assert (w.payload.error_class, w.payload.severity, w.payload.will_retry) == ("LogBackupMissing", "warning", False)
    assert "no log backup" in w.payload.message and "LOG_BACKUP_MAX_AGE_MINUTES" in w.payload.hint
    assert w.event_id == warning_event_id("s1", "set-1", DB)       # a redelivery re-emits the same warning
    assert warned(metrics, "no-log-backup") == 1
    assert age(metrics) == float("inf")
    assert any(e.type == "artifact-ready" for e in events)           # the backup itself went on


def test_an_overdue_log_backup_and_a_log_waiting_for_one_are_warned_about(tmp_path):
    [late], metrics, _ = run(tmp_path / "a", log_backup(3), log_backup_max_age_minutes=60)
    assert "3.0 h ago" in late.payload.message
    assert 3 * 3600 - 5 < age(metrics) < 3 * 3600 + 60

    def waiting(server):
        log_backup(0.1)(server)
        server.databases[DB].log_reuse_wait = "LOG_BACKUP"
    [wait], metrics, _ = run(tmp_path / "b", waiting)
    assert "LOG_BACKUP" in wait.payload.message and warned(metrics, "log-reuse-wait") == 1


def _simple(server) -> None:
    server.databases[DB].recovery_model = "SIMPLE"


def _msdb_deadlocks(server) -> None:
    server.faults.msdb_error = 1205          # every msdb read fails: history is advisory, the backup succeeded


@pytest.mark.parametrize("prepare, settings", [(log_backup(0.2), {}), (_simple, {}),
                                                (lambda server: None, {"log_backup_max_age_minutes": 0}),
                                                (_msdb_deadlocks, {})],
                         ids=["recent log backup", "simple recovery", "check off", "msdb unreadable"])
def test_no_warning_when_the_log_is_fine_the_check_off_or_history_unreadable(tmp_path, prepare, settings):
    warnings, metrics, events = run(tmp_path, prepare, **settings)
    assert warnings == [] and any(e.type == "artifact-ready" for e in events)
    assert [s for m in metrics.registry.collect() if m.name == "appsvc_dr_database_log_warnings"
            for s in m.samples] == []
