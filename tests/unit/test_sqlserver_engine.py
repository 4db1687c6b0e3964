"""SQL Server engine against a scripted pyodbc fake: exact T-SQL, draining, progress, Always On, errors, restore."""
from __future__ import annotations

import traceback

import pytest

from tests.unit.fake_pyodbc import Expect, FakeOdbc, ResultSet, backup_ok as backup, history as fake_history
from tests.unit.fake_pyodbc import info, lookup as fake_lookup, odbc_error, progress_sets, rows, sql_error
from tests.unit.fake_pyodbc import verify_ok as verify
from workers.engines import SKIPPED_NOT_PREFERRED, DatabaseSettings, SqlServerEngine
from workers.engines import sqlserver_sql as tsql
from workers.runtime.errors import PermanentError, TransientError

DB = "appservice_hosting"
STAGE = r"\\fileserver\staging\stamp1\appservice_hosting.bak"
SECRET = "P@ss;w}rd-SECRET-42"
DEFAULT_BACKUP = ("BACKUP DATABASE [appservice_hosting] TO DISK = N'{path}' "
                  "WITH CHECKSUM, FORMAT, INIT, COMPRESSION, COPY_ONLY, STATS = 10")


def make(script: list[Expect], **settings: object) -> tuple[SqlServerEngine, FakeOdbc]:
    fake = FakeOdbc(script)
    values: dict[str, object] = dict(server="sql01", username="backup", password=SECRET)
    values.update(settings)
    return SqlServerEngine(DatabaseSettings(**values), connect=fake.connect), fake


def lookup(name: str = DB, state: str | None = "ONLINE", in_ag: int = 0, asked: str | None = None) -> Expect:
    return fake_lookup(name, state, in_ag, asked)


def history(name: str = DB, device: str = STAGE) -> Expect:
    return fake_history(name, device)


def test_backup_runs_the_exact_statements_and_turns_stats_messages_into_progress() -> None:
    # Given an ONLINE database outside any availability group
    engine, fake = make([lookup(), backup(DEFAULT_BACKUP.format(path=STAGE), *range(10, 101, 10)), history(),
                         verify(STAGE)])
    seen: list[int] = []
    # When it is backed up with the default options
    result = engine.backup(DB, STAGE, progress=seen.append)
    # Then the T-SQL ran in order on one autocommit connection, progress followed the STATS messages,
    # and the result carries msdb's LSNs and size (the UNC path is not readable from here: no checksum)
    fake.assert_done()
    assert fake.connect_kwargs == [{"autocommit": True, "timeout": 30}]
    assert fake.connections[0].timeout == 0
    assert seen == list(range(10, 101, 10))
    assert (result.database, result.path, result.engine, result.server) == (DB, STAGE, "sqlserver", "sql01,1433")
    assert (result.first_lsn, result.last_lsn, result.database_backup_lsn) == (
        "37000000012800037", "37000000014400001", "36000000000800001")
    assert result.size == 10485760 and result.checksum is None and not result.skipped
    assert result.parts == (STAGE,)


def test_every_backup_option_is_configurable() -> None:
    # Given settings that change every BACKUP option and turn verification off
    statement = ("BACKUP DATABASE [appservice_hosting] TO DISK = N'/stage/db.bak' WITH CHECKSUM, FORMAT, INIT, "
                 "NO_COMPRESSION, STATS = 25, MAXTRANSFERSIZE = 1048576, BUFFERCOUNT = 50")
    engine, fake = make([lookup(), backup(statement, 25, 50, 75, 100), history(device="/stage/db.bak")],
                        compression=False, copy_only=False, verify=False, stats_percent=25,
                        max_transfer_size=1048576, buffer_count=50, query_timeout=7200, timeout=5)
    # When it backs up
    engine.backup(DB, "/stage/db.bak")
    # Then the statement carries them, no VERIFYONLY ran, and the timeouts reached the connection
    fake.assert_done()
    assert fake.connect_kwargs[0]["timeout"] == 5 and fake.connections[0].timeout == 7200


def test_striped_backup_writes_and_verifies_every_stripe() -> None:
    # Given three stripes
    paths = [f"/stage/db.stripe{i}of3.bak" for i in (1, 2, 3)]
    disks = ", ".join(f"DISK = N'{p}'" for p in paths)
    statement = f"BACKUP DATABASE [appservice_hosting] TO {disks} WITH CHECKSUM, FORMAT, INIT, COMPRESSION, " \
                "COPY_ONLY, STATS = 10"
    engine, fake = make([lookup(), backup(statement, 100), history(device=paths[0]), verify(*paths)], stripes=3)
    # When it backs up to one staging name
    result = engine.backup(DB, "/stage/db.bak")
    # Then every stripe is named in BACKUP and VERIFYONLY, and listed in the result
    fake.assert_done()
    assert result.parts == tuple(paths)


