"""Prune: free the packs no remaining snapshot needs, and rewrite the index to list only what still exists.

1. Mark: read every manifest under ``snapshots/`` (complete or not; encrypted ones need the private key, like
   a restore) — the blobs they name are *reachable*. Each is read as a restore reads it: its signed record
   checked against the verify keys, then its hashes. A manifest that cannot be read or trusted (unsigned,
   forged, no record) stops the prune before anything changes.
2. Sweep, per pack listed by the index objects: no reachable blob → delete; some → keep it whole, unless less
   than ``repack_below`` of its bytes are needed: then its needed blobs are copied into new packs and it is
   deleted (``workers.repository.repack``); index entries of packs that no longer exist are dropped.
   Packs in the store that no index lists (a sync killed before indexing them, or a prune interrupted after
   its index switch) are deleted once older than ``unindexed_grace``.
3. In this order, so a crash anywhere leaves every remaining snapshot restorable: store and index the repacked
   blobs' new packs, write the new index object
   (every blob of every kept pack), delete the old index objects, then delete the packs (record first). Until
   the old index objects are gone they still list packs that exist; afterwards the doomed packs are merely
   unindexed, and the next prune deletes them. The index never lists a pack that is gone — a sync trusts it
   to skip uploading blobs it lists.

The caller holds the repository's exclusive lock (``workers.repository.lock``) so no sync adds blobs meanwhile.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from workers.artifacts.service import RECORD_SUFFIX
from workers.repository.index import IndexEntry, PackEntries, index_body, index_packs
from workers.repository.manifest import Manifest
from workers.repository.repack import Repacker, RepackResult, choose, to_move
from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectInfo, ObjectNotFound
from workers.storage.codec import KeyRing


log = logging.getLogger(__name__)
UNRECORDED_HINT = ("A sync may be storing it right now (prune again once it has finished) or died while storing it; "
                   "if no sync wrote it, someone else did: find out who can write to the store. A manifest left "
                   "by a dead sync (no .summary.json beside it) can be deleted by hand, then prune again.")


def reachable(manifests: Iterable[Manifest]) -> set[str]:
    """Every blob id some manifest's files need."""
    return {blob for manifest in manifests for blob in manifest.blob_ids()}


@dataclass
class PackPlan:
    """What happens to each indexed pack. Partly used packs are kept whole here, with all their blobs indexed
    (what they hold stays usable for deduplication); the Pruner then repacks those below its ``repack_below``
    threshold (download, decrypt, re-encrypt, upload: the key and the certificate). ``unused_bytes`` says
    how much plaintext such packs hold that no snapshot needs."""

    keep: PackEntries = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)     # indexed, but the pack is gone: entries dropped
    unused_bytes: int = 0
    missing: set[str] = field(default_factory=set)        # reachable blobs no existing pack holds


def classify(entries: PackEntries, live: set[str], present: set[str]) -> PackPlan:
    """Decide per pack (pure). ``entries``: every index entry; ``present``: packs that exist in the store."""
    plan = PackPlan()
    held: set[str] = set()
    for pack in sorted(entries):
        blobs = entries[pack]
        if pack not in present:
            plan.dangling.append(pack)
            continue
        used = [e for e in blobs if e.blob in live]
        if not used:
            plan.delete.append(pack)
            continue
        plan.keep[pack] = blobs
        held.update(e.blob for e in used)
        if len(used) < len(blobs):
            plan.partial.append(pack)
            plan.unused_bytes += sum(e.length for e in blobs if e.blob not in live)
    plan.missing = live - held
    return plan


