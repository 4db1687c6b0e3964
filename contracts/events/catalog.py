"""backup-set-completed: every planned component of a backup set has at least one stored artifact."""
from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from contracts.envelope import Envelope, Payload, UtcDatetime
from contracts.events.backup import Component


class BackupSetCompletedPayload(Payload):
    """The set id is the envelope's ``correlation_id``; the stamp is the envelope's ``stamp``."""

    components: tuple[Component, ...] = Field(min_length=1, description="Components with stored artifacts")
    artifacts: int = Field(ge=1, description="Number of artifacts stored in the set when it completed")
    stored_bytes: int = Field(ge=0, description="Bytes the set's artifacts take in the store")
    completed_at: UtcDatetime = Field(description="When the catalog marked the set complete (UTC)")

    @model_validator(mode="after")
    def _unique_components(self) -> Self:
        if len(set(self.components)) != len(self.components):
            raise ValueError(f"components repeat: {list(self.components)}")
        return self


class BackupSetCompleted(Envelope):
    type: Literal["backup-set-completed"] = "backup-set-completed"
    version: Literal[1] = 1
    payload: BackupSetCompletedPayload
