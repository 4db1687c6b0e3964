"""Writer processes of a restore to an SMB share: the large files' bytes are written by ``spawn``-started
processes, each over its own SMB session, while this process fetches, decrypts and verifies the packs.

smbprotocol builds, copies and encrypts every WRITE in Python, so one process writes at most one core's worth
(about 4 CPU-s per GB here, docs/performance.md); the fetch half (S3 GET, AES-GCM, zstd, the blobs' SHA-256) is a
third of that. So the split is: packs are fetched and every blob is proven by its SHA-256 id *here* (the private
key never leaves this process, and each pack is fetched once), and a verified blob crosses a pipe to the process
writing its file. That process writes it through the same ``Tree.open_write`` as in-process writing (a temporary
name beside the file, checked directories, no reparse point followed, renamed into place on success and removed
on failure), so every guarantee of a restore stays where it was:

* this process decides whether the file is complete: the size check against the snapshot runs here before the
  ``commit``; anything else (a damaged blob, a short file, an exception) sends ``abort``, and the writer removes
  its temporary file before it answers;
* a writer's failure (denied, locked, the share dropped...) comes back as the same exception (``FileProblem``,
  ``UnsafeTargetError``...) and is handled by the restore like one of its own; the writer reports it at once and
  discards what is still sent for that file;
* a writer that dies fails only the file it held (its temporary file is removed from here), and the next files go
  to the other writers, or are written in this process when none is left.

Per file, on each writer's control pipe (pickled): ``rel``; on its data socket: the content as frames (an 8-byte
length, then that many bytes; never empty) and an empty frame; then ``COMMIT`` or ``ABORT`` on the control pipe.
The writer answers exactly one :class:`Outcome`. The data socket is a plain ``socketpair`` read with ``recv_into``
a buffer of the frame's size: one copy on the way in (``Connection.recv_bytes`` took about three, 0.9 CPU-s per
GB). The writer process's side (its entry point, the frames, the :class:`Outcome`) is :mod:`.restorewriter`.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import socket
import threading
import time
from typing import Any, BinaryIO, Iterator

from workers.fileshare.restorewriter import ABORT, COMMIT, FRAME, SOCKET_BUFFER, Outcome, writer_main
from workers.fileshare.tree import FileProblem, Tree
from workers.repository.paths import parts, partial_name

log = logging.getLogger("appsvc_dr.fileshare")
READY_TIMEOUT = 120.0                       # a writer that has not connected by then is given up
PARTIAL_GRACE = 15.0                        # how long a dead writer's handle may keep its file


class _Writer:
    def __init__(self, ctx: Any, spec: dict, index: int) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.data, child_data = socket.socketpair()
        self.data.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.process = ctx.Process(target=writer_main, args=(spec, child, child_data),
                                   name=f"restore-writer-{index}", daemon=True)
        self.process.start()
        child.close()
        child_data.close()
        self.ready = False

    def wait_ready(self) -> Outcome:
        """The writer's first answer (``ready``, or why it could not connect)."""
        try:
            if self.conn.poll(READY_TIMEOUT):
                return self.conn.recv()
        except (EOFError, OSError) as exc:
            return Outcome("failed", "transient", f"the writer process ended ({type(exc).__name__})")
        return Outcome("failed", "transient", "the writer process did not connect in time")


class WriterLost(FileProblem):
    """The writer process of a file ended (or its pipe broke) while the file was being written."""

    def __init__(self, detail: str) -> None:
        super().__init__("changed", f"the restore's writer process ended while writing it ({detail})")


class _Remote:
    """The file object handed to the restore: each ``write`` goes to the writer (after checking it has not
    failed meanwhile); ``finish`` ends the file and returns the writer's outcome."""

    def __init__(self, writer: _Writer) -> None:
        self.writer, self.outcome, self.lost = writer, None, False

    @contextlib.contextmanager
    def _pipe(self) -> Iterator[None]:
        try:
            yield
        except (EOFError, OSError) as exc:
            self.lost = True
            raise WriterLost(type(exc).__name__) from None

    def start(self, rel: str) -> None:
        with self._pipe():
            self.writer.conn.send(rel)

    def write(self, data) -> int:
        view = memoryview(data)
        with self._pipe():
            if self.outcome is None and self.writer.conn.poll():
                self.outcome = self.writer.conn.recv()
            if self.outcome is not None:
                raise self.outcome.error()
            if view.nbytes:
                self.writer.data.sendall(FRAME.pack(view.nbytes))
                self.writer.data.sendall(view)
        return view.nbytes

    def finish(self, verdict: str) -> Outcome:
        with self._pipe():
            self.writer.data.sendall(FRAME.pack(0))
            self.writer.conn.send(verdict if self.outcome is None else ABORT)
            if self.outcome is None:
                self.outcome = self.writer.conn.recv()
        return self.outcome


