"""Large files restored pack by pack: each pack they need is streamed from the store once, blob by blob, and each
blob, once its SHA-256 matches its id, is written straight to every place it goes (a positional write into each
file's temporary name), so no decoded pack is held in memory or spilled to local disk (``packcache``, which the
file-by-file restore needs: the sync packs the chunks of the large files it reads at once together, so nearly
every pack holds parts of two or three files, docs/performance.md).

The packs are taken in the order the files need them (each file's packs in the order of its blobs, merged: the
order the backup wrote them, where the files agree on it), ``packs_at_once`` of them streamed at once. A file is
open from its first pack to its last; which files are restored here is chosen before anything is fetched, so that
at most ``max_open`` are open at once (each holds its SMB WRITEs in flight). A file is renamed into place once
every one of its blobs is written (``open_write``: written under a temporary name beside it), then its mtime and
attributes are set.

Small files ride along: one with no conflict to resolve whose blobs all lie in packs streamed for the large files
is kept in memory as its blobs go by and written whole once it has them (``write_file``: one compound request over
SMB, ``RIDERS_AT_ONCE`` at a time), so a pack that holds parts of large and small files (the sync packs what it
reads at once together) is fetched once, not again by the file-by-file restore.

Only what is plain is done here: a large file with no conflict to resolve first, written in this process. Every
other file, and every file that fails here (a damaged or missing pack, a blob that does not match its id, an index
whose places overlap or are larger than any chunk, a FileProblem of the target), is left to the file-by-file
restore, which fetches what it needs again and reports a failure with its reason and hint as it always does; the
temporary file of a file given up here is removed first, so nothing half-written is left.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from workers.fileshare.restoreorder import admitted, pack_order
from workers.fileshare.restoreio import Room, pieces_of, positional
from workers.fileshare.restoreplan import Step
from workers.fileshare.tree import ATTRIBUTES
from workers.repository.index import BlobPlace
from workers.repository.paths import shown
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing

log = logging.getLogger("workers.fileshare.restore")
PACKS_AT_ONCE = 2        # packs streamed at once (S3 GETs in flight; 3 or 5 were slower on 2 cores, docs/performance.md)
MAX_OPEN = 4             # files open at once (each holds up to 2 WRITEs of 2 MiB in flight and 2 MiB gathered)
MAX_BLOB = 16 << 20      # the largest chunk is 4 x chunk_avg (at most 4 MiB): an index claiming more is not trusted here
SKIP = 1 << 20
RIDERS_AT_ONCE = 8       # small files riding along written at once (each one compound request over SMB)
RIDER_BYTES = 16 << 20   # their bytes read and waiting to be written, at most (beyond it the pack streams wait)


@dataclass(eq=False)
class _File:
    step: Step
    left: int                                   # blob places not written yet
    lock: threading.Lock = field(default_factory=threading.Lock)
    ctx: Any = None                             # the open_write context, once open
    write_at: Callable[[int, Any], object] | None = None
    failed: bool = False
    done: bool = False
    parts: list[tuple[int, bytes]] | None = None   # a small file riding along: its blobs, kept till it is whole

    @property
    def rides(self) -> bool:
        """A small file riding along (written whole), not a large one (written blob by blob)."""
        return self.parts is not None


class _Use(NamedTuple):
    offset: int                                 # in the pack's plaintext
    length: int
    blob: str
    places: list[tuple[_File, int]]             # each file that holds the blob, and at which offset


class StreamedRestore:
    def __init__(self, repo: Repository, keys: KeyRing | None, open_write: Callable, set_meta: Callable, *,
                 attributes: bool = True, progress: Callable[[int], None] = lambda n: None,
                 packs_at_once: int | None = None, max_open: int | None = None,
                 write_file: Callable | None = None) -> None:
        self.repo, self.keys, self.open_write, self.set_meta = repo, keys, open_write, set_meta
        self.write_file = write_file                            # riders' whole files (``run``)
        self.attributes, self.progress = attributes, progress
        self.packs_at_once = max(1, packs_at_once or PACKS_AT_ONCE)      # the module's values when not given
        self.max_open = max(1, max_open or MAX_OPEN)
        self.streamed: list[str] = []                           # packs streamed to their end of what was needed

    def run(self, steps: list[Step], riders: list[Step] = ()) -> tuple[list[Step], list[Step]]:
        """Restore what can be restored here of ``steps`` (large files, no conflict to resolve): the steps restored,
        and the steps left to the file-by-file restore. ``riders``: small files with no conflict to resolve; each
        whose blobs all lie in packs streamed for the large files anyway is written whole (``write_file``) once
        they are read, so that no pack is fetched twice (the others are left, and not listed in the result)."""
        files, uses, order, rest = self._plan(steps, riders if self.write_file is not None else [])
        if not files:
            return [], rest
        queue, queue_lock = iter(order), threading.Lock()
        self._writes = ThreadPoolExecutor(RIDERS_AT_ONCE, thread_name_prefix="restore-ride")
        self._room = Room(RIDER_BYTES)

        def work() -> None:
            while True:
                with queue_lock:
                    pack = next(queue, None)
                if pack is None:
                    return
                self._pack(pack, uses[pack])
        threads = [threading.Thread(target=work, name=f"restore-stream-{i}", daemon=True)
                   for i in range(min(self.packs_at_once, len(order)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._writes.shutdown(wait=True)
        for f in files:
            if not f.done:
                self._give_up(f, "not every blob was written")      # a pack given up on: no longer waited for
        done = [f.step for f in files if f.done]
        rest += [f.step for f in files if not f.done and not f.rides]
        rode = sum(1 for f in files if f.done and f.rides)
        log.info("restore: %d large file(s) streamed from %d pack(s), with %d small file(s) from the same packs; "
                 "%d left to the file-by-file restore", len(done) - rode, len(self.streamed), rode, len(rest))
        return done, rest

    def _layouts(self, steps: list[Step]) -> tuple[list[tuple[Step, list[BlobPlace]]], list[Step]]:
        """Each step whose blobs' places are plausible, with them; and the others (the file-by-file restore says
        what is wrong with them)."""
        rest: list[Step] = []
        layouts: list[tuple[Step, list[BlobPlace]]] = []
        for step in steps:
            try:
                places = [self.repo.index.place(blob) for blob in step.entry.blobs]
            except KeyError:
                rest.append(step)
                continue
            if not places or sum(p.length for p in places) != step.entry.size or \
                    any(p.length > MAX_BLOB or p.length <= 0 or p.offset < 0 for p in places):
                rest.append(step)
                continue
            layouts.append((step, places))
        return layouts, rest

    def _plan(self, steps: list[Step], riders: list[Step]) -> tuple[list[_File], dict[str, list[_Use]], list[str],
                                                                     list[Step]]:
        layouts, rest = self._layouts(steps)
        chains = [list(dict.fromkeys(p.pack for p in places)) for _, places in layouts]
        order = pack_order(chains)
        position = {pack: i for i, pack in enumerate(order)}
        spans = [(min(position[p] for p in c), max(position[p] for p in c) + self.packs_at_once - 1) for c in chains]
        files: list[_File] = []
        found: dict[str, dict[str, _Use]] = defaultdict(dict)

        def add(f: _File, places: list[BlobPlace]) -> None:
            files.append(f)
            at = 0
            for blob, place in zip(f.step.entry.blobs, places, strict=True):
                use = found[place.pack].get(blob)
                if use is None:
                    use = found[place.pack][blob] = _Use(place.offset, place.length, blob, [])
                use.places.append((f, at))
                at += place.length
        for (step, places), ok in zip(layouts, admitted(spans, self.max_open), strict=True):
            if ok:
                add(_File(step, left=len(places)), places)
            else:
                rest.append(step)
        streamed = set(found)
        for step, places in self._layouts(riders)[0]:
            if {p.pack for p in places} <= streamed:
                add(_File(step, left=len(places), parts=[]), places)
        uses = {pack: sorted(blobs.values(), key=lambda u: u.offset) for pack, blobs in found.items()}
        return files, uses, [p for p in order if p in uses], rest

    def _pack(self, pack: str, uses: list[_Use]) -> None:
        """Stream ``pack`` and write each blob it holds for a file here; on any failure, the files still waiting for
        it are given up (the file-by-file restore fetches and reports them)."""
        pos = 0
        try:
            with self.repo.open_pack(pack, self.keys) as plain:
                for use in uses:
                    live = [(f, at) for f, at in use.places if not f.failed]
                    if not live:
                        continue
                    if use.offset < pos:                        # places overlap: the index is not the packer's
                        for f, _ in live:
                            self._give_up(f, f"blob {use.blob[:12]} overlaps another in pack {pack[:12]}")
                        continue
                    while pos < use.offset:                     # bytes of blobs no file here needs
                        skipped = len(plain.read(min(SKIP, use.offset - pos)))
                        if not skipped:
                            break
                        pos += skipped
                    pieces = pieces_of(plain, use.length)     # as decoded: hashed and written without a join
                    digest = hashlib.sha256()
                    for piece in pieces:
                        digest.update(piece)
                    got = sum(len(piece) for piece in pieces)
                    pos += got
                    if got != use.length or digest.hexdigest() != use.blob:
                        for f, _ in live:
                            self._give_up(f, f"blob {use.blob[:12]} in pack {pack[:12]} does not match its id")
                        continue
                    for f, at in live:
                        self._write(f, at, pieces)
            self.streamed.append(pack)
        except Exception as exc:  # noqa: BLE001 - the files go to the file-by-file restore, which reports it
            for use in uses:
                for f, _ in use.places:
                    self._give_up(f, f"pack {pack[:12]}: {getattr(exc, 'message', None) or exc}")

    def _write(self, f: _File, at: int, pieces: list[bytes]) -> None:
        entry = f.step.entry
        with f.lock:
            if f.failed or f.done:
                return
            try:
                if f.rides:
                    self._ride(f, at, pieces)
                    return
                if f.write_at is None:
                    f.ctx = self.open_write(f.step.target)
                    f.write_at = positional(f.ctx.__enter__())
                for piece in pieces:
                    f.write_at(at, piece)
                    at += len(piece)
                f.left -= 1
                if f.left:
                    return
                ctx, f.ctx = f.ctx, None
                ctx.__exit__(None, None, None)                  # flushed, and renamed into place
                self.set_meta(f.step.target, entry.mtime_ns, entry.attrs & ATTRIBUTES if self.attributes else None)
                f.done = True
            except Exception as exc:  # noqa: BLE001 - the file goes to the file-by-file restore, which reports it
                self._abort(f, exc)
                return
        self.progress(entry.size)

    def _ride(self, f: _File, at: int, pieces: list[bytes]) -> None:
        """Under ``f.lock``: keep a small file's blob (a copy: a view would keep its whole decoded segment alive
        while the file waits for its other blobs); once it has them all, write it whole."""
        f.parts.append((at, b"".join(pieces)))
        f.left -= 1
        if f.left:
            return
        entry = f.step.entry
        whole = b"".join(blob for _, blob in sorted(f.parts, key=lambda p: p[0]))
        f.parts = []
        if len(whole) != entry.size:                            # places that overlap: the index is not the packer's
            raise RuntimeError("its blobs do not add up to its size")
        self._room.take(len(whole))
        self._writes.submit(self._write_whole, f, whole)

    def _write_whole(self, f: _File, whole: bytes) -> None:
        """A rider written whole (``write_file``: a temporary name renamed over it, its mtime and attributes)."""
        entry = f.step.entry
        try:
            self.write_file(f.step.target, whole, entry.mtime_ns, entry.attrs & ATTRIBUTES if self.attributes else None)
            with f.lock:
                f.done = True
            self.progress(entry.size)
        except Exception as exc:  # noqa: BLE001 - the file goes to the file-by-file restore, which reports it
            with f.lock:
                self._abort(f, exc)
        finally:
            self._room.give(len(whole))

    def _give_up(self, f: _File, why: str) -> None:
        with f.lock:
            if not (f.done or f.failed):
                self._abort(f, RuntimeError(why))

    @staticmethod
    def _abort(f: _File, exc: Exception) -> None:
        """Under ``f.lock``: its temporary file removed (``open_write`` on an error), left to the file-by-file
        restore."""
        f.failed = True
        log.info("restore: %s left to the file-by-file restore: %s", shown(f.step.entry.path),
                 getattr(exc, "message", None) or exc)
        ctx, f.ctx = f.ctx, None
        if ctx is not None:
            try:
                ctx.__exit__(type(exc), exc, exc.__traceback__)
            except Exception:  # noqa: BLE001 - the file-by-file restore meets the target's problem again
                pass
