"""One contract for every DatabaseEngine: PostgreSQL against the real local server, SQL Server against the
behavioural simulator in tests/sqlsim (there is no SQL Server here).

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
from tests.sqlsim import PASSWORD, Simulator, app_service_server
from workers.engines import DatabaseEngine, DatabaseSettings, PostgresEngine, RestoreResult, SqlServerEngine
from workers.runtime.errors import PermanentError


class EngineCase(Protocol):
    engine: DatabaseEngine
    source: str                                     # an existing database with data

    def staging(self, name: str) -> str: ...

    def exists(self, path: str) -> bool: ...

    def fresh_name(self) -> str: ...                # a database name that does not exist yet

    def damaged_backup(self) -> str: ...            # a staged backup that must fail verification

    def compare(self, target: str, restored: RestoreResult) -> None: ...


# ---------------------------------------------------------------------------------------------- SQL Server
class SqlServerSimCase:
    """The simulated SQL Server instance (tests/sqlsim): it parses and runs what the engine sends."""
    source = "appservice_hosting"

    def __init__(self, tmp_path) -> None:
        self.sim = Simulator(app_service_server(tmp_path / "sql01"))
        self.engine = SqlServerEngine(DatabaseSettings(server="sql01", username="backup", password=PASSWORD,
                                                       restore_data_path=r"D:\Restored"), connect=self.sim.connect)

    def staging(self, name: str) -> str:
        return rf"\\fileserver\staging\stamp1\{name}.bak"

    def fresh_name(self) -> str:
        return "appservice_hosting_restored"

    def exists(self, path: str) -> bool:
        return self.sim.server.host_path(path).exists()

    def damaged_backup(self) -> str:
        path = self.staging("damaged")
        self.engine.backup(self.source, path)
        local = self.sim.server.host_path(path)
        with open(local, "r+b") as fh:
            fh.truncate(local.stat().st_size // 2)
        return path

    def compare(self, target: str, restored: RestoreResult) -> None:
        source, copy = self.sim.server.databases[self.source], self.sim.server.databases[target]
        assert copy.rows == source.rows and copy.state == restored.state == "ONLINE"

    def close(self) -> None:
        self.sim.assert_closed()


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

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

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
    made: SqlServerSimCase | PostgresCase
    made = SqlServerSimCase(tmp_path) if request.param == "sqlserver" else PostgresCase(
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
    # When it is backed up / Then the error is permanent, names the database, and says how to fix it
    with pytest.raises(PermanentError) as caught:
        case.engine.backup(missing, path)
    assert missing in caught.value.message and "APPSVC_DR_DATABASE__DATABASES" in caught.value.hint
    assert not case.exists(path)


def test_check_accepts_the_source_and_refuses_a_missing_database(case: EngineCase) -> None:
    # Given / When / Then
    case.engine.check(case.source)
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
    # When / Then it is refused permanently and nothing else runs
    with pytest.raises(PermanentError):
        case.engine.backup(evil, case.staging("evil"))
