"""The catalog views, DMVs, msdb tables and functions the engine reads, as rows built from the server state.

Column names and types follow the views' reference pages: sys.databases, sys.master_files,
sys.configurations, sys.credentials, msdb.dbo.backupset / backupmediafamily (LSNs are numeric(25,0), pyodbc
returns Decimal), sys.availability_groups, sys.dm_hadr_availability_replica_states,
sys.dm_hadr_database_replica_states (is_primary_replica), sys.dm_exec_sessions (database_id, SQL Server 2012+),
DB_ID, SERVERPROPERTY and sys.fn_hadr_backup_is_preferred_replica (1 for a database outside any availability
group):
https://learn.microsoft.com/en-us/sql/relational-databases/system-catalog-views/sys-databases-transact-sql
https://learn.microsoft.com/en-us/sql/relational-databases/system-tables/backupset-transact-sql
https://learn.microsoft.com/en-us/sql/relational-databases/system-functions/sys-fn-hadr-backup-is-preferred-replica-transact-sql
https://learn.microsoft.com/en-us/sql/t-sql/functions/serverproperty-transact-sql
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Callable

from tests.sqlsim.errors import SqlError, fail, record
from tests.sqlsim.state import Login, Server

Rows = list[dict[str, Any]]


def _databases(server: Server, login: Login) -> Rows:
    rows = []
    for number, db in enumerate(server.databases.values(), start=5):
        local = f"replica-{server.name}" if db.ag_name and server.ag is not None else None
        rows.append({"database_id": number, "name": db.name, "state_desc": db.state, "replica_id": local,
                     "recovery_model_desc": db.recovery_model, "user_access_desc": db.user_access,
                     "containment_desc": db.containment, "log_reuse_wait_desc": db.log_reuse_wait,
                     "is_encrypted": int(db.encrypted), "create_date": db.created})
    return rows


def _master_files(server: Server, login: Login) -> Rows:
    ids = {r["name"]: r["database_id"] for r in _databases(server, login)}
    return [{"database_id": ids[db.name], "file_id": f.file_id, "name": f.logical, "physical_name": f.physical,
             "type_desc": "LOG" if f.kind == "L" else "ROWS"}
            for db in server.databases.values() for f in db.files]


def _msdb(server: Server, login: Login, table: str) -> None:
    if server.faults.msdb_error is not None:
        raise SqlError(record(server.faults.msdb_error, table))
    if not login.sysadmin and not login.msdb_select:
        raise fail(229, table)


def _backupset(server: Server, login: Login) -> Rows:
    _msdb(server, login, "backupset")
    return [{"backup_set_id": h.backup_set_id, "media_set_id": h.backup_set_id, "database_name": h.database_name,
             "first_lsn": Decimal(h.first_lsn), "last_lsn": Decimal(h.last_lsn),
             "database_backup_lsn": Decimal(h.database_backup_lsn), "backup_size": Decimal(h.backup_size),
             "compressed_backup_size": Decimal(h.compressed_backup_size), "is_copy_only": int(h.is_copy_only),
             "type": h.type, "backup_finish_date": h.finished,
             **dict(zip(("software_major_version", "software_minor_version", "software_build_version"),
                        (int(p) for p in h.software_version.split(".")[:3])))} for h in server.history]


def _mediafamily(server: Server, login: Login) -> Rows:
    _msdb(server, login, "backupmediafamily")
    return [{"media_set_id": h.backup_set_id, "physical_device_name": h.physical_device_name,
             "family_sequence_number": 1} for h in server.history]


def _restorehistory(server: Server, login: Login) -> Rows:
    _msdb(server, login, "restorehistory")
    return [{"restore_history_id": r.restore_history_id, "destination_database_name": r.destination_database_name,
             "restore_type": r.restore_type, "restore_date": r.restore_date} for r in server.restores]


def _configurations(server: Server, login: Login) -> Rows:
    value = int(server.contained_authentication)
    return [{"name": "contained database authentication", "value": value, "value_in_use": value},
            {"name": "backup compression default", "value": 0, "value_in_use": 0}]


def _availability_groups(server: Server, login: Login) -> Rows:
    ag = server.ag
    return [{"group_id": f"group-{ag.name}", "name": ag.name,
             "automated_backup_preference_desc": ag.backup_preference.lower()}] if ag else []


def _sessions(server: Server, login: Login) -> Rows:
    """sys.dm_exec_sessions: one user session per ``Database.sessions`` (the engine's own runs in master)."""
    ids = {r["name"]: r["database_id"] for r in _databases(server, login)}
    rows, number = [], 51
    for db in server.databases.values():
        for _ in range(db.sessions):
            rows.append({"session_id": number, "database_id": ids[db.name], "is_user_process": 1})
            number += 1
    return rows


def _database_replica_states(server: Server, login: Login) -> Rows:
    """sys.dm_hadr_database_replica_states: the local row of each database joined to an availability group."""
    ids = {r["name"]: r["database_id"] for r in _databases(server, login)}
    return [{"database_id": ids[db.name], "group_id": f"group-{db.ag_name}", "is_local": 1,
             "is_primary_replica": int(server.ag_role == "PRIMARY"), "synchronization_state_desc": "SYNCHRONIZED"}
            for db in server.databases.values() if db.ag_name]


def _replicas(server: Server, login: Login) -> Rows:
    ag = server.ag
    if ag is None:
        return []
    names = list(ag.replicas) or [server.name]
    return [{"replica_id": f"replica-{n}", "group_id": f"group-{ag.name}", "replica_server_name": n,
             "group_name": ag.name, "backup_priority": ag.replicas[n].backup_priority if ag.replicas else 50,
             "endpoint_url": f"TCP://{(ag.replicas[n].endpoint_host if ag.replicas else None) or n}:5022",
             "secondary_role_allow_connections_desc": "ALL"} for n in names]


def _replica_states(server: Server, login: Login) -> Rows:
    """The DMV needs VIEW SERVER STATE (300 + 297 without it; sys.dm_hadr_availability_replica_states)."""
    if not login.may("VIEW SERVER STATE"):
        raise SqlError(record(300, "VIEW SERVER STATE", "server", "master"), record(297))
    ag = server.ag
    if ag is None:
        return []
    names = list(ag.replicas) or [server.name]
    return [{"replica_id": f"replica-{n}", "group_id": f"group-{ag.name}", "role_desc": ag.role_of(n),
             "is_local": int(n == server.name),
             "connected_state_desc": "CONNECTED" if not ag.replicas or ag.replicas[n].connected
             else "DISCONNECTED"} for n in names]


TABLES: dict[str, Callable[[Server, Login], Rows]] = {
    "sys.databases": _databases, "sys.master_files": _master_files,
    "msdb.dbo.backupset": _backupset, "msdb.dbo.backupmediafamily": _mediafamily,
    "msdb.dbo.restorehistory": _restorehistory,
    "sys.credentials": lambda server, login: [{"name": n} for n in sorted(server.credentials)],
    "sys.configurations": _configurations, "sys.availability_groups": _availability_groups,
    "sys.dm_hadr_availability_replica_states": _replica_states, "sys.availability_replicas": _replicas,
    "sys.dm_exec_sessions": _sessions, "sys.dm_hadr_database_replica_states": _database_replica_states,
}


def user_tables(server: Server, login: Login, name: str) -> Rows:
    """``[db].sys.tables``: one row per table of ``Database.rows``; a missing database is 911, an offline one 942,
    one the login may not open 916 (sys-tables-transact-sql)."""
    db = next((d for d in server.databases.values() if d.name.lower() == name.lower()), None)
    if db is None:
        raise fail(911, name)
    if db.state == "OFFLINE":
        raise fail(942, db.name)
    if db.name in login.denied_databases:
        raise fail(916, login.name, db.name)
    return [{"object_id": 1000 + n, "name": t.split(".")[-1], "is_ms_shipped": 0} for n, t in enumerate(db.rows)]


def preferred_replica(server: Server, name: Any) -> int:
    database = server.database(str(name))
    if database is None:
        return 0                                    # SQL Server 2019 CU20 / 2022 CU2 and later
    ag = server.ag
    if not database.ag_name or ag is None:
        return 1
    if ag.replicas:
        return int(ag.preferred_backup_replica() == server.name)
    role = ag.role
    if ag.backup_preference == "PRIMARY":
        return int(role == "PRIMARY")
    if ag.backup_preference == "SECONDARY_ONLY":
        return int(role == "SECONDARY")
    if ag.backup_preference == "SECONDARY":
        return int(role == "SECONDARY" or not ag.secondaries_online)
    return 1


def server_property(server: Server, name: Any) -> Any:
    values = {"servername": server.name, "engineedition": server.engine_edition, "edition": server.edition,
              "productversion": server.version, "productmajorversion": str(server.major),
              "isclustered": 0, "ishadrenabled": int(server.ag is not None),
              "instancedefaultdatapath": server.data_dir + "\\", "instancedefaultlogpath": server.data_dir + "\\"}
    return values.get(str(name).lower())


def has_perms_by_name(server: Server, login: Login, securable: Any, securable_class: Any,
                      permission: Any) -> int | None:
    """HAS_PERMS_BY_NAME for the permissions the engine needs: server level (NULL, NULL, 'CREATE ANY DATABASE' |
    'ALTER ANY DATABASE' | 'VIEW SERVER STATE'), CREATE DATABASE in master, and BACKUP DATABASE / ALTER in a
    database (db_backupoperator holds BACKUP DATABASE, db_owner everything); NULL for an unknown database.
    https://learn.microsoft.com/en-us/sql/t-sql/functions/has-perms-by-name-transact-sql
    https://learn.microsoft.com/en-us/sql/relational-databases/security/authentication-access/database-level-roles
    """
    wanted = str(permission).upper()
    if securable is None:
        return int(login.may(wanted))
    name = str(securable)
    if str(securable_class).upper() != "DATABASE":
        return None
    if name.lower() == "master" and wanted == "CREATE DATABASE":
        return int(login.may("CREATE ANY DATABASE"))
    if server.database(name) is None:
        return None
    if wanted == "BACKUP DATABASE":
        return int(login.in_role(name, "db_owner", "db_backupoperator"))
    if wanted == "ALTER":
        return int(login.in_role(name, "db_owner") or login.may("ALTER ANY DATABASE"))
    return int(login.in_role(name, "db_owner"))


def db_id(server: Server, name: Any) -> int | None:
    """DB_ID(name): the database's id, NULL for an unknown name."""
    return next((r["database_id"] for r in _databases(server, None) if r["name"] == name), None)  # type: ignore


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "db_id": db_id,
    "sys.fn_hadr_backup_is_preferred_replica": preferred_replica,
    "serverproperty": server_property,
    "getdate": lambda server: datetime.now(),      # server-local time, as msdb's dates
}
# functions that also see the login running the statement
LOGIN_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "has_perms_by_name": has_perms_by_name,
    "is_srvrolemember": lambda server, login, role: int(login.has_role(str(role))),
    "suser_sname": lambda server, login: login.name,
}
