"""Group new blobs into pack objects of at most ``target`` bytes and upload them in the background.

``add`` is thread-safe: reader threads copy a chunk straight from their read buffer into the pack being filled
(one copy, no hop through a queue). A sealed pack is encoded at once by the thread that sealed it, its buffer
handed back for the next pack, and only the encoded copy waits for and goes through its upload.

Reader processes (``workers.fileshare.readers``) run a packer of their own (``claim`` and ``on_stored`` given):
before encoding a pack they ask the sync's packer to :meth:`claim` its blobs, drop the ones another process
stores (so a blob is stored once however many processes meet it), and hand what they stored to the sync's
packer (:meth:`stored`), which indexes it: only index records cross the pipe, never content.

Memory is bounded by the job's :class:`~workers.repository.budget.Budget`: the pack being filled and one upload
are the packer's own floor (always possible, so packing never waits for readers); each further upload (up to
``uploads``) runs only while the shared budget has room for it, else a sealed pack waits for an upload to end
(``add`` blocks meanwhile: back-pressure on the readers). The buffer of the floor's upload is reused for the
next pack (no new buffer to page-fault); those of further uploads are freed when they end, and all of them
with the packer at the end of the job.

Stored packs are indexed in batches (an index object every ``index_every`` packs, or after ``index_seconds``),
and whatever is stored but not yet indexed is indexed on ``finish`` and, best effort, on ``abort`` or an
upload error — so an interrupted sync leaves indexed packs behind (their blobs are reused by the next run);
a worker killed outright loses at most the last batch, whose packs are uploaded again.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Collection, Container

from workers.repository.budget import UPLOAD_COPIES, Budget
from workers.repository.index import IndexEntry, PackEntries
from workers.repository.repo import Repository
from workers.storage.codec import EncodedBuffer

log = logging.getLogger("appsvc_dr.fileshare")
# 8 packs (128 MiB at the default size) per index object: 8x fewer small objects to list and load at the start
# of every sync, and 8x fewer index requests, for at most one batch uploaded again after a crash or outage.
INDEX_EVERY, INDEX_SECONDS = 8, 30.0


Claim = Callable[[list[IndexEntry]], Collection[str]]

OnStored = Callable[[str, list[IndexEntry], int, bool], None]


class Packer:
    """``known``: blobs stored already (default: the repository's index). ``claim``: asked before a pack is encoded,
    gives the ids of its blobs another process stores (dropped from the pack). ``on_stored(pack, blobs,
    stored_size, deduplicated)``: receives each stored pack instead of this packer indexing it."""

    def __init__(self, repo: Repository, *, target: int, uploads: int = 2,
                 progress: Callable[[str, int], None] = lambda kind, n: None,
                 index_every: int = INDEX_EVERY, index_seconds: float = INDEX_SECONDS,
                 budget: Budget | None = None, known: Container[str] | None = None, claim: Claim | None = None,
                 on_stored: OnStored | None = None) -> None:
        self.repo, self.target, self.progress = repo, target, progress
        self.uploads, self.upload_cost = uploads, UPLOAD_COPIES * target
        self.budget = budget or Budget(uploads * self.upload_cost)
        self.index_every, self.index_seconds = index_every, index_seconds
        self._known = known if known is not None else repo.index
        self._claim, self._on_stored = claim, on_stored
        self._buf: bytearray | None = None
        self._len = 0
        self._blobs: list[IndexEntry] = []
        self._pending: set[str] = set()              # queued, uploading, claimed, or stored but not indexed yet
        self._spare: bytearray | None = None          # a pack buffer back from encoding, for the next pack
        self._floor = threading.Semaphore(1)            # the one upload that needs no budget
        self._extra = 0                                 # further uploads running on budget
        self._pool = ThreadPoolExecutor(uploads, thread_name_prefix="fileshare-pack")
        self._futures: list[Future] = []
        self._lock = threading.Lock()                # the pack being filled
        self._stats = threading.Lock()
        self._unindexed: PackEntries = {}
        self._indexed_at = time.monotonic()
        self._error: BaseException | None = None
        self.packs = self.new_blobs = self.new_bytes = self.stored_bytes = 0

    def known(self, blob: str) -> bool:
        return blob in self._known or blob in self._pending

    def add(self, blob: str, data: bytes | memoryview) -> bool:
        """Queue ``data`` under ``blob`` unless that blob is stored or queued already. True if queued."""
        size = len(data)
        with self._lock:
            self._raise()
            if self.known(blob):
                return False
            if self._blobs and self._len + size > self.target:
                self._seal()                            # packs stay <= target: one S3 part each
            if self._buf is None:
                self._buf = self._take()
            if size > len(self._buf):                   # a chunk larger than a pack: a pack of its own
                self._buf = bytearray(size)
            self._buf[self._len:self._len + size] = data
            self._blobs.append(IndexEntry(blob, self._len, size))
            self._len += size
            self._pending.add(blob)
            self.new_blobs += 1
            self.new_bytes += size
        return True

    def check(self) -> None:
        """Raise the first upload error, if any."""
        self._raise()

    # ---- the sync's side of reader processes' packers -------------------------------------------------
    def claim(self, blobs: list[IndexEntry]) -> list[str]:
        """A reader process is about to store ``blobs``: the ids among them stored or claimed already (it drops
        them from its pack); the others are now its to store, and count as new here."""
        refused = []
        with self._lock:
            for entry in blobs:
                if self.known(entry.blob):
                    refused.append(entry.blob)
                    continue
                self._pending.add(entry.blob)
                self.new_blobs += 1
                self.new_bytes += entry.length
        return refused

    def stored(self, pack: str, blobs: list[IndexEntry], stored_size: int, deduplicated: bool) -> None:
        """A reader process stored ``pack``: indexed with the next batch (written in the background)."""
        if self._account(pack, blobs, stored_size, deduplicated):
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(self._pool.submit(self._index_batch))

    # ---- packing -------------------------------------------------------------------------------------
    def _take(self) -> bytearray:
        buf, self._spare = self._spare, None
        return buf if buf is not None else bytearray(self.target)

    def _give_back(self, buf: bytearray) -> None:
        if len(buf) == self.target:
            self._spare = buf

    def _slot(self) -> int:
        """Wait for an upload slot: the floor's (cost 0) or a further one the budget has room for (its cost)."""
        while True:
            self._raise()
            if self._floor.acquire(blocking=False):
                return 0
            with self._stats:
                if self._extra < self.uploads - 1 and self.budget.try_take(self.upload_cost):
                    self._extra += 1
                    return self.upload_cost
            if self._floor.acquire(timeout=0.2):
                return 0

    def _release(self, cost: int) -> None:
        if cost:
            with self._stats:
                self._extra -= 1
            self.budget.give(cost)
        else:
            self._floor.release()

    def _seal(self) -> None:
        """Encode the pack being filled (once an upload slot is free: at most ``uploads`` encoded packs exist) and
        hand it to an upload thread; its buffer is back for the next pack unless the encoded pieces are views of it."""
        if not self._blobs:
            return
        cost = self._slot()
        buf, length, blobs = self._buf, self._len, self._blobs
        self._buf, self._len, self._blobs = None, 0, []
        assert buf is not None
        try:
            if self._claim is not None:
                length, blobs = _without(buf, length, blobs, set(self._claim(blobs)))
            encoded = self.repo.encode_pack(memoryview(buf)[:length]) if blobs else None
        except BaseException:
            self._release(cost)
            raise
        if encoded is None or encoded.detached:
            self._give_back(buf)
            buf = None
        if encoded is None:                             # every blob of it is stored by another process
            self._release(cost)
            return
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(self._upload, [encoded], buf, blobs, cost))

    def _upload(self, holder: list[EncodedBuffer], buf: bytearray | None, blobs: list[IndexEntry], cost: int) -> None:
        try:
            if self._error is not None:
                return
            pack, stored = self.repo.store_pack(holder.pop())
            if self._account(pack, blobs, stored.stored_size or 0, stored.deduplicated):
                self._write_index()
        except BaseException as exc:  # noqa: BLE001 - handed to the producers
            self._error = self._error or exc
        finally:
            holder.clear()                              # the encoded copy goes before the slot is free
            self._release(cost)
            if buf is not None:
                self._give_back(buf)

    def _account(self, pack: str, blobs: list[IndexEntry], stored_size: int, deduplicated: bool) -> bool:
        """Count a stored pack and queue it for the index (or hand it on); True when an index batch is due."""
        if self._on_stored is not None:
            self._on_stored(pack, blobs, stored_size, deduplicated)
            for entry in blobs:                         # the sync's packer knows them now
                self._pending.discard(entry.blob)
            return False
        with self._stats:
            self.packs += 0 if deduplicated else 1
            self.stored_bytes += 0 if deduplicated else stored_size
            self._unindexed[pack] = blobs
            due = len(self._unindexed) >= self.index_every or \
                time.monotonic() - self._indexed_at >= self.index_seconds
        self.progress("uploaded", 0 if deduplicated else stored_size)
        return due

    def _index_batch(self) -> None:
        try:
            self._write_index()
        except BaseException as exc:  # noqa: BLE001 - raised by check() and finish()
            self._error = self._error or exc

    def _write_index(self) -> None:
        with self._stats:
            batch, self._unindexed = self._unindexed, {}
            self._indexed_at = time.monotonic()
        if not batch:
            return
        try:
            self.repo.write_index(batch)
        except BaseException:
            with self._stats:
                self._unindexed.update(batch)          # still pending: retried on finish / abort
            raise
        for blobs in batch.values():
            for entry in blobs:
                self._pending.discard(entry.blob)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Upload what is left, wait for every upload and index what was stored; raises the first error."""
        try:
            with self._lock:
                self._seal()
            for future in list(self._futures):
                future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._index_stored(best_effort=self._error is not None)
        self._raise()

    def cancel(self) -> None:
        """Make every waiting or later ``add`` raise at once (the sync is failing)."""
        self._error = self._error or RuntimeError("aborted")

    def abort(self) -> None:
        self.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._index_stored(best_effort=True)

    def _index_stored(self, *, best_effort: bool) -> None:
        try:
            self._write_index()
        except Exception:
            if not best_effort:
                raise
            log.warning("could not index the packs stored so far; the next run uploads them again", exc_info=True)


def _without(buf: bytearray, length: int, blobs: list[IndexEntry], drop: set[str]) -> tuple[int, list[IndexEntry]]:
    """Remove the blobs named in ``drop`` from the pack in ``buf`` (the rest moved down in place); the new
    length and entries."""
    if not drop:
        return length, blobs
    kept: list[IndexEntry] = []
    end = 0
    for entry in blobs:
        if entry.blob in drop:
            continue
        if entry.offset != end:
            buf[end:end + entry.length] = bytes(buf[entry.offset:entry.offset + entry.length])
        kept.append(IndexEntry(entry.blob, end, entry.length))
        end += entry.length
    return end, kept
