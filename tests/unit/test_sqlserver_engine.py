"""SQL Server engine backups against the simulated instance: T-SQL SQL Server accepts, draining, progress,
Always On, stripes, quoting, and what the backup file on the staging share holds."""
from __future__ import annotations

import pytest

from tests.sqlsim import AvailabilityGroup, Simulator, app_service_server
from tests.unit.sqlserver_sim import DB, SECRET, STAGE, header_of, make
from workers.engines import DatabaseSettings, SqlServerEngine
from workers.runtime.errors import PermanentError, TransientError


def test_backup_writes_a_checksummed_copy_only_backup_and_turns_stats_messages_into_progress(tmp_path) -> None:
    # Given an ONLINE database outside any availability group
    engine, sim = make(tmp_path)
    seen: list[int] = []
    # When it is backed up with the default options
    result = engine.backup(DB, STAGE, progress=seen.append)
    # Then the backup on the share holds the database with checksums, compressed and COPY_ONLY, progress
    # followed the STATS messages, VERIFYONLY ran, and the result carries msdb's LSNs and size
    header = header_of(sim, STAGE)
    assert (header.database_name, header.has_checksums, header.compressed, header.copy_only) == (DB, True, True, True)
    assert seen == list(range(10, 101, 10))
    assert len(sim.statements("RESTORE VERIFYONLY")) == 1
    assert sim.connect_kwargs == [{"autocommit": True, "timeout": 30}] and sim.connections[0].timeout == 0
    sim.assert_closed()
    assert (result.database, result.path, result.engine, result.server) == (DB, STAGE, "sqlserver", "sql01,1433")
    assert (result.first_lsn, result.last_lsn) == (str(header.first_lsn), str(header.last_lsn))
    assert result.size == sim.server.host_path(STAGE).stat().st_size and result.checksum is None
    assert result.parts == (STAGE,) and not result.skipped


def test_every_backup_option_is_configurable(tmp_path) -> None:
    # Given settings that change every BACKUP option and turn verification off
    engine, sim = make(tmp_path, compression=False, copy_only=False, verify=False, stats_percent=25,
                       max_transfer_size=1048576, buffer_count=50, query_timeout=7200, timeout=5)
    seen: list[int] = []
    # When it backs up
    engine.backup(DB, STAGE, progress=seen.append)
    # Then the backup follows them, no VERIFYONLY ran, and the timeouts reached the connection
    header = header_of(sim, STAGE)
    assert (header.compressed, header.copy_only) == (False, False) and seen == [25, 50, 75, 100]
    assert sim.statements("RESTORE") == []
    assert "MAXTRANSFERSIZE = 1048576" in sim.statements("BACKUP")[0]
    assert sim.connect_kwargs[0]["timeout"] == 5 and sim.connections[0].timeout == 7200


def test_striped_backup_writes_one_media_family_per_stripe_and_verifies_them_all(tmp_path) -> None:
    # Given three stripes
    engine, sim = make(tmp_path, stripes=3)
    # When it backs up to one staging name
    result = engine.backup(DB, STAGE)
    # Then three files of one media set exist, VERIFYONLY read all of them, and the result lists them
    paths = [STAGE.replace(".bak", f".stripe{i}of3.bak") for i in (1, 2, 3)]
    assert result.parts == tuple(paths)
    assert header_of(sim, *paths).family_count == 3
    assert sim.statements("RESTORE VERIFYONLY")[0].count("DISK = ") == 3


def test_a_staging_file_the_worker_can_read_gets_size_and_sha256(tmp_path) -> None:
    # Given a staging directory shared by SQL Server and the worker
    engine, _ = make(tmp_path)
    staged = tmp_path / "shared" / "db.bak"
    staged.parent.mkdir()
    # When it backs up there
    result = engine.backup(DB, str(staged))
    # Then size and checksum come from the file itself
    assert result.size == staged.stat().st_size and result.checksum.startswith("sha256:")


def ag_engine(tmp_path, role: str, preference: str, **settings):
    engine, sim = make(tmp_path, **settings)
    sim.server.ag = AvailabilityGroup("ag1", role=role, backup_preference=preference)
    sim.server.databases[DB].ag_name = "ag1"
    return engine, sim


def test_always_on_database_is_backed_up_on_the_preferred_secondary(tmp_path) -> None:
    # Given the secondary of an AG that prefers secondaries
    engine, sim = ag_engine(tmp_path, "SECONDARY", "SECONDARY")
    # When / Then it backs up (COPY_ONLY, as a secondary requires)
    assert not engine.backup(DB, STAGE).skipped
    assert header_of(sim, STAGE).copy_only


