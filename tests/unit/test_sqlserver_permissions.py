"""`config check --connect` for SQL Server, against the simulated instance: per configured database, the
permissions the login has and lacks for backup, verify, restore, drill (and Always On), with the GRANTs."""
from __future__ import annotations

import pyodbc
import pytest

from tests.sqlsim import AvailabilityGroup, Login
from tests.unit.sqlserver_sim import DB, SECRET, STAGE, make
from workers.engines.odbc import braced, drain
from workers.cli.config_cmd import sqlserver_permissions

METERING = "appservice_metering"


def report(tmp_path, capsys, arrange=None, sim=None):
    engine, sim = make(tmp_path, server=sim.server if sim else None)
    if arrange:
        arrange(sim)
    code = sqlserver_permissions(engine.settings, connect=sim.connect)
    sim.assert_closed()
    return code, capsys.readouterr().out, sim


def as_sysadmin(sim, statement: str) -> None:
    sim.server.logins.setdefault("dba", Login("dba", "dba-pw", sysadmin=True))
    connection = sim.connect("UID=dba;PWD=dba-pw", autocommit=True)
    cursor = connection.cursor()
    cursor.execute(statement)
    drain(cursor)
    connection.close()


def section(out: str, database: str) -> str:
    """The lines under ``database:`` up to the next database."""
    text = out.split(f"  {database}")[1]
    return text.split("\n  appservice_")[0]


def test_a_sysadmin_login_has_everything(tmp_path, capsys) -> None:
    code, out, _ = report(tmp_path, capsys)
    assert code == 0 and "LACKS" not in out and "SQL Server: ok" in out
    for task in ("backup", "verify", "restore", "restore in place", "drill"):
        assert f"has   {task}:" in section(out, DB)


def test_a_least_privilege_login_is_told_what_it_lacks_and_the_exact_grants(tmp_path, capsys) -> None:
    # Given a login that is db_backupoperator in hosting only (no user in metering, no server permissions)
    def arrange(sim) -> None:
        sim.server.logins["backup"] = Login("backup", SECRET, database_roles={DB: {"db_backupoperator"}})
    # When config check --connect looks at it
    code, out, _ = report(tmp_path, capsys, arrange)
    hosting, metering = section(out, DB), section(out, METERING)
    # Then hosting can be backed up, but verify, restore and drill lack CREATE DATABASE, with the GRANT
    assert "has   backup:" in hosting
    for task in ("verify", "restore", "drill"):
        assert f"LACKS {task}: CREATE DATABASE" in hosting
    assert "fix: USE [master]; GRANT CREATE ANY DATABASE TO [backup];" in hosting
    assert ("fix: USE [master]; ALTER SERVER ROLE [dbcreator] ADD MEMBER [backup]; USE [master]; GRANT ALTER ANY "
            "DATABASE TO [backup];") in hosting
    # And metering cannot be backed up at all: the fix creates the user and adds it to db_backupoperator
    assert "LACKS backup:" in metering
    assert ("fix: USE [appservice_metering]; IF USER_ID(N'backup') IS NULL CREATE USER [backup] FOR LOGIN "
            "[backup]; ALTER ROLE [db_backupoperator] ADD MEMBER [backup];") in metering
    assert code == 1 and "cannot back up appservice_metering" in out


def test_dbcreator_and_alter_any_database_cover_restores_and_drills(tmp_path, capsys) -> None:
    def arrange(sim) -> None:
        sim.server.logins["backup"] = Login("backup", SECRET, server_roles={"dbcreator"},
                                            server_permissions={"ALTER ANY DATABASE"},
                                            database_roles={DB: {"db_backupoperator"},
                                                            METERING: {"db_backupoperator"}})
    code, out, _ = report(tmp_path, capsys, arrange)
    assert code == 0 and "LACKS" not in out


def test_an_always_on_database_also_needs_view_server_state(tmp_path, capsys) -> None:
    def arrange(sim) -> None:
        sim.server.ag = AvailabilityGroup("ag1", role="PRIMARY")
        sim.server.databases[DB].ag_name = "ag1"
        sim.server.logins["backup"] = Login("backup", SECRET, server_roles={"dbcreator"},
                                            database_roles={DB: {"db_owner"}, METERING: {"db_owner"}})
    code, out, _ = report(tmp_path, capsys, arrange)
    assert "LACKS always on: VIEW SERVER STATE" in section(out, DB)
    assert "fix: USE [master]; GRANT VIEW SERVER STATE TO [backup];" in section(out, DB)
    assert "always on" not in section(out, METERING) and code == 0


def test_a_missing_database_or_a_failed_login_fails_the_check(tmp_path, capsys) -> None:
    code, out, _ = report(tmp_path, capsys, lambda sim: sim.server.databases.pop(METERING))
    assert code == 1 and "appservice_metering - NOT FOUND" in out
    code, out, _ = report(tmp_path / "b", capsys, lambda sim: sim.server.logins.pop("backup"))
    assert code == 1 and "SQL Server: FAILED" in out and "(18456)" in out and SECRET not in out


def test_running_the_printed_fixes_gives_the_login_everything_and_backups_verify_again(tmp_path, capsys) -> None:
    # Given a least-privilege login and the fixes config check printed for it
    def arrange(sim) -> None:
        sim.server.logins["backup"] = Login("backup", SECRET, database_roles={DB: {"db_backupoperator"}})
    code, out, sim = report(tmp_path, capsys, arrange)
    fixes = list(dict.fromkeys(line.split("fix: ", 1)[1] for line in out.splitlines() if "fix: " in line))
    assert code == 1 and len(fixes) == 3
    # When a DBA runs them as printed
    for fix in fixes:
        as_sysadmin(sim, fix)
    # Then the check finds nothing lacking, and a backup is verified with RESTORE VERIFYONLY again
    code, out, _ = report(tmp_path, capsys, sim=sim)
    assert code == 0 and "LACKS" not in out
    engine, sim = make(tmp_path, server=sim.server)
    engine.backup("appservice_metering", STAGE)
    assert [s.split(" FROM")[0] for s in sim.statements("RESTORE")] == ["RESTORE VERIFYONLY"]


def test_only_a_sysadmin_may_grant(tmp_path) -> None:
    engine, sim = make(tmp_path)
    sim.server.logins["backup"].sysadmin = False
    connection = sim.connect("UID=backup;PWD=" + braced(SECRET), autocommit=True)
    with pytest.raises(pyodbc.ProgrammingError, match=r"\(15247\)"):
        connection.cursor().execute("USE [master]; GRANT CREATE ANY DATABASE TO [backup];")
    assert not sim.server.logins["backup"].may("CREATE ANY DATABASE")
