"""SQL Server's restore pre-flight for `recover plan` against the simulated instance: each thing that would stop
a restore is a Problem with its exact fix, the targets' state is read, and nothing on the server changes."""
from __future__ import annotations

import re

import pytest

from tests.sqlsim import PASSWORD, AvailabilityGroup, Login
from tests.unit.sqlserver_sim import DB, make
from tests.unit.test_sqlserver_restore_safety import changes

NEW = "appservice_new"


def test_a_missing_target_has_no_problems_and_an_existing_one_counts_its_user_tables(tmp_path) -> None:
    # Given the instance with the hosting database (two tables) and a sysadmin login
    engine, sim = make(tmp_path)
    # When the pre-flight looks at it and at a database that does not exist
    hosting, new = engine.restore_preflight([DB, NEW])
    # Then the missing one is fine to create, the existing one is not empty, and nothing changed
    assert (new.exists, new.tables, new.problems, new.empty) == (False, None, [], True)
    assert (hosting.exists, hosting.tables, hosting.problems, hosting.empty) == (True, 2, [], False)
    assert changes(sim) == []
    sim.assert_closed()


@pytest.mark.parametrize("role, command", [("PRIMARY", f"ALTER AVAILABILITY GROUP [ag1] REMOVE DATABASE [{DB}];"),
                                           ("SECONDARY", f"ALTER DATABASE [{DB}] SET HADR OFF;")])
def test_an_availability_group_member_is_a_problem_with_the_removal_command(tmp_path, role, command) -> None:
    engine, sim = make(tmp_path)
    sim.server.ag = AvailabilityGroup("ag1", role=role)
    sim.server.databases[DB].ag_name = "ag1"
    (state,) = engine.restore_preflight([DB])
    assert len(state.problems) == 1 and "(3104)" in state.problems[0].what
    assert command in state.problems[0].fix and changes(sim) == []


def test_open_sessions_are_a_problem_naming_force_disconnect(tmp_path) -> None:
    engine, sim = make(tmp_path)
    sim.server.databases[DB].sessions = 3
    (state,) = engine.restore_preflight([DB])
    assert [p.what for p in state.problems] == [f"[{DB}] on sql01,1433 has 3 open session(s) (e.g. the App Service "
                                                "controllers): RESTORE needs exclusive access (3101)"]
    assert "--force-disconnect" in state.problems[0].fix and state.tables == 2
    assert sim.server.databases[DB].sessions == 3 and changes(sim) == []


def test_containment_off_is_a_problem_with_the_sp_configure_fix(tmp_path) -> None:
    engine, sim = make(tmp_path)
    sim.server.contained_authentication = False
    new, hosting = engine.restore_preflight([NEW, DB])
    assert "'contained database authentication' off" in new.problems[0].what and "(12824)" in new.problems[0].what
    assert "EXEC sp_configure 'contained database authentication', 1; RECONFIGURE;" in new.problems[0].fix
    assert hosting.problems == [] and changes(sim) == []


def test_a_least_privilege_login_lacking_create_database_gets_the_grants(tmp_path) -> None:
    # Given a login that may only back up the hosting database (db_backupoperator), and no table access
    engine, sim = make(tmp_path, username="lp")
    sim.server.logins["lp"] = Login("lp", PASSWORD, database_roles={DB: {"db_backupoperator"}},
                                    denied_databases={DB})
    new, hosting = engine.restore_preflight([NEW, DB])
    # Then creating the new database needs CREATE DATABASE, replacing the existing one dbcreator and ALTER
    assert new.exists is False and [p.fix for p in new.problems] == ["USE [master]; GRANT CREATE ANY DATABASE TO [lp];"]
    assert "login 'lp' on sql01,1433 may not restore database 'appservice_new'" in new.problems[0].what
    assert [p.fix for p in hosting.problems][0] == ("USE [master]; ALTER SERVER ROLE [dbcreator] ADD MEMBER [lp]; "
                                                    "USE [master]; GRANT ALTER ANY DATABASE TO [lp];")
    # And the tables it may not see are not counted, with how to let it (916)
    assert hosting.tables is None and hosting.problems[1].what.endswith("under the current security context. (916)")
    assert "CREATE USER [lp] FOR LOGIN [lp]" in hosting.problems[1].fix and changes(sim) == []


# ------------------------------------------------------------------------------------ `appsvc-dr recover plan`
SET = "20261102T020000Z-bbbbbbbb"


