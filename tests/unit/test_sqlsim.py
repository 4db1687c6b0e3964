"""The SQL Server simulator itself: it parses what it is sent (and rejects the rest with 102), keeps state
across statements, reads back what it wrote, and streams results and errors as pyodbc sees them."""
from __future__ import annotations

import pyodbc
import pytest

from tests.sqlsim import PASSWORD, AvailabilityGroup, Replica, Simulator, app_service_server
from tests.sqlsim.network import Network
from workers.engines.odbc import drain, error_numbers

STAGE = r"\\fileserver\staging\stamp1\h.bak"


@pytest.fixture
def sim(tmp_path) -> Simulator:
    return Simulator(app_service_server(tmp_path))


def cursor(sim: Simulator, autocommit: bool = True):
    return sim.connect(f"UID=backup;PWD={{{PASSWORD.replace('}', '}}')}}}", autocommit=autocommit).cursor()


def run(sim: Simulator, sql: str, *params):
    c = cursor(sim)
    c.execute(sql, *params)
    return drain(c)


def numbers(caught: pytest.ExceptionInfo) -> list[int]:
    return error_numbers(caught.value.args[1])


@pytest.mark.parametrize("sql", [
    "BACKUP DATABASE [appservice_hosting] TO DISK = N'x' WITH CHECKSUMS",
    "BACKUP DATABASE [appservice_hosting] DISK = N'x'",
    "RESTORE DATABASE [x] FROM DISK = N'x' WITH MOVE N'a' N'b'",
    "SELECT name FROM sys.databases WHERE",
    "TRUNCATE TABLE x",
    "ALTER DATABASE [x] SET SINGLE_USER WITH ROLLBACK",
])
def test_statements_outside_the_grammar_are_syntax_errors(sim, sql) -> None:
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        run(sim, sql)
    assert numbers(caught) == [102] and caught.value.args[0] == "42000"


def test_bound_parameters_are_values_never_sql(sim) -> None:
    rows = run(sim, "SELECT name, state_desc FROM sys.databases WHERE name = ?", "x' OR 1=1 --")
    assert rows == [[]]
    assert run(sim, "SELECT name FROM sys.databases WHERE name = ?", "appservice_hosting") == [
        [{"name": "appservice_hosting"}]]
    with pytest.raises(pyodbc.Error):
        run(sim, "SELECT name FROM sys.databases WHERE name = ?")          # marker without a value


def test_headeronly_and_filelistonly_read_back_what_backup_wrote(sim) -> None:
    # Given a backup with checksums on SQL Server 2022
    run(sim, f"BACKUP DATABASE [appservice_hosting] TO DISK = N'{STAGE}' WITH CHECKSUM, COPY_ONLY")
    # When its header and file list are read / Then they describe that database and server
    [[header]] = run(sim, f"RESTORE HEADERONLY FROM DISK = N'{STAGE}'")
    assert (header["DatabaseName"], header["SoftwareVersionMajor"], header["HasBackupChecksums"],
            header["IsCopyOnly"], header["FamilyCount"]) == ("appservice_hosting", 16, 1, 1, 1)
    [files] = run(sim, f"RESTORE FILELISTONLY FROM DISK = N'{STAGE}'")
    assert [(f["LogicalName"], f["Type"]) for f in files] == [("appservice_hosting", "D"),
                                                              ("appservice_hosting_log", "L")]
    [[history]] = run(sim, "SELECT TOP (1) bs.first_lsn FROM msdb.dbo.backupset AS bs WHERE bs.database_name = ? "
                           "ORDER BY bs.backup_set_id DESC", "appservice_hosting")
    assert history["first_lsn"] == header["FirstLSN"]


def test_backup_progress_arrives_one_result_per_message_and_a_late_error_through_nextset(sim) -> None:
    # Given a share that drops after 20 percent
    sim.server.faults.share_drops_after = 20
    c = cursor(sim)
    # When BACKUP runs / Then execute returns with the first progress message, the error comes from nextset
    c.execute(f"BACKUP DATABASE [appservice_hosting] TO DISK = N'{STAGE}' WITH STATS = 10")
    assert c.messages[0][0] == "[01000] (3211)" and c.description is None
    assert c.nextset() is True
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        c.nextset()
    assert numbers(caught) == [3271, 3013]


def test_a_statement_left_undrained_fails_the_test(sim) -> None:
    c = cursor(sim)
    c.execute(f"BACKUP DATABASE [appservice_hosting] TO DISK = N'{STAGE}' WITH STATS = 10")
    with pytest.raises(AssertionError, match="not drained"):
        c.execute("SELECT name FROM sys.databases")


def test_backup_inside_a_transaction_is_refused(sim) -> None:
    c = cursor(sim, autocommit=False)
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        c.execute(f"BACKUP DATABASE [appservice_hosting] TO DISK = N'{STAGE}'")
    assert numbers(caught) == [3021, 3013]


def test_replace_over_an_offline_databases_files_overwrites_them_silently(sim) -> None:
    # Given a backup of hosting; a restore under another name without MOVE targets hosting's own files
    run(sim, f"BACKUP DATABASE [appservice_hosting] TO DISK = N'{STAGE}'")
    restore = f"RESTORE DATABASE [appservice_hosting_x] FROM DISK = N'{STAGE}' WITH REPLACE, RECOVERY"
    # When hosting is ONLINE / Then SQL Server refuses (1834 per file, 3156, 3013)
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        run(sim, restore)
    assert numbers(caught) == [1834, 3156, 3013]
    # When hosting is OFFLINE / Then REPLACE lets the copy take hosting's files (the danger REPLACE brings)
    run(sim, "ALTER DATABASE [appservice_hosting] SET OFFLINE")
    run(sim, restore)
    assert sim.server.databases["appservice_hosting"].damaged_by_restore == "appservice_hosting_x"