@dataclass
class PruneReport:
    dry_run: bool
    snapshots: int = 0
    reachable_blobs: int = 0
    packs_before: int = 0
    packs_kept: int = 0
    packs_partial: int = 0
    unused_bytes_kept: int = 0
    packs_deleted: list[str] = field(default_factory=list)
    unindexed_deleted: list[str] = field(default_factory=list)
    unindexed_young: int = 0
    dangling_packs: int = 0
    index_objects_removed: int = 0
    new_index: str | None = None
    bytes_freed: int = 0
    missing_blobs: int = 0
    repack_below: float = 0.0
    packs_repacked: list[str] = field(default_factory=list)
    bytes_to_move: int = 0                  # plaintext still needed in the repacked packs
    repacked: RepackResult | None = None    # after a real run
    repack_skipped: str | None = None       # why packs that qualified were not repacked

    def lines(self) -> list[str]:
        would = "would " if self.dry_run else ""
        out = [f"{self.snapshots} snapshot(s) remain, needing {self.reachable_blobs} blob(s)",
               f"packs: {self.packs_before} indexed; {would}keep {self.packs_kept} ({self.packs_partial} partly used, "
               f"{self.unused_bytes_kept} bytes of unneeded data kept in them); {would}delete "
               f"{len(self.packs_deleted)} unused and {len(self.unindexed_deleted)} unindexed"]
        if self.packs_repacked:
            done = f" into {self.repacked.packs_written} new pack(s) ({self.repacked.bytes_stored} bytes stored)" \
                if self.repacked else ""
            out.append(f"repack: {would}rewrite {len(self.packs_repacked)} pack(s) less than "
                       f"{self.repack_below:.0%} used, moving the {self.bytes_to_move} bytes still needed{done}")
        if self.repack_skipped:
            out.append(f"repack: {self.repack_skipped}")
        if self.unindexed_young:
            out.append(f"{self.unindexed_young} unindexed pack(s) are too recent to delete (a sync may still be "
                       "indexing them); a later prune removes them")
        if self.dangling_packs:
            out.append(f"{self.dangling_packs} pack(s) listed by the index no longer exist: their entries are dropped")
        if self.missing_blobs:
            out.append(f"WARNING: {self.missing_blobs} blob(s) that snapshots need are in no existing pack: those "
                       "snapshots cannot be restored completely (the next sync stores those files again)")
        index = f"index: {would}replace {self.index_objects_removed} object(s) by " + \
            (f"one listing only the kept packs ({self.new_index[:12]})" if self.new_index else "none")
        return out + [index if self.index_objects_removed or self.new_index else "index: unchanged",
                      f"{'would free' if self.dry_run else 'freed'} {self.bytes_freed} bytes "
                      f"({self.bytes_freed / 2**20:.1f} MiB)"]


