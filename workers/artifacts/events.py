"""The artifact-stored follow-up every storing worker emits."""
from __future__ import annotations

from contracts import ArtifactStored, ArtifactStoredPayload, Envelope
from workers.artifacts.jobs import follow_up_id
from workers.artifacts.service import StoredArtifact


def artifact_stored(cause: Envelope, stored: StoredArtifact, *, store: str, component: str, name: str,
                    duration: float, source: str) -> ArtifactStored:
    return cause.follow_up(ArtifactStored, ArtifactStoredPayload(
        key=stored.key, store=store, component=component, name=name,  # type: ignore[arg-type]
        plaintext_size=stored.plaintext_size, plaintext_sha256=stored.plaintext_sha256,
        stored_size=stored.stored_size, stored_sha256=stored.stored_sha256, compressed=stored.compressed,
        encrypted=stored.encrypted, thumbprint=stored.thumbprint, verified_by=stored.verified_by,
        deduplicated=stored.deduplicated, duration_seconds=round(duration, 3)), source=source,  # type: ignore
        event_id=follow_up_id(cause, ArtifactStored.event_type, component, name))  # the same again when redelivered
