"""Always On: which replica a database should be backed up on, picked by SQL Server's own rules.

``sys.fn_hadr_backup_is_preferred_replica`` only answers "is it *this* replica?". Through the AG listener the
worker always reaches the primary, and with the default preference (Prefer Secondary) the answer there is no,
so the engine reads the group itself and connects to the replica the rules pick:

* ``sys.availability_groups.automated_backup_preference_desc``: ``primary`` (always the primary),
  ``secondary_only`` (secondaries only; none available = no backup), ``secondary`` ("Prefer Secondary":
  secondaries, the primary only when no secondary is available), ``none`` ("Any Replica");
* ``sys.availability_replicas.backup_priority``: among the candidates the highest priority wins, 0 = never;
* ``sys.dm_hadr_availability_replica_states``: only CONNECTED replicas are candidates.

The candidates are tried in order; one the worker cannot reach is passed over for the next candidate, never
for a replica the preference excludes (Prefer Secondary falls back to the primary only when the AG has no
usable secondary, not when the worker cannot reach one).

https://learn.microsoft.com/en-us/sql/database-engine/availability-groups/windows/configure-backup-on-availability-replicas-sql-server
https://learn.microsoft.com/en-us/sql/relational-databases/system-functions/sys-fn-hadr-backup-is-preferred-replica-transact-sql

The DMV needs VIEW SERVER STATE, and on a secondary it lists only the local replica: point the worker at the
listener (``MultiSubnetFailover=Yes``, see ``multi_subnet_failover``). A replica without a state row is not a
candidate. The worker connects to a replica by the host of its mirroring endpoint URL (usually the FQDN),
with the instance name of ``replica_server_name`` and the configured port, unless ``ag_replica_servers`` maps
the replica name to an address.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

AG_OF_DATABASE = ("SELECT ag.group_id AS group_id, ag.name AS group_name, "
                  "ag.automated_backup_preference_desc AS preference FROM sys.databases AS d "
                  "JOIN sys.availability_replicas AS r ON r.replica_id = d.replica_id "
                  "JOIN sys.availability_groups AS ag ON ag.group_id = r.group_id WHERE d.name = ?")
REPLICAS = ("SELECT replica_id, replica_server_name, endpoint_url, backup_priority "
            "FROM sys.availability_replicas WHERE group_id = ?")
REPLICA_STATES = ("SELECT replica_id, role_desc, connected_state_desc "
                  "FROM sys.dm_hadr_availability_replica_states WHERE group_id = ?")

PREFERENCES = {"primary": "Primary", "secondary_only": "Secondary only", "secondary": "Prefer Secondary",
               "none": "Any Replica"}


@dataclass(frozen=True)
class AgReplica:
    name: str                   # replica_server_name: host or host\instance
    role: str                   # PRIMARY | SECONDARY | RESOLVING | "" (no state row: unknown)
    connected: bool
    priority: int               # backup_priority 0..100, 0 = never back up here
    endpoint_host: str | None   # host of endpoint_url (TCP://host:port)

    def describe(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"{self.name} ({(self.role or 'state unknown').lower()}, priority {self.priority}, {state})"


@dataclass(frozen=True)
class AgGroup:
    name: str
    preference: str             # primary | secondary_only | secondary | none
    replicas: tuple[AgReplica, ...]

    @property
    def preference_text(self) -> str:
        return f"{PREFERENCES.get(self.preference, self.preference)} ({self.preference})"


Query = Callable[..., list[dict[str, Any]]]
"""``query(sql, *params)`` -> rows of the first result set."""


def read_group(query: Query, database: str) -> AgGroup | None:
    """The availability group of ``database`` with its replicas and their states; None outside any group."""
    found = query(AG_OF_DATABASE, database)
    if not found:
        return None
    group = found[0]
    states = {str(r["replica_id"]): r for r in query(REPLICA_STATES, group["group_id"])}
    replicas = []
    for row in query(REPLICAS, group["group_id"]):
        state = states.get(str(row["replica_id"]), {})
        host = urlsplit(str(row.get("endpoint_url") or "")).hostname
        replicas.append(AgReplica(str(row["replica_server_name"]), str(state.get("role_desc") or "").upper(),
                                  str(state.get("connected_state_desc") or "").upper() == "CONNECTED",
                                  int(row.get("backup_priority") or 0), host))
    return AgGroup(str(group["group_name"]), str(group["preference"] or "secondary").lower(), tuple(replicas))


def backup_candidates(group: AgGroup) -> list[AgReplica]:
    """The replicas to back up on, best first, as the AG's preference and priorities order them."""
    def ranked(replicas: list[AgReplica]) -> list[AgReplica]:
        usable = [r for r in replicas if r.connected and r.priority > 0]
        return sorted(usable, key=lambda r: (-r.priority, r.name.lower()))
    primary = [r for r in group.replicas if r.role == "PRIMARY" and r.connected]
    secondaries = [r for r in group.replicas if r.role == "SECONDARY"]
    if group.preference == "primary":
        return primary
    if group.preference == "secondary_only":
        return ranked(secondaries)
    if group.preference == "secondary":
        return ranked(secondaries) or primary
    return ranked([r for r in group.replicas if r.role in ("PRIMARY", "SECONDARY")])


def replica_address(replica: AgReplica, overrides: Mapping[str, str]) -> str:
    """Where to connect: ``ag_replica_servers[name]``, else the endpoint host plus the replica's instance name."""
    for name, address in overrides.items():
        if name.lower() == replica.name.lower():
            return address
    host, _, instance = replica.name.partition("\\")
    host = replica.endpoint_host or host
    return f"{host}\\{instance}" if instance else host


def nothing_reachable(group: AgGroup, database: str, unreachable: Mapping[str, str]) -> str:
    """The skip reason: the preference, every replica as the AG sees it, and why each candidate failed."""
    replicas = "; ".join(r.describe() + (f": unreachable ({unreachable[r.name]})" if r.name in unreachable
                                         else "") for r in group.replicas)
    candidates = "no replica qualifies" if not backup_candidates(group) else "no candidate was reachable"
    return (f"skipped: not the preferred replica and {candidates} under availability group {group.name}'s backup "
            f"preference {group.preference_text} for {database} [{replicas}]")[:1000]