def test_ag_override_backs_up_without_asking_for_the_preferred_replica(tmp_path) -> None:
    engine, sim = ag_engine(tmp_path, "PRIMARY", "SECONDARY", ag_override=True)
    assert not engine.backup(DB, STAGE).skipped
    assert all("fn_hadr" not in sql for sql, _ in sim.executed)


def test_a_failure_after_progress_fails_the_backup_with_both_records(tmp_path) -> None:
    # Given a share that fills up at 50 percent (the error only surfaces through nextset())
    engine, sim = make(tmp_path)
    sim.server.faults.disk_full_after = 50
    seen: list[int] = []
    # When it backs up
    with pytest.raises(PermanentError) as caught:
        engine.backup(DB, STAGE, progress=seen.append)
    # Then the failure is raised (never a success at 50 %), both records are shown, the hint is the disk's
    assert seen == [10, 20, 30, 40, 50]
    assert "(3202)" in caught.value.message and "(3013)" in caught.value.message
    assert "[Microsoft]" not in caught.value.message and "free space" in caught.value.hint
    sim.assert_closed()


def test_a_verify_failure_after_a_good_backup_raises(tmp_path) -> None:
    # Given a share that damages what BACKUP wrote
    engine, sim = make(tmp_path)
    sim.server.faults.damage_written = True
    # When / Then VERIFYONLY finds the media family incorrectly formed
    with pytest.raises(PermanentError, match=r"\(3241\)") as caught:
        engine.backup(DB, STAGE)
    assert "new backup" in caught.value.hint


@pytest.mark.parametrize("state, kind", [(None, PermanentError), ("OFFLINE", PermanentError),
                                         ("SUSPECT", PermanentError), ("RECOVERING", TransientError)])
def test_backup_requires_an_existing_online_database(tmp_path, state, kind) -> None:
    # Given a database that is missing or not ONLINE
    engine, sim = make(tmp_path)
    if state is None:
        del sim.server.databases[DB]
    else:
        sim.server.databases[DB].state = state
    # When / Then nothing is backed up
    with pytest.raises(kind):
        engine.backup(DB, STAGE)
    assert sim.statements("BACKUP") == []


def test_injection_attempt_is_refused_when_no_such_database_exists(tmp_path) -> None:
    # Given a database name crafted to end the statement
    engine, sim = make(tmp_path)
    # When / Then it is looked up as a bind parameter, not found, and no BACKUP ever runs
    with pytest.raises(PermanentError, match="does not exist"):
        engine.backup("x]; DROP DATABASE appservice_metering--", STAGE)
    assert len(sim.executed) == 1 and "appservice_metering" in sim.server.databases


def test_a_database_really_named_like_an_injection_is_quoted_like_quotename(tmp_path) -> None:
    # Given such a database exists (SQL Server allows the name) and a staging path with a quote in it
    evil, path = "x]; DROP DATABASE appservice_metering--", r"\\fs\it's\db.bak"
    engine, sim = make(tmp_path)
    sim.server.add_database(evil)
    sim.server.make_dir(r"\\fs\it's")
    # When it is backed up / Then SQL Server parsed one bracketed name and one N'' literal
    engine.backup(evil, path)
    assert header_of(sim, path).database_name == evil and "appservice_metering" in sim.server.databases


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "db\x00", "n" * 129])
def test_malformed_names_are_refused_before_any_sql(tmp_path, name) -> None:
    engine, sim = make(tmp_path)
    with pytest.raises(PermanentError, match="invalid database name"):
        engine.backup(name, STAGE)
    assert sim.executed == []


def test_a_lone_3013_is_combined_with_the_cause_delivered_as_an_earlier_message(tmp_path) -> None:
    # Given a driver that hands over the cause (3201) as a message and only 3013 as the error
    server = app_service_server(tmp_path / "sql01")
    server.faults.denied_dirs.add(r"\\fileserver\staging\stamp1")
    sim = Simulator(server, split_errors=True)
    engine = SqlServerEngine(DatabaseSettings(server="sql01", username="backup", password=SECRET),
                             connect=sim.connect)
    # When / Then the error names the cause first and is classified by it
    with pytest.raises(PermanentError) as caught:
        engine.backup(DB, STAGE)
    assert caught.value.message.index("(3201)") < caught.value.message.index("(3013)")
    assert "service account" in caught.value.hint
