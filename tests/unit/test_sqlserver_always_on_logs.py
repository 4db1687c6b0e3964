"""Always On and the transaction log, against simulated replicas: log backups follow the AG's backup preference
like full ones (regular, not COPY_ONLY, on a secondary, continuing the group's one log chain), and log health
reads the msdb of every replica, since each records only the log backups taken on it."""
from __future__ import annotations

import pytest

from contracts import DatabaseLogBackupRequested, DatabaseLogBackupRequestedPayload
from tests.sqlsim import PASSWORD
from tests.unit.sqlserver_sim import DB, STAGE, header_of
from tests.unit.test_dbbackup_handler import ctx, make_handler
from tests.unit.test_sqlserver_always_on import cluster
from workers.engines import DatabaseSettings, SqlServerEngine
from workers.engines.sqlserver_log import NEVER
from workers.runtime.errors import TransientError

LOG = STAGE.replace(".bak", ".0.trn")
REFUSED = ("08001", "TCP Provider: No connection could be made because the target machine actively refused it.")


def test_a_log_backup_through_the_listener_runs_on_the_preferred_secondary_and_continues_the_chain(tmp_path):
    # Given Prefer Secondary, and a log chain the site's normal full backups started
    engine, network, sims = cluster(tmp_path)
    sims["sql01"].server.databases[DB].log_chain_started = True
    # When two log backups are taken through the listener
    first = engine.backup_log(DB, LOG)
    second = engine.backup_log(DB, STAGE.replace(".bak", ".1.trn"))
    # Then both ran on the secondary, as regular log backups (COPY_ONLY is not allowed there), in one chain
    assert first.server == second.server == "sql02,1433" and not first.skipped
    header = header_of(sims["sql02"], LOG)
    assert header.server_name == "sql02" and not header.copy_only and header.backup_type == 2
    assert sims["sql01"].statements("BACKUP") == []
    assert [s.split(" TO ")[0] for s in sims["sql02"].statements("BACKUP")] == [f"BACKUP LOG [{DB}]"] * 2
    assert first.last_lsn == second.first_lsn
    # And a log backup taken on the primary afterwards (AG_OVERRIDE) continues the same chain
    override = SqlServerEngine(DatabaseSettings(server="sql01", username="backup", password=PASSWORD,
                                                ag_override=True), connect=network.connect)
    third = override.backup_log(DB, STAGE.replace(".bak", ".2.trn"))
    assert third.server == "sql01,1433" and third.first_lsn == second.last_lsn
    for sim in sims.values():
        sim.assert_closed()


def test_a_log_backup_no_replica_can_take_is_retried_with_the_reason_and_the_fix(tmp_path):
    # Given Secondary Only and the only secondary refusing connections
    engine, _, sims = cluster(tmp_path, "SECONDARY_ONLY")
    sims["sql01"].server.databases[DB].log_chain_started = True
    sims["sql02"].refuse(*REFUSED)
    # When the engine is asked: a skip naming the preference and the unreachable replica, and no BACKUP anywhere
    result = engine.backup_log(DB, LOG)
    assert result.skipped and "Secondary only" in result.skipped_reason and "unreachable" in result.skipped_reason
    assert all(sim.statements("BACKUP") == [] for sim in sims.values())
    # When the worker handles a log backup request: a transient failure (retried, then dead-lettered) saying why
    job = DatabaseLogBackupRequested(source="t", stamp="s1", correlation_id="set-1",
                                     payload=DatabaseLogBackupRequestedPayload(database=DB))
    with pytest.raises(TransientError, match="log backup of appservice_hosting not taken") as caught:
        make_handler(engine, tmp_path).backup_log(job, ctx())
    assert "AG_REPLICA_SERVERS" in caught.value.hint


def test_log_health_counts_log_backups_taken_on_another_replica(tmp_path):
    # Given log backups taken on the secondary (by this worker or the site's own jobs): only sql02's msdb has them
    engine, _, sims = cluster(tmp_path)
    sims["sql01"].server.databases[DB].log_chain_started = True
    engine.backup_log(DB, LOG)
    assert [h.type for h in sims["sql01"].server.history] == [] and sims["sql02"].server.history
    # When log health is read through the listener (the primary)
    health = engine.log_health(DB)
    # Then the newest log backup across the group counts: no "never backed up" warning
    assert health.last_log_backup_age is not None and health.last_log_backup_age < 60
    assert health.warning(60) is None
    # And a replica that cannot be reached leaves what the others know (here: none on the primary)
    sims["sql02"].refuse(*REFUSED)
    lone = engine.log_health(DB)
    assert lone.last_log_backup_age == NEVER and lone.warning(60)[0] == "no-log-backup"
    # And with AG_OVERRIDE the engine reads only the replica it is connected to
    override, _, _ = cluster(tmp_path / "o", ag_override=True)
    assert override.log_health(DB).last_log_backup_age == NEVER
