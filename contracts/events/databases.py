"""database-backup-requested (one job per database) and database-backed-up (what the engine did)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import Envelope, Payload


class DatabaseBackupRequestedPayload(Payload):
    database: str = Field(min_length=1, max_length=128, description="Database name, e.g. appservice_hosting")


class DatabaseBackupRequested(Envelope):
    type: Literal["database-backup-requested"] = "database-backup-requested"
    version: Literal[1] = 1
    payload: DatabaseBackupRequestedPayload


class DatabaseBackedUpPayload(Payload):
    database: str = Field(min_length=1, max_length=128)
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


class DatabaseBackedUp(Envelope):
    type: Literal["database-backed-up"] = "database-backed-up"
    version: Literal[1] = 1
    payload: DatabaseBackedUpPayload
