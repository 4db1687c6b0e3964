"""Finding a snapshot to restore: the one a backup set references, and its manifest read from the store."""
from __future__ import annotations

import io
import json

from workers.artifacts.setmanifest import artifact_key
from workers.repository.manifest import Manifest
from workers.repository.repo import Repository
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
    repo.meta.get(prefix + ("snapshot.json" if "snapshot.json" in names else names[0]), out)
    return json.loads(out.getvalue())["snapshot_id"]


def load_manifest(repo: Repository, snapshot: str, keys) -> Manifest:
    """A snapshot's manifest read from the store (never the cache): decrypted and verified."""
    try:
        return repo.manifest(snapshot, keys, cached=False)
    except ObjectNotFound:
        raise PermanentError(f"no snapshot {snapshot} for stamp {repo.stamp}",
                             hint="See `appsvc-dr snapshots list --stamp STAMP`.") from None
