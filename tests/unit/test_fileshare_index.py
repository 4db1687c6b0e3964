"""The blob index: what an index object may hold (anything else is refused whole, nothing added), and the named
records it gives back."""
from __future__ import annotations

import json

import pytest

from workers.repository.index import BlobPlace, Index, IndexEntry, index_body, index_packs
from workers.storage.crypto import IntegrityError

A, B = "a" * 64, "b" * 64


def body(blobs: list, *, pack: object = "p1", fmt: object = 1) -> bytes:
    return json.dumps({"format": fmt, "packs": [{"id": pack, "blobs": blobs}]}).encode()


def test_an_index_body_round_trips_as_named_entries_and_places():
    # Given an index body written from named entries
    packs = {"p1": [IndexEntry(B, 10, 5), IndexEntry(A, 0, 10)], "p2": [IndexEntry(A, 0, 10)]}
    raw = index_body(packs)
    # When it is read back, and loaded into an index
    read = index_packs(raw)
    index = Index()
    index.load(raw)
    # Then the entries come back by offset, as named records; the first pack listing a blob is where it is
    assert read == {"p1": [IndexEntry(A, 0, 10), IndexEntry(B, 10, 5)], "p2": [IndexEntry(A, 0, 10)]}
    assert read["p1"][1].blob == B and read["p1"][1].length == 5
    assert index.place(A) == BlobPlace("p1", 0, 10) and index.place(B).offset == 10 and len(index) == 2
    assert index.packs() == {"p1": read["p1"]}


@pytest.mark.parametrize("bad", [
    body([[A, 0, 10], [B, -1, 5]]),             # a negative offset
    body([[A, 0, 10], [B, 10, True]]),          # a boolean for a length
    body([[A, 0, 10], [B, 10]]),                # an entry of two
    body([[A, 0, 10], {"blob": B}]),            # an entry that is not a list
    body([[A, 0, 10], [7, 10, 5]]),             # a blob id that is not a string
    body([[A, 0, 10]], pack=3),                 # a pack id that is not a string
    body({"x": 1}),                             # blobs that are not a list
    body([[A, 0, 10]], fmt=2),                  # another format
    b"[1, 2]", b"not json"])
def test_a_malformed_index_body_is_refused_whole(bad):
    # Given an index already holding a blob, and an index body with one thing wrong
    index = Index()
    index.load(body([["c" * 64, 0, 1]]))
    # When it is read or loaded, then it is refused as not an index, and nothing of it was added
    with pytest.raises(IntegrityError, match="not a valid index"):
        index_packs(bad)
    with pytest.raises(IntegrityError, match="not a valid index"):
        index.load(bad)
    assert list(index.blobs) == ["c" * 64]
