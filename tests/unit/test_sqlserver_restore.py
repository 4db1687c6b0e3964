"""SQL Server engine restores (one file or every stripe), stand-alone verify/check, and BACKUP TO URL refused,
against the simulated instance."""
from __future__ import annotations

import pytest

from tests.sqlsim import DbFile
from tests.unit.sqlserver_sim import DB, STAGE, make
from workers.engines.base import RestoreOptions
from workers.runtime.errors import PermanentError


def test_restore_moves_every_logical_file_and_checks_the_database_is_online(tmp_path) -> None:
    # Given a backup of a database with a data, a secondary data and a log file, and target directories
    engine, sim = make(tmp_path)
    sim.server.databases[DB].files.insert(1, DbFile("hosting_2", r"C:\SQL\DATA\hosting_2.ndf", "D", 3, "SECONDARY"))
    engine.backup(DB, STAGE)
    target = "appservice_hosting_dr"
    seen: list[int] = []
    # When it restores into another database
    result = engine.restore(target, STAGE, data_path="D:\\Data\\", log_path=r"L:\Logs", progress=seen.append)
    # Then every file moved, progress came from STATS, and the database is ONLINE with the source's rows
    restored = sim.server.databases[target]
    assert [f.physical for f in restored.files] == [r"D:\Data\appservice_hosting_dr_appservice_hosting.mdf",
                                                    r"D:\Data\appservice_hosting_dr_hosting_2.ndf",
                                                    r"L:\Logs\appservice_hosting_dr_appservice_hosting_log.ldf"]
    assert restored.rows == sim.server.databases[DB].rows and restored.state == "ONLINE"
    assert seen == list(range(10, 101, 10))
    assert (result.database, result.state, result.engine) == (target, "ONLINE", "sqlserver")


def test_restore_under_a_new_name_without_target_paths_moves_the_files_to_the_instance_defaults(tmp_path) -> None:
    # Given no target paths and an OFFLINE original whose files REPLACE alone would overwrite silently
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].state = "OFFLINE"
    # When it is restored under a new name
    assert engine.restore("appservice_hosting_copy", STAGE).state == "ONLINE"
    # Then MOVE put every file into the instance's default directory, named after the target
    assert [f.physical for f in sim.server.databases["appservice_hosting_copy"].files] == [
        r"C:\SQL\DATA\appservice_hosting_copy_appservice_hosting.mdf",
        r"C:\SQL\DATA\appservice_hosting_copy_appservice_hosting_log.ldf"]
    assert "MOVE N'appservice_hosting'" in sim.statements("RESTORE DATABASE")[0]
    # And the OFFLINE original's files were not touched
    assert sim.server.databases[DB].damaged_by_restore is None


def test_restore_in_place_replaces_the_database(tmp_path) -> None:
    # Given a backup and later changes to the database
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].rows["dbo.sites"] = 99
    # When it is restored in place (no sessions open)
    assert engine.restore(DB, STAGE).state == "ONLINE"
    # Then the backup's content is back
    assert sim.server.databases[DB].rows["dbo.sites"] == 12


def test_verify_and_check_on_their_own(tmp_path) -> None:
    # Given an ONLINE database and a valid backup
    engine, sim = make(tmp_path, verify=False)
    engine.backup(DB, STAGE)
    # When / Then check() and verify() each succeed on their own connection
    engine.check(DB)
    engine.verify(STAGE)
    assert len(sim.connections) == 3 and len(sim.statements("RESTORE VERIFYONLY")) == 1


def test_backup_to_a_url_is_refused_before_any_statement(tmp_path) -> None:
    # Given a staging "directory" that is an S3 URL (BACKUP TO URL is not supported: stage on a share)
    engine, sim = make(tmp_path)
    # When / Then the backup is refused with a hint, and SQL Server never saw a BACKUP statement
    with pytest.raises(PermanentError, match="URL") as caught:
        engine.backup(DB, "s3://s3.local/dr/db.bak")
    assert "DATABASE_DIR" in caught.value.hint and sim.statements("BACKUP") == []


def test_a_striped_backup_is_restored_from_the_stripes_given_whatever_the_local_stripes_setting(tmp_path) -> None:
    # Given a backup in three stripes, and an engine configured without stripes (another site's settings)
    striped, sim = make(tmp_path, stripes=3)
    result = striped.backup(DB, STAGE)
    plain, other = make(tmp_path, server=sim.server)
    # When the second engine verifies and restores from the three stripe paths
    plain.verify(result.parts)
    restored = plain.restore("hosting_copy", result.parts, data_path=r"D:\Data")
    # Then RESTORE named every stripe and the copy holds the source's rows
    statement = other.statements("RESTORE DATABASE")[0]
    assert all(part in statement for part in result.parts) and restored.state == "ONLINE"
    assert sim.server.databases["hosting_copy"].rows == sim.server.databases[DB].rows


def test_a_striped_restore_goes_through_the_pre_flight(tmp_path) -> None:
    # Given a backup in three stripes and the database in use by two sessions (the App Service controllers)
    engine, sim = make(tmp_path, stripes=3)
    result = engine.backup(DB, STAGE)
    sim.server.databases[DB].sessions = 2
    # When / Then an in-place restore from the three stripes is refused before RESTORE DATABASE runs, with the fix
    with pytest.raises(PermanentError, match="open session") as caught:
        engine.restore(DB, result.parts)
    assert "--force-disconnect" in caught.value.hint and sim.statements("RESTORE DATABASE") == []
    # And with --force-disconnect's option every stripe is restored after HEADERONLY read all three
    restored = engine.restore(DB, result.parts, options=RestoreOptions(expected_database=DB, force_disconnect=True))
    assert restored.state == "ONLINE"
    assert all(part in sim.statements("RESTORE HEADERONLY")[-1] for part in result.parts)
