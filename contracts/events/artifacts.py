"""artifact-ready (a staged file waits to be stored) and artifact-stored (it landed and was verified)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from contracts.envelope import Envelope, Name, Payload
from contracts.events.backup import Component
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
MetadataValue = Annotated[str, StringConstraints(max_length=256)] | int | bool | None


class ArtifactReadyPayload(Payload):
    component: Component
    name: Name = Field(description="Artifact name within the component, e.g. appservice_hosting.bak")
    staged_path: str = Field(min_length=1, max_length=1024,
                             description=r"Where the file is staged: absolute local path or \\server\share\path")
    size: int | None = Field(default=None, ge=0, description="Size in bytes, if known")
    sha256: Sha256 | None = Field(default=None, description="SHA-256 of the staged file, if known")
    delete_staged: bool = Field(default=False, description="Delete the staged file once stored and verified")
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None, max_length=32, description="What the producer knows about the artifact, kept in its signed "
        "record and the set's manifest (databases: engine, server_version, first_lsn, last_lsn, copy_only, "
        "started_at, finished_at, stripe, stripes, ...)")


class ArtifactReady(Envelope):
    type: Literal["artifact-ready"] = "artifact-ready"
    version: Literal[1] = 1
    payload: ArtifactReadyPayload


class ArtifactStoredPayload(Payload):
    key: str = Field(description="Object key: <stamp>/<backup-set-id>/<component>/<name>")
    store: str = Field(description="Where it is stored (backend name, no credentials)")
    component: Component
    name: Name
    plaintext_size: int = Field(ge=0)
    plaintext_sha256: Sha256
    stored_size: int = Field(ge=0)
    stored_sha256: Sha256
    compressed: bool
    encrypted: bool
    thumbprint: str | None = Field(default=None, description="SHA-1 thumbprint of the encryption certificate")
    verified_by: Literal["stat", "read-back"]
    deduplicated: bool = Field(default=False, description="An identical artifact was already stored")
    duration_seconds: float = Field(ge=0)


class ArtifactStored(Envelope):
    type: Literal["artifact-stored"] = "artifact-stored"
    version: Literal[1] = 1
    payload: ArtifactStoredPayload
