"""The SQL Server database drill against the simulated instance when things go wrong: a damaged database in the
backup (DBCC CHECKDB), a restore that stops halfway, and a scratch database that cannot be dropped."""
from __future__ import annotations

from tests.unit.test_drill import sql_drill
from workers.drill import checks
from workers.drill.checks import scratch_name
from workers.drill.results import DrillResult, table

TARGET = scratch_name("appservice_hosting", "0a1b2c3d")


def test_a_backup_of_a_damaged_database_fails_the_drill_at_checkdb(tmp_path):
    # Given a set whose backup was taken of a database with two damaged pages (the backup itself is valid)
    drill, sim = sql_drill(tmp_path, corrupt_pages=(152, 153))
    # When the databases are drilled
    [result] = checks.databases(drill)
    # Then the restore worked but DBCC CHECKDB found the damage: the drill fails with SQL Server's numbers
    assert result.result == "failed" and result.error
    assert "DBCC CHECKDB ([drill_appservice_hosting_0a1b2c3d]) failed" in result.error
    assert "(8939)" in result.error and "(8928)" in result.error and "page (1:152)" in result.error
    assert "take a new backup" in result.hint and "DBCC CHECKDB on the source" in result.hint
    # And the scratch database is gone and nothing was left to clean up
    assert TARGET not in sim.server.databases and result.cleanup is None
    sim.assert_closed()


def test_a_restore_stopped_halfway_keeps_its_error_and_the_restoring_scratch_database_is_dropped(tmp_path):
    # Given a restore that fails halfway (the share drops), leaving the scratch database RESTORING
    drill, sim = sql_drill(tmp_path)
    sim.server.faults.restore_fails_after = 50
    # When the databases are drilled
    [result] = checks.databases(drill)
    # Then the restore's own error is the result (not 5052 from a SET SINGLE_USER during cleanup)
    assert result.result == "failed" and "RESTORE DATABASE [drill_appservice_hosting_0a1b2c3d] failed" in result.error
    assert "(3203)" in result.error and "5052" not in result.error
    # And the RESTORING scratch database was dropped directly
    assert TARGET not in sim.server.databases and result.cleanup is None
    assert [s for s in sim.statements("ALTER") if TARGET in s] == []


def test_a_drop_failure_is_reported_separately_and_never_replaces_the_restores_error(tmp_path):
    # Given a restore that fails halfway and a scratch database the server refuses to drop
    drill, sim = sql_drill(tmp_path)
    sim.server.faults.restore_fails_after = 50
    sim.server.faults.drop_refused[TARGET] = 3701
    # When the databases are drilled
    [result] = checks.databases(drill)
    # Then the error is still the restore's, and the drop failure is its own finding with what to do
    assert "(3203)" in result.error and "3701" not in result.error
    assert result.cleanup and "could not drop the scratch database" in result.cleanup and "(3701)" in result.cleanup
    assert f"DROP DATABASE {TARGET}" in result.cleanup
    # And the table shows both
    text = "\n".join(table(DrillResult("stamp1", drill.set_id, "0a1b2c3d", drill_started(), components=[result])))
    assert "FAILED  databases" in text and "CLEANUP databases" in text and "cleanup FAILED for 1" in text


def test_a_drop_failure_after_a_good_restore_keeps_the_pass_and_reports_the_leftover(tmp_path):
    drill, sim = sql_drill(tmp_path)
    sim.server.faults.drop_refused[TARGET] = 3702
    [result] = checks.databases(drill)
    assert result.passed and "scratch database NOT dropped" in result.detail
    assert result.cleanup and "(3702)" in result.cleanup and TARGET in sim.server.databases


def drill_started():
    from datetime import datetime, timezone
    return datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
