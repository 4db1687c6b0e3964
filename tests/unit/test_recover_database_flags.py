"""`recover plan|run` with the database pre-flight overrides of `restore database` (--force-disconnect,
--tail-log-backup, --allow-database-mismatch, --allow-no-checksum) against the simulated SQL Server: each one
relaxes its own refusal only, is shown in the plan, kept in the recovery's state file and kept on --resume."""
from __future__ import annotations

import json

import pytest

from tests.unit.forge import STAMP
from tests.unit.sqlserver_sim import DB, STAGE, make
from tests.unit.test_sqlserver_recover_preflight import SET, sqlserver_set
from tests.unit.test_sqlserver_restore_safety import changes
from workers.recover.model import DatabaseFlags, Targets

METERING = "appservice_metering"


def cli(tmp_path, monkeypatch, capsys, engine, *args: str) -> tuple[int, str]:
    """`appsvc-dr recover ARGS` in process, the databases only, on the simulated instance."""
    from workers.cli import main
    monkeypatch.setattr("workers.recover.preflight.build_engine", lambda settings: engine)
    monkeypatch.setattr("workers.engines.factory.build_engine", lambda settings: engine)
    code = main(["recover", *args, "--set", SET, "--key", str(tmp_path / "key.pem"), "--skip", "fileshare,secrets",
                 "--out-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def backup_of(sim, engine, *, checksum: bool = True) -> bytes:
    """A backup of the hosting database written by the simulated server (WITH or WITHOUT page checksums)."""
    if checksum:
        engine.backup(DB, STAGE)
    else:
        cursor = sim.connect(engine._connection_string, autocommit=True).cursor()
        cursor.execute(rf"BACKUP DATABASE [{DB}] TO DISK = N'{STAGE}' WITH NO_CHECKSUM, INIT")
        while cursor.nextset():
            pass
    data = sim.server.host_path(STAGE).read_bytes()
    sim.executed.clear()
    return data


def state_file(tmp_path) -> dict:
    (path,) = (tmp_path / "store" / STAMP / "recoveries").glob("*.json")
    return json.loads(path.read_text())


def test_force_disconnect_and_tail_log_backup_pass_through_plan_and_run(tmp_path, monkeypatch, capsys):
    # Given the hosting database on the instance (FULL recovery, the DBA's own fulls started its log chain), in use
    # by 3 sessions (the controllers), changed since the backup
    engine, sim = make(tmp_path, verify=False)
    sqlserver_set(tmp_path, monkeypatch, backup_of(sim, engine))
    sim.server.databases[DB].log_chain_started = True
    sim.server.databases[DB].rows["dbo.sites"] = 99
    sim.server.databases[DB].sessions = 3
    # When the recovery is planned with --force only: the sessions are the problem, --force-disconnect the fix
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "plan", "--force")
    assert code == 1 and "has 3 open session(s)" in out and "rerun with --force-disconnect" in out, out
    assert "database restore overrides: none (a target in use" in out
    # And with --force-disconnect and --tail-log-backup the plan passes, saying what each will do
    flags = ("--force", "--force-disconnect", "--tail-log-backup")
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "plan", *flags)
    assert code == 0, out
    assert "database restore overrides: --force-disconnect, --tail-log-backup (kept for --resume)" in out
    assert "ok    --force-disconnect: open sessions of an existing target are ended" in out
    assert f"ok    --tail-log-backup: each ONLINE existing target's log tail is backed up first" in out
    assert changes(sim) == [] and sim.server.databases[DB].sessions == 3       # a plan changes nothing
    # When the recovery runs with them
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run", *flags)
    assert code == 0, out
    # Then the sessions were ended, the log tail backed up (kept), then the backup restored over the database
    done = changes(sim)
    assert done[0] == f"ALTER DATABASE [{DB}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE"
    assert done[1].startswith(f"BACKUP LOG [{DB}]") and "NORECOVERY" in done[1]
    assert sim.server.databases[DB].rows["dbo.sites"] == 12 and sim.server.databases[DB].sessions == 0
    # And the state file keeps the overrides and where the log tail is
    state = state_file(tmp_path)
    assert state["targets"]["database_flags"] == {"force_disconnect": True, "tail_log_backup": True,
                                                  "allow_database_mismatch": False, "allow_no_checksum": False}
    step = {s["step_id"]: s for s in state["steps"]}[f"database:{DB}"]
    tail = step["proof"]["tail_log"]
    assert step["status"] == "done" and tail.startswith(str(tmp_path / "staging")) and f"kept at {tail}" in step["detail"]
    assert sim.server.host_path(tail).is_file()