def test_a_staging_file_the_worker_can_read_gets_size_and_sha256(tmp_path) -> None:
    # Given a staging directory shared by SQL Server and the worker (the fake "writes" the file up front)
    staged = tmp_path / "db.bak"
    staged.write_bytes(b"TAPE" * 1000)
    engine, fake = make([lookup(), backup(DEFAULT_BACKUP.format(path=staged), 100), history(device=str(staged)),
                         verify(str(staged))])
    # When it backs up
    result = engine.backup(DB, str(staged))
    # Then size and checksum come from the file itself
    assert result.size == 4000 and result.checksum is not None and result.checksum.startswith("sha256:")


@pytest.mark.parametrize("preferred", [0, None])
def test_always_on_database_is_skipped_where_this_is_not_the_preferred_replica(preferred) -> None:
    # Given a database in an availability group and a replica that is not the preferred backup replica
    answer = [rows(["preferred"], (preferred,))]
    engine, fake = make([lookup(in_ag=1), Expect(tsql.PREFERRED_REPLICA, (DB,), answer)])
    # When it is asked to back up
    result = engine.backup(DB, STAGE)
    # Then nothing is backed up and the result says why - not a failure
    fake.assert_done()
    assert result.skipped and result.skipped_reason == SKIPPED_NOT_PREFERRED and result.size == 0


def test_always_on_database_is_backed_up_on_the_preferred_replica() -> None:
    # Given the preferred backup replica
    preferred = Expect(tsql.PREFERRED_REPLICA, (DB,), [rows(["preferred"], (1,))])
    engine, fake = make([lookup(in_ag=1), preferred, backup(DEFAULT_BACKUP.format(path=STAGE), 100), history(),
                         verify(STAGE)])
    # When / Then it backs up normally
    assert not engine.backup(DB, STAGE).skipped
    fake.assert_done()


def test_ag_override_backs_up_without_asking_for_the_preferred_replica() -> None:
    # Given ag_override
    engine, fake = make([lookup(in_ag=1), backup(DEFAULT_BACKUP.format(path=STAGE), 100), history(),
                         verify(STAGE)], ag_override=True)
    # When / Then it backs up without consulting sys.fn_hadr_backup_is_preferred_replica
    assert not engine.backup(DB, STAGE).skipped
    fake.assert_done()
    assert all("fn_hadr" not in sql for sql, _ in fake.executed)


def test_an_error_in_a_later_result_set_fails_the_backup() -> None:
    # Given a BACKUP that streams 10..50 percent, then fails (the error only surfaces through nextset())
    failing = progress_sets(10, 20, 30, 40, 50) + [ResultSet(error=sql_error(
        (3201, r"Cannot open backup device '\\fileserver\staging\x.bak'. Operating system error 5(Access is denied.)."),
        (3013, "BACKUP DATABASE is terminating abnormally.")))]
    engine, fake = make([lookup(), Expect(DEFAULT_BACKUP.format(path=STAGE), results=failing)])
    seen: list[int] = []
    # When it backs up
    with pytest.raises(PermanentError) as caught:
        engine.backup(DB, STAGE, progress=seen.append)
    # Then the failure is raised (never a success at 50 %), both records are shown, the hint is 3201's
    fake.assert_done()
    assert seen == [10, 20, 30, 40, 50]
    assert "Cannot open backup device" in caught.value.message and "terminating abnormally" in caught.value.message
    assert "[Microsoft]" not in caught.value.message
    assert "service account" in caught.value.hint


def test_a_lone_3013_is_combined_with_the_error_message_before_it() -> None:
    # Given SQL Server delivered the cause as a message in one result set and 3013 as the error in the next
    sets = [ResultSet(messages=[info(3211, "10 percent processed.")]),
            ResultSet(messages=[info(3201, "Cannot open backup device 'x'. Operating system error 3.", "42000")]),
            ResultSet(error=sql_error((3013, "BACKUP DATABASE is terminating abnormally.")))]
    engine, _ = make([lookup(), Expect(DEFAULT_BACKUP.format(path=STAGE), results=sets)])
    # When / Then the error names the cause and is classified by it
    with pytest.raises(PermanentError) as caught:
        engine.backup(DB, STAGE)
    assert caught.value.message.index("Cannot open backup device") < caught.value.message.index("terminating")
    assert "service account" in caught.value.hint


def test_a_verify_failure_after_a_good_backup_raises() -> None:
    # Given a backup that succeeds and a VERIFYONLY that finds a damaged media family
    bad = Expect(f"RESTORE VERIFYONLY FROM DISK = N'{STAGE}' WITH CHECKSUM", error=sql_error(
        (3241, "The media family on device 'x' is incorrectly formed."), (3013, "VERIFY DATABASE is terminating "
                                                                               "abnormally.")))
    engine, fake = make([lookup(), backup(DEFAULT_BACKUP.format(path=STAGE), 100), history(), bad])
    # When / Then
    with pytest.raises(PermanentError, match="incorrectly formed") as caught:
        engine.backup(DB, STAGE)
    assert "new backup" in caught.value.hint
    fake.assert_done()


