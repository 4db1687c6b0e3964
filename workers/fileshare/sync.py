"""One snapshot of a tree: walk it in parallel, carry unchanged files over from the previous manifest, read
new and changed ones through the readers, pack new blobs, and build the new manifest.

Unchanged = same size, mtime and attributes as in the previous snapshot (and all its blobs still indexed):
such a file is not read at all. Moved = a path new to this snapshot whose size, mtime and attributes are
those of exactly one file of the previous snapshot (the same file id, where the source gives ids: ``moves``), and
that file's path is gone from the listing (a renamed file or directory): carried over without being read, once
the whole tree is listed. Locked or denied files are
retried ``retries`` times ``wait`` seconds apart (robocopy /R /W) without holding a reader, then recorded as
skipped. The walk itself (what each file gets, and what each reader result means) is ``walk``.

Accounting: a file (or directory) listed but gone when read is *vanished*: counted and listed, not in the
snapshot, which stays complete. Bytes of it already read (a large file deleted while it was streamed) may sit in
packs as blobs no snapshot references (``vanished_bytes`` says how much was read): prune counts them as unused
and reclaims them with their pack (deleted once wholly unused, or repacked below ``--repack-below``). A
file still changing after ``reread`` re-reads is stored as last read, *unstable*: listed, and the snapshot is
partial (the handler sends a warning).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from workers.fileshare.budget import read_buffers_reused, release_memory
from workers.fileshare.chunker import Chunker
from workers.fileshare.feed import Feed
from workers.fileshare.packing import PackingSpec
from workers.fileshare.readers import ReaderPool
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.syncstats import SyncStats
from workers.fileshare.tree import Tree
from workers.fileshare.walk import Walk
from workers.repository.budget import PACK_MARGIN, Budget, packing_floor
from workers.repository.manifest import Manifest
from workers.repository.packer import Packer
from workers.repository.repo import Repository

log = logging.getLogger("appsvc_dr.fileshare")
DEFAULT_PROCESSES = 1           # each ~75 MiB: with the default budget the tree stays <= 300 MiB (bench_fileshare n)
PACKING_PROCESSES = 2           # when they pack and upload themselves: the whole path runs on two cores


@dataclass
class SyncResult:
    manifest: Manifest
    stats: SyncStats


class Sync:
    def __init__(self, settings: FileshareSettings, repo: Repository, tree: Tree, *,
                 progress: Callable[[str, int], None] = lambda kind, n: None,
                 cancelled: threading.Event | None = None, logger: logging.LoggerAdapter | None = None) -> None:
        self.s, self.repo, self.tree, self.progress = settings, repo, tree, progress
        self.cancelled = cancelled or threading.Event()
        self.log = logger or logging.LoggerAdapter(log, {})

    def packing(self) -> PackingSpec | None:
        """Reader processes pack and upload themselves (``reader_packing``) when the tree is an SMB share and the
        store can be opened again in another process (built from settings: ``ArtifactStore.opener``); see
        ``packing``."""
        opener = self.repo.data.opener
        if not self.s.reader_packing or self.tree.spec()["kind"] != "smb" or opener is None:
            return None
        return PackingSpec(opener, self.repo.stamp, self.s.pack_size - PACK_MARGIN)

    def processes(self, packing: PackingSpec | None) -> int:
        if self.tree.spec()["kind"] != "smb":
            return 0
        return self.s.processes or (PACKING_PROCESSES if packing else DEFAULT_PROCESSES)

    def run(self, snapshot_id: str, stamp: str, set_id: str, sub_path: str | None) -> SyncResult:
        started = time.monotonic()
        read_buffers_reused()
        self.tree.connect()
        self.repo.load_index()
        parent = self.repo.latest(self.tree.name, sub_path, before=snapshot_id)
        previous = self.repo.cached_manifest(parent["snapshot_id"]) if parent else None
        if parent and previous is None:
            self.log.info("previous snapshot %s is encrypted and not in the local cache: every file is read "
                          "again (content already stored is not uploaded again)", parent["snapshot_id"])
        chunker = Chunker(self.s.chunk_avg)
        manifest = Manifest(snapshot_id, stamp, set_id, self.tree.name, sub_path,
                            parent=parent["snapshot_id"] if parent else None,
                            created_at=datetime.now(timezone.utc).isoformat(), chunker=chunker.params)
        try:
            stats = self._read_and_pack(manifest, previous, chunker, sub_path, started)
        finally:
            release_memory()                            # the job's buffers went with its frame: back to the system
        self.log.info("snapshot %s: %d files, %d dirs, %d bytes; %d unchanged (%d moved), %d read (%d bytes), %d new "
                      "bytes in %d pack(s), %d skipped, %d vanished, %d unstable", snapshot_id, stats.files,
                      stats.dirs, stats.bytes, stats.files_unchanged, stats.files_moved,
                      stats.files_new + stats.files_changed, stats.bytes_read, stats.new_bytes,
                      stats.packs, stats.skipped_count, stats.vanished_count, stats.changed_while_read)
        if stats.vanished_bytes:
            self.log.info("%d bytes were read of files that vanished afterwards; what of them was packed is "
                          "referenced by no snapshot: prune counts it as unused and reclaims it with its pack",
                          stats.vanished_bytes)
        return SyncResult(manifest, stats)

    def _read_and_pack(self, manifest: Manifest, previous: Manifest | None, chunker: Chunker, sub_path: str | None,
                       started: float) -> SyncStats:
        """Walk, read and pack into ``manifest``; the budget, buffers, readers and packer live only here."""
        packing = self.packing()
        processes = self.processes(packing)
        # the packers' floors (this process's, or each packing process's) come out of the job's budget first
        floors = packing_floor(self.s.pack_size) * (processes if packing else 1)
        budget = Budget(self.s.memory_budget - floors)
        packer = Packer(self.repo, target=self.s.pack_size - PACK_MARGIN, uploads=self.s.uploads,
                        progress=self.progress, budget=budget)
        pool = ReaderPool(self.tree, chunker, store=packer.add, reread=self.s.reread,
                          threads=self.s.transfers, processes=processes,
                          known_ids=self.repo.index.sorted_ids, packing=packing)
        walk = Walk(self.s, self.tree, manifest, {e.path: e for e in previous.entries} if previous else {}, packer,
                    Feed(budget, chunker.max, pool.submit), progress=self.progress, cancelled=self.cancelled,
                    log=self.log)
        try:
            walk.run(pool, sub_path)
            pool.close(on_message=walk.dispatch)      # packing processes store their last packs meanwhile
            packer.finish()
        except BaseException:
            packer.cancel()                             # readers blocked in packer.add raise at once
            pool.close(abort=True, on_message=walk.salvage)
            packer.abort()
            raise
        manifest.sort()
        manifest.partial = bool(manifest.skipped or walk.unstable)
        return walk.stats(packer, previous, time.monotonic() - started)
