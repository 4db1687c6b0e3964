"""Finding a snapshot to restore: the one a backup set references, and its manifest read from the store."""
from __future__ import annotations

import io
import json

from workers.artifacts.setmanifest import artifact_key
from workers.repository.manifest import Manifest
from workers.repository.repo import Repository, checked_snapshot
from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectNotFound


def snapshot_of_set(repo: Repository, set_id: str) -> str:
    prefix = artifact_key(repo.stamp, set_id, "fileshare", "")
    names = sorted(i.key[len(prefix):] for i in repo.data.backend.list(prefix)
                   if i.key.endswith(".json") and not i.key.endswith(".record.json"))
    if not names:
        raise PermanentError(f"backup set {set_id} of {repo.stamp} has no file-share snapshot",
                             hint="List sets with `appsvc-dr artifacts list` and snapshots with "
                                  "`appsvc-dr snapshots list`.")
    out = io.BytesIO()
    key = prefix + ("snapshot.json" if "snapshot.json" in names else names[0])
    repo.meta.get(key, out)
    try:
        reference = json.loads(out.getvalue())
    except ValueError:
        reference = None
    if not isinstance(reference, dict):
        raise PermanentError(f"{key} is not a snapshot reference", hint="The set's file-share reference is damaged "
                             "or forged: restore the file share from another backup set.")
    return checked_snapshot(reference.get("snapshot_id"))


def load_manifest(repo: Repository, snapshot: str, keys) -> Manifest:
    """A snapshot's manifest read from the store (never the cache): decrypted and verified."""
    try:
        return repo.manifest(snapshot, keys, cached=False)
    except ObjectNotFound:
        raise PermanentError(f"no snapshot {snapshot} for stamp {repo.stamp}",
                             hint="See `appsvc-dr snapshots list --stamp STAMP`.") from None