@pytest.mark.parametrize("error, kind, hint_part", [
    (sql_error((4060, 'Cannot open database "master" requested by the login.'), state="42000"), PermanentError,
     "USERNAME"),
    (sql_error((18456, "Login failed for user 'backup'."), state="28000"), PermanentError, "PASSWORD"),
    (odbc_error("08S01", "TCP Provider: Error code 0x2746"), TransientError, "retried"),
    (odbc_error("08001", "TCP Provider: Error code 0x2749"), TransientError, "SERVER"),
    (odbc_error("HYT00", "Login timeout expired"), TransientError, "TIMEOUT"),
    (odbc_error("08001", "SSL Provider: [error:0A000086:SSL routines::certificate verify failed]"), PermanentError,
     "TRUST_SERVER_CERTIFICATE"),
])
def test_connection_errors_are_classified_with_hints(error, kind, hint_part) -> None:
    # Given a server that refuses or drops the connection
    fake = FakeOdbc(connect_error=error)
    engine = SqlServerEngine(DatabaseSettings(server="sql01", username="backup", password=SECRET),
                             connect=fake.connect)
    # When the engine connects
    with pytest.raises(kind) as caught:
        engine.check(DB)
    # Then the error class and hint say what to do, and the password appears nowhere
    assert hint_part in caught.value.hint
    shown = "".join(traceback.format_exception(caught.value)) + caught.value.hint + repr(caught.value)
    assert SECRET not in shown and "w}}rd" not in shown


@pytest.mark.parametrize("error, kind, hint_part", [
    (odbc_error("08S01", "Communication link failure"), TransientError, "retried"),
    (odbc_error("HYT00", "Query timeout expired"), TransientError, "QUERY_TIMEOUT"),
    (sql_error((3101, "Exclusive access could not be obtained because the database is in use.")), TransientError,
     "SINGLE_USER"),
    (sql_error((3059, "This BACKUP or RESTORE command is not supported on a database mirror or secondary "
                      "replica.")), PermanentError, "COPY_ONLY"),
    (sql_error((262, "BACKUP DATABASE permission denied in database 'appservice_hosting'.")), PermanentError,
     "db_backupoperator"),
    (sql_error((3202, "Write on 'x' failed: 112(There is not enough space on the disk.)"),
               (3013, "BACKUP DATABASE is terminating abnormally.")), PermanentError, "free space"),
    (sql_error((99999, "Something new.")), PermanentError, "error 99999"),
])
def test_backup_errors_are_classified_with_hints(error, kind, hint_part) -> None:
    # Given a BACKUP statement that fails
    engine, _ = make([lookup(), Expect(DEFAULT_BACKUP.format(path=STAGE), error=error)])
    # When / Then
    with pytest.raises(kind) as caught:
        engine.backup(DB, STAGE)
    assert hint_part in caught.value.hint
    assert caught.value.message.startswith("BACKUP DATABASE [appservice_hosting] failed: ")


@pytest.mark.parametrize("state, kind", [(None, PermanentError), ("OFFLINE", PermanentError),
                                         ("SUSPECT", PermanentError), ("RECOVERING", TransientError)])
def test_backup_requires_an_existing_online_database(state, kind) -> None:
    # Given a database that is missing or not ONLINE
    engine, fake = make([lookup(state=state)])
    # When / Then nothing is backed up
    with pytest.raises(kind):
        engine.backup(DB, STAGE)
    fake.assert_done()


def test_injection_attempt_is_refused_when_no_such_database_exists() -> None:
    # Given a database name crafted to end the statement
    evil = "x]; DROP DATABASE y--"
    engine, fake = make([lookup(state=None, asked=evil)])
    # When / Then it is looked up as a bind parameter, not found, and no BACKUP ever runs
    with pytest.raises(PermanentError, match="does not exist"):
        engine.backup(evil, STAGE)
    fake.assert_done()
    assert len(fake.executed) == 1


def test_a_database_really_named_like_an_injection_is_quoted_like_quotename() -> None:
    # Given such a database exists (SQL Server allows the name) and a staging path with a quote in it
    evil, path = "x]; DROP DATABASE y--", r"\\fs\it's\db.bak"
    statement = ("BACKUP DATABASE [x]]; DROP DATABASE y--] TO DISK = N'\\\\fs\\it''s\\db.bak' "
                 "WITH CHECKSUM, FORMAT, INIT, COMPRESSION, COPY_ONLY, STATS = 10")
    engine, fake = make([lookup(name=evil), backup(statement, 100), history(evil, path),
                         verify("\\\\fs\\it''s\\db.bak")])
    # When / Then the name is one bracketed identifier and the path one N'' literal
    engine.backup(evil, path)
    fake.assert_done()


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "db\x00", "n" * 129])
def test_malformed_names_are_refused_before_any_sql(name) -> None:
    # Given names no database can have
    engine, fake = make([])
    # When / Then they are refused without a single statement
    with pytest.raises(PermanentError, match="invalid database name"):
        engine.backup(name, STAGE)
    assert fake.executed == []
