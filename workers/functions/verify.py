"""Prove a set's copy of an account restores without an account to restore into (restore drills): decrypt and
check the manifest (its closing record's counts included), then read every blob's content from its pack and check
its SHA-256."""
from __future__ import annotations

from dataclasses import dataclass

from workers.artifacts.service import ArtifactStore
from workers.functions.manifest import CheckedManifest
from workers.functions.records import BlobRecord, EntityRecord, MessageRecord
from workers.storage.codec import KeyRing


@dataclass
class VerifyReport:
    blobs: int = 0
    bytes: int = 0
    messages: int = 0
    entities: int = 0


def verify_copy(store: ArtifactStore, keys: KeyRing | None, stamp: str, set_id: str, account: str) -> VerifyReport:
    """Every line checked (:class:`CheckedManifest`: a damaged or forged manifest fails before any blob is
    read), then every blob's bytes read from its pack and hashed against the manifest."""
    report = VerifyReport()
    with CheckedManifest(store, keys, stamp, set_id, account) as manifest:
        for r in manifest.records():
            if isinstance(r, BlobRecord):
                manifest.check(r)
                report.blobs += 1
                report.bytes += r.loc.length
            elif isinstance(r, MessageRecord):
                report.messages += 1
            elif isinstance(r, EntityRecord):
                report.entities += 1
    return report
