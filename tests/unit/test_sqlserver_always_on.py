"""Always On through the listener, against simulated replicas on one simulated network: the worker finds the
AG's preferred backup replica itself (preference, priority, connected replicas only), connects to it and
backs up there; when no candidate is reachable the skip says why and what to do."""
from __future__ import annotations

import pytest

from tests.sqlsim import PASSWORD, AvailabilityGroup, Replica, Simulator, app_service_server
from tests.sqlsim.network import Network
from tests.sqlsim.driver import parse_connection_string
from tests.unit.sqlserver_sim import DB, STAGE, header_of
from workers.catalog.skips import skip_hint
from workers.engines import DatabaseSettings, SqlServerEngine
from workers.runtime.errors import PermanentError


def cluster(tmp_path, preference: str = "SECONDARY", replicas: dict[str, Replica] | None = None,
            addresses: dict[str, str] | None = None, **settings):
    """An AG of simulated instances sharing one staging share, reached through the listener ``aglisten``. The
    replicas hold one database (its LSNs and log chain are the group's); each has its own msdb history."""
    ag = AvailabilityGroup("ag1", backup_preference=preference, listener="aglisten",
                           replicas=replicas or {"sql01": Replica("PRIMARY"), "sql02": Replica("SECONDARY")})
    sims, database = {}, None
    for name in ag.replicas:
        server = app_service_server(tmp_path / "disks", name=name)
        server.ag = ag
        server.databases[DB].ag_name = "ag1"
        database = server.databases[DB] = database or server.databases[DB]
        sims[(addresses or {}).get(name, name)] = Simulator(server)
    network = Network(sims)
    values: dict[str, object] = dict(server="aglisten", username="backup", password=PASSWORD,
                                     multi_subnet_failover=True)
    values.update(settings)
    engine = SqlServerEngine(DatabaseSettings(**values), connect=network.connect)
    return engine, network, {name: sims[(addresses or {}).get(name, name)] for name in ag.replicas}


def test_prefer_secondary_through_the_listener_backs_up_on_the_secondary(tmp_path) -> None:
    # Given the default preference (Prefer Secondary) and a worker configured with the AG listener
    engine, network, sims = cluster(tmp_path)
    primary_open: list[bool] = []
    # When the database is backed up
    result = engine.backup(DB, STAGE, progress=lambda _: primary_open.append(
        any(not c.closed for c in sims["sql01"].connections)))
    # Then the listener led to the primary, the worker went on to the secondary and the backup was taken there
    # (the connection to the primary already closed while it ran)
    assert primary_open and not any(primary_open)
    assert not result.skipped and result.server == "sql02,1433"
    assert network.reached[0] == "sql01" and set(network.reached[1:]) == {"sql02"}
    header = header_of(sims["sql02"], STAGE)
    assert header.server_name == "sql02" and header.copy_only
    assert sims["sql01"].statements("BACKUP") == [] and len(sims["sql02"].statements("BACKUP")) == 1
    # And only the listener connection asks for MultiSubnetFailover; the replica is reached by its own name
    listener, *direct = (parse_connection_string(c) for s in sims.values() for c in s.connection_strings)
    assert listener["SERVER"] == "tcp:aglisten,1433" and listener["MULTISUBNETFAILOVER"] == "Yes"
    assert all(d["SERVER"] == "tcp:sql02,1433" and "MULTISUBNETFAILOVER" not in d for d in direct)
    for sim in sims.values():
        sim.assert_closed()


def test_a_normal_full_backup_becomes_copy_only_on_a_secondary(tmp_path) -> None:
    # Given a site that takes normal (log-chain) full backups: SQL Server refuses them on a secondary (3059)
    engine, _, sims = cluster(tmp_path, copy_only=False)
    # When / Then the backup on the secondary is COPY_ONLY
    assert not engine.backup(DB, STAGE).skipped
    assert header_of(sims["sql02"], STAGE).copy_only


def test_primary_preference_backs_up_on_the_primary_the_listener_reaches(tmp_path) -> None:
    engine, network, sims = cluster(tmp_path, "PRIMARY")
    result = engine.backup(DB, STAGE)
    assert result.server == "aglisten,1433" and header_of(sims["sql01"], STAGE).server_name == "sql01"
    assert set(network.reached) == {"sql01"} and sims["sql02"].connections == []


def test_prefer_secondary_with_the_secondary_down_falls_back_to_the_primary(tmp_path) -> None:
    # Given the only secondary is disconnected from the AG
    engine, _, sims = cluster(tmp_path)
    sims["sql02"].server.ag.replicas["sql02"].connected = False
    # When / Then the primary is the preferred backup replica, as SQL Server's own rules say
    assert not engine.backup(DB, STAGE).skipped
    assert header_of(sims["sql01"], STAGE).server_name == "sql01"


def test_the_highest_backup_priority_wins_and_priority_zero_never_backs_up(tmp_path) -> None:
    replicas = {"sql01": Replica("PRIMARY"), "sql02": Replica("SECONDARY", backup_priority=10),
                "sql03": Replica("SECONDARY", backup_priority=90), "sql04": Replica("SECONDARY", backup_priority=0)}
    engine, _, sims = cluster(tmp_path, "NONE", replicas)
    assert engine.backup(DB, STAGE).server == "sql03,1433"
    # When the favourite leaves the AG and the rest are excluded (priority 0) or not connected
    replicas["sql03"].connected = False
    replicas["sql02"].connected = False
    assert engine.backup(DB, STAGE).server == "aglisten,1433"      # Any Replica: the primary (priority 50)
    assert sims["sql04"].statements("BACKUP") == []


