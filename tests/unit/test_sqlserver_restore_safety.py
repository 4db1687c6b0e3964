"""SQL Server restore pre-flight and safe in-place restore against the simulated instance: each refusal happens
before anything on the server changes, and what the restore changed is put back when it fails."""
from __future__ import annotations

import pytest

from tests.sqlsim import AvailabilityGroup
from tests.unit.sqlserver_sim import DB, STAGE, make
from workers.engines import RestoreOptions
from workers.runtime.errors import PermanentError

METERING = "appservice_metering"
PRODUCTION = RestoreOptions(expected_database=DB)


def changes(sim) -> list[str]:
    """Statements that change the server (everything but SELECT and the read-only RESTOREs)."""
    return [s for s, _ in sim.executed if not s.startswith(("SELECT", "RESTORE HEADERONLY", "RESTORE FILELISTONLY"))
            and not s.startswith("BACKUP DATABASE") and not s.startswith("RESTORE VERIFYONLY")]


def test_in_place_restore_with_open_sessions_needs_force_disconnect(tmp_path) -> None:
    # Given a backup and the App Service controllers connected to the database
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].rows["dbo.sites"] = 99
    sim.server.databases[DB].sessions = 3
    # When it is restored in place without --force-disconnect
    with pytest.raises(PermanentError, match=r"3 open session\(s\).*\(3101\)") as caught:
        engine.restore(DB, STAGE, options=PRODUCTION)
    # Then nothing was changed and the hint names the flag and what it does
    assert "--force-disconnect" in caught.value.hint and "ROLLBACK IMMEDIATE" in caught.value.hint
    assert changes(sim) == [] and sim.server.databases[DB].sessions == 3
    # And with --force-disconnect the sessions end, the backup's content is back and the database is MULTI_USER
    result = engine.restore(DB, STAGE, options=RestoreOptions(expected_database=DB, force_disconnect=True))
    assert result.state == "ONLINE" and sim.server.databases[DB].rows["dbo.sites"] == 12
    assert changes(sim)[0] == f"ALTER DATABASE [{DB}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE"
    assert sim.server.databases[DB].user_access == "MULTI_USER"
    sim.assert_closed()


def test_a_failed_restore_after_force_disconnect_leaves_the_database_multi_user(tmp_path) -> None:
    # Given sessions, --force-disconnect, and a data file another process holds (the RESTORE fails: 3634)
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].sessions = 2
    sim.server.faults.locked_files.add(sim.server.databases[DB].files[0].physical)
    # When it is restored in place / Then the restore's own error is raised
    with pytest.raises(PermanentError, match=r"\(3634\)"):
        engine.restore(DB, STAGE, options=RestoreOptions(expected_database=DB, force_disconnect=True))
    # And the database is open to everyone again
    assert changes(sim)[-1] == f"ALTER DATABASE [{DB}] SET MULTI_USER"
    assert sim.server.databases[DB].user_access == "MULTI_USER" and sim.server.databases[DB].state == "ONLINE"


@pytest.mark.parametrize("role, command", [("PRIMARY", f"ALTER AVAILABILITY GROUP [ag1] REMOVE DATABASE [{DB}];"),
                                           ("SECONDARY", f"ALTER DATABASE [{DB}] SET HADR OFF;")])
def test_an_availability_group_member_is_refused_with_the_commands_to_remove_it(tmp_path, role, command) -> None:
    # Given the target joined to availability group ag1 on this replica
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.ag = AvailabilityGroup("ag1", role=role)
    sim.server.databases[DB].ag_name = "ag1"
    # When it is restored in place, even with --force-disconnect
    with pytest.raises(PermanentError, match=r"availability group \[ag1\].*\(3104\)") as caught:
        engine.restore(DB, STAGE, options=RestoreOptions(expected_database=DB, force_disconnect=True))
    # Then nothing changed and the hint has the exact commands
    assert command in caught.value.hint and "ADD DATABASE" in caught.value.hint and changes(sim) == []


def test_containment_off_is_refused_with_the_sp_configure_fix(tmp_path) -> None:
    # Given a backup of a partially contained database and a server without contained database authentication
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.contained_authentication = False
    # When / Then the pre-flight refuses before any RESTORE runs (12824) and says what to run
    with pytest.raises(PermanentError, match=r"\(12824\)") as caught:
        engine.restore("hosting_copy", STAGE, options=PRODUCTION)
    assert "EXEC sp_configure 'contained database authentication', 1; RECONFIGURE;" in caught.value.hint
    assert changes(sim) == [] and "hosting_copy" not in sim.server.databases