def test_a_tail_log_backup_of_a_simple_recovery_database_is_a_plan_problem(tmp_path, monkeypatch, capsys):
    engine, sim = make(tmp_path, verify=False)
    sqlserver_set(tmp_path, monkeypatch, backup_of(sim, engine))
    sim.server.databases[DB].recovery_model = "SIMPLE"
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "plan", "--force", "--tail-log-backup")
    assert code == 1 and "uses the SIMPLE recovery model, which has no log to back up" in out, out
    assert "how to fix: Restore without --tail-log-backup" in out and changes(sim) == []


def test_a_backup_without_checksums_fails_its_step_and_resume_with_allow_no_checksum_restores_it(
        tmp_path, monkeypatch, capsys):
    # Given a backup taken WITHOUT CHECKSUM (not by appservice-dr) and the database gone from the instance
    engine, sim = make(tmp_path, verify=False)
    sqlserver_set(tmp_path, monkeypatch, backup_of(sim, engine, checksum=False))
    del sim.server.databases[DB]
    # When the recovery runs without the override: the step fails, naming the override; nothing was restored
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run")
    assert code == 1 and "no page checksums" in out and "--allow-no-checksum" in out, out
    assert DB not in sim.server.databases
    recovery_id = state_file(tmp_path)["recovery_id"]
    # When it is resumed with --allow-no-checksum
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run", "--resume", recovery_id, "--allow-no-checksum")
    assert code == 0, out
    # Then the database is back, the step ran a second time with the warning kept, and the flag is recorded
    state = state_file(tmp_path)
    step = {s["step_id"]: s for s in state["steps"]}[f"database:{DB}"]
    assert sim.server.databases[DB].state == "ONLINE" and step["status"] == "done" and step["runs"] == 2
    assert "no page checksums" in step["proof"]["warnings"][0] and "WARNING: the backup of" in step["detail"]
    assert state["targets"]["database_flags"]["allow_no_checksum"] is True
    # And a resume without the flag keeps it (the recovery goes on as it started): the step is verified, skipped
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run", "--resume", recovery_id)
    assert code == 0 and f"skipped database:{DB}: done in an earlier run and verified again" in out
    assert "database restore overrides: --allow-no-checksum (kept for --resume)" in out
    # And `recover status` says which overrides the recovery runs with
    from workers.cli import main
    assert main(["recover", "status", recovery_id]) == 0
    assert f"recovery {recovery_id} of {STAMP}/{SET} (started " in (status := capsys.readouterr().out)
    assert "; database overrides: --allow-no-checksum" in status.splitlines()[0]


def test_a_backup_of_another_database_needs_allow_database_mismatch(tmp_path, monkeypatch, capsys):
    # Given the set's "appservice_metering" artifact holding a backup of the hosting database, on a new instance
    engine, sim = make(tmp_path, verify=False)
    sqlserver_set(tmp_path, monkeypatch, backup_of(sim, engine), name=METERING)
    del sim.server.databases[METERING]
    # When it is recovered: refused before anything changes, naming the override
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run")
    assert code == 1 and f"the backup holds database '{DB}', not '{METERING}'" in out, out
    assert "Pass --allow-database-mismatch" in out and METERING not in sim.server.databases
    # And with --allow-database-mismatch it is restored under the set's name, with the warning recorded
    recovery_id = state_file(tmp_path)["recovery_id"]
    code, out = cli(tmp_path, monkeypatch, capsys, engine, "run", "--resume", recovery_id, "--allow-database-mismatch")
    assert code == 0, out
    step = {s["step_id"]: s for s in state_file(tmp_path)["steps"]}[f"database:{METERING}"]
    assert sim.server.databases[METERING].state == "ONLINE" and "(--allow-database-mismatch)" in step["detail"]


def test_flags_from_a_state_file_are_read_as_hostile():
    # Only the known names, only booleans; anything else is dropped
    assert DatabaseFlags.from_json({"force_disconnect": True, "tail_log_backup": "yes", "rm -rf": True}) == \
        DatabaseFlags(force_disconnect=True)
    assert DatabaseFlags.from_json(["x"]) == DatabaseFlags() and DatabaseFlags().names() == []
    assert Targets(database=DatabaseFlags(allow_no_checksum=True)).to_json()["database_flags"]["allow_no_checksum"]


@pytest.mark.parametrize("flag", ["--force-disconnect", "--tail-log-backup", "--allow-no-checksum"])
def test_sql_server_only_flags_are_said_to_do_nothing_for_postgres(tmp_path, flag):
    from workers.recover.preflight import _flag_notes, Findings

    found = Findings()
    _flag_notes(DatabaseFlags(**{flag[2:].replace("-", "_"): True}), "postgres", None, found)
    assert found.notes == [f"{flag}: SQL Server only, nothing to do for postgres"]