def test_a_candidate_the_worker_cannot_reach_passes_to_the_next_secondary(tmp_path) -> None:
    replicas = {"sql01": Replica("PRIMARY"), "sql02": Replica("SECONDARY", backup_priority=90),
                "sql03": Replica("SECONDARY", backup_priority=40)}
    engine, _, sims = cluster(tmp_path, "SECONDARY_ONLY", replicas)
    sims["sql02"].refuse("08001", "TCP Provider: No connection could be made because the target machine "
                                  "actively refused it.")
    result = engine.backup(DB, STAGE)
    assert result.server == "sql03,1433" and header_of(sims["sql03"], STAGE).server_name == "sql03"


def test_the_endpoint_host_or_a_configured_address_is_where_the_worker_connects(tmp_path) -> None:
    # Given replica names the worker cannot resolve; the endpoint URL names the FQDN of sql02
    replicas = {"sql01": Replica("PRIMARY"), "sql02": Replica("SECONDARY", endpoint_host="sql02.corp.test")}
    engine, network, _ = cluster(tmp_path, replicas=replicas, addresses={"sql02": "sql02.corp.test"})
    assert engine.backup(DB, STAGE).server == "sql02.corp.test,1433"
    # And an address set in ag_replica_servers wins (host,port)
    engine, _, _ = cluster(tmp_path / "b", replicas=replicas, addresses={"sql02": "10.0.0.12"},
                           ag_replica_servers={"SQL02": "10.0.0.12,14330"})
    assert engine.backup(DB, STAGE).server == "10.0.0.12,14330"


@pytest.mark.parametrize("preference, down, unreachable, expected", [
    ("SECONDARY_ONLY", True, False, "no replica qualifies"),
    ("SECONDARY", False, True, "no candidate was reachable"),
])
def test_no_reachable_backup_replica_is_a_skip_that_explains_the_preference(tmp_path, preference, down, unreachable,
                                                                             expected) -> None:
    # Given a secondary that is out of the AG, or one the worker's network cannot reach
    engine, _, sims = cluster(tmp_path, preference)
    sims["sql02"].server.ag.replicas["sql02"].connected = not down
    if unreachable:
        sims["sql02"].refuse("08001", "TCP Provider: No such host is known.")
    # When the database is backed up
    result = engine.backup(DB, STAGE)
    # Then nothing is backed up - not on the primary either, which the preference excludes - and the reason names
    # the group, its preference and each replica's state
    assert result.skipped and result.size == 0
    assert all(s.statements("BACKUP") == [] for s in sims.values())
    reason = result.skipped_reason
    assert reason.startswith("skipped: not the preferred replica") and expected in reason
    assert "ag1" in reason and f"({preference.lower()})" in reason and "sql02 (secondary, priority 50" in reason
    assert ("unreachable (" in reason) == unreachable
    # And the operator's warning says what to do
    hint = skip_hint("stamp1", "set1", DB, result.server, reason)
    assert "AUTOMATED_BACKUP_PREFERENCE" in hint and "AG_OVERRIDE" in hint and "AG_REPLICA_SERVERS" in hint


def test_ag_override_keeps_backing_up_where_connected(tmp_path) -> None:
    engine, network, sims = cluster(tmp_path, ag_override=True)
    assert engine.backup(DB, STAGE).server == "aglisten,1433"
    assert set(network.reached) == {"sql01"} and header_of(sims["sql01"], STAGE).copy_only


def test_a_login_without_view_server_state_fails_with_the_grant(tmp_path) -> None:
    engine, _, sims = cluster(tmp_path)
    sims["sql01"].server.logins["backup"].sysadmin = False
    sims["sql01"].server.logins["backup"].database_roles[DB] = {"db_backupoperator"}
    with pytest.raises(PermanentError, match=r"\(300\)") as caught:
        engine.backup(DB, STAGE)
    assert "GRANT VIEW SERVER STATE TO [backup];" in caught.value.hint


@pytest.mark.parametrize("mapping", [{"sql02": ""}, {"sql02": "host;UID=sa"}, {"sql02": "host,99999"},
                                     {"": "host"}, {"sql02": "host\n"}])
def test_a_replica_address_that_is_not_a_host_is_refused_at_start_up(mapping) -> None:
    with pytest.raises(ValueError, match="ag_replica_servers"):
        DatabaseSettings(ag_replica_servers=mapping)


def test_a_striped_backup_on_the_preferred_secondary_keeps_its_stripes_and_backup_facts(tmp_path) -> None:
    # Given three stripes configured and the AG preferring its secondary, reached through the listener
    engine, network, sims = cluster(tmp_path, stripes=3)
    # When the database is backed up
    result = engine.backup(DB, STAGE)
    # Then the secondary wrote three media families, and the result names each stripe with the facts the set's
    # manifest keeps: the secondary's version and LSNs from its msdb, times, COPY_ONLY
    assert result.server == "sql02,1433" and len(result.parts) == 3
    assert len(sims["sql02"].statements("BACKUP DATABASE")) == 1 and sims["sql01"].statements("BACKUP") == []
    history = sims["sql02"].server.history[-1]
    assert (result.first_lsn, result.last_lsn) == (str(history.first_lsn), str(history.last_lsn))
    version = ".".join(sims["sql02"].server.version.split(".")[:3])          # msdb: major.minor.build
    assert result.copy_only is True and result.server_version == version
    assert result.started_at is not None and result.started_at <= result.finished_at
    assert header_of(sims["sql02"], *result.parts).copy_only                 # one media set of 3 families