def test_alter_database_on_a_restoring_database_is_5052_and_single_user_ends_sessions(sim) -> None:
    hosting = sim.server.databases["appservice_hosting"]
    hosting.sessions = 4
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        run(sim, "DROP DATABASE [appservice_hosting]")
    assert numbers(caught) == [3702]
    run(sim, "ALTER DATABASE [appservice_hosting] SET SINGLE_USER WITH ROLLBACK IMMEDIATE")
    assert hosting.sessions == 0 and hosting.user_access == "SINGLE_USER"
    hosting.state = "RESTORING"
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        run(sim, "ALTER DATABASE [appservice_hosting] SET MULTI_USER")
    assert numbers(caught) == [5052, 5069]


def test_checkdb_reports_corrupt_pages_as_errors(sim) -> None:
    assert run(sim, "DBCC CHECKDB (N'appservice_hosting') WITH NO_INFOMSGS, ALL_ERRORMSGS") == []
    sim.server.databases["appservice_hosting"].corrupt_pages = [152]
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        run(sim, "DBCC CHECKDB ([appservice_hosting]) WITH NO_INFOMSGS, ALL_ERRORMSGS")
    assert numbers(caught) == [8939, 8928, 8989]


def test_server_properties_and_the_preferred_replica(sim) -> None:
    sim.server.edition = "Express Edition (64-bit)"
    [[row]] = run(sim, "SELECT SERVERPROPERTY('EngineEdition') AS edition, "
                       "sys.fn_hadr_backup_is_preferred_replica(?) AS preferred", "appservice_hosting")
    assert row == {"edition": 4, "preferred": 1}
    [[missing]] = run(sim, "SELECT sys.fn_hadr_backup_is_preferred_replica(?) AS preferred", "nope")
    assert missing == {"preferred": 0}


def test_a_listener_reaches_the_primary_and_the_ag_names_the_preferred_backup_replica(tmp_path) -> None:
    # Given a two-replica AG preferring secondaries, reached through its listener
    ag = AvailabilityGroup("ag1", backup_preference="SECONDARY", listener="aglisten",
                           replicas={"sql01": Replica("PRIMARY"), "sql02": Replica("SECONDARY")})
    sims = {}
    for name in ("sql01", "sql02"):
        server = app_service_server(tmp_path / "disks", name=name)
        server.ag = ag
        server.databases["appservice_hosting"].ag_name = "ag1"
        sims[name] = Simulator(server)
    network = Network(sims)
    login = f"UID=backup;PWD={{{PASSWORD.replace('}', '}}')}}}"
    question = "SELECT sys.fn_hadr_backup_is_preferred_replica(?) AS preferred"

    def ask(server: str) -> int:
        c = network.connect(f"SERVER=tcp:{server},1433;{login}", autocommit=True).cursor()
        c.execute(question, "appservice_hosting")
        return drain(c)[0][0]["preferred"]
    # When / Then the listener leads to the primary, which is not the preferred backup replica; sql02 is
    assert ask("aglisten") == 0 and network.reached == ["sql01"]
    assert ask("sql02") == 1
    c = network.connect(f"SERVER=tcp:sql02,1433;{login}", autocommit=True).cursor()
    c.execute("SELECT r.replica_server_name, s.role_desc FROM sys.availability_replicas AS r "
              "JOIN sys.dm_hadr_availability_replica_states AS s ON s.replica_id = r.replica_id")
    assert sorted((r["replica_server_name"], r["role_desc"]) for r in drain(c)[0]) == [
        ("sql01", "PRIMARY"), ("sql02", "SECONDARY")]
    # And when the secondary disconnects, "prefer secondary" falls back to the primary
    ag.replicas["sql02"].connected = False
    assert ask("aglisten") == 1
    with pytest.raises(pyodbc.OperationalError):
        network.connect(f"SERVER=tcp:sql03,1433;{login}", autocommit=True)


def test_log_backups_need_full_recovery_and_a_normal_full_backup_first(sim) -> None:
    # Given only COPY_ONLY fulls so far (they never start the log chain, and the log is never truncated)
    log = r"BACKUP LOG [appservice_hosting] TO DISK = N'\\fileserver\staging\stamp1\h.trn' WITH CHECKSUM"
    run(sim, f"BACKUP DATABASE [appservice_hosting] TO DISK = N'{STAGE}' WITH COPY_ONLY")
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        run(sim, log)
    assert numbers(caught) == [4214, 3013]
    # When a normal full is taken, then the log / Then the log backup works and the log can be reused
    sim.server.databases["appservice_hosting"].log_reuse_wait = "LOG_BACKUP"
    run(sim, f"BACKUP DATABASE [appservice_hosting] TO DISK = N'{STAGE}' WITH INIT")
    run(sim, log)
    [[row]] = run(sim, "SELECT log_reuse_wait_desc FROM sys.databases WHERE name = ?", "appservice_hosting")
    assert row == {"log_reuse_wait_desc": "NOTHING"}
    [[last]] = run(sim, "SELECT TOP (1) type FROM msdb.dbo.backupset ORDER BY backup_set_id DESC")
    assert last == {"type": "L"}
    # And a SIMPLE-recovery database has no log backups at all
    sim.server.databases["appservice_metering"].recovery_model = "SIMPLE"
    with pytest.raises(pyodbc.ProgrammingError) as caught:
        run(sim, r"BACKUP LOG [appservice_metering] TO DISK = N'\\fileserver\staging\stamp1\m.trn'")
    assert numbers(caught) == [4208, 3013]
