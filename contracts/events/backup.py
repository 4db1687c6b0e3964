"""backup-due: time (or an operator, or a secret rotation) asks for a new recovery point."""
from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from contracts.envelope import Envelope, Name, Payload

Component = Literal["secrets", "databases", "fileshare", "functions"]
ALL_COMPONENTS: tuple[Component, ...] = ("secrets", "databases", "fileshare", "functions")
# What a site backs up unless APPSVC_DR_COMPONENTS says otherwise (and what a backup-due asks for by default):
# `functions` (the storage accounts of Function Apps) is opt-in, so existing sites are unaffected.
DEFAULT_COMPONENTS: tuple[Component, ...] = ("secrets", "databases", "fileshare")


class BackupDuePayload(Payload):
    backup_set_id: Name = Field(description="Id of the recovery point; equals the envelope's correlation_id")
    components: tuple[Component, ...] = Field(default=DEFAULT_COMPONENTS, min_length=1,
                                              description="What to back up: secrets, databases, fileshare, "
                                                          "functions")
    reason: Literal["schedule", "catch-up", "manual", "secrets-rotated"] = Field(
        default="manual", description="schedule: a scheduled slot; catch-up: the newest slot missed while no "
        "scheduler ran, published once when one starts again")
    requested_by: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _unique_components(self) -> Self:
        if len(set(self.components)) != len(self.components):
            raise ValueError(f"components repeat: {list(self.components)}")
        return self


class BackupDue(Envelope):
    type: Literal["backup-due"] = "backup-due"
    version: Literal[1] = 1
    payload: BackupDuePayload

    @model_validator(mode="after")
    def _set_id_matches(self) -> Self:
        if self.payload.backup_set_id != self.correlation_id:
            raise ValueError("payload.backup_set_id must equal correlation_id (the backup-set id)")
        return self