class WriterPool:
    """``count`` writer processes for ``tree`` (an SMB tree), started at once; ``open_write`` hands a file to an
    idle one (waiting for it), or writes it here when no writer is left."""

    def __init__(self, tree: Tree, count: int) -> None:
        self.tree, self.count = tree, count
        ctx = multiprocessing.get_context("spawn")
        spec = tree.spec()
        self._idle: queue.Queue[_Writer | None] = queue.Queue()
        self._alive = 0
        self._guard = threading.Lock()
        self._orphans: list[str] = []               # temporary files of writers that died
        self._writers = [_Writer(ctx, spec, i) for i in range(count)]
        for writer in self._writers:
            self._idle.put(writer)
        self._alive = count

    def _take(self) -> _Writer | None:
        while True:
            with self._guard:
                if self._alive == 0:
                    return None
            try:
                writer = self._idle.get(timeout=1.0)
            except queue.Empty:
                continue
            if writer is None or writer.ready:
                return writer
            answer = writer.wait_ready()
            if answer.status == "ready":
                writer.ready = True
                return writer
            log.warning("a restore writer process could not start (%s); writing with the others", answer.message)
            self._lost(writer)

    def _lost(self, writer: _Writer) -> None:
        with self._guard:
            self._alive -= 1
            if self._alive == 0:
                self._idle.put(None)                    # wakes a waiting _take: none left
        if writer.process.is_alive():
            writer.process.terminate()

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """Like ``Tree.open_write``: ``rel`` is written under a temporary name by a writer process and renamed
        into place only if the block ends without an error."""
        writer = self._take()
        if writer is None:
            with self.tree.open_write(rel) as fh:
                yield fh
            return
        remote = _Remote(writer)
        try:
            remote.start(rel)
            try:
                yield remote                                    # type: ignore[misc]
            except BaseException:
                remote.finish(ABORT)
                raise
            outcome = remote.finish(COMMIT)
            if outcome.status == "failed":
                raise outcome.error()
            if outcome.status != "ok":
                raise FileProblem("changed", "the restore's writer process did not complete it")
        finally:
            if remote.lost or not writer.process.is_alive():
                self._lost(writer)
                self._remove_partial(writer, rel)               # the writer could not remove its own
            else:
                self._idle.put(writer)

    def _remove_partial(self, writer: _Writer, rel: str) -> None:
        """Remove the temporary file a lost writer left. The server closes the dead session's handle only once
        it has worked through what that connection had sent, so the process is reaped first, a sharing violation
        is retried, and ``close`` removes it again (its create may still have been queued on the server)."""
        writer.process.join(timeout=5)
        names = parts(rel)
        partial = "/".join([*names[:-1], partial_name(names[-1])])
        self._orphans.append(partial)
        self._remove(partial)

    def _remove(self, partial: str, *, last: bool = False) -> None:
        """Remove a lost writer's temporary file; what stops it is warned once, on the ``last`` try (``close``)."""
        deadline = time.monotonic() + PARTIAL_GRACE
        say = log.warning if last else log.debug
        while True:
            try:
                self.tree.remove(partial)
                return
            except FileProblem as problem:
                if problem.kind != "locked" or time.monotonic() > deadline:
                    if problem.kind != "vanished":
                        say("could not remove %s after its writer process ended: %s", partial, problem)
                    return
            except Exception as exc:  # noqa: BLE001 - the restore goes on; the next run replaces the file
                say("could not remove %s after its writer process ended: %s", partial, exc)
                return
            time.sleep(0.1)

    def close(self) -> None:
        for partial in self._orphans:
            self._remove(partial, last=True)
        for writer in self._writers:
            with contextlib.suppress(Exception):
                writer.conn.send(None)
        for writer in self._writers:
            writer.process.join(timeout=10)
            if writer.process.is_alive():
                writer.process.terminate()
                writer.process.join(timeout=5)
            writer.conn.close()
            writer.data.close()
