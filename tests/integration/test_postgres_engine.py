"""PostgreSQL engine failures against the real local server: what is permanent, what is transient, and that the
password never shows up in a message or on a command line."""
from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import traceback
from typing import Any, Iterator

import pytest

from tests.fixtures import closed_port, started
from tests.fixtures.postgres import (connect, fill_sample, pg_settings, postgres_available, scratch_database,
                                     table_fingerprints)
from workers.engines import PostgresEngine, RestoreOptions
from workers.runtime.errors import ConfigurationError, DrError, PermanentError, TransientError

pytestmark = pytest.mark.integration

PASSWORD = "Pg-S3cr3t;pass}word"        # the server trusts local connections, so any password "works"


@pytest.fixture(scope="module")
def postgres() -> Iterator[None]:
    with started("PostgreSQL", postgres_available()):
        yield


@pytest.fixture
def engine(postgres) -> PostgresEngine:
    return PostgresEngine(pg_settings(password=PASSWORD))


@pytest.fixture
def small_db(postgres) -> Iterator[str]:
    with scratch_database() as name:
        fill_sample(name, rows=500)
        yield name


def shown(exc: DrError) -> str:
    return "".join(traceback.format_exception(exc)) + exc.message + exc.hint + repr(exc)


def test_missing_database_is_permanent_with_a_hint(engine, tmp_path) -> None:
    # Given a database name that does not exist on the server
    staging = tmp_path / "missing.dump"
    # When it is backed up
    with pytest.raises(PermanentError) as caught:
        engine.backup("dr_no_such_db_4711", str(staging))
    # Then the error names it, the hint says what to fix, nothing is left behind and no password shows
    assert 'database "dr_no_such_db_4711" does not exist' in caught.value.message
    assert "APPSVC_DR_DATABASE__DATABASES" in caught.value.hint
    assert list(tmp_path.iterdir()) == []
    assert PASSWORD not in shown(caught.value)


@pytest.mark.parametrize("call", ["check", "backup", "restore"])
def test_closed_port_is_transient(engine, small_db, tmp_path, call) -> None:
    # Given a good archive and a server address nobody listens on
    archive = str(tmp_path / "good.dump")
    engine.backup(small_db, archive)
    unreachable = PostgresEngine(pg_settings(port=closed_port(), password=PASSWORD))
    # When any operation connects
    with pytest.raises(TransientError) as caught:
        if call == "check":
            unreachable.check(small_db)
        elif call == "backup":
            unreachable.backup(small_db, str(tmp_path / "y.dump"))
        else:
            unreachable.restore(f"{small_db}_copy", archive)
    # Then it is worth retrying, the hint names the address settings, and no password shows
    assert "APPSVC_DR_DATABASE__PORT" in caught.value.hint
    assert PASSWORD not in shown(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.dump"]


def test_unknown_role_is_a_permanent_login_error(postgres, small_db, tmp_path) -> None:
    # Given a user the server does not know
    engine = PostgresEngine(pg_settings(username="dr_no_such_role", password=PASSWORD))
    # When / Then
    with pytest.raises(PermanentError) as caught:
        engine.backup(small_db, str(tmp_path / "x.dump"))
    assert "APPSVC_DR_DATABASE__USERNAME" in caught.value.hint
    assert PASSWORD not in shown(caught.value)


def test_dump_interrupted_by_pg_terminate_backend_is_transient(engine, postgres, tmp_path) -> None:
    # Given a database big enough that pg_dump spends a while in COPY
    with scratch_database() as name:
        with contextlib.closing(connect(name)) as conn:
            conn.cursor().execute("CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) || "
                                  "md5((g * 5)::text) AS payload FROM generate_series(1, 600000) g")
        staging = tmp_path / "big.dump"
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = engine.backup(name, str(staging))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        # When the server terminates pg_dump's connection while it is copying table data
        terminated = []
        with contextlib.closing(connect()) as admin:
            deadline = time.monotonic() + 60
            while not terminated and worker.is_alive() and time.monotonic() < deadline:
                terminated = admin.cursor().execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? AND "
                    "application_name = 'appservice-dr' AND query ILIKE 'COPY %'", name).fetchall()
                time.sleep(0.005)
        worker.join(60)
        # Then the backup fails as transient (retry later) and leaves no partial file behind
        assert terminated, f"pg_dump finished before it could be interrupted: {outcome}"
        assert isinstance(outcome.get("error"), TransientError), outcome
        assert any(words in outcome["error"].message for words in ("terminating connection", "closed the connection"))
        assert list(tmp_path.iterdir()) == []
        assert PASSWORD not in shown(outcome["error"])


def test_password_travels_in_the_environment_never_on_the_command_line(engine, small_db, tmp_path,
                                                                       monkeypatch) -> None:
    # Given a recorder around every process the engine starts
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_popen, real_run = subprocess.Popen, subprocess.run

    def popen(argv, *args, **kwargs):
        calls.append((list(argv), dict(kwargs.get("env") or {})))
        return real_popen(argv, *args, **kwargs)

    def run(argv, *args, **kwargs):
        calls.append((list(argv), dict(kwargs.get("env") or {})))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr("workers.engines.postgres_tools.subprocess.Popen", popen)
    monkeypatch.setattr("workers.engines.postgres_tools.subprocess.run", run)
    # When a backup and a restore run
    path = str(tmp_path / "db.dump")
    engine.backup(small_db, path)
    with scratch_database() as target:
        restored = engine.restore(target, path)
    # Then every tool got the password only as PGPASSWORD, and the restore worked
    assert {argv[0].rsplit("/", 1)[-1] for argv, _ in calls} == {"pg_dump", "pg_restore"}
    for argv, env in calls:
        assert not any(PASSWORD in arg for arg in argv)
        assert env["PGPASSWORD"] == PASSWORD
    assert restored.tables == 3 and restored.rows == 1500


