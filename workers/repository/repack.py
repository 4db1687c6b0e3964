"""Repack: copy the blobs that snapshots still need out of mostly unused packs into new packs, so prune can
delete the old ones whole (restic's ``prune --max-unused``, per pack).

Each chosen pack is downloaded, decrypted (the private key, which prune needs anyway for encrypted
manifests) and checked — every blob moved is hashed again against its id — and its needed blobs go through a
:class:`~workers.repository.packer.Packer` of a fresh repository view (an empty in-memory index, so nothing is
skipped as "already stored": the blobs *are* stored, in the packs about to go). The new packs are encrypted
with the configured certificate; repacking encrypted packs without one is refused, never done in plaintext.
The packer writes index objects for the new packs before prune switches its own index, so a crash at any
point leaves both copies indexed (the next prune finds the old packs' blobs held elsewhere and deletes them).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from workers.repository.budget import DEFAULT_PACK_SIZE, PACK_MARGIN
from workers.repository.index import IndexEntry, PackEntries
from workers.repository.packer import Packer
from workers.repository.repo import Repository
from workers.runtime.errors import ConfigurationError
from workers.storage.codec import IntegrityError, KeyRing

def choose(keep: PackEntries, live: set[str], below: float) -> list[str]:
    """Kept packs whose needed plaintext is less than ``below`` (a fraction) of what they hold."""
    if below <= 0:
        return []
    chosen = []
    for pack, blobs in sorted(keep.items()):
        total = sum(e.length for e in blobs)
        used = sum(e.length for e in blobs if e.blob in live)
        if total and used < below * total:
            chosen.append(pack)
    return chosen


def to_move(keep: PackEntries, repack: list[str], live: set[str]) -> dict[str, int]:
    """blob → size, for the needed blobs of ``repack`` that no other kept pack holds."""
    chosen = set(repack)
    held = {e.blob for pack, blobs in keep.items() if pack not in chosen for e in blobs}
    return {e.blob: e.length for pack in repack for e in keep[pack] if e.blob in live and e.blob not in held}


@dataclass
class RepackResult:
    packs_written: int = 0
    bytes_stored: int = 0                # as stored (compressed, encrypted)


class Repacker:
    def __init__(self, repo: Repository, keys: KeyRing | None, *, pack_size: int | None = None,
                 uploads: int = 2) -> None:
        pack_size = pack_size or DEFAULT_PACK_SIZE
        self.repo, self.keys, self.pack_size, self.uploads = repo, keys, pack_size, uploads

    def refusal(self, packs: list[str]) -> ConfigurationError | None:
        """Why ``packs`` cannot be repacked here, if they cannot: encrypted packs (or packs without a record)
        and no certificate configured — their blobs would be stored again unencrypted."""
        if self.repo.encrypted:
            return None
        records = (self.repo.data.record(self.repo.pack_key(p)) for p in packs)
        encrypted = [r for r in records if r is None or r.encrypted]
        if not encrypted:
            return None
        return ConfigurationError(
            f"{len(encrypted)} of the {len(packs)} packs to repack are encrypted (or have no record), but no "
            "certificate is configured: their blobs would be stored again unencrypted",
            hint="Set APPSVC_DR_ENCRYPTION__CERTIFICATE to the repository's certificate, or prune with "
                 "--repack-below 0 to keep partly used packs whole.")

    def run(self, packs: list[str], entries: PackEntries, needed: set[str]) -> RepackResult:
        """Move the blobs of ``packs`` that are in ``needed`` (live blobs no other kept pack holds)."""
        fresh = Repository(self.repo.data, self.repo.stamp)
        packer = Packer(fresh, target=self.pack_size - PACK_MARGIN, uploads=self.uploads)
        try:
            for pack in packs:
                self._move(pack, entries[pack], needed, packer)
            packer.finish()
        except BaseException:
            packer.abort()
            raise
        return RepackResult(packs_written=packer.packs, bytes_stored=packer.stored_bytes)

    def _move(self, pack: str, blobs: list[IndexEntry], needed: set[str], packer: Packer) -> None:
        body = io.BytesIO()
        self.repo.read_pack(pack, body, self.keys)          # decrypted and verified by the artifact format
        with body.getbuffer() as view:
            for blob, offset, length in blobs:
                if blob not in needed:
                    continue
                data = view[offset:offset + length]
                if len(data) != length or hashlib.sha256(data).hexdigest() != blob:
                    raise IntegrityError(f"blob {blob[:12]} in pack {pack[:12]} does not match its id: the pack is "
                                         "corrupt; nothing was deleted")
                packer.add(blob, data)
                needed.discard(blob)
