"""The catalog is the store: one manifest per backup set, rebuilt from the artifact records by listing.

Layout: ``<stamp>/<backup-set-id>/<component>/<name>`` (artifact), ``...<name>.record.json`` (its record),
``<stamp>/<backup-set-id>/manifest.json`` (the set's manifest, rewritten after every stored artifact).
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Iterator

from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore, StoredArtifact
from workers.storage.base import ObjectNotFound, StorageBackend

MANIFEST = "manifest.json"
PLAN = "plan.json"            # see workers.artifacts.sets: a set exists only when planned


def artifact_key(stamp: str, set_id: str, component: str, name: str) -> str:
    return f"{stamp}/{set_id}/{component}/{name}"


@dataclass(frozen=True)
class BackupSet:
    stamp: str
    set_id: str
    artifacts: tuple[StoredArtifact, ...]

    @property
    def components(self) -> set[str]:
        return {a.key.split("/")[2] for a in self.artifacts}

    @property
    def size(self) -> int:
        return sum(a.stored_size for a in self.artifacts)

    def manifest(self) -> dict:
        return {"format": 1, "stamp": self.stamp, "backup_set_id": self.set_id,
                "updated_at": datetime.now(timezone.utc).isoformat(),
                "components": sorted(self.components), "stored_bytes": self.size,
                "artifacts": [{k: v for k, v in asdict(a).items() if k != "deduplicated"}
                              for a in self.artifacts]}


def read_set(store: ArtifactStore, stamp: str, set_id: str) -> BackupSet:
    records = [info.key[:-len(RECORD_SUFFIX)] for info in store.backend.list(f"{stamp}/{set_id}/")
               if info.key.endswith(RECORD_SUFFIX)]
    artifacts = tuple(a for a in (store.trusted_record(k) for k in records) if a is not None)   # signed ones
    return BackupSet(stamp, set_id, artifacts)


def write_manifest(store: ArtifactStore, stamp: str, set_id: str) -> BackupSet:
    """Rewrite the set's manifest from its records. A set without a plan (never planned, or deleted by
    retention meanwhile) gets none, so no ghost manifest outlives its set."""
    backup_set = read_set(store, stamp, set_id)
    if not store.backend.exists(f"{stamp}/{set_id}/{PLAN}"):
        return backup_set
    body = json.dumps(backup_set.manifest(), indent=2, sort_keys=True).encode()
    store.backend.put(f"{stamp}/{set_id}/{MANIFEST}", io.BytesIO(body), size=len(body))
    return backup_set


def list_sets(backend: StorageBackend, stamp: str | None = None) -> Iterator[tuple[str, str]]:
    """(stamp, set id) of every backup set with at least one artifact record, sorted."""
    seen: set[tuple[str, str]] = set()
    for info in backend.list(f"{stamp}/" if stamp else ""):
        parts = info.key.split("/")
        if len(parts) >= 4 and info.key.endswith(RECORD_SUFFIX) and (parts[0], parts[1]) not in seen:
            seen.add((parts[0], parts[1]))
    yield from sorted(seen)


def read_manifest(backend: StorageBackend, stamp: str, set_id: str) -> dict | None:
    try:
        with backend.open(f"{stamp}/{set_id}/{MANIFEST}") as stream:
            return json.loads(stream.read())
    except ObjectNotFound:
        return None
