"""database-backup-requested (one job per database), database-log-backup-requested (SQL Server: one BACKUP LOG
into the chain of a backup set) and database-backed-up (what the engine did)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import DatabaseName, Envelope, Payload


class DatabaseBackupRequestedPayload(Payload):
    database: DatabaseName = Field(description="Database name, e.g. appservice_hosting")


class DatabaseBackupRequested(Envelope):
    type: Literal["database-backup-requested"] = "database-backup-requested"
    version: Literal[1] = 1
    payload: DatabaseBackupRequestedPayload


class DatabaseLogBackupRequestedPayload(Payload):
    database: DatabaseName = Field(description="Database name, e.g. appservice_hosting")


class DatabaseLogBackupRequested(Envelope):
    """Back up the transaction log of one database into the backup set named by ``correlation_id`` (the set whose
    full backup the log extends; restore applies the set's log backups after its full)."""

    type: Literal["database-log-backup-requested"] = "database-log-backup-requested"
    version: Literal[1] = 1
    payload: DatabaseLogBackupRequestedPayload


class DatabaseBackedUpPayload(Payload):
    database: DatabaseName
    engine: Literal["sqlserver", "postgres"]
    server: str = Field(description="host[,port] — never credentials")
    size: int = Field(ge=0, description="Bytes of the backup file(s)")
    duration_seconds: float = Field(ge=0)
    staged_path: str | None = Field(default=None, description="Where the backup was staged for upload")
    skipped_reason: str | None = Field(default=None, description="Set when nothing was backed up on purpose, "
                                                                 "e.g. not the preferred Always On replica")
    first_lsn: str | None = None
    last_lsn: str | None = None
    database_backup_lsn: str | None = None
    backup_type: Literal["full", "log"] = Field(default="full", description="SQL Server: BACKUP DATABASE or LOG")


class DatabaseBackedUp(Envelope):
    type: Literal["database-backed-up"] = "database-backed-up"
    version: Literal[1] = 1
    payload: DatabaseBackedUpPayload
