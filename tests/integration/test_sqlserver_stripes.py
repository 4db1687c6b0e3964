"""A striped SQL Server backup end to end: the real db-backup, upload and catalog workers on real RabbitMQ, the
simulated SQL Server (tests/sqlsim) writing three stripe files into the staging directory; then a restore from
the stored set (stripe names taken from the set, not from local settings) into the simulated server; then log
backups into the set's chain, applied by the next restore."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from contracts import BackupDue, BackupDuePayload, DatabaseLogBackupRequested, DatabaseLogBackupRequestedPayload
from tests.fixtures.rabbit import dead_letters, run_cli, running, settings_for, tap, wait_for
from tests.sqlsim import Simulator, app_service_server
from tests.unit.certs import make_cert, signing_settings
from workers.app import App
from workers.artifacts.service import ArtifactStore
from workers.artifacts.sets import Plan, write_marker, write_plan
from workers.dbbackup.handler import SPEC, DbBackupHandler
from workers.dbbackup.restore import restore_from_set
from workers.engines import SqlServerEngine
from workers.logschedule import run_log_schedule
from workers.runtime.publisher import Publisher
from workers.scheduler.triggers import next_run
from workers.storage.codec import KeyRing
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
DB = "appservice_hosting"
SET_ID = "20261122T010000Z-stripes1"


def leftovers(staging) -> list[str]:
    """Staged files still there: none once uploaded / restored (db-backup's job records in .jobs/ stay)."""
    return [p.name for p in staging.iterdir() if p.name != ".jobs"]


def test_three_stripes_are_backed_up_uploaded_as_three_artifacts_and_restored_from_the_set(rabbit_vhost, tmp_path):
    # Given a simulated SQL Server, a local staging directory it writes to, and workers backing up in 3 stripes
    make_cert("stripes").write(tmp_path)
    staging = tmp_path / "staging"
    sim = Simulator(app_service_server(tmp_path / "sql01"))
    settings = settings_for(
        rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
        encryption={"certificate": str(tmp_path / "cert.pem"), **signing_settings(tmp_path)},
        staging={"database_dir": str(staging)},
        database={"engine": "sqlserver", "server": "sql01", "username": "backup", "password": "P@ss;w}rd-SECRET-42",
                  "databases": [DB], "stripes": 3, "log_backup_max_age_minutes": 60})

    def db_backup(deps):
        engine = SqlServerEngine(deps.settings.database, connect=sim.connect)
        return SPEC.bind(DbBackupHandler(deps.settings.database, deps.settings.staging, engine, deps.metrics))

    seen: list = []
    app = App(settings, [db_backup, "upload", "catalog",
                         tap(seen, "artifact-ready", "artifact-stored", "backup-set-completed", "job-failed")])
    with running(app):
        # When a backup is due
        with Publisher(settings.broker) as pub:
            pub.publish(BackupDue(source="test", stamp="stamp1", correlation_id=SET_ID,
                                  payload=BackupDuePayload(backup_set_id=SET_ID, components=("databases",))))
        # Then the set completes only with all three stripes stored
        wait_for(lambda: any(e.type == "backup-set-completed" for e in seen), 60, what="set completed")
    ready = sorted(e.payload.name for e in seen if e.type == "artifact-ready")
    stored = sorted(e.payload.name for e in seen if e.type == "artifact-stored")
    assert ready == stored == [f"{DB}.bak.{i}of3" for i in (1, 2, 3)]
    completed = next(e for e in seen if e.type == "backup-set-completed")
    assert completed.payload.artifacts == 3 and dead_letters(settings, "upload") == []
    # And every staged stripe file was deleted after its upload
    assert leftovers(staging) == []
    # And the FULL-recovery database without log backups gave one warning (job-failed, severity warning)
    warnings = [e.payload for e in seen if e.type == "job-failed"]
    assert [(w.error_class, w.severity, w.will_retry) for w in warnings] == [("LogBackupMissing", "warning", False)]
    assert app.metrics.registry.get_sample_value("appsvc_dr_database_log_warnings_total",
                                                 {"database": DB, "reason": "no-log-backup"}) == 1

    # And `artifacts list` shows each stripe with its LSNs, version, copy-only flag and stripe number
    listed = run_cli(settings, "artifacts", "list", "--set", SET_ID)
    assert listed.returncode == 0, listed.stderr
    assert "stripe 2 of 3" in listed.stdout and "copy-only" in listed.stdout and "16.0.4135" in listed.stdout
    as_json = json.loads(run_cli(settings, "artifacts", "list", "--set", SET_ID, "--json").stdout)
    meta = [a["metadata"] for a in as_json["artifacts"]]
    assert {m["first_lsn"] for m in meta} == {str(sim.server.history[0].first_lsn)}
    assert sorted(m["stripe"] for m in meta) == [1, 2, 3] and all(m["finished_at"] >= m["started_at"] for m in meta)

    # When the set is restored under another name by an engine configured WITHOUT stripes
    sim.server.databases[DB].rows["dbo.sites"] = 99          # the source changed since the backup
    plain = settings.database.model_copy(update={"stripes": 1})
    engine = SqlServerEngine(plain, connect=sim.connect)
    keys = KeyRing()
    keys.add_pem(tmp_path / "key.pem")
    store = ArtifactStore.from_settings(settings.store, settings.encryption)
    result = restore_from_set(settings.staging, plain, engine, store, keys, stamp="stamp1", set_id=SET_ID,
                              database=DB, target="hosting_restored", data_path=r"D:\Restore", say=lambda _: None)
    # Then RESTORE named the three stripes fetched from the set, and the copy holds the backed-up rows
    statement = sim.statements("RESTORE DATABASE")[-1]
    assert statement.count("DISK = ") == 3 and ".bak.3of3" in statement
    assert result.state == "ONLINE" and sim.server.databases["hosting_restored"].rows["dbo.sites"] == 12
    # And the staged plaintext stripes were removed again
    assert leftovers(staging) == []

    # When the DBA's normal full has started the log chain and two log backups are taken into the set
    sim.server.databases[DB].log_chain_started = True
    with running(App(settings, [db_backup, "upload", "catalog", tap(seen, "artifact-stored")])):
        for sites in (100, 101):
            sim.server.databases[DB].rows["dbo.sites"] = sites
            before = len([e for e in seen if e.type == "artifact-stored"])
            with Publisher(settings.broker) as pub:
                pub.publish(DatabaseLogBackupRequested(source="test", stamp="stamp1", correlation_id=SET_ID,
                                                       payload=DatabaseLogBackupRequestedPayload(database=DB)))
            wait_for(lambda: len([e for e in seen if e.type == "artifact-stored"]) > before, 60, what="log stored")
    logs = sorted(e.payload.name for e in seen if e.type == "artifact-stored" and e.payload.name.endswith(".trn"))
    assert len(logs) == 2 and all(n.startswith(f"{DB}.log-") for n in logs) and leftovers(staging) == []
    # Then a restore applies both after the full, in LSN order: the copy holds the rows of the last log backup
    restore_from_set(settings.staging, plain, engine, store, keys, stamp="stamp1", set_id=SET_ID, database=DB,
                     target="hosting_pit", data_path=r"D:\Pit", say=lambda _: None)
    applied = sim.statements("RESTORE LOG")
    assert [s.split("-")[-1][:25] for s in applied[-2:]] == [n.split("-")[-1][:25] for n in logs]
    assert sim.server.databases["hosting_pit"].rows["dbo.sites"] == 101
    assert sim.server.databases["hosting_pit"].state == "ONLINE"
    # And --no-logs restores the full alone
    restore_from_set(settings.staging, plain, engine, store, keys, stamp="stamp1", set_id=SET_ID, database=DB,
                     target="hosting_full", data_path=r"D:\Full", say=lambda _: None, logs=False)
    assert sim.server.databases["hosting_full"].rows["dbo.sites"] == 12 and leftovers(staging) == []


def test_the_log_schedule_publishes_one_request_per_database_into_the_newest_complete_set(rabbit_vhost, tmp_path):
    # Given a store with a complete set holding databases, and the log schedule's next slot a moment away
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            database={"databases": [DB, "appservice_metering"]})
    backend = LocalStore(tmp_path / "store")
    write_plan(backend, Plan("stamp1", SET_ID, ("databases",), "schedule", datetime.now(timezone.utc)))
    write_marker(backend, "stamp1", SET_ID, {"requested_at": datetime.now(timezone.utc).isoformat()})
    shift: list[timedelta] = []

    def clock() -> datetime:            # real time, shifted so that its first reading is just before a slot
        now = datetime.now(timezone.utc)
        if not shift:
            shift.append(next_run(now, timedelta(minutes=1)) - now - timedelta(seconds=0.3))
        return now + shift[0]
    seen: list = []
    with running(App(settings, [tap(seen, "database-log-backup-requested")])):
        # When the schedule runs one slot
        sent = run_log_schedule(settings, timedelta(minutes=1), threading.Event(), once=True,
                                clock=clock, backend=backend)
        # Then each configured database is asked for a log backup into that set
        wait_for(lambda: len(seen) == 2, 20, what="log backup requests")
    assert sent == 2 and sorted(e.payload.database for e in seen) == sorted([DB, "appservice_metering"])
    assert {(e.stamp, e.correlation_id, e.source) for e in seen} == {("stamp1", SET_ID, "scheduler")}