def test_a_backup_of_another_database_never_silently_replaces_the_target(tmp_path) -> None:
    # Given a backup of appservice_metering, restored as the existing appservice_hosting
    # (restore database --database appservice_metering --target-database appservice_hosting)
    engine, sim = make(tmp_path)
    engine.backup(METERING, STAGE)
    hosting_rows = dict(sim.server.databases[DB].rows)
    sim.server.databases[METERING].rows["dbo.sites"] = 7
    metering_only = RestoreOptions(expected_database=METERING)
    # When / Then it is refused, hosting untouched, and the hint names the override
    with pytest.raises(PermanentError, match=r"holds database 'appservice_metering' and would replace") as caught:
        engine.restore(DB, STAGE, options=metering_only)
    assert "--allow-database-mismatch" in caught.value.hint and "3154" in caught.value.hint
    assert changes(sim) == [] and sim.server.databases[DB].rows == hosting_rows
    # And an artifact holding another database than the set names is refused too
    with pytest.raises(PermanentError, match=r"not 'appservice_hosting' as the backup set says"):
        engine.restore("hosting_copy", STAGE, options=PRODUCTION)
    # And with the override it restores, saying so
    result = engine.restore(DB, STAGE, options=RestoreOptions(expected_database=METERING,
                                                              allow_database_mismatch=True))
    assert any("would replace the existing database" in w for w in result.warnings)


def test_a_backup_from_a_newer_version_is_refused_before_anything_changes(tmp_path) -> None:
    # Given a backup taken on SQL Server 2025 and a SQL Server 2019 target (it cannot read the header: 3241)
    from tests.sqlsim import app_service_server
    newer, _ = make(tmp_path, server=app_service_server(tmp_path / "disks", version="17.0.1000.7"))
    newer.backup(DB, STAGE)
    older, sim = make(tmp_path, server=app_service_server(tmp_path / "disks", version="15.0.4382.1"))
    # When / Then the message says what 3241 means here, the hint what 3169 says, and nothing ran
    with pytest.raises(PermanentError, match=r"SQL Server 15\.0\.4382\.1 .* newer SQL Server version") as caught:
        older.restore(DB, STAGE, options=PRODUCTION)
    assert "(3241)" in caught.value.message and "same or a newer version" in caught.value.hint
    assert changes(sim) == [] and sim.statements("RESTORE FILELISTONLY") == []


def test_a_backup_without_checksums_is_refused_in_production_and_a_warning_in_drills(tmp_path) -> None:
    # Given a backup taken WITHOUT CHECKSUM (not by appservice-dr)
    engine, sim = make(tmp_path, verify=False)
    cursor = sim.connect(engine._connection_string, autocommit=True).cursor()
    cursor.execute(rf"BACKUP DATABASE [{DB}] TO DISK = N'{STAGE}' WITH NO_CHECKSUM, INIT")
    while cursor.nextset():
        pass
    # When a production restore runs / Then it is refused with the override named
    with pytest.raises(PermanentError, match="no page checksums") as caught:
        engine.restore("hosting_copy", STAGE, options=PRODUCTION)
    assert "--allow-no-checksum" in caught.value.hint and "hosting_copy" not in sim.server.databases
    # And a scratch (drill) restore goes on with a warning, without RESTORE ... CHECKSUM (3187)
    drilled = engine.restore("hosting_copy", STAGE, options=RestoreOptions(expected_database=DB, scratch=True))
    assert drilled.warnings and "no page checksums" in drilled.warnings[0]
    assert "CHECKSUM" not in sim.statements("RESTORE DATABASE")[-1]


def test_a_checksummed_backup_is_restored_with_checksum(tmp_path) -> None:
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    engine.restore("hosting_copy", STAGE, options=PRODUCTION)
    assert "WITH REPLACE, RECOVERY, CHECKSUM, MOVE" in sim.statements("RESTORE DATABASE")[0]


def test_tail_log_backup_before_an_in_place_restore_is_kept_and_reported(tmp_path) -> None:
    # Given a database in FULL recovery whose log chain the DBA's own full backups started
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].log_chain_started = True
    staging = r"\\fileserver\staging\stamp1"
    # When it is restored in place with a tail-log backup
    result = engine.restore(DB, STAGE, options=RestoreOptions(expected_database=DB, tail_log_dir=staging,
                                                              force_disconnect=True))
    # Then BACKUP LOG ... WITH NORECOVERY ran first, its file is on the share, and the result names it
    [tail] = sim.statements("BACKUP LOG")
    assert "WITH NORECOVERY" in tail and result.tail_log and result.tail_log.startswith(staging + "\\")
    assert sim.server.host_path(result.tail_log).is_file() and result.state == "ONLINE"