def test_restore_creates_a_missing_target_database(engine, small_db, tmp_path) -> None:
    # Given a backup and a target database that does not exist yet
    path = str(tmp_path / "db.dump")
    engine.backup(small_db, path)
    target = f"{small_db}_new"
    try:
        # When it is restored
        progress: list[int] = []
        restored = engine.restore(target, path, progress=progress.append)
        # Then the database was created and filled
        assert restored.tables == 3 and progress[-1] == 100
    finally:
        with contextlib.closing(connect()) as admin:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def test_damaged_or_missing_archives_fail_verification(engine, tmp_path) -> None:
    # Given a file that is not an archive and a path with no file
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a pg_dump archive")
    # When / Then
    with pytest.raises(PermanentError, match="not a readable pg_dump archive"):
        engine.verify(str(junk))
    with pytest.raises(PermanentError, match="does not exist"):
        engine.verify(str(tmp_path / "absent.dump"))


def test_missing_pg_dump_is_a_configuration_error(postgres, small_db, tmp_path) -> None:
    # Given a pg_dump path that does not exist
    engine = PostgresEngine(pg_settings(pg_dump="/nonexistent/pg_dump"))
    # When / Then
    with pytest.raises(ConfigurationError) as caught:
        engine.backup(small_db, str(tmp_path / "x.dump"))
    assert "APPSVC_DR_DATABASE__PG_DUMP" in caught.value.hint


@pytest.mark.parametrize("name", ["a;b", "{x}", " padded", "n" * 64, ""])
def test_names_the_odbc_driver_cannot_carry_are_refused(engine, name) -> None:
    with pytest.raises(PermanentError, match="invalid database name"):
        engine.check(name)


@pytest.mark.parametrize("server, mode", [
    ("127.0.0.1", "prefer"), ("127.8.9.10", "prefer"), ("localhost", "prefer"), ("::1", "prefer"),
    ("[::1]", "prefer"), ("/var/run/postgresql", "prefer"),
    ("db.example.org", "verify-full"), ("10.0.0.5", "verify-full"), ("192.0.2.2", "verify-full"),
    ("fd00::2", "verify-full"), ("localhost.example.org", "verify-full")])
def test_sslmode_defaults_to_verify_full_for_network_servers(server, mode) -> None:
    # Given a server of each kind and no sslmode setting, Then network servers get verify-full, local ones prefer
    assert pg_settings(server=server).effective_pg_sslmode == mode
    # And an explicit setting always wins
    assert pg_settings(server=server, pg_sslmode="require").effective_pg_sslmode == "require"


def test_the_default_sslmode_still_connects_to_the_loopback_server(postgres, small_db, tmp_path) -> None:
    # Given default settings pointing at the loopback server (which has SSL off)
    engine = PostgresEngine(pg_settings(password=PASSWORD))
    assert engine.settings.effective_pg_sslmode == "prefer"
    # When it checks (ODBC) and dumps (pg_dump), Then both work
    engine.check(small_db)
    assert engine.backup(small_db, str(tmp_path / "ok.dump")).size > 0


def test_verify_full_reaches_odbc_and_pg_dump_and_fails_permanently_without_ssl(postgres, small_db,
                                                                                 tmp_path) -> None:
    # Given sslmode verify-full (what a network server gets by default) against a server without SSL
    engine = PostgresEngine(pg_settings(password=PASSWORD, pg_sslmode="verify-full"))
    # When it checks through ODBC and dumps through pg_dump, Then both refuse to go on unencrypted,
    # permanently, with a hint naming the settings (a retry would not help)
    for attempt in (lambda: engine.check(small_db), lambda: engine.backup(small_db, str(tmp_path / "x.dump"))):
        with pytest.raises(PermanentError) as caught:
            attempt()
        assert "SSL" in caught.value.message and "PG_SSLROOTCERT" in caught.value.hint
        assert PASSWORD not in shown(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_an_archive_of_another_database_never_replaces_the_target_unnoticed(engine, small_db, tmp_path) -> None:
    # Given a dump of small_db and another existing database
    dump = str(tmp_path / "db.dump")
    engine.backup(small_db, dump)
    with scratch_database() as other:
        fill_sample(other, rows=10)
        # When it would be restored over the other database, or the set names another database
        with pytest.raises(PermanentError, match="would be restored over the existing database") as caught:
            engine.restore(other, dump, options=RestoreOptions(expected_database=small_db))
        assert "--allow-database-mismatch" in caught.value.hint
        with pytest.raises(PermanentError, match=f"not 'appservice_metering' as the backup set says"):
            engine.restore(other, dump, options=RestoreOptions(expected_database="appservice_metering"))
        # Then the other database was not touched; with the override it is restored
        assert table_fingerprints(other)["public.sites"][0] == 10
        restored = engine.restore(other, dump, options=RestoreOptions(expected_database=small_db,
                                                                      allow_database_mismatch=True))
        assert restored.tables == 3
