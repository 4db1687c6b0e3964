"""The walk of one sync (``workers.fileshare.sync``): list the tree, carry unchanged and moved files over from the
previous manifest, send new and changed ones to the readers (through the ``feed``, within the memory budget), and
turn what the readers report (``messages``) into manifest entries, retries (robocopy /R /W), skips and counts.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

from contracts.events.fileshare import MAX_LISTED
from workers.fileshare.feed import Feed
from workers.fileshare.messages import Claim, FileFailed, FileRead, ListDir, Listed, ListFailed, NewBlob, PackStored, \
    ReaderFailed, Result
from workers.fileshare.moves import Moves
from workers.fileshare.readers import ReaderPool
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.syncstats import SyncStats
from workers.fileshare.tree import SourceDenied, SourceMisconfigured, SourceUnavailable, Stat, Tree, join
from workers.repository.manifest import Entry, Manifest
from workers.repository.packer import Packer
from workers.repository.paths import path_problem, printable
from workers.runtime.errors import PermanentError, TransientError


@dataclass(slots=True)
class Pending:
    """A file being read (or waiting to be read again)."""
    path: str
    listed: Stat
    tries: int = 0                  # retries so far (locked, denied, changed)
    changed: bool = False           # in the previous snapshot with other size/mtime/attributes (else new)


class Retry(NamedTuple):
    """A directory to list again (``dir``) or a file to read again (``file_id``), once ``due``."""
    due: float
    seq: int                        # ties broken by order, never by comparing the rest
    dir: str | None = None
    file_id: int = 0


def _fatal(failed: ReaderFailed) -> Exception:
    if failed.transient:
        kind = SourceUnavailable if failed.name == "SourceUnavailable" else TransientError
        return kind(failed.message, hint=failed.hint)
    kinds = {"SourceDenied": SourceDenied, "SourceMisconfigured": SourceMisconfigured}
    return kinds.get(failed.name, PermanentError)(failed.message, hint=failed.hint)


@dataclass(slots=True)
class Counts:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    moved: int = 0
    read: int = 0                   # bytes
    vanished_bytes: int = 0


class Walk:
    """One sync's walk: list the tree, decide per file (unchanged, moved, read), hand reads to the feed, and turn
    the readers' results into manifest entries, retries, skips and counts."""

    def __init__(self, settings: FileshareSettings, tree: Tree, manifest: Manifest, previous: dict[str, Entry],
                 packer: Packer, feed: Feed, *, progress: Callable[[str, int], None], cancelled: threading.Event,
                 log: logging.LoggerAdapter) -> None:
        self.s, self.tree, self.manifest, self.previous, self.packer = settings, tree, manifest, previous, packer
        self.feed, self.progress, self.cancelled, self.log = feed, progress, cancelled, log
        self.files: dict[int, Pending] = {}          # by file id
        self.dirs_open = 0
        self.deferred: list[Retry] = []              # a heap, soonest first
        self._seq = itertools.count()
        self.counts = Counts()
        self.vanished: list[str] = []
        self.unstable: list[str] = []
        self.dir_tries: dict[str, int] = {}
        self._ids = 0
        self.moves = Moves(previous)
        self._handlers: dict[type, Callable] = {Listed: self._on_dir, ListFailed: self._on_dir_fail,
                                                NewBlob: self._on_blob, FileRead: self._on_file,
                                                FileFailed: self._on_file_fail, ReaderFailed: self._on_fatal,
                                                Claim: self._on_claim, PackStored: self._on_pack}

    def run(self, pool: ReaderPool, sub_path: str | None) -> None:
        self.pool = pool
        if sub_path:
            st = self.tree.stat(sub_path)
            if not st.is_dir:
                raise PermanentError(f"{sub_path!r} is not a directory of {self.tree.name}",
                                     hint="Fix the sub_path of the fileshare-sync-requested event.")
            self.manifest.entries.append(Entry(sub_path, True, 0, st.mtime_ns, st.attrs))
        self._list(sub_path or "")
        while self.dirs_open or self.files or self.moves.pending:
            self.packer.check()
            if not self.dirs_open and self.moves.pending:
                self._resolve_moves()                 # the whole tree is listed: old paths known gone or not
                continue
            if self.cancelled.is_set():
                raise TransientError("the worker is shutting down; the snapshot resumes from the stored packs")
            now = time.monotonic()
            while self.deferred and self.deferred[0].due <= now:
                self._retry(heapq.heappop(self.deferred))
            if not self.dirs_open or self.feed.reading < 2 * pool.count:
                self.feed.seal()
            self.feed.pump()
            message = pool.get(timeout=0.1)
            if message is None:
                if pool.dead():
                    raise TransientError("a reader process died; the job is retried")
                continue
            self.dispatch(message)

    def dispatch(self, message: Result) -> None:
        """Act on one reader result (also what packing processes still say while the pool closes)."""
        self._handlers[type(message)](message)

    # ---- dispatch --------------------------------------------------------------------------------
    def _list(self, rel: str) -> None:
        self.dirs_open += 1
        self.pool.submit(ListDir(rel))

    def _retry(self, retry: Retry) -> None:
        if retry.dir is not None:
            self.dirs_open -= 1                       # counted again by _list
            self._list(retry.dir)
        else:
            self._queue(retry.file_id)

    def _queue(self, file_id: int) -> None:
        pending = self.files[file_id]
        self.feed.add(file_id, pending.path, pending.listed)

    def _defer(self, *, dir: str | None = None, file_id: int = 0) -> None:
        heapq.heappush(self.deferred, Retry(time.monotonic() + self.s.wait, next(self._seq), dir, file_id))

    def _skip(self, path: str, message: str, kind: str) -> None:
        reason = f"{message} ({kind}; still after {self.s.retries} retries {self.s.wait:g}s apart)"
        self.manifest.skipped.append({"path": path, "reason": reason})
        self.log.warning("skipped %s: %s", path, reason)

    # ---- results ---------------------------------------------------------------------------------
    def _on_dir(self, listed: Listed) -> None:
        self.dirs_open -= 1
        for st in listed.stats:
            path = join(listed.rel, st.name)
            unsafe = path_problem(path)
            if unsafe:                                  # a name no restore would write (a local source only)
                self.manifest.skipped.append({"path": printable(path), "reason": f"not restorable: {unsafe}"})
                self.log.warning("skipped %r: not restorable: %s", path, unsafe)
                continue
            if st.is_dir:
                self.manifest.entries.append(Entry(path, True, 0, st.mtime_ns, st.attrs))
                self._list(path)
                continue
            prev = self.previous.get(path)
            if prev is not None:
                self.moves.still_listed(prev)
                if self._reusable(prev, st):
                    same = prev.file_id == st.file_id
                    self.manifest.entries.append(prev if same else replace(prev, file_id=st.file_id))
                    self.counts.unchanged += 1
                    continue
            elif self.moves.candidate(path, st):
                continue
            self._read(path, st, changed=prev is not None)

    def _read(self, path: str, st: Stat, *, changed: bool) -> None:
        self._ids += 1
        self.files[self._ids] = Pending(path, st, changed=changed)
        self._queue(self._ids)

    def _reusable(self, prev: Entry, st: Stat) -> bool:
        return not prev.is_dir and not prev.unstable and \
            (prev.size, prev.mtime_ns, prev.attrs) == (st.size, st.mtime_ns, st.attrs) and \
            all(b in self.packer.repo.index for b in prev.blobs)

    def _resolve_moves(self) -> None:
        for move in self.moves.resolve():
            prev, st = move.prev, move.st
            if prev is None or not self._reusable(prev, st):
                self._read(move.path, st, changed=False)
                continue
            self.manifest.entries.append(Entry(move.path, False, prev.size, prev.mtime_ns, prev.attrs, prev.sha256,
                                               prev.blobs, file_id=st.file_id))
            self.counts.unchanged += 1
            self.counts.moved += 1

    def _on_dir_fail(self, failed: ListFailed) -> None:
        rel = failed.rel
        tries = self.dir_tries.get(rel, 0)
        if failed.kind in ("locked", "denied") and tries < self.s.retries:
            self.dir_tries[rel] = tries + 1
            self._defer(dir=rel)                        # still counted in dirs_open
            return
        self.dirs_open -= 1
        if failed.kind == "vanished":
            self.manifest.entries = [e for e in self.manifest.entries if e.path != rel]   # rare: a full pass is fine
            self._vanish(rel + "/", failed.message)
        else:
            self._skip(rel + "/", failed.message, failed.kind)

    def _vanish(self, path: str, message: str, read: int = 0) -> None:
        self.vanished.append(path)
        self.counts.vanished_bytes += read
        self.log.info("%s vanished during the sync (%s): not in this snapshot", path, message)

    def _on_blob(self, new: NewBlob) -> None:
        self.packer.add(new.blob, new.data)

    def salvage(self, message: Result) -> None:
        """While the sync fails: a pack a reader process stored is still indexed (so the retry reuses it)."""
        if type(message) is PackStored:
            self._on_pack(message)

    def _on_claim(self, claim: Claim) -> None:
        self.pool.answer(claim.proc, self.packer.claim(claim.blobs))

    def _on_pack(self, stored: PackStored) -> None:
        self.packer.stored(stored.pack, stored.blobs, stored.stored_size, stored.deduplicated)

    def _on_file(self, read: FileRead) -> None:
        pending, (sha256, after, blobs, unstable) = self.files.pop(read.file_id), read.content
        self.feed.done(read.file_id)
        self.manifest.entries.append(Entry(pending.path, False, after.size, after.mtime_ns, after.attrs, sha256,
                                           tuple(blobs), unstable, pending.listed.file_id))
        if pending.changed:
            self.counts.changed += 1
        else:
            self.counts.new += 1
        self.counts.read += after.size
        self.progress("read", after.size)
        if unstable:
            self.unstable.append(pending.path)
            self.log.warning("%s kept changing while it was read; stored as last read (the snapshot is partial)",
                                  pending.path)

    def _on_file_fail(self, failed: FileFailed) -> None:
        self.feed.done(failed.file_id)
        pending = self.files[failed.file_id]
        if failed.kind in ("locked", "denied", "changed") and pending.tries < self.s.retries:
            pending.tries += 1
            self._defer(file_id=failed.file_id)
            return
        del self.files[failed.file_id]
        if failed.kind == "vanished":
            self._vanish(pending.path, failed.message, failed.read)
        else:
            self._skip(pending.path, failed.message, failed.kind)

    def _on_fatal(self, failed: ReaderFailed) -> None:
        self.packer.check()                             # a reader thread hit the packer's upload error: raise that
        raise _fatal(failed)

    # ---- totals ----------------------------------------------------------------------------------
    def stats(self, packer: Packer, previous: Manifest | None, duration: float) -> SyncStats:
        m, counts = self.manifest, self.counts
        present = {e.path for e in m.files()}
        removed = sum(1 for e in previous.files() if e.path not in present) if previous else 0
        return SyncStats(
            snapshot_id=m.snapshot_id, source=m.source, sub_path=m.sub_path,
            files=len(present), dirs=sum(1 for _ in m.dirs()), bytes=m.total_bytes,
            files_new=counts.new, files_changed=counts.changed, files_unchanged=counts.unchanged,
            files_moved=counts.moved, files_removed=removed, bytes_read=counts.read, new_bytes=packer.new_bytes,
            stored_bytes=packer.stored_bytes, packs=packer.packs, skipped=m.skipped[:100], skipped_count=len(m.skipped),
            changed_while_read=len(self.unstable), unstable=sorted(self.unstable)[:MAX_LISTED],
            vanished=sorted(self.vanished)[:MAX_LISTED], vanished_count=len(self.vanished),
            vanished_bytes=counts.vanished_bytes, partial=m.partial, parent_snapshot_id=m.parent,
            duration_seconds=round(duration, 3))
