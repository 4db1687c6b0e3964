"""`recover run --resume` on SQL Server skips a restored database only while it is still the one this recovery
restored: ONLINE, created by that RESTORE (sys.databases.create_date) and with no restore since (msdb's
restorehistory). A database restored again or dropped and created again meanwhile is restored once more."""
from __future__ import annotations

from tests.sqlsim import Database
from tests.unit.sqlserver_sim import DB, STAGE, make
from tests.unit.test_recover_database_flags import backup_of, cli, state_file
from tests.unit.test_sqlserver_recover_preflight import sqlserver_set


def restored(tmp_path, monkeypatch, capsys):
    """The hosting database lost, then brought back by `recover run` from the set's backup."""
    engine, sim = make(tmp_path, verify=False)
    sqlserver_set(tmp_path, monkeypatch, backup_of(sim, engine))
    del sim.server.databases[DB]
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run")
    assert code == 0 and sim.server.databases[DB].state == "ONLINE", out
    return engine, sim, state_file(tmp_path)


def step_of(state: dict) -> dict:
    return {s["step_id"]: s for s in state["steps"]}[f"database:{DB}"]


def test_the_restore_is_identified_and_an_untouched_database_is_skipped_on_resume(tmp_path, monkeypatch, capsys):
    engine, sim, state = restored(tmp_path, monkeypatch, capsys)
    identity = step_of(state)["proof"]["identity"]
    # The identity is msdb's restore of it and the time the RESTORE created it
    assert identity["restore_id"] == sim.server.restores[-1].restore_history_id
    assert sim.server.restores[-1].destination_database_name == DB
    assert identity["created"] == sim.server.databases[DB].created.isoformat(timespec="microseconds")
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run", "--resume", state["recovery_id"])
    assert code == 0 and f"skipped database:{DB}: done in an earlier run and verified again" in out, out
    assert step_of(state_file(tmp_path))["runs"] == 1


def test_a_database_restored_again_meanwhile_is_not_taken_as_this_recoverys(tmp_path, monkeypatch, capsys):
    engine, sim, state = restored(tmp_path, monkeypatch, capsys)
    # Given someone restoring a backup over the database after the recovery did (a DBA, another tool)
    cursor = sim.connect(engine._connection_string, autocommit=True).cursor()
    cursor.execute(rf"RESTORE DATABASE [{DB}] FROM DISK = N'{STAGE}' WITH REPLACE")
    while cursor.nextset():
        pass
    sim.server.databases[DB].rows["dbo.sites"] = 1
    # When the recovery is resumed
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run", "--resume", state["recovery_id"], "--force")
    # Then the step is not skipped: it says why, and restores the set's backup again
    assert code == 0, out
    assert f"database:{DB} was done but no longer verifies ([{DB}] was restored or created again since" in out
    step = step_of(state_file(tmp_path))
    assert step["runs"] == 2 and step["status"] == "done" and sim.server.databases[DB].rows["dbo.sites"] == 12
    assert step["proof"]["identity"]["restore_id"] == sim.server.restores[-1].restore_history_id == 3


def test_a_database_dropped_and_created_empty_meanwhile_is_restored_again(tmp_path, monkeypatch, capsys):
    engine, sim, state = restored(tmp_path, monkeypatch, capsys)
    # Given the database dropped and created again, empty, under the same name (no RESTORE: msdb is unchanged)
    files = sim.server.databases[DB].files
    sim.server.databases[DB] = Database(DB, files, rows={}, containment="PARTIAL")
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run", "--resume", state["recovery_id"])
    assert code == 0 and "no longer verifies" in out and "was restored or created again since" in out, out
    assert sim.server.databases[DB].rows["dbo.sites"] == 12 and step_of(state_file(tmp_path))["runs"] == 2



def test_a_restore_history_that_cannot_be_read_does_not_fail_the_restore(tmp_path, monkeypatch, capsys, caplog):
    # Given msdb's history unreadable for the login once the backup is there (SELECT denied on msdb: 229)
    engine, sim = make(tmp_path, verify=False)
    sqlserver_set(tmp_path, monkeypatch, backup_of(sim, engine))
    del sim.server.databases[DB]
    sim.server.faults.msdb_error = 229
    # When the recovery runs: the database is restored and the step done, with a warning that says what it lacks
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run")
    assert code == 0 and sim.server.databases[DB].rows["dbo.sites"] == 12, out
    step = step_of(state := state_file(tmp_path))
    assert step["status"] == "done" and "identity" not in step["proof"]
    assert "its restore history cannot be read" in caplog.text and "a resume will only check" in caplog.text
    # And a resume checks that it is ONLINE, as before identities were kept
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run", "--resume", state["recovery_id"])
    assert code == 0 and f"skipped database:{DB}: done in an earlier run and verified again" in out, out
