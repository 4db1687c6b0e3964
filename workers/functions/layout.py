"""Where a Function Apps storage copy lives in the store.

* ``<stamp>/functions-blobs/<account>/packs/<random id>`` — blob contents: small blobs concatenated into packs
  (about ``pack_size``, filled in memory), a large blob alone (streamed); stored as artifacts (zstd, AES-GCM
  with the certificate, signed records). Shared by every backup set of the stamp, so an unchanged blob is
  stored once and referenced by each set's manifest (never read from the account again).
* ``<stamp>/functions-blobs/<account>/index/<set>.json`` — what the worker needs to skip unchanged blobs next
  time: per blob (its name as a SHA-256, no names in clear) the ETag and where its content is. Compressed, not
  encrypted (the worker holds only the certificate), with a record. The newest one is read at the next backup.
* ``<stamp>/functions-blobs/<account>/summary/<set>.json`` — what the event said (answers redeliveries).
* ``<stamp>/<set>/functions/<account>.jsonl`` — the set's artifact: the account's manifest, JSON lines
  (encrypted like packs): containers, blobs (properties, metadata, SHA-256 and pack location), queues and their
  peeked messages, tables and their entities with EDM types.

Retention (:mod:`workers.artifacts.functionspacks`) forgets the index and summary of deleted sets and deletes
the packs no remaining index references.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging

from workers.artifacts.functionspacks import COMPONENT, account_prefix
from workers.artifacts.service import RECORD_SUFFIX, ArtifactStore
from workers.artifacts.setmanifest import artifact_key
from workers.functions.records import SHA256, in_packs
from workers.storage.base import ObjectNotFound

log = logging.getLogger(__name__)


def manifest_key(stamp: str, set_id: str, account: str) -> str:
    return artifact_key(stamp, set_id, COMPONENT, f"{account}.jsonl")


def blob_id(container: str, name: str) -> str:
    return hashlib.sha256(f"{container}\n{name}".encode()).hexdigest()


def read_json(meta: ArtifactStore, key: str) -> dict | None:
    out = io.BytesIO()
    try:
        meta.get(key, out)
    except ObjectNotFound:
        return None
    return json.loads(out.getvalue())


def put_json(meta: ArtifactStore, key: str, body: dict) -> None:
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    meta.put(key, lambda: io.BytesIO(data), replace_uncommitted=True)


def latest_index(meta: ArtifactStore, stamp: str, account: str, before: str) -> dict:
    """The newest index written by an earlier set (set ids sort by time), or an empty one."""
    base = f"{account_prefix(stamp, account)}/index/"
    names = sorted(i.key[len(base):-len(".json")] for i in meta.backend.list(base)
                   if i.key.endswith(".json") and not i.key.endswith(RECORD_SUFFIX))
    for name in reversed([n for n in names if n < before]):
        found = read_json(meta, f"{base}{name}.json")
        if isinstance(found, dict) and found.get("format") == 1 and isinstance(found.get("blobs"), dict):
            return checked_index(found["blobs"], f"{account_prefix(stamp, account)}/packs/")
    return {}


def checked_index(blobs: dict, packs: str) -> dict:
    """The entries of an index read from the store that are well formed: blob id -> [ETag, pack key inside this
    account's ``packs/``, offset, length, SHA-256]. Any other entry is dropped (logged), so that blob is read
    from the account again instead of taking a location from a damaged or forged index."""
    good = {bid: entry for bid, entry in blobs.items() if _entry_ok(bid, entry, packs)}
    if len(good) < len(blobs):
        log.warning("the previous Function Apps index has %d malformed entr(ies): those blobs are read again",
                    len(blobs) - len(good))
    return good


def _entry_ok(bid: object, entry: object, packs: str) -> bool:
    if not (isinstance(bid, str) and SHA256.match(bid) and isinstance(entry, list) and len(entry) == 5):
        return False
    etag, pack, offset, length, sha = entry
    return (isinstance(etag, str) and 0 < len(etag) <= 200 and in_packs(pack, packs)
            and type(offset) is int and type(length) is int
            and offset >= 0 and length >= 0 and isinstance(sha, str) and SHA256.match(sha) is not None)