def test_a_failed_restore_after_the_tail_log_backup_brings_the_database_back(tmp_path) -> None:
    # Given a tail-log backup that leaves the database RESTORING, then a RESTORE that fails (a locked file)
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].log_chain_started = True
    sim.server.faults.locked_files.add(sim.server.databases[DB].files[0].physical)
    # When / Then the restore's error is raised, naming the kept tail-log backup
    with pytest.raises(PermanentError, match=r"\(3634\).*tail-log backup is kept at"):
        engine.restore(DB, STAGE, options=RestoreOptions(expected_database=DB, force_disconnect=True,
                                                         tail_log_dir=r"\\fileserver\staging\stamp1"))
    # And the database was recovered (RESTORE ... WITH RECOVERY) and opened to everyone again
    assert f"RESTORE DATABASE [{DB}] WITH RECOVERY" in changes(sim)
    assert (sim.server.databases[DB].state, sim.server.databases[DB].user_access) == ("ONLINE", "MULTI_USER")


def test_tail_log_backup_of_a_simple_recovery_database_is_refused_first(tmp_path) -> None:
    engine, sim = make(tmp_path)
    engine.backup(DB, STAGE)
    sim.server.databases[DB].recovery_model = "SIMPLE"
    with pytest.raises(PermanentError, match="SIMPLE recovery model"):
        engine.restore(DB, STAGE, options=RestoreOptions(expected_database=DB, tail_log_dir=r"\\fileserver\x"))
    assert sim.statements("RESTORE DATABASE") == [] and sim.server.databases[DB].state == "ONLINE"


def test_a_restoring_database_is_dropped_directly(tmp_path) -> None:
    # Given a scratch database left RESTORING (ALTER DATABASE there fails with 5052)
    engine, sim = make(tmp_path)
    sim.server.add_database("drill_x", state="RESTORING")
    # When it is dropped / Then DROP DATABASE ran without SET SINGLE_USER
    engine.drop("drill_x")
    assert "drill_x" not in sim.server.databases and sim.statements("ALTER") == []


def test_the_restore_command_flags_relax_one_check_each(tmp_path) -> None:
    import argparse

    from workers.cli.database_cmd import register_restore, restore_options
    from workers.config import load_settings

    parser = argparse.ArgumentParser()
    register_restore(parser.add_subparsers())
    settings = load_settings(staging={"database_dir": r"\\fileserver\staging\stamp1"})
    base = ["database", "--set", "S", "--database", DB, "--key", "k.pem"]
    # Given no flags: a production restore refuses rather than guesses
    assert restore_options(parser.parse_args(base), settings) == RestoreOptions(expected_database=DB)
    # Given every flag: each relaxes its own check; the tail-log backup goes to the staging directory
    flags = ["--force-disconnect", "--tail-log-backup", "--allow-database-mismatch", "--allow-no-checksum"]
    assert restore_options(parser.parse_args(base + flags), settings) == RestoreOptions(
        expected_database=DB, allow_database_mismatch=True, force_disconnect=True, allow_no_checksum=True,
        tail_log_dir=r"\\fileserver\staging\stamp1")


@pytest.mark.parametrize("data, log, target, expected", [
    (None, None, DB, (None, None)),                                   # in place: the backup's own paths
    (r"D:\D", None, DB, (r"D:\D", None)),
    (None, None, "copy", (r"C:\Data", r"L:\Log")),                    # a new name: the instance defaults
    (r"D:\D", None, "copy", (r"D:\D", r"D:\D")),
    (None, r"E:\L", "copy", (r"C:\Data", r"E:\L")),                   # only a log path: data still moves
])
def test_files_move_whenever_the_name_differs_from_the_backups(data, log, target, expected) -> None:
    from workers.engines.sqlserver_target import move_dirs
    assert move_dirs(data, log, target, DB, {"data_path": r"C:\Data", "log_path": r"L:\Log"}) == expected


def test_a_target_in_use_is_refused_before_the_backup_is_fetched(tmp_path) -> None:
    # Given a target with open sessions and a backup set whose artifact would take long to fetch
    from workers.artifacts.service import ArtifactStore
    from workers.config import load_settings
    from workers.dbbackup.restore import restore_from_set
    from workers.storage.local import LocalStore

    engine, sim = make(tmp_path)
    sim.server.databases[DB].sessions = 1
    settings = load_settings(staging={"database_dir": str(tmp_path / "staging")})
    store = ArtifactStore(LocalStore(tmp_path / "store"))
    # When it is restored / Then the sessions are the error, before the (here missing) artifact is looked up
    with pytest.raises(PermanentError, match=r"open session\(s\)"):
        restore_from_set(settings.staging, settings.database, engine, store, None, stamp="stamp1",
                         set_id="20261122T010000Z-00000000", database=DB, target=DB)
    assert not (tmp_path / "staging").exists() or not list((tmp_path / "staging").iterdir())
