"""SQL Server log backups: the chain a restore applies (from record metadata), and the engine against the
simulator: BACKUP LOG, RESTORE LOG in LSN order, and a broken chain refused with SQL Server's 4305."""
from __future__ import annotations

import pytest

from contracts import DatabaseLogBackupRequested, DatabaseLogBackupRequestedPayload
from tests.unit.sqlserver_sim import DB, STAGE, make
from tests.unit.test_dbbackup_handler import StubEngine, ctx, make_handler
from workers.artifacts.logchain import chain, is_log, log_database, log_name
from workers.artifacts.sets import counts_of
from workers.runtime.errors import PermanentError

FULL = "s/set/databases/x.bak"


def meta(first: int, last: int) -> dict:
    return {"first_lsn": str(first), "last_lsn": str(last), "backup_type": "log"}


def test_names_sort_in_lsn_order_and_never_count_as_a_database():
    names = [log_name("x", str(lsn), "id") for lsn in (900, 37000000016000002)]
    assert names == sorted(names) and all(is_log(n) and log_database(n) == "x" for n in names)
    assert log_name("x", None, "abc") == "x.log-abc.trn"
    assert not is_log("x.bak") and not is_log("x.bak.1of3")
    assert counts_of([("databases", "x.bak"), ("databases", names[0]), ("databases", names[1])]) == {"databases": 1}


def test_the_chain_starts_at_the_log_holding_the_fulls_last_lsn_and_continues_without_gaps():
    logs = [("k3", meta(300, 400)), ("k0", meta(10, 90)), ("k1", meta(90, 200)), ("k2", meta(200, 300))]
    assert chain(FULL, {"last_lsn": "150"}, logs) == ["k1", "k2", "k3"]      # k0 ended before the full
    assert chain(FULL, {"last_lsn": "150"}, []) == []
    with pytest.raises(PermanentError, match="broken before k3") as caught:
        chain(FULL, {"last_lsn": "150"}, [("k1", meta(90, 200)), ("k3", meta(300, 400))])
    assert "--no-logs" in caught.value.hint
    with pytest.raises(PermanentError, match="no last_lsn"):
        chain(FULL, None, [("k1", meta(90, 200))])


def test_log_backups_restore_in_order_and_a_missing_one_is_sql_servers_4305_with_the_fix(tmp_path):
    # Given a full backup and two log backups of a database whose log chain a normal full started
    engine, sim = make(tmp_path, stripes=2)
    sim.server.databases[DB].log_chain_started = True
    full = engine.backup(DB, STAGE)
    logs = []
    for n, sites in enumerate((20, 30)):
        sim.server.databases[DB].rows["dbo.sites"] = sites
        logs.append(engine.backup_log(DB, STAGE.replace(".bak", f".{n}.trn")))
    assert logs[0].last_lsn == logs[1].first_lsn and "COPY_ONLY" not in sim.statements("BACKUP LOG")[0]
    # When both are applied after the full: the database holds the last log's rows and is ONLINE
    assert engine.restore("pit", full.parts, data_path=r"D:\a", logs=[p.path for p in logs]).state == "ONLINE"
    assert sim.server.databases["pit"].rows["dbo.sites"] == 30
    # When the first log backup is missing, SQL Server refuses the second (4305) and the hint says what to do
    with pytest.raises(PermanentError, match=r"\(4305\)") as caught:
        engine.restore("gap", full.parts, data_path=r"D:\b", logs=[logs[1].path])
    assert "--no-logs" in caught.value.hint and sim.server.databases["gap"].state == "RESTORING"


def test_a_log_backup_request_for_another_engine_or_database_is_refused_before_any_backup(tmp_path):
    job = DatabaseLogBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                     payload=DatabaseLogBackupRequestedPayload(database="appservice_hosting"))
    postgres = StubEngine()
    postgres.name = "postgres"
    with pytest.raises(PermanentError, match="not supported by the postgres engine"):
        make_handler(postgres, tmp_path).backup_log(job, ctx())
    other = job.model_copy(update={"payload": DatabaseLogBackupRequestedPayload(database="master")})
    with pytest.raises(PermanentError, match="not configured"):
        make_handler(StubEngine(), tmp_path).backup_log(other, ctx())


def test_publishing_a_log_backup_request_needs_the_set_it_extends(capsys):
    from workers.cli import main
    # Without --set-id the CLI refuses (a new set has no plan: the log backup could not be stored)
    assert main(["publish", "database-log-backup-requested", "--dry-run", "-p", "database=appservice_hosting"]) != 0
    assert "needs --set-id" in capsys.readouterr().err
    # With it, the event names that set
    assert main(["publish", "database-log-backup-requested", "--dry-run", "--set-id", "20261122T010000Z-s1",
                 "-p", "database=appservice_hosting"]) == 0
    assert '"correlation_id": "20261122T010000Z-s1"' in capsys.readouterr().out


def test_the_log_schedule_picks_the_newest_complete_set_with_databases(tmp_path):
    from datetime import datetime, timedelta, timezone

    from contracts import new_backup_set_id
    from workers.artifacts.sets import Plan, write_marker, write_plan
    from workers.logschedule import log_events, newest_database_set
    from workers.storage.local import LocalStore
    backend = LocalStore(tmp_path / "store")
    now = datetime.now(timezone.utc)

    def make_set(hours_ago: float, components: tuple[str, ...], complete: bool) -> str:
        when = now - timedelta(hours=hours_ago)
        set_id = new_backup_set_id(when)
        write_plan(backend, Plan("stamp1", set_id, components, "schedule", when))
        if complete:
            write_marker(backend, "stamp1", set_id, {"requested_at": when.isoformat()})
        return set_id
    assert newest_database_set(backend, "stamp1") is None
    wanted = make_set(30, ("secrets", "databases"), True)
    make_set(20, ("secrets",), True)                     # newer, but without databases
    make_set(10, ("databases",), False)                  # newer, but incomplete
    assert newest_database_set(backend, "stamp1") == wanted
    events = log_events("stamp1", wanted, ["appservice_hosting", "appservice_metering"])
    assert [(e.correlation_id, e.payload.database) for e in events] == [
        (wanted, "appservice_hosting"), (wanted, "appservice_metering")]
