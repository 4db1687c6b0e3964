"""The index of content blobs: which pack holds each blob, where in it, and how long it is.

An index object is JSON ``{"format": 1, "packs": [{"id": PACK, "blobs": [[BLOB, OFFSET, LENGTH], ...]}]}``
(offsets into the pack's plaintext); how it is stored, signed and read is ``workers.repository.repo``'s.
In memory every entry is a named record (:class:`IndexEntry`, :class:`BlobPlace`), never a bare list.
"""
from __future__ import annotations

import json
import threading
from typing import NamedTuple

from workers.storage.crypto import IntegrityError


class IndexEntry(NamedTuple):
    """One blob of a pack, as an index object lists it (``[BLOB, OFFSET, LENGTH]`` in its JSON)."""
    blob: str
    offset: int                     # into the pack's plaintext
    length: int


PackEntries = dict[str, list[IndexEntry]]       # pack id -> the blobs it holds


class BlobPlace(NamedTuple):
    """Where a blob is: its pack, and its offset and length in that pack's plaintext."""
    pack: str
    offset: int
    length: int


class Index:
    """blob id → :class:`BlobPlace`. Thread-safe for one writer and many readers."""

    def __init__(self) -> None:
        self.blobs: dict[str, BlobPlace] = {}
        self.objects: set[str] = set()             # index object ids this index was loaded from / wrote
        self._lock = threading.Lock()

    def __contains__(self, blob: str) -> bool:
        return blob in self.blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def add(self, packs: PackEntries) -> None:
        with self._lock:
            for pack, blobs in packs.items():
                for blob, offset, length in blobs:
                    self.blobs.setdefault(blob, BlobPlace(pack, offset, length))

    def packs(self) -> PackEntries:
        out: PackEntries = {}
        for blob, (pack, offset, length) in self.blobs.items():
            out.setdefault(pack, []).append(IndexEntry(blob, offset, length))
        return out

    def sorted_ids(self) -> bytes:
        """Every blob id as 32 raw bytes, sorted: a compact set to hand to reader processes."""
        return b"".join(sorted(bytes.fromhex(b) for b in self.blobs))


def index_doc(packs: PackEntries) -> dict:
    """The JSON document of an index object (each entry a list ``[blob, offset, length]``, by offset)."""
    return {"format": 1, "packs": [{"id": p, "blobs": sorted(b, key=lambda e: e.offset)}
                                   for p, b in sorted(packs.items())]}


def index_body(packs: PackEntries) -> bytes:
    return json.dumps(index_doc(packs), separators=(",", ":")).encode()


def index_packs(body: bytes) -> PackEntries:
    """pack id → the :class:`IndexEntry` list of an index body; IntegrityError unless it has that shape."""
    try:
        doc = json.loads(body)
        packs = {p["id"]: p["blobs"] for p in doc["packs"]}
        if doc.get("format") != 1 or not all(
                isinstance(pack, str) and isinstance(blobs, list) and all(
                    isinstance(b, list) and len(b) == 3 and isinstance(b[0], str)
                    and all(type(n) is int and n >= 0 for n in b[1:]) for b in blobs)
                for pack, blobs in packs.items()):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError("the index object is not a valid index") from None
    return {pack: [IndexEntry(*b) for b in blobs] for pack, blobs in packs.items()}
