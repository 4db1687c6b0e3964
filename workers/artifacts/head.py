"""A signed hash of an artifact's first bytes, so that a consumer may act on them before the whole is read.

A database dump is restored while it downloads (``workers.engines.postgres_stream``), but pg_restore runs the SQL
of the archive's table of contents, which comes first. That SQL must be proven before it runs, not at the end
of the download: the upload worker hashes the first ``HEAD_BYTES`` of the plaintext as it stores the artifact,
and puts ``head_sha256`` / ``head_size`` into the record, which it signs. :func:`verified_head` reads those bytes
back and checks them against the signed record before handing any of them on."""
from __future__ import annotations

import hashlib
import io
from typing import BinaryIO

from workers.storage.crypto import IntegrityError

HEAD_BYTES = 16 << 20
CHUNK = 1 << 20


class HeadHash(io.RawIOBase):
    """Pass-through reader hashing the first ``HEAD_BYTES`` read; :meth:`facts` for the record."""

    def __init__(self, source: BinaryIO) -> None:
        self._source, self._digest, self._size = source, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if self._size < HEAD_BYTES and data:
            part = data[:HEAD_BYTES - self._size]
            self._digest.update(part)
            self._size += len(part)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def facts(self) -> dict[str, object]:
        return {"head_sha256": self._digest.hexdigest(), "head_size": self._size}


def head_facts(metadata: dict | None) -> tuple[str, int] | None:
    """(head_sha256, head_size) from a record's metadata, or None (stored before heads were hashed)."""
    if not metadata or not isinstance(metadata.get("head_sha256"), str) or \
            not isinstance(metadata.get("head_size"), int) or not 0 < metadata["head_size"] <= HEAD_BYTES:
        return None
    return metadata["head_sha256"], metadata["head_size"]


class VerifiedHead(io.RawIOBase):
    """``stream`` whose first ``size`` bytes are read at once and checked against ``sha256`` (IntegrityError on a
    mismatch) before any byte is returned; then the chunks read, then the rest of ``stream``."""

    def __init__(self, stream: BinaryIO, sha256: str, size: int) -> None:
        self._stream, self._chunks = stream, []
        digest, got = hashlib.sha256(), 0
        while got < size and (data := stream.read(min(CHUNK, size - got))):
            digest.update(data)
            self._chunks.append(data)
            got += len(data)
        if got != size or digest.hexdigest() != sha256:
            raise IntegrityError("the first bytes of the artifact do not match the signed record's head hash: the "
                                 "artifact was altered or replaced")
        self._chunks.reverse()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._chunks:
            return self._chunks.pop()                   # whole chunks: no copy (callers take what read returns)
        return self._stream.read(size)