def sqlserver_set(tmp_path, monkeypatch, backup: bytes = b"a full backup", name: str = DB) -> None:
    """A signed, encrypted set holding ``backup`` as the SQL Server backup of database ``name``, in a local store;
    the CLI configured for it (staging in ``tmp_path``; the engine is the simulator's, patched in by the tests)."""
    import io

    from tests.unit.certs import make_cert, write_signing
    from tests.unit.forge import STAMP, configured_store, plan_set
    from workers.artifacts.sets import write_marker
    from workers.config import load_settings

    cert = make_cert("recover-preflight")
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    signing, verify = write_signing(tmp_path)
    for key, value in {"APPSVC_DR_STORE__LOCAL_PATH": tmp_path / "store", "APPSVC_DR_STAMP": STAMP,
                       "APPSVC_DR_ENCRYPTION__CERTIFICATE": tmp_path / "cert.pem",
                       "APPSVC_DR_ENCRYPTION__SIGNING_KEY": signing, "APPSVC_DR_ENCRYPTION__VERIFY_KEYS": verify,
                       "APPSVC_DR_STAGING__DATABASE_DIR": tmp_path / "staging",
                       "APPSVC_DR_DATABASE__ENGINE": "sqlserver", "APPSVC_DR_DATABASE__SERVER": "sql01"}.items():
        monkeypatch.setenv(key, str(value))
    store = configured_store(load_settings())
    plan_set(store.backend, SET, "databases")
    store.put(f"{STAMP}/{SET}/databases/{name}.bak", lambda: io.BytesIO(backup))
    write_marker(store.backend, STAMP, SET, {"stamp": STAMP, "backup_set_id": SET})


@pytest.fixture
def stamp_set(tmp_path, monkeypatch):
    """:func:`sqlserver_set` with a placeholder backup (the pre-flight never reads it)."""
    sqlserver_set(tmp_path, monkeypatch)
    return tmp_path


def recover_plan(tmp_path, monkeypatch, capsys, engine) -> tuple[int, str]:
    from workers.cli import main
    monkeypatch.setattr("workers.recover.preflight.build_engine", lambda settings: engine)
    code = main(["recover", "plan", "--set", SET, "--key", str(tmp_path / "key.pem"), "--skip", "fileshare,secrets",
                 "--out-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_recover_plan_lists_the_sql_server_problems_with_their_fixes_and_fails(stamp_set, monkeypatch, capsys):
    # Given the hosting database in an availability group, holding tables, on a server without containment
    engine, sim = make(stamp_set)
    sim.server.ag = AvailabilityGroup("ag1", role="PRIMARY")
    sim.server.databases[DB].ag_name = "ag1"
    sim.server.contained_authentication = False
    # When the recovery is planned
    code, out = recover_plan(stamp_set, monkeypatch, capsys, engine)
    # Then it fails, listing each problem with the statement that fixes it, and nothing on the server changed
    assert code == 1 and "3 problem(s) to fix before recovering:" in out
    assert f"how to fix: Remove it from the group first: ALTER AVAILABILITY GROUP [ag1] REMOVE DATABASE [{DB}];" in out
    assert "how to fix: As sysadmin on sql01,1433 run EXEC sp_configure 'contained database authentication'" in out
    assert f"database '{DB}' on sql01,1433 exists and holds 2 table(s)" in out and "Pass --force" in out
    assert "offers no restore pre-flight" not in out and changes(sim) == []


def test_recover_plan_passes_on_a_healthy_server(stamp_set, monkeypatch, capsys):
    # Given the server without the hosting database (a fresh instance for the recovery)
    engine, sim = make(stamp_set)
    del sim.server.databases[DB]
    code, out = recover_plan(stamp_set, monkeypatch, capsys, engine)
    assert code == 0, out
    assert f"ok    database '{DB}' on sql01,1433: missing (created); permissions ok" in out
    assert "every target is ready" in out and changes(sim) == []


def test_recover_plan_of_the_databases_alone_still_proves_the_key_opens_the_set(stamp_set, monkeypatch, capsys):
    # Given the databases only (no secrets or manifest to decrypt) and the key of another certificate
    from tests.unit.certs import make_cert
    engine, sim = make(stamp_set)
    del sim.server.databases[DB]
    (stamp_set / "key.pem").write_bytes(make_cert("another").key_pem())
    # When the recovery is planned / Then the key is found not to open the set's backup, with the fix
    code, out = recover_plan(stamp_set, monkeypatch, capsys, engine)
    assert code == 1 and f"the private key does not open stamp1/{SET}/databases/{DB}.bak" in out, out
    assert "how to fix: Pass the private key of the certificate with thumbprint" in out


def test_recover_plan_with_a_verify_key_that_does_not_match_the_sets_signatures(stamp_set, monkeypatch, capsys):
    # Given the verify key of another signing key than the workers' (e.g. a stale one after a rotation)
    from tests.unit.certs import write_signing
    (stamp_set / "other").mkdir()
    _, other = write_signing(stamp_set / "other", name="someone-else")
    monkeypatch.setenv("APPSVC_DR_ENCRYPTION__VERIFY_KEYS", str(other))
    engine, sim = make(stamp_set)
    del sim.server.databases[DB]
    # When the recovery is planned / Then no artifact verifies, and the fix names the setting
    code, out = recover_plan(stamp_set, monkeypatch, capsys, engine)
    assert code == 1 and re.search(rf"\d+ of \d+ artifacts of set {SET} do not verify with the configured verify "
                                   r"key\(s\)", out), out
    assert "how to fix: Configure the verify key that matches the workers' signing key" in out
