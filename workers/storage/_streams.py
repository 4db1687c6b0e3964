"""Stream helpers shared by the backends and the artifact format: a stream pulled from produced chunks,
size-checked reading of the caller's stream, chunked copy, a reader that classifies transport errors
raised while the caller reads an object, and a reader that counts and hashes what flows through it."""
from __future__ import annotations

import hashlib
import io
from typing import Any, BinaryIO, Callable

from workers.storage.base import InvalidArgument

CHUNK = 1024 * 1024


class PullStream(io.RawIOBase):
    """A read-only stream built from chunks that ``_next()`` produces on demand (None at EOF). An error is
    sticky: every later read raises it again, so a consumer cannot skip past damage."""

    def __init__(self) -> None:
        super().__init__()
        self._chunk, self._pos, self._eof = b"", 0, False
        self._error: BaseException | None = None

    def _next(self) -> bytes | None:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        parts = self.read_pieces(size)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_pieces(self, size: int, *, views: bool = False) -> list[bytes]:
        """Up to ``size`` bytes (fewer only at the end), as the pieces they came in: a caller that hashes and
        writes them piece by piece is spared joining them into one copy. ``views``: a piece that is part of a
        chunk is a ``memoryview`` of it, not a copy (it keeps the whole chunk alive while the caller holds it)."""
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        if self._error is not None:
            raise self._error
        parts: list[bytes] = []
        try:
            while size > 0:
                avail = len(self._chunk) - self._pos
                if avail == 0:
                    nxt = None if self._eof else self._next()
                    if nxt is None:
                        self._eof, self._chunk, self._pos = True, b"", 0
                        break
                    self._chunk, self._pos = nxt, 0
                    continue
                piece = self._chunk if self._pos == 0 and avail <= size else \
                    (memoryview(self._chunk) if views else self._chunk)[self._pos:self._pos + size]
                self._pos += len(piece)
                size -= len(piece)
                parts.append(piece)
        except Exception as exc:
            self._error = exc
            raise
        return parts

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)


class SizedReader(io.RawIOBase):
    """Reads the caller's stream. ``read(n)`` returns exactly ``n`` bytes unless the stream ends (so the minio
    SDK, which concatenates what read() returns, does not copy a part over and over). When ``expected`` is
    given, a stream that ends early or goes on too long raises :class:`InvalidArgument` *before* the upload
    completes, so the object never appears. Errors of the source stream itself pass through unchanged."""

    def __init__(self, stream: BinaryIO, expected: int | None, key: str) -> None:
        super().__init__()
        if expected is not None and expected < 0:
            raise InvalidArgument(f"invalid size {expected} for {key!r}: must be >= 0 or None")
        self._stream = stream
        self._expected = expected
        self._key = key
        self.count = 0
        self.failure: BaseException | None = None      # what the caller's stream raised, if anything

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        parts: list[bytes] = []
        wanted = n
        while wanted > 0:
            try:
                data = self._stream.read(wanted)
            except BaseException as exc:
                self.failure = exc
                raise
            if not data:
                break
            data = bytes(data)
            parts.append(data)
            wanted -= len(data)
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        self.count += len(chunk)
        if self._expected is not None:
            if self.count > self._expected:
                raise InvalidArgument(f"the stream for {self._key!r} is longer than the declared size "
                                      f"{self._expected}")
            if len(chunk) < n and self.count < self._expected:
                raise InvalidArgument(f"the stream for {self._key!r} ended after {self.count} bytes, "
                                      f"{self._expected} were declared")
        return chunk

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def copy_stream(reader: SizedReader, write: Callable[[bytes], object], chunk: int = CHUNK) -> int:
    """Copy ``reader`` to ``write`` in chunks; returns the number of bytes copied."""
    while True:
        data = reader.read(chunk)
        if not data:
            return reader.count
        write(data)


class TranslatingReader(io.RawIOBase):
    """Wraps an open remote stream: errors raised while reading go through ``translate`` (e.g. a reset
    connection becomes StorageUnavailable); ``close`` runs ``on_close`` once."""

    def __init__(self, raw: BinaryIO, translate: Callable[[BaseException], BaseException | None],
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._translate = translate
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """The remote stream's own bytes (no copy through a buffer of ours)."""
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        try:
            return self._raw.read(None if size is None or size < 0 else size)
        except Exception as exc:
            mapped = self._translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                if self._on_close is not None:
                    self._on_close()
                else:
                    self._raw.close()
            finally:
                super().close()


def reader(raw: BinaryIO, translate: Callable[[BaseException], BaseException | None],
           on_close: Callable[[], None] | None = None, *, buffered: bool = True) -> BinaryIO:
    """A binary stream over :class:`TranslatingReader`: buffered, unless ``raw`` buffers itself (an HTTP
    response: its ``read(n)`` returns n bytes but at the end, received into them at once; a buffer of ours would
    only copy them once more)."""
    stream = TranslatingReader(raw, translate, on_close)
    return io.BufferedReader(stream, buffer_size=CHUNK) if buffered else stream  # type: ignore


class Hashing:
    """Pass-through reader that counts and hashes what flows through it (only counts, without ``hashing``)."""

    def __init__(self, source: BinaryIO, hashing: bool = True) -> None:
        self._source, self.size, self._sha = source, 0, hashlib.sha256() if hashing else None

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self.size += len(data)
            if self._sha is not None:
                self._sha.update(data)
        return data or b""

    def digest(self) -> bytes | None:
        return self._sha.digest() if self._sha is not None else None
