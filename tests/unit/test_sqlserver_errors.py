"""Every SQL Server error the engine can meet, produced by putting the simulated instance into the state that
causes it: transient vs permanent, a how-to-fix hint for each permanent one, no secret in any of it, and
classification by error number (the same server in German behaves the same)."""
from __future__ import annotations

import logging
import traceback
from typing import Callable

import pyodbc
import pytest

from tests.sqlsim import AvailabilityGroup, Login, Simulator, app_service_server
from tests.unit.sqlserver_sim import DB, SECRET, STAGE, make
from workers.engines import DatabaseSettings, SqlServerEngine
from workers.engines import sqlserver_sql as tsql
from workers.engines.sqlserver_errors import classify
from workers.runtime.errors import DrError, PermanentError, TransientError

OTHER = r"\\fileserver\staging\stamp1\other.bak"


def backed_up(engine, sim) -> None:
    engine.backup(DB, STAGE)


def least_privilege(engine, sim) -> None:
    sim.server.logins["backup"] = Login("backup", SECRET, database_roles={DB: {"db_backupoperator"}})


def backup(engine) -> None:
    engine.backup(DB, STAGE)


def restore_in_place(engine) -> None:
    engine.restore(DB, STAGE)


def sessions(engine, sim) -> None:
    backed_up(engine, sim)
    sim.server.databases[DB].sessions = 3


def in_ag(engine, sim) -> None:
    backed_up(engine, sim)
    sim.server.ag = AvailabilityGroup("ag1", role="PRIMARY")
    sim.server.databases[DB].ag_name = "ag1"


def containment_off(engine, sim) -> None:
    backed_up(engine, sim)
    sim.server.contained_authentication = False


def denied(engine, sim) -> None:
    sim.server.faults.denied_dirs.add(r"\\fileserver\staging\stamp1")


def truncated(engine, sim) -> None:
    backed_up(engine, sim)
    local = sim.server.host_path(STAGE)
    local.write_bytes(local.read_bytes()[:-10])


def file_taken(engine, sim) -> None:
    backed_up(engine, sim)
    other = sim.server.add_database("other")
    other.files[0].physical = r"C:\SQL\DATA\hosting_copy_appservice_hosting.mdf"


def locked(engine, sim) -> None:
    backed_up(engine, sim)
    sim.server.faults.locked_files.add(sim.server.databases[DB].files[0].physical)


def share_drops(engine, sim) -> None:
    sim.server.faults.share_drops_after = 30


def secondary_full(engine, sim) -> None:
    sim.server.ag = AvailabilityGroup("ag1", role="SECONDARY", backup_preference="SECONDARY")
    sim.server.databases[DB].ag_name = "ag1"


CASES: list[tuple[str, Callable, Callable, dict, type[DrError], str]] = [
    ("3101", sessions, restore_in_place, {}, PermanentError, "SET SINGLE_USER WITH ROLLBACK IMMEDIATE"),
    ("3104", in_ag, restore_in_place, {}, PermanentError, "REMOVE DATABASE [appservice_hosting]"),
    ("1834", file_taken, lambda e: e.restore("hosting_copy", STAGE), {}, PermanentError, "--data-path"),
    ("12824", containment_off, restore_in_place, {}, PermanentError,
     "sp_configure 'contained database authentication', 1; RECONFIGURE"),
    ("3201", denied, backup, {}, PermanentError, "service account"),
    ("3241", truncated, lambda e: e.verify(STAGE), {}, PermanentError, "new backup"),
    ("262", least_privilege, lambda e: e.verify(STAGE), {}, PermanentError,
     "ALTER SERVER ROLE dbcreator ADD MEMBER [backup]"),
    ("262", lambda e, s: s.server.logins.__setitem__("backup", Login("backup", SECRET)), backup, {},
     PermanentError, "USE [appservice_hosting]; ALTER ROLE db_backupoperator ADD MEMBER [backup]"),
    ("3634", locked, restore_in_place, {}, PermanentError, "Another process"),
    ("3271", share_drops, backup, {}, TransientError, "retried"),
    ("3059", secondary_full, backup, {"copy_only": False}, PermanentError, "COPY_ONLY"),
]


