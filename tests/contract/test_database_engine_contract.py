"""One contract for every DatabaseEngine: PostgreSQL against the real local server, SQL Server against the
scripted pyodbc fake (there is no SQL Server here).

Every engine must back up with progress ending at 100, verify, restore into a fresh database that matches the
source, refuse missing databases with a permanent error and a hint, and reject damaged backups.
"""
from __future__ import annotations

import os
from typing import Iterator, Protocol

import pytest

from tests.fixtures import started
from tests.fixtures.postgres import (drop_database, fill_sample, pg_settings, postgres_available, scratch_database,
                                     table_fingerprints, unique_name)
from tests.unit.fake_pyodbc import (Expect, FakeOdbc, backup_ok, history, lookup, progress_sets, rows, sql_error,
                                    verify_ok)
from workers.engines import DatabaseEngine, DatabaseSettings, PostgresEngine, RestoreResult, SqlServerEngine
from workers.runtime.errors import PermanentError


class EngineCase(Protocol):
    engine: DatabaseEngine
    source: str                                     # an existing database with data

    def staging(self, name: str) -> str: ...

    def fresh_name(self) -> str: ...                # a database name that does not exist yet

    def expect_round_trip(self, path: str, target: str) -> None: ...

    def expect_missing(self, database: str) -> None: ...

    def expect_present(self, database: str) -> None: ...

    def damaged_backup(self) -> str: ...            # a staged backup that must fail verification

    def compare(self, target: str, restored: RestoreResult) -> None: ...


# ---------------------------------------------------------------------------------------------- SQL Server
class SqlServerFakeCase:
    source = "appservice_hosting"
    options = "WITH CHECKSUM, FORMAT, INIT, COMPRESSION, COPY_ONLY, STATS = 10"

    def __init__(self) -> None:
        self.fake = FakeOdbc()
        self.engine = SqlServerEngine(DatabaseSettings(server="sql01", username="backup", password="pw"),
                                      connect=self.fake.connect)

    def staging(self, name: str) -> str:
        return rf"\\fileserver\staging\stamp1\{name}.bak"

    def fresh_name(self) -> str:
        return "appservice_hosting_restored"

    def expect_round_trip(self, path: str, target: str) -> None:
        filelist = rows(["LogicalName", "PhysicalName", "Type"], ("hosting", r"C:\SQL\h.mdf", "D"),
                        ("hosting_log", r"C:\SQL\h.ldf", "L"))
        self.fake.script += [
            lookup(self.source), backup_ok(f"BACKUP DATABASE [{self.source}] TO DISK = N'{path}' {self.options}",
                                           *range(10, 101, 10)),
            history(self.source, path), verify_ok(path), verify_ok(path),
            Expect(f"RESTORE FILELISTONLY FROM DISK = N'{path}'", results=[filelist]),
            Expect(f"RESTORE DATABASE [{target}] FROM DISK = N'{path}' WITH REPLACE, RECOVERY, STATS = 10",
                   results=progress_sets(50, 100)),
            lookup(target)]

    def expect_missing(self, database: str) -> None:
        self.fake.script.append(lookup(database, state=None))

    def expect_present(self, database: str) -> None:
        self.fake.script.append(lookup(database))

    def damaged_backup(self) -> str:
        path = self.staging("damaged")
        self.fake.script.append(Expect(f"RESTORE VERIFYONLY FROM DISK = N'{path}' WITH CHECKSUM", error=sql_error(
            (3241, f"The media family on device '{path}' is incorrectly formed. SQL Server cannot process this "
                   "media family."), (3013, "VERIFY DATABASE is terminating abnormally."))))
        return path

    def compare(self, target: str, restored: RestoreResult) -> None:
        assert restored.state == "ONLINE"   # the fake has no data; the ONLINE check is what SQL Server proves

    def close(self) -> None:
        self.fake.assert_done()


# ---------------------------------------------------------------------------------------------- PostgreSQL
class PostgresCase:
    def __init__(self, source: str, tmp_path) -> None:
        self.engine = PostgresEngine(pg_settings())
        self.source, self.tmp_path, self.created = source, tmp_path, []

    def staging(self, name: str) -> str:
        return str(self.tmp_path / f"{name}.dump")

    def fresh_name(self) -> str:
        self.created.append(unique_name("dr_restored"))
        return self.created[-1]

    def expect_round_trip(self, path: str, target: str) -> None:
        pass                                # the real server needs no script

    def expect_missing(self, database: str) -> None:
        pass

    def expect_present(self, database: str) -> None:
        pass

    def damaged_backup(self) -> str:
        path = self.staging("damaged")
        self.engine.backup(self.source, path)
        size = os.path.getsize(path)
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
        return path

    def compare(self, target: str, restored: RestoreResult) -> None:
        source, copy = table_fingerprints(self.source), table_fingerprints(target)
        assert len(source) >= 3 and sum(count for count, _ in source.values()) > 0
        assert copy == source
        assert restored.tables == len(source) and restored.rows == sum(count for count, _ in source.values())

    def close(self) -> None:
        for name in self.created:
            drop_database(name)


