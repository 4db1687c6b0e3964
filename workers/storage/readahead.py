"""A stream read ahead by a thread of its own: while the caller decodes one chunk (decrypts, decompresses,
hashes, writes it out), the next ones are already being received; and its other half, writes done behind the
caller on a thread of their own.

A single artifact read (a database dump fetched before ``pg_restore``) is otherwise one thread that alternates
between waiting for the network and working on what arrived; with the reads on a second thread the two overlap
(docs/performance.md). Memory is bounded: at most ``depth`` chunks of ``chunk`` bytes wait for the caller. What the
reading thread meets (an error of the source, its end) reaches the caller in order, after the chunks read before
it; nothing is dropped or reordered, so every check the caller makes over the bytes still holds.
"""
from __future__ import annotations

import contextlib
import io
import queue
import threading
from typing import BinaryIO, Callable, Iterator

CHUNK = 1 << 20
DEPTH = 4
_END = object()


def _offer(q: queue.Queue, item: object, stopped: Callable[[], bool]) -> bool:
    """Put ``item`` on the bounded queue ``q``, waiting for room; False (not put) once ``stopped()`` says so, which
    is asked again every half second while the queue stays full."""
    while not stopped():
        try:
            q.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False


class ReadAhead(io.RawIOBase):
    """``source`` read on a thread, ``chunk`` bytes at a time, at most ``depth`` chunks ahead. ``close`` stops the
    thread (after its current read) and waits for it; the caller still closes ``source`` itself, afterwards."""

    def __init__(self, source: BinaryIO, *, chunk: int = CHUNK, depth: int = DEPTH) -> None:
        super().__init__()
        self._source, self._chunk = source, chunk
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._piece, self._pos, self._done = b"", 0, False
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(self._chunk)
                if not data:
                    break
                self._put(data)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there in order
            self._put(exc)
            return
        self._put(_END)

    def _put(self, item: object) -> None:
        _offer(self._queue, item, self._stop.is_set)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(self._chunk), b""))
        while self._pos >= len(self._piece):
            if self._done:
                return b""
            item = self._queue.get()
            if item is _END:
                self._done = True
                return b""
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._piece, self._pos = item, 0
        if self._pos == 0 and size >= len(self._piece):
            piece, self._piece = self._piece, b""
            return piece
        piece = self._piece[self._pos:self._pos + size]
        self._pos += len(piece)
        return piece

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join(timeout=30)
        super().close()


class WriteBehind:
    """Writes handed to ``out`` on a thread of its own, at most ``depth`` chunks behind the caller (the other half
    of a pipeline: the caller decodes the next chunk while the last one is being written). ``data`` must not
    change after ``write`` (bytes). A failure of ``out`` is raised by the next ``write`` or by ``finish``; after
    ``abort`` nothing more is written. Use :func:`write_behind`."""

    def __init__(self, out: BinaryIO, *, depth: int = DEPTH) -> None:
        self._out = out
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is None and not self._stop.is_set():
                try:
                    self._out.write(item)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self._error = exc

    def write(self, data: bytes) -> int:
        if not _offer(self._queue, data, lambda: self._error is not None):
            raise self._error                               # type: ignore[misc]
        return len(data)

    def finish(self) -> None:
        """Wait until everything handed over is written; raise what writing met."""
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop writing (what is still queued is dropped) and wait for the thread."""
        self._stop.set()
        self._queue.put(_END)
        self._thread.join()


@contextlib.contextmanager
def write_behind(out: BinaryIO, *, depth: int = DEPTH) -> Iterator[WriteBehind]:
    """A :class:`WriteBehind` over ``out``: finished (every write done, errors raised) when the block ends, aborted
    (its thread stopped before the caller goes on, e.g. to delete the file) when the block raises."""
    sink = WriteBehind(out, depth=depth)
    try:
        yield sink
    except BaseException:
        sink.abort()
        raise
    sink.finish()
