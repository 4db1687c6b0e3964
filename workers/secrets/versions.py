"""Stored SystemSecrets.json versions: ``<stamp>/secrets/<version-id>/SystemSecrets.json`` (encrypted).

A version id is ``<rotated-at UTC, to the microsecond>-<first 12 hex of the fingerprint>``, so ids sort by
rotation time, the same rotation event always maps to the same key (idempotent re-runs), and two rotations of
identical content within one second are still told apart (the second is a duplicate, not a re-run).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore, StoredArtifact

SECRETS_NAME = "SystemSecrets.json"
ROTATED_AT_FORMAT = "%Y%m%dT%H%M%S%fZ"


def version_id(rotated_at: datetime, fingerprint: str) -> str:
    return f"{rotated_at:{ROTATED_AT_FORMAT}}-{fingerprint[:12]}"


def version_key(stamp: str, vid: str) -> str:
    return f"{stamp}/secrets/{vid}/{SECRETS_NAME}"


@dataclass(frozen=True)
class SecretsVersion:
    stamp: str
    version_id: str
    artifact: StoredArtifact

    @property
    def fingerprint(self) -> str:
        return self.artifact.plaintext_sha256

    @property
    def rotated_at(self) -> datetime:
        return datetime.strptime(self.version_id.split("-")[0] + "+0000", ROTATED_AT_FORMAT + "%z")


def versions(store: ArtifactStore, stamp: str) -> list[SecretsVersion]:
    """Every stored version of ``stamp``, oldest first."""
    out = []
    for info in store.backend.list(f"{stamp}/secrets/"):
        if not info.key.endswith(f"/{SECRETS_NAME}{RECORD_SUFFIX}"):
            continue
        key = info.key[:-len(RECORD_SUFFIX)]
        record = store.record(key)
        if record is not None:
            out.append(SecretsVersion(stamp, key.split("/")[2], record))
    return sorted(out, key=lambda v: v.version_id)


def latest(store: ArtifactStore, stamp: str) -> SecretsVersion | None:
    found = versions(store, stamp)
    return found[-1] if found else None