@pytest.fixture(scope="module")
def pg_source() -> Iterator[str]:
    with started("PostgreSQL", postgres_available()), scratch_database(unique_name("dr_source")) as name:
        fill_sample(name)
        yield name


@pytest.fixture(params=["sqlserver", pytest.param("postgres", marks=pytest.mark.integration)])
def case(request: pytest.FixtureRequest, tmp_path) -> Iterator[EngineCase]:
    made: SqlServerFakeCase | PostgresCase
    made = SqlServerFakeCase() if request.param == "sqlserver" else PostgresCase(
        request.getfixturevalue("pg_source"), tmp_path)
    try:
        yield made
    finally:
        made.close()


# ------------------------------------------------------------------------------------------------- contract
def test_engine_implements_the_protocol(case: EngineCase) -> None:
    assert isinstance(case.engine, DatabaseEngine)
    assert case.engine.name in ("sqlserver", "postgres") and case.engine.server


def test_backup_verify_restore_round_trip(case: EngineCase) -> None:
    # Given a database with data and a fresh restore target
    path, target = case.staging("round-trip"), case.fresh_name()
    case.expect_round_trip(path, target)
    backup_progress: list[int] = []
    # When it is backed up
    result = case.engine.backup(case.source, path, progress=backup_progress.append)
    # Then the result describes a real backup and progress rose to 100
    assert (result.database, result.path, result.engine, result.server) == (
        case.source, path, case.engine.name, case.engine.server)
    assert result.size > 0 and result.duration >= 0 and not result.skipped and result.skipped_reason is None
    assert backup_progress == sorted(set(backup_progress)) and backup_progress[-1] == 100
    # And when it is verified and restored into the fresh database
    case.engine.verify(path)
    restore_progress: list[int] = []
    restored = case.engine.restore(target, path, progress=restore_progress.append)
    # Then the copy is ONLINE and holds the same data, table by table
    assert (restored.database, restored.source_path, restored.state) == (target, path, "ONLINE")
    assert restore_progress == sorted(set(restore_progress)) and restore_progress[-1] == 100
    case.compare(target, restored)


def test_missing_database_is_a_permanent_error_with_a_hint(case: EngineCase) -> None:
    # Given a database that does not exist
    missing, path = "no_such_database_4711", case.staging("missing")
    case.expect_missing(missing)
    # When it is backed up / Then the error is permanent, names the database, and says how to fix it
    with pytest.raises(PermanentError) as caught:
        case.engine.backup(missing, path)
    assert missing in caught.value.message and "APPSVC_DR_DATABASE__DATABASES" in caught.value.hint
    assert not os.path.exists(path)


def test_check_accepts_the_source_and_refuses_a_missing_database(case: EngineCase) -> None:
    # Given / When / Then
    case.expect_present(case.source)
    case.engine.check(case.source)
    case.expect_missing("no_such_database_4712")
    with pytest.raises(PermanentError):
        case.engine.check("no_such_database_4712")


def test_verify_rejects_a_damaged_backup(case: EngineCase) -> None:
    # Given a staged backup that is damaged
    path = case.damaged_backup()
    # When / Then verification fails permanently with a hint to take a new backup
    with pytest.raises(PermanentError) as caught:
        case.engine.verify(path)
    assert "new backup" in caught.value.hint


@pytest.mark.parametrize("evil", ["x]; DROP DATABASE postgres--", 'x"; DROP DATABASE postgres; --', "a\nb"])
def test_names_crafted_to_inject_sql_are_refused(case: EngineCase, evil: str) -> None:
    # Given a name that tries to end the statement
    if "\n" not in evil and isinstance(case, SqlServerFakeCase):
        case.expect_missing(evil)          # SQL Server looks it up as a bind parameter and finds nothing
    # When / Then it is refused permanently and nothing else runs
    with pytest.raises(PermanentError):
        case.engine.backup(evil, case.staging("evil"))
