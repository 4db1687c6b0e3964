"""Split file content into blobs. Content-defined (FastCDC 2020, via the ``pyfastcdc`` Cython extension) so
an insertion near the start of a large file only changes the chunks around it; fixed-size chunks when the
extension is not installed (still correct, just less deduplication after insertions).

A file smaller than the minimum chunk is one blob. The chunker's parameters are recorded in each manifest;
the blob id is always the SHA-256 of the chunk's bytes, so blobs cut by either chunker deduplicate alike.
"""
from __future__ import annotations

import hashlib
from typing import BinaryIO, Iterator

try:                                                    # pragma: no cover - depends on the environment
    from pyfastcdc.cy import FastCDC as _FastCDC
except ImportError:                                     # pragma: no cover
    _FastCDC = None


class Chunker:
    def __init__(self, avg: int = 1 << 20, *, kind: str | None = None) -> None:
        self.kind = kind or ("fastcdc" if _FastCDC is not None else "fixed")
        if self.kind == "fastcdc" and _FastCDC is None:
            raise RuntimeError("pyfastcdc is not installed")
        self.avg, self.min, self.max = avg, avg // 4, avg * 4
        self._cdc = _FastCDC(avg_size=avg, min_size=self.min, max_size=self.max) if self.kind == "fastcdc" else None

    @property
    def params(self) -> dict:
        if self.kind == "fastcdc":
            return {"kind": "fastcdc-2020", "avg": self.avg, "min": self.min, "max": self.max, "seed": 0}
        return {"kind": "fixed", "size": self.avg}

    def cut_buf(self, data: bytes | memoryview) -> Iterator[memoryview]:
        view = memoryview(data)
        if len(view) <= self.min or self._cdc is None:
            step = len(view) if len(view) <= self.min else self.avg
            for start in range(0, len(view), max(step, 1)):
                yield view[start:start + step]
            return
        for chunk in self._cdc.cut_buf(view):
            yield chunk.data

    def cut_stream(self, stream: BinaryIO) -> Iterator[bytes | memoryview]:
        """Chunks of ``stream``, each valid only until the next one is produced (a view into the chunker's
        buffer: copy what must be kept)."""
        if self._cdc is None:
            while data := _read_full(stream, self.avg):
                yield data
            return
        for chunk in self._cdc.cut_stream(stream):
            yield chunk.data


def _read_full(stream: BinaryIO, size: int) -> bytes:
    parts, have = [], 0
    while have < size:
        data = stream.read(size - have)
        if not data:
            break
        parts.append(data)
        have += len(data)
    return b"".join(parts)


def blob_id(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
