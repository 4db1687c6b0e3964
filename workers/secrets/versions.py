"""Stored SystemSecrets.json versions: ``<stamp>/secrets/<version-id>/SystemSecrets.json`` (encrypted).

A version id is ``<rotated-at UTC, to the microsecond>-<first 12 hex of the fingerprint>``, so ids sort by
rotation time, the same rotation event always maps to the same key (idempotent re-runs), and two rotations of
identical content within one second are still told apart (the second is a duplicate, not a re-run).
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from contracts.envelope import is_future
from workers.artifacts.catalog import artifact_key
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore, StoredArtifact
from workers.runtime.errors import PermanentError

log = logging.getLogger("appsvc_dr.secrets")
SECRETS_NAME = "SystemSecrets.json"
REFERENCE_NAME = "secrets-version.json"   # in each backup set: which version it holds
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
    """The newest version; one dated in the future is ignored with a warning (never chosen by its name)."""
    found = versions(store, stamp)
    for version in (v for v in found if is_future(v.rotated_at)):
        log.warning("secrets version %s of %s is dated in the future: ignored", version.version_id, stamp)
    found = [v for v in found if not is_future(v.rotated_at)]
    return found[-1] if found else None


def set_reference(store, stamp: str, set_id: str, keys) -> dict:
    """The secrets reference of a backup set: ``{version_id, key, fingerprint, stamp}`` (decrypted, verified)."""
    ref = io.BytesIO()
    store.get(artifact_key(stamp, set_id, "secrets", REFERENCE_NAME), ref, keys=keys)
    return json.loads(ref.getvalue())


def secrets_key(store, stamp: str, keys, *, version: str | None = None, set_id: str | None = None) -> str:
    """The key of the SystemSecrets.json version asked for: by version id, the one of a set, else the newest."""
    if version:
        return version_key(stamp, version)
    if set_id:
        return set_reference(store, stamp, set_id, keys)["key"]
    newest = latest(store, stamp)
    if newest is None:
        raise PermanentError(f"no secrets stored for stamp {stamp}", hint="Check --stamp and the store settings.")
    return newest.artifact.key