class Pruner:
    def __init__(self, repo: Repository, keys: KeyRing | None, *, unindexed_grace: timedelta = timedelta(minutes=30),
                 now: datetime | None = None, repack_below: float = 0.0, repack_strict: bool = True,
                 pack_size: int | None = None) -> None:
        """``repack_below``: repack kept packs of which less than this fraction is needed (0: never). When they
        cannot be repacked here (encrypted, no certificate configured), ``repack_strict`` raises before any
        change; otherwise they are kept whole and the report says why."""
        self.repo, self.keys, self.grace = repo, keys, unindexed_grace
        self.repack_below, self.repack_strict = repack_below, repack_strict
        self.repacker = Repacker(repo, keys, pack_size=pack_size)
        self.now = now or datetime.now(timezone.utc)
        self.backend = repo.data.backend

    def _listing(self, folder: str) -> dict[str, ObjectInfo]:
        base = f"{self.repo.prefix}/{folder}/"
        return {i.key[len(base):]: i for i in self.backend.list(base)}

    def manifests(self, skip: Iterable[str] = ()) -> list[Manifest]:
        """Every manifest in the store (but ``skip``: snapshots a dry-run forget would remove)."""
        names = [n[:-len(".json")] for n in self._listing("snapshots")
                 if n.endswith(".json") and not n.endswith((".summary.json", RECORD_SUFFIX))]
        if names and not self.repo.data.trust.verifies:
            log.warning("pruning %s without checking the manifests' signatures: no verify key is configured (set "
                        "APPSVC_DR_ENCRYPTION__VERIFY_KEYS to the workers' public verify key)", self.repo.prefix)
        return [self._manifest(name) for name in sorted(set(names) - set(skip))]

    def _manifest(self, snapshot: str) -> Manifest:
        """Read the way a restore reads it (``load_manifest`` of the file-share restore): through its
        record, whose signature is checked, and the hashes the record holds. A manifest that fails any check
        stops the prune: what a forged one does not name is never taken as free to delete."""
        key = self.repo.manifest_key(snapshot)
        try:
            return self.repo.manifest(snapshot, self.keys, cached=False)
        except ObjectNotFound:
            if not self.backend.exists(key):
                return Manifest(snapshot, self.repo.stamp, "", "")   # forgotten meanwhile: needs nothing
            raise PermanentError(f"the manifest of snapshot {snapshot} ({key}) has no artifact record, so it cannot "
                                 "be verified; nothing was pruned", hint=UNRECORDED_HINT) from None
        except PermanentError as exc:
            raise PermanentError(f"cannot read the manifest of snapshot {snapshot} ({key}): {exc.message}; "
                                 "nothing was pruned", hint=exc.hint) from exc

    def index_entries(self, names: Iterable[str]) -> PackEntries:
        """Every entry of every index object (read from the store, each checked against its id and its shape)."""
        found: dict[str, dict[str, IndexEntry]] = {}
        for name in names:
            for pack, entries in index_packs(self.repo.read_index(name)).items():
                blobs = found.setdefault(pack, {})
                for entry in entries:
                    blobs.setdefault(entry.blob, entry)
        return {pack: list(blobs.values()) for pack, blobs in found.items()}

    def run(self, *, dry_run: bool = False, forgotten: Iterable[str] = (),
            before_changes: Callable[[], None] = lambda: None) -> PruneReport:
        """Prune. ``forgotten``: count these snapshots as gone (a dry run after a dry-run forget);
        ``before_changes``: called once the plan is made, before the first write (e.g. ``RepoLock.check``)."""
        report = PruneReport(dry_run)
        manifests = self.manifests(forgotten)
        live = reachable(manifests)
        index_objects = {n: i for n, i in self._listing("index").items() if not n.endswith(RECORD_SUFFIX)}
        listing = self._listing("packs")
        entries = self.index_entries(index_objects)
        packs = {n: i for n, i in listing.items() if not n.endswith(RECORD_SUFFIX)}
        present = set(packs) | {p for p in entries if p not in packs and self.backend.exists(self.repo.pack_key(p))}
        plan = classify(entries, live, present)
        repack = choose(plan.keep, live, self.repack_below)
        refusal = self.repacker.refusal(repack) if repack else None
        if refusal is not None and self.repack_strict:
            raise refusal
        if refusal is not None:
            report.repack_skipped = f"{len(repack)} partly used pack(s) kept whole: {refusal.message}. {refusal.hint}"
            repack = []
        needed = to_move(plan.keep, repack, live)
        plan.partial = [p for p in plan.partial if p not in repack]
        plan.unused_bytes -= sum(e.length for p in repack for e in plan.keep[p] if e.blob not in live)
        for pack in repack:
            del plan.keep[pack]
        unindexed = [n for n in packs if n not in entries]
        old = [n for n in unindexed if self.now - packs[n].modified >= self.grace]
        orphans = [n for n in listing if n.endswith(RECORD_SUFFIX) and n[:-len(RECORD_SUFFIX)] not in present]
        report.snapshots, report.reachable_blobs, report.packs_before = len(manifests), len(live), len(entries)
        report.packs_kept, report.packs_partial = len(plan.keep), len(plan.partial)
        report.unused_bytes_kept, report.dangling_packs = plan.unused_bytes, len(plan.dangling)
        report.packs_deleted, report.unindexed_deleted = plan.delete, old
        report.unindexed_young, report.missing_blobs = len(unindexed) - len(old), len(plan.missing)
        report.repack_below, report.packs_repacked = self.repack_below, repack
        report.bytes_to_move = sum(needed.values())
        doomed = plan.delete + old + repack
        old_index: list[str] = []
        if plan.delete or plan.dangling or repack or len(index_objects) > 1:
            body = index_body(plan.keep) if plan.keep else None
            report.new_index = hashlib.sha256(body).hexdigest() if body else None
            old_index = [n for n in index_objects if n != report.new_index]
        report.index_objects_removed = len(old_index)
        report.bytes_freed = sum(self._size(listing, n) + self._size(listing, n + RECORD_SUFFIX) for n in doomed) \
            + sum(listing[n].size for n in orphans) + sum(index_objects[n].size for n in old_index)
        if dry_run:
            return report
        before_changes()
        if repack:                                          # 0. needed blobs of repacked packs, stored and indexed
            report.repacked = self.repacker.run(repack, {p: entries[p] for p in repack}, set(needed))
        if report.new_index:                                # 1. the new index, before anything is deleted
            self.repo.write_index(plan.keep)
        if repack:
            before_changes()                                # repacking took a while: still ours to delete?
        for name in old_index:                              # 2. the old index objects: doomed packs unindexed
            self.backend.delete(self.repo.index_key(name))
            self.backend.delete(self.repo.index_key(name) + RECORD_SUFFIX)     # as merge_index does
        for pack in doomed:                                 # 3. the packs, record first: a pack left without
            self.backend.delete(self.repo.pack_key(pack) + RECORD_SUFFIX)   # one is unindexed garbage
            self.backend.delete(self.repo.pack_key(pack))
        for name in orphans:
            self.backend.delete(f"{self.repo.prefix}/packs/{name}")
        return report

    @staticmethod
    def _size(listing: dict[str, ObjectInfo], name: str) -> int:
        info = listing.get(name)
        return info.size if info else 0
