"""artifact-mirrored: the objects a backup set (and its stamp's shared folders) needs are on a mirror target,
copied as stored and verified (size and SHA-256 of the stored bytes)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import Envelope, Payload


class ArtifactMirroredPayload(Payload):
    """The set id is the envelope's ``correlation_id``; the stamp is the envelope's ``stamp``."""

    target: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$", description="Mirror target name (MIRROR__TARGETS)")
    store: str = Field(max_length=1024, description="The target's backend name (no credentials)")
    objects: int = Field(ge=0, description="Objects the target should hold for the stamp (per its retention)")
    copied: int = Field(ge=0, description="Objects copied by this run")
    bytes_copied: int = Field(ge=0, description="Stored bytes copied by this run")
    backlog: int = Field(ge=0, description="Objects still missing on the target after this run")
    duration_seconds: float = Field(ge=0)


class ArtifactMirrored(Envelope):
    type: Literal["artifact-mirrored"] = "artifact-mirrored"
    version: Literal[1] = 1
    payload: ArtifactMirroredPayload
