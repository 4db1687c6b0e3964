"""What the simulated instance knows: databases and their files, sessions, logins, edition, Always On, msdb.

Only what the engine's statements can observe is modelled; every field is plain data a test may set to put
the server into the state it needs (``server.databases["x"].sessions = 3``).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PureWindowsPath

# SERVERPROPERTY('EngineEdition'): 2 Standard (also Web), 3 Enterprise (also Developer), 4 Express
# https://learn.microsoft.com/en-us/sql/t-sql/functions/serverproperty-transact-sql
EDITIONS = {"Enterprise Edition (64-bit)": 3, "Developer Edition (64-bit)": 3, "Standard Edition (64-bit)": 2,
            "Web Edition (64-bit)": 2, "Express Edition (64-bit)": 4}
NO_COMPRESSION = {"Express Edition (64-bit)", "Web Edition (64-bit)"}


@dataclass
class DbFile:
    logical: str
    physical: str           # as SQL Server sees it (C:\..., /var/opt/mssql/...)
    kind: str = "D"         # D data, L log (RESTORE FILELISTONLY "Type")
    file_id: int = 1
    filegroup: str | None = "PRIMARY"


@dataclass
class Database:
    name: str
    files: list[DbFile]
    state: str = "ONLINE"                   # ONLINE, RESTORING, RECOVERING, OFFLINE, SUSPECT
    user_access: str = "MULTI_USER"
    recovery_model: str = "FULL"
    containment: str = "NONE"               # NONE | PARTIAL (App Service databases are partially contained)
    sessions: int = 0                       # other connections using the database
    ag_name: str | None = None              # joined to an availability group
    rows: dict[str, int] = field(default_factory=lambda: {"dbo.sites": 12, "dbo.plans": 3})
    corrupt_pages: list[int] = field(default_factory=list)   # DBCC CHECKDB reports these
    last_lsn: int = 37000000012800001
    damaged_by_restore: str | None = None    # files overwritten by another database's RESTORE ... REPLACE
    log_chain_started: bool = False          # a normal (not COPY_ONLY) full backup was taken: BACKUP LOG may run
    log_reuse_wait: str = "NOTHING"          # sys.databases.log_reuse_wait_desc (LOG_BACKUP: the log grows)
    log_backed_up_to: int | None = None      # LastLSN of the newest log backup: the next one begins there
    restored_to: int | None = None           # RESTORING: the LSN a following RESTORE LOG must include
    encrypted: bool = False                  # TDE on (sys.databases.is_encrypted)
    incomplete: bool = False                 # a RESTORE stopped halfway: RESTORING, cannot be recovered (4333)
    created: datetime = field(default_factory=datetime.now)   # sys.databases.create_date: a RESTORE makes it anew

    @property
    def replica_id(self) -> str | None:
        return f"replica-{self.ag_name}" if self.ag_name else None


@dataclass
class Login:
    name: str
    password: str
    sysadmin: bool = False
    server_permissions: set[str] = field(default_factory=set)    # "CREATE ANY DATABASE", "VIEW SERVER STATE"
    database_roles: dict[str, set[str]] = field(default_factory=dict)   # db -> {"db_backupoperator", ...}
    msdb_select: bool = True
    denied_databases: set[str] = field(default_factory=set)      # may not open these (4060)
    server_roles: set[str] = field(default_factory=set)          # "dbcreator" (holds CREATE ANY DATABASE)

    def may(self, permission: str) -> bool:
        implied = {"CREATE ANY DATABASE"} if "dbcreator" in self.server_roles else set()
        return self.sysadmin or permission in self.server_permissions | implied

    def has_role(self, role: str) -> bool:
        """IS_SRVROLEMEMBER: explicit membership only (the engine checks sysadmin separately)."""
        return self.sysadmin if role.lower() == "sysadmin" else role.lower() in self.server_roles

    def in_role(self, database: str, *roles: str) -> bool:
        return self.sysadmin or bool(self.database_roles.get(database, set()) & set(roles))


@dataclass
class Replica:
    role: str = "SECONDARY"                  # PRIMARY | SECONDARY
    backup_priority: int = 50                # 0 = never back up here
    connected: bool = True
    endpoint_host: str | None = None         # host of the mirroring endpoint URL (default: the server name)


@dataclass
class AvailabilityGroup:
    """One availability group, shared by the :class:`Server` objects of its replicas.

    With ``replicas`` empty it describes only the local replica (``role``, ``secondaries_online``); with
    replicas (server name -> :class:`Replica`) the preferred backup replica is chosen like SQL Server does:
    the preference (PRIMARY | SECONDARY = "Prefer Secondary" | SECONDARY_ONLY | NONE = "Any Replica"), then the
    highest backup priority among connected candidates (0 excluded), ties by server name.
    https://learn.microsoft.com/en-us/sql/database-engine/availability-groups/windows/configure-backup-on-availability-replicas-sql-server
    """
    name: str
    role: str = "PRIMARY"                    # this replica's role when ``replicas`` is empty
    backup_preference: str = "SECONDARY"
    secondaries_online: bool = True
    replicas: dict[str, Replica] = field(default_factory=dict)
    listener: str | None = None

    def role_of(self, server_name: str) -> str:
        return self.replicas[server_name].role if self.replicas else self.role

    def primary(self) -> str | None:
        return next((n for n, r in self.replicas.items() if r.role == "PRIMARY"), None)

    def preferred_backup_replica(self) -> str | None:
        def best(candidates: list[str]) -> str | None:
            ranked = sorted((-self.replicas[n].backup_priority, n) for n in candidates
                            if self.replicas[n].connected and self.replicas[n].backup_priority > 0)
            return ranked[0][1] if ranked else None
        secondaries = [n for n, r in self.replicas.items() if r.role == "SECONDARY"]
        if self.backup_preference == "PRIMARY":
            return self.primary()
        if self.backup_preference == "SECONDARY_ONLY":
            return best(secondaries)
        if self.backup_preference == "SECONDARY":
            return best(secondaries) or self.primary()
        return best(list(self.replicas))


@dataclass
class BackupHistory:
    """One msdb.dbo.backupset row joined with its first backupmediafamily row."""
    backup_set_id: int
    database_name: str
    physical_device_name: str
    first_lsn: int
    last_lsn: int
    database_backup_lsn: int
    backup_size: int
    compressed_backup_size: int
    is_copy_only: bool
    type: str = "D"                             # D full, L log
    software_version: str = "16.0.4135.4"       # the server that wrote it (software_*_version columns)
    finished: datetime = field(default_factory=datetime.now)   # backup_finish_date: server-local time


@dataclass
class RestoreHistory:
    """One msdb.dbo.restorehistory row: a RESTORE DATABASE (D) or RESTORE LOG (L) that completed."""
    restore_history_id: int
    destination_database_name: str
    restore_type: str
    restore_date: datetime = field(default_factory=datetime.now)       # server-local time


@dataclass
class Faults:
    """Failures a test switches on; each names the real error the state produces."""
    share_drops_after: int | None = None     # BACKUP: the share vanishes after N percent -> 3271
    disk_full_after: int | None = None       # BACKUP: the target fills after N percent -> 3202 (OS error 112)
    msdb_error: int | None = None            # msdb history read raises this number (e.g. 1205)
    locked_files: set[str] = field(default_factory=set)   # physical files another process holds -> 3634
    denied_dirs: set[str] = field(default_factory=set)    # the service account may not write here -> 3201 (5)
    damage_written: bool = False             # the share corrupts what BACKUP wrote (VERIFYONLY then finds 3241)
    link_error: tuple[str, str] | None = None   # the next statement fails in the driver: (SQLSTATE, text)
    restore_fails_after: int | None = None   # RESTORE DATABASE: the device fails after N percent -> 3203 (OS 64),
                                             # the target is left RESTORING
    drop_refused: dict[str, int] = field(default_factory=dict)   # DROP DATABASE name -> this error (3701, 3702)


@dataclass
class Server:
    root: Path                                  # where the simulated disks live on this machine
    name: str = "sql01"                         # @@SERVERNAME; the replica name in an availability group
    edition: str = "Enterprise Edition (64-bit)"
    version: str = "16.0.4135.4"                # SQL Server 2022 CU
    contained_authentication: bool = True
    language: str = "us_english"                # or "Deutsch": message texts change, numbers do not
    databases: dict[str, Database] = field(default_factory=dict)
    logins: dict[str, Login] = field(default_factory=dict)
    ag: AvailabilityGroup | None = None
    history: list[BackupHistory] = field(default_factory=list)
    restores: list[RestoreHistory] = field(default_factory=list)
    credentials: set[str] = field(default_factory=set)
    faults: Faults = field(default_factory=Faults)
    data_dir: str = "C:\\SQL\\DATA"
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def restored(self, name: str, kind: str) -> None:
        """A RESTORE of ``kind`` (D or L) into ``name`` completed: msdb.dbo.restorehistory records it."""
        self.restores.append(RestoreHistory(len(self.restores) + 1, name, kind))

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def ag_role(self) -> str | None:
        return self.ag.role_of(self.name) if self.ag else None

    @property
    def engine_edition(self) -> int:
        return EDITIONS[self.edition]

    def database(self, name: str) -> Database | None:
        return self.databases.get(name)

    def add_database(self, name: str, **values: object) -> Database:
        files = [DbFile(name, f"{self.data_dir}\\{name}.mdf", "D", 1),
                 DbFile(f"{name}_log", f"{self.data_dir}\\{name}_log.ldf", "L", 2, None)]
        database = Database(name, files, **values)  # type: ignore[arg-type]
        self.databases[name] = database
        return database

    def owner_of(self, physical: str) -> Database | None:
        wanted = physical.lower()
        return next((d for d in self.databases.values() for f in d.files if f.physical.lower() == wanted), None)

    def next_id(self) -> int:
        return next(self._ids)

    def host_path(self, device: str) -> Path:
        """Where a path *as SQL Server sees it* lives here: UNC and drive paths under ``root``, POSIX as is."""
        if device.startswith("\\\\") or re.match(r"^[A-Za-z]:", device):
            parts = [p.replace(":", "") for p in PureWindowsPath(device).parts if p not in ("\\", "\\\\")]
            return self.root.joinpath(*[p.strip("\\") for p in parts if p.strip("\\")])
        return Path(device)

    def make_dir(self, directory: str) -> Path:
        path = self.host_path(directory)
        path.mkdir(parents=True, exist_ok=True)
        return path