@pytest.mark.parametrize("number, arrange, act, settings, kind, hint", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_error_state_is_classified_with_a_hint(tmp_path, number, arrange, act, settings, kind, hint) -> None:
    # Given the server in the state that produces the error
    engine, sim = make(tmp_path, **settings)
    arrange(engine, sim)
    # When the engine runs into it
    with pytest.raises(DrError) as caught:
        act(engine)
    # Then SQL Server's number is shown, the class is right, the hint says how to fix it, no secret shows
    assert f"({number})" in caught.value.message
    assert type(caught.value) is kind, caught.value.message
    assert hint in caught.value.hint, caught.value.hint
    shown = "".join(traceback.format_exception(caught.value)) + caught.value.hint + repr(caught.value)
    assert SECRET not in shown
    sim.assert_closed()


def test_a_backup_from_a_newer_version_cannot_be_read_or_restored_on_an_older_server(tmp_path) -> None:
    # Given a backup taken on SQL Server 2025 and a SQL Server 2019 target sharing the staging share
    newer, _ = make(tmp_path, server=app_service_server(tmp_path / "disks", version="17.0.1000.7"))
    newer.backup(DB, STAGE)
    older, sim = make(tmp_path, server=app_service_server(tmp_path / "disks", version="15.0.4382.1"))
    # When the engine restores / Then FILELISTONLY cannot read the header (3241) and the hint names the version
    with pytest.raises(PermanentError, match=r"\(3241\)") as caught:
        older.restore(DB, STAGE)
    assert "newer SQL Server version" in caught.value.hint
    # And RESTORE DATABASE itself says 3169, classified permanent with the same advice
    cursor = sim.connect(older._connection_string, autocommit=True).cursor()
    with pytest.raises(pyodbc.Error) as raw:
        cursor.execute(tsql.restore_database(DB, [STAGE], [], 10))
    mapped = classify(raw.value, action=f"RESTORE DATABASE [{DB}]")
    assert "(3169)" in mapped.message and isinstance(mapped, PermanentError)
    assert "same or a newer version" in mapped.hint


def test_a_striped_backup_restored_without_every_stripe_names_the_stripes(tmp_path) -> None:
    # Given a backup in three stripes, and an engine configured for one file
    striped, sim = make(tmp_path, stripes=3)
    striped.backup(DB, STAGE)
    single, _ = make(tmp_path, server=sim.server)
    first = STAGE.replace(".bak", ".stripe1of3.bak")
    # When it restores from the first stripe alone / Then 3132 says the media set is incomplete
    with pytest.raises(PermanentError, match=r"\(3132\)") as caught:
        single.restore("hosting_copy", first, data_path=r"D:\Copy")
    assert "every stripe" in caught.value.hint


@pytest.mark.parametrize("login, password, number, hint", [
    ("backup", "wrong", 18456, "PASSWORD"), ("backup", SECRET, 4060, "USERNAME")])
def test_refused_logins_are_permanent_and_never_show_the_password(tmp_path, login, password, number, hint) -> None:
    # Given a wrong password, or a login that may not open master
    server = app_service_server(tmp_path)
    server.logins["backup"].denied_databases.add("master")
    if number == 18456:
        server.logins["backup"].denied_databases.clear()
    engine = SqlServerEngine(DatabaseSettings(server="sql01", username=login, password=password),
                             connect=Simulator(server).connect)
    # When / Then
    with pytest.raises(PermanentError, match=rf"\({number}\)") as caught:
        engine.check(DB)
    assert hint in caught.value.hint
    shown = "".join(traceback.format_exception(caught.value)) + caught.value.hint + repr(caught.value)
    assert SECRET not in shown and "w}}rd" not in shown


@pytest.mark.parametrize("sqlstate, text, kind, hint", [
    ("08001", "TCP Provider: Error code 0x2749", TransientError, "SERVER"),
    ("HYT00", "Login timeout expired", TransientError, "TIMEOUT"),
    ("08001", "SSL Provider: [error:0A000086:SSL routines::certificate verify failed]", PermanentError,
     "TRUST_SERVER_CERTIFICATE")])
def test_network_refusals_are_classified_by_sqlstate(tmp_path, sqlstate, text, kind, hint) -> None:
    engine, sim = make(tmp_path)
    sim.refuse(sqlstate, text)
    with pytest.raises(kind) as caught:
        engine.check(DB)
    assert hint in caught.value.hint


@pytest.mark.parametrize("sqlstate, text, hint", [("08S01", "Communication link failure", "retried"),
                                                  ("HYT00", "Query timeout expired", "QUERY_TIMEOUT")])
def test_a_connection_lost_during_backup_is_transient(tmp_path, sqlstate, text, hint) -> None:
    engine, sim = make(tmp_path)
    sim.server.faults.link_error = (sqlstate, text)
    with pytest.raises(TransientError) as caught:
        engine.backup(DB, STAGE)
    assert hint in caught.value.hint


@pytest.mark.parametrize("number", [1205, 229])
def test_an_unreadable_msdb_history_after_a_good_backup_never_fails_the_job(tmp_path, number, caplog) -> None:
    # Given msdb answers the history read with a deadlock (transient) or a denied SELECT (permanent)
    engine, sim = make(tmp_path)
    sim.server.faults.msdb_error = number
    # When it backs up
    with caplog.at_level(logging.WARNING):
        result = engine.backup(DB, STAGE)
    # Then the backup (already taken and verified) succeeds, without LSNs, and the reason is logged
    assert not result.skipped and result.first_lsn is None and result.size == 0
    assert sim.server.host_path(STAGE).exists() and len(sim.statements("RESTORE VERIFYONLY")) == 1
    assert f"({number})" in caplog.text


def test_progress_and_disk_full_are_recognised_by_number_on_a_german_server(tmp_path) -> None:
    # Given a server whose messages are German, and a share that fills at 40 percent
    engine, sim = make(tmp_path)
    sim.server.language = "Deutsch"
    sim.server.faults.disk_full_after = 40
    seen: list[int] = []
    # When it backs up / Then progress still arrives and the disk-full hint is chosen
    with pytest.raises(PermanentError, match="Prozent|Speicherplatz") as caught:
        engine.backup(DB, STAGE, progress=seen.append)
    assert seen == [10, 20, 30, 40] and "free space" in caught.value.hint


LOG = r"BACKUP LOG [appservice_hosting] TO DISK = N'\\fileserver\staging\stamp1\h.trn'"
FULL = f"BACKUP DATABASE [appservice_hosting] TO DISK = N'{STAGE}'"


def _ag(sim) -> None:
    sim.server.ag = AvailabilityGroup("ag1")
    sim.server.databases[DB].ag_name = "ag1"


RAW: list[tuple[int, Callable, list[str], type[DrError], str]] = [
    (4214, lambda sim: None, [f"{FULL} WITH COPY_ONLY", LOG], PermanentError, "COPY_ONLY fulls do not"),
    (4208, lambda sim: setattr(sim.server.databases[DB], "recovery_model", "SIMPLE"), [LOG], PermanentError,
     "SET RECOVERY FULL"),
    (1468, _ag, ["ALTER DATABASE [appservice_hosting] SET SINGLE_USER WITH ROLLBACK IMMEDIATE"], PermanentError,
     "REMOVE DATABASE [appservice_hosting]"),
    (5061, lambda sim: setattr(sim.server.databases[DB], "sessions", 2),
     ["ALTER DATABASE [appservice_hosting] SET SINGLE_USER"], TransientError, "retried"),
    (3702, lambda sim: setattr(sim.server.databases[DB], "sessions", 2), ["DROP DATABASE [appservice_hosting]"],
     PermanentError, "ROLLBACK IMMEDIATE"),
    (8928, lambda sim: setattr(sim.server.databases[DB], "corrupt_pages", [7]),
     ["DBCC CHECKDB ([appservice_hosting]) WITH NO_INFOMSGS, ALL_ERRORMSGS"], PermanentError, "DBCC CHECKDB on"),
    (3187, lambda sim: None, [FULL, f"RESTORE VERIFYONLY FROM DISK = N'{STAGE}' WITH CHECKSUM"], PermanentError,
     "WITH CHECKSUM"),
    (3154, lambda sim: None, [FULL, f"RESTORE DATABASE [appservice_metering] FROM DISK = N'{STAGE}'"],
     PermanentError, "--target-database"),
    (942, lambda sim: setattr(sim.server.databases[DB], "state", "OFFLINE"), [FULL], PermanentError, "SET ONLINE"),
]


@pytest.mark.parametrize("number, arrange, statements, kind, hint", RAW, ids=[str(c[0]) for c in RAW])
def test_statements_later_features_send_are_mapped_too(tmp_path, number, arrange, statements, kind, hint) -> None:
    # Given the server in the state, and statements the engine does not send yet (log backups, CHECKDB, ...)
    engine, sim = make(tmp_path)
    arrange(sim)
    cursor = sim.connect(engine._connection_string, autocommit=True).cursor()
    # When the last statement fails
    for statement in statements[:-1]:
        cursor.execute(statement)
        while cursor.nextset():
            pass
    with pytest.raises(pyodbc.Error) as raw:
        cursor.execute(statements[-1])
        while cursor.nextset():
            pass
    # Then its number decides the class and the hint
    mapped = classify(raw.value, action=statements[-1].split(" TO ")[0], login="backup", database=DB)
    assert f"({number})" in mapped.message and type(mapped) is kind and hint in mapped.hint, mapped.hint
