"""secrets-stored: an encrypted copy of SystemSecrets.json is stored and verified (or was a duplicate)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import Envelope, Name, Payload, UtcDatetime
from contracts.events.artifacts import Sha256


class SecretsStoredPayload(Payload):
    version_id: Name = Field(description="Stored version, e.g. 20261122T001900Z-3f2a9c1b7d4e")
    key: str = Field(description="Object key of the encrypted file")
    fingerprint: Sha256 = Field(description="SHA-256 of the plaintext file (identifies a version; not secret)")
    stored_at: UtcDatetime
    rotated_at: UtcDatetime
    duplicate: bool = Field(description="Same fingerprint as the latest stored version: nothing new stored")
    drop_deleted: bool = Field(description="Whether the plaintext file was deleted from the drop location")


class SecretsStored(Envelope):
    type: Literal["secrets-stored"] = "secrets-stored"
    version: Literal[1] = 1
    payload: SecretsStoredPayload
