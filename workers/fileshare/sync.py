"""One snapshot of a tree: walk it in parallel, carry unchanged files over from the previous manifest, read
new and changed ones through the readers, pack new blobs, and build the new manifest.

Unchanged = same size, mtime and attributes as in the previous snapshot (and all its blobs still indexed):
such a file is not read at all. Moved = a path new to this snapshot whose size, mtime and attributes are
those of exactly one file of the previous snapshot (the same file id, where the source gives ids: ``moves``), and
that file's path is gone from the listing (a renamed file or directory): carried over without being read, once
the whole tree is listed. Locked or denied files are
retried ``retries`` times ``wait`` seconds apart (robocopy /R /W) without holding a reader, then recorded as
skipped.

Accounting: a file (or directory) listed but gone when read is *vanished*: counted and listed, not in the
snapshot, which stays complete. Bytes of it already read (a large file deleted while it was streamed) may sit in
packs as blobs no snapshot references (``vanished_bytes`` says how much was read): prune counts them as unused
and reclaims them with their pack (deleted once wholly unused, or repacked below ``--repack-below``). A
file still changing after ``reread`` re-reads is stored as last read, *unstable*: listed, and the snapshot is
partial (the handler sends a warning).
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

from contracts.events.fileshare import MAX_LISTED
from workers.fileshare.budget import large_buffers_mapped, release_memory
from workers.fileshare.chunker import Chunker
from workers.fileshare.feed import Feed
from workers.fileshare.moves import Moves
from workers.fileshare.readers import ReaderPool
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.tree import SourceDenied, SourceMisconfigured, SourceUnavailable, Tree, join
from workers.repository.budget import PACK_MARGIN, Budget, packing_floor
from workers.repository.manifest import Entry, Manifest
from workers.repository.packer import Packer
from workers.repository.paths import path_problem, printable
from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError, TransientError

log = logging.getLogger("appsvc_dr.fileshare")
DEFAULT_PROCESSES = 1           # each ~75 MiB: with the default budget the tree stays <= 300 MiB (bench_fileshare n)


@dataclass
class SyncResult:
    manifest: Manifest
    stats: dict = field(default_factory=dict)


def _fatal(transient: bool, name: str, message: str, hint: str) -> Exception:
    if transient:
        kind = SourceUnavailable if name == "SourceUnavailable" else TransientError
        return kind(message, hint=hint)
    kinds = {"SourceDenied": SourceDenied, "SourceMisconfigured": SourceMisconfigured}
    return kinds.get(name, PermanentError)(message, hint=hint)


class Sync:
    def __init__(self, settings: FileshareSettings, repo: Repository, tree: Tree, *,
                 progress: Callable[[str, int], None] = lambda kind, n: None,
                 cancelled: threading.Event | None = None, logger: logging.LoggerAdapter | None = None) -> None:
        self.s, self.repo, self.tree, self.progress = settings, repo, tree, progress
        self.cancelled = cancelled or threading.Event()
        self.log = logger or logging.LoggerAdapter(log, {})

    def processes(self) -> int:
        if self.tree.spec()["kind"] != "smb":
            return 0
        return self.s.processes or DEFAULT_PROCESSES

    def run(self, snapshot_id: str, stamp: str, set_id: str, sub_path: str | None) -> SyncResult:
        started = time.monotonic()
        large_buffers_mapped()
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
                      "bytes in %d pack(s), %d skipped, %d vanished, %d unstable", snapshot_id, stats["files"],
                      stats["dirs"], stats["bytes"], stats["files_unchanged"], stats["files_moved"],
                      stats["files_new"] + stats["files_changed"], stats["bytes_read"], stats["new_bytes"],
                      stats["packs"], stats["skipped_count"], stats["vanished_count"], stats["changed_while_read"])
        if stats["vanished_bytes"]:
            self.log.info("%d bytes were read of files that vanished afterwards; what of them was packed is "
                          "referenced by no snapshot: prune counts it as unused and reclaims it with its pack",
                          stats["vanished_bytes"])
        return SyncResult(manifest, stats)

    def _read_and_pack(self, manifest: Manifest, previous: Manifest | None, chunker: Chunker, sub_path: str | None,
                       started: float) -> dict:
        """Walk, read and pack into ``manifest``; the budget, buffers, readers and packer live only here."""
        budget = Budget(self.s.memory_budget - packing_floor(self.s.pack_size))
        packer = Packer(self.repo, target=self.s.pack_size - PACK_MARGIN, uploads=self.s.uploads,
                        progress=self.progress, budget=budget)
        pool = ReaderPool(self.tree, chunker, store=packer.add, reread=self.s.reread,
                          threads=self.s.transfers, processes=self.processes(),
                          known_ids=self.repo.index.sorted_ids)
        walk = _Walk(self, manifest, {e.path: e for e in previous.entries} if previous else {}, packer,
                     Feed(budget, chunker.max, pool.submit))
        try:
            walk.run(pool, sub_path)
            pool.close()
            packer.finish()
        except BaseException:
            packer.cancel()                             # readers blocked in packer.add raise at once
            pool.close(abort=True)
            packer.abort()
            raise
        manifest.sort()
        manifest.partial = bool(manifest.skipped or walk.unstable)
        return walk.stats(packer, previous, time.monotonic() - started)


class _Walk:
    def __init__(self, sync: Sync, manifest: Manifest, previous: dict[str, Entry], packer: Packer,
                 feed: Feed) -> None:
        self.sync, self.s, self.manifest, self.previous, self.packer = sync, sync.s, manifest, previous, packer
        self.feed = feed
        self.files: dict[int, list] = {}             # file id -> [rel, listed Stat, tries, "new"/"changed"]
        self.dirs_open = 0
        self.deferred: list[tuple[float, int, tuple]] = []
        self.counts = {"new": 0, "changed": 0, "unchanged": 0, "moved": 0, "read": 0, "vanished_bytes": 0}
        self.vanished: list[str] = []
        self.unstable: list[str] = []
        self.dir_tries: dict[str, int] = {}
        self._ids = 0
        self.moves = Moves(previous)

    def run(self, pool: ReaderPool, sub_path: str | None) -> None:
        self.pool = pool
        if sub_path:
            st = self.sync.tree.stat(sub_path)
            if not st.is_dir:
                raise PermanentError(f"{sub_path!r} is not a directory of {self.sync.tree.name}",
                                     hint="Fix the sub_path of the fileshare-sync-requested event.")
            self.manifest.entries.append(Entry(sub_path, True, 0, st.mtime_ns, st.attrs))
        self._list(sub_path or "")
        while self.dirs_open or self.files or self.moves.pending:
            self.packer.check()
            if not self.dirs_open and self.moves.pending:
                self._resolve_moves()                 # the whole tree is listed: old paths known gone or not
                continue
            if self.sync.cancelled.is_set():
                raise TransientError("the worker is shutting down; the snapshot resumes from the stored packs")
            now = time.monotonic()
            while self.deferred and self.deferred[0][0] <= now:
                _, _, task = heapq.heappop(self.deferred)
                self._retry(task)
            if not self.dirs_open or self.feed.reading < 2 * pool.count:
                self.feed.seal()
            self.feed.pump()
            message = pool.get(timeout=0.1)
            if message is None:
                if pool.dead():
                    raise TransientError("a reader process died; the job is retried")
                continue
            getattr(self, "_on_" + message[0].replace("-", "_"))(*message[1:])

    # ---- dispatch --------------------------------------------------------------------------------
    def _list(self, rel: str) -> None:
        self.dirs_open += 1
        self.pool.submit(("list", rel))

    def _retry(self, task: tuple) -> None:
        if task[0] == "list":
            self.dirs_open -= 1                       # counted again by _list
            self._list(task[1])
        else:
            self._queue(task[1])

    def _queue(self, file_id: int) -> None:
        rel, listed = self.files[file_id][:2]
        self.feed.add(file_id, rel, listed)

    def _defer(self, task: tuple) -> None:
        heapq.heappush(self.deferred, (time.monotonic() + self.s.wait, id(task), task))

    def _skip(self, path: str, message: str, kind: str) -> None:
        reason = f"{message} ({kind}; still after {self.s.retries} retries {self.s.wait:g}s apart)"
        self.manifest.skipped.append({"path": path, "reason": reason})
        self.sync.log.warning("skipped %s: %s", path, reason)

    # ---- results ---------------------------------------------------------------------------------
    def _on_dir(self, rel: str, stats: list) -> None:
        self.dirs_open -= 1
        for st in stats:
            path = join(rel, st.name)
            unsafe = path_problem(path)
            if unsafe:                                  # a name no restore would write (a local source only)
                self.manifest.skipped.append({"path": printable(path), "reason": f"not restorable: {unsafe}"})
                self.sync.log.warning("skipped %r: not restorable: %s", path, unsafe)
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
                    self.counts["unchanged"] += 1
                    continue
            elif self.moves.candidate(path, st):
                continue
            self._read(path, st, "new" if prev is None else "changed")

    def _read(self, path: str, st, how: str) -> None:
        self._ids += 1
        self.files[self._ids] = [path, st, 0, how]
        self._queue(self._ids)

    def _reusable(self, prev: Entry, st) -> bool:
        return not prev.is_dir and not prev.unstable and \
            (prev.size, prev.mtime_ns, prev.attrs) == (st.size, st.mtime_ns, st.attrs) and \
            all(b in self.packer.repo.index for b in prev.blobs)

    def _resolve_moves(self) -> None:
        for path, st, prev in self.moves.resolve():
            if prev is None or not self._reusable(prev, st):
                self._read(path, st, "new")
                continue
            self.manifest.entries.append(Entry(path, False, prev.size, prev.mtime_ns, prev.attrs, prev.sha256,
                                               prev.blobs, file_id=st.file_id))
            self.counts["unchanged"] += 1
            self.counts["moved"] += 1

    def _on_dir_fail(self, rel: str, kind: str, message: str) -> None:
        tries = self.dir_tries.get(rel, 0)
        if kind in ("locked", "denied") and tries < self.s.retries:
            self.dir_tries[rel] = tries + 1
            self._defer(("list", rel))                  # still counted in dirs_open
            return
        self.dirs_open -= 1
        if kind == "vanished":
            self.manifest.entries = [e for e in self.manifest.entries if e.path != rel]   # rare: a full pass is fine
            self._vanish(rel + "/", message)
        else:
            self._skip(rel + "/", message, kind)

    def _vanish(self, path: str, message: str, read: int = 0) -> None:
        self.vanished.append(path)
        self.counts["vanished_bytes"] += read
        self.sync.log.info("%s vanished during the sync (%s): not in this snapshot", path, message)

    def _on_blob(self, blob: str, data: bytes) -> None:
        self.packer.add(blob, data)

    def _on_file(self, file_id: int, sha256: str, after, blobs: list, unstable: bool) -> None:
        rel, listed, _, how = self.files.pop(file_id)
        self.feed.done(file_id)
        self.manifest.entries.append(Entry(rel, False, after.size, after.mtime_ns, after.attrs, sha256,
                                           tuple(blobs), unstable, listed.file_id))
        self.counts[how] += 1
        self.counts["read"] += after.size
        self.sync.progress("read", after.size)
        if unstable:
            self.unstable.append(rel)
            self.sync.log.warning("%s kept changing while it was read; stored as last read (the snapshot is partial)",
                                  rel)

    def _on_file_fail(self, file_id: int, kind: str, message: str, read: int = 0) -> None:
        self.feed.done(file_id)
        state = self.files[file_id]
        if kind in ("locked", "denied", "changed") and state[2] < self.s.retries:
            state[2] += 1
            self._defer(("read", file_id))
            return
        del self.files[file_id]
        if kind == "vanished":
            self._vanish(state[0], message, read)
        else:
            self._skip(state[0], message, kind)

    def _on_fatal(self, transient: bool, name: str, message: str, hint: str) -> None:
        self.packer.check()                             # a reader thread hit the packer's upload error: raise that
        raise _fatal(transient, name, message, hint)

    # ---- totals ----------------------------------------------------------------------------------
    def stats(self, packer: Packer, previous: Manifest | None, duration: float) -> dict:
        m = self.manifest
        present = {e.path for e in m.files()}
        removed = sum(1 for e in previous.files() if e.path not in present) if previous else 0
        return {"snapshot_id": m.snapshot_id, "source": m.source, "sub_path": m.sub_path,
                "files": len(present), "dirs": sum(1 for _ in m.dirs()), "bytes": m.total_bytes,
                "files_new": self.counts["new"], "files_changed": self.counts["changed"],
                "files_unchanged": self.counts["unchanged"], "files_moved": self.counts["moved"],
                "files_removed": removed,
                "bytes_read": self.counts["read"], "new_bytes": packer.new_bytes,
                "stored_bytes": packer.stored_bytes, "packs": packer.packs,
                "skipped": m.skipped[:100], "skipped_count": len(m.skipped),
                "changed_while_read": len(self.unstable), "unstable": sorted(self.unstable)[:MAX_LISTED],
                "vanished": sorted(self.vanished)[:MAX_LISTED], "vanished_count": len(self.vanished),
                "vanished_bytes": self.counts["vanished_bytes"], "partial": m.partial,
                "parent_snapshot_id": m.parent, "duration_seconds": round(duration, 3)}
