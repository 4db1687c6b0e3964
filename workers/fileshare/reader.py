"""A reader's work, in a thread of the sync's process or of a reader process (``readers``): list a directory, or
read, chunk and hash files, re-reading one that changes while it is read; each blob goes to the packer of its
process or, new to the repository, to the sync. ``KnownIds``: the repository's blob ids, compact enough to copy
into every process."""
from __future__ import annotations

import hashlib
import logging
import traceback
from typing import Any, Callable

from workers.fileshare.chunker import Chunker
from workers.fileshare.messages import Content, FileFailed, FileRead, Listed, ListDir, ListFailed, NewBlob, \
    ReaderFailed, Result, Task
from workers.fileshare.tree import FileProblem, Stat, Tree
from workers.repository.manifest import file_sha256
from workers.runtime.errors import DrError, TransientError, is_permanent

log = logging.getLogger("appsvc_dr.fileshare")
SMALL = 1 << 20                         # read in one request (SMB: one compound CREATE+READ+CLOSE)


class KnownIds:
    """Membership test over sorted 32-byte blob ids (compact enough to copy into every process)."""

    def __init__(self, raw: bytes) -> None:
        self._raw, self._n = raw, len(raw) // 32
        self.extra: set[str] = set()

    def __contains__(self, blob: str) -> bool:
        if blob in self.extra:
            return True
        key, lo, hi = bytes.fromhex(blob), 0, self._n
        while lo < hi:
            mid = (lo + hi) // 2
            probe = self._raw[mid * 32:mid * 32 + 32]
            if probe < key:
                lo = mid + 1
            elif probe > key:
                hi = mid
            else:
                return True
        return False

    def add(self, blob: str) -> None:
        self.extra.add(blob)


def _changed(listed: Stat, after: Stat, got: int) -> bool:
    return (listed.size, listed.mtime_ns) != (after.size, after.mtime_ns) or got != after.size


class Reader:
    """One reader thread's work: everything it learns goes to ``emit``."""

    def __init__(self, tree: Tree, chunker: Chunker, known: Any, emit: Callable[[Result], None],
                 reread: int, store: Callable[[str, memoryview], object] | None = None) -> None:
        self.tree, self.chunker, self.known, self.emit, self.reread = tree, chunker, known, emit, reread
        self.store = store
        self.got = 0                                    # bytes of the current file handed on as blobs so far

    def handle(self, task: Task) -> None:
        if type(task) is ListDir:
            try:
                self.emit(Listed(task.rel, self.tree.scandir(task.rel)))
            except FileProblem as problem:
                self.emit(ListFailed(task.rel, problem.kind, problem.message))
            return
        for file in task.files:
            self.got = 0
            try:
                self.emit(FileRead(file.file_id, self.read(file.rel, file.listed)))
            except FileProblem as problem:
                self.emit(FileFailed(file.file_id, problem.kind, problem.message, self.got))

    def _blob(self, data: bytes | memoryview, ids: list[str]) -> None:
        self.got += len(data)
        blob = hashlib.sha256(data).hexdigest()
        ids.append(blob)
        if self.store is not None:
            self.store(blob, data)                      # copied once, into the pack being filled (dedups there)
        elif blob not in self.known:
            self.known.add(blob)
            self.emit(NewBlob(blob, bytes(data)))

    def read(self, rel: str, listed: Stat) -> Content:
        """The file's content, re-read while the file changes under us. Each byte is hashed once, as part of its
        blob (see ``manifest.file_sha256``)."""
        for attempt in range(self.reread + 1):
            ids: list[str] = []
            got = self.tree.read(rel, listed, SMALL)
            if got is not None:
                data, after = got
                size = len(data)
                if not _changed(listed, after, size) or attempt == self.reread:
                    for piece in self.chunker.cut_buf(data):
                        self._blob(piece, ids)
            else:
                size = 0
                with self.tree.open_read(rel) as stream:
                    for piece in self.chunker.cut_stream(stream):
                        size += len(piece)
                        self._blob(piece, ids)
                after = self.tree.stat(rel)
            if not _changed(listed, after, size):
                return Content(file_sha256(ids), after, ids, False)
            listed = Stat(listed.name, False, after.size, after.mtime_ns, after.attrs)
        return Content(file_sha256(ids), Stat(listed.name, False, size, after.mtime_ns, after.attrs), ids, True)


def fatal(exc: BaseException) -> ReaderFailed:
    """A reader's failure as the message that stops the sync (retried unless it is permanent)."""
    if isinstance(exc, DrError):
        return ReaderFailed(not is_permanent(exc), type(exc).__name__, exc.message, exc.hint)
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return ReaderFailed(True, type(exc).__name__, f"reader failed: {detail}", TransientError.default_hint)


def serve(reader: Reader, tasks: Any, results: Any) -> None:
    """A reader thread: take tasks until ``None``; a tree failure is reported and ends the thread."""
    while True:
        task = tasks.get()
        if task is None:
            return
        try:
            reader.handle(task)
        except BaseException as exc:  # noqa: BLE001 - reported to the sync, which stops everything
            log.debug("reader failed", exc_info=True)
            results.put(fatal(exc))
            return
