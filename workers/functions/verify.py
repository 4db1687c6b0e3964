"""Prove a set's copy of an account restores without an account to restore into (restore drills): decrypt the
manifest, read every blob's content from its pack and check its SHA-256, and count what the manifest lists
against its closing record."""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

from workers.artifacts.service import ArtifactStore
from workers.functions.layout import manifest_key
from workers.functions.restore import PackReader
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing

CHUNK = 1 << 20


@dataclass
class VerifyReport:
    blobs: int = 0
    bytes: int = 0
    messages: int = 0
    entities: int = 0


def _streamed_sha(store: ArtifactStore, key: str, keys: KeyRing | None) -> str:
    sha = hashlib.sha256()
    with store.open_plain(key, keys=keys) as plain:
        while chunk := plain.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def verify_copy(store: ArtifactStore, keys: KeyRing | None, stamp: str, set_id: str, account: str) -> VerifyReport:
    report, end, packs = VerifyReport(), None, PackReader(store, keys)
    with store.open_plain(manifest_key(stamp, set_id, account), keys=keys) as plain:
        for line in io.TextIOWrapper(plain, encoding="utf-8"):
            if not line.strip():
                continue
            r = json.loads(line)
            kind = r.get("t")
            if kind == "blob":
                pack, offset, length = r["loc"]
                rec = store.record(pack)
                if rec is not None and offset == 0 and rec.plaintext_size == length and length > CHUNK:
                    got = _streamed_sha(store, pack, keys)
                else:
                    got = hashlib.sha256(packs.slice(pack, offset, length)).hexdigest()
                if got != r["sha256"]:
                    raise PermanentError(f"blob {r['container']}/{r['name']} of account {account}: content does "
                                         "not match the manifest's SHA-256",
                                         hint="The store holds a damaged copy; back up again and drill the new set.")
                report.blobs += 1
                report.bytes += length
            elif kind == "message":
                report.messages += 1
            elif kind == "entity":
                report.entities += 1
            elif kind == "end":
                end = r
    if end is None or (end["blobs"], end["messages"], end["entities"]) != (report.blobs, report.messages,
                                                                          report.entities):
        raise PermanentError(f"the manifest of account {account} is incomplete or its counts disagree",
                             hint="Back up again and drill the new set.")
    return report
