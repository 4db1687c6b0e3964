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
    """blob id → where it is (:meth:`place`). Thread-safe for one writer and many readers.

    ``blobs`` keeps each place as a plain ``(pack, offset, length)`` tuple, read by name through :meth:`place`: an
    index holds millions of them for the whole job, and plain tuples of strings and ints leave the garbage
    collector's tracking, named tuples never do (loading 500,000 entries as records took about twice as long)."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[str, int, int]] = {}
        self.objects: set[str] = set()             # index object ids this index was loaded from / wrote
        self._lock = threading.Lock()

    def __contains__(self, blob: str) -> bool:
        return blob in self.blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def place(self, blob: str) -> BlobPlace:
        """Where ``blob`` is (KeyError if no pack holds it)."""
        return BlobPlace._make(self.blobs[blob])

    def add(self, packs: PackEntries) -> None:
        self._add(packs)

    def load(self, body: bytes) -> None:
        """Add what an index object's body lists; IntegrityError (nothing added) unless it is a valid index. Its
        entries go in as they were parsed: no record per entry on the way (a large index loads at every sync)."""
        self._add(_checked(body))

    def _add(self, packs: dict[str, list]) -> None:
        with self._lock:
            for pack, blobs in packs.items():
                for blob, offset, length in blobs:
                    self.blobs.setdefault(blob, (pack, offset, length))

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
    return {pack: [IndexEntry._make(b) for b in blobs] for pack, blobs in _checked(body).items()}


def _checked(body: bytes) -> dict[str, list[list]]:
    """An index body's packs as its JSON has them (``[blob, offset, length]`` lists), every one checked in one pass;
    IntegrityError unless the body has that shape. Only :class:`Index` and :func:`index_packs` see these lists."""
    try:
        doc = json.loads(body)
        if doc.get("format") != 1:
            raise ValueError
        packs = {p["id"]: p["blobs"] for p in doc["packs"]}
        for pack, blobs in packs.items():
            if type(pack) is not str or type(blobs) is not list:
                raise ValueError
            for b in blobs:
                if type(b) is not list or len(b) != 3:
                    raise ValueError
                blob, offset, length = b
                if type(blob) is not str or type(offset) is not int or type(length) is not int or offset < 0 \
                        or length < 0:
                    raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError("the index object is not a valid index") from None
    return packs
