"""Packers of reader processes claim their blobs from the sync's packer before they store a pack (see
``workers.fileshare.packing``): a blob is stored once, the index names every stored pack, and a pack whose blobs
another packer claimed first is stored without them. Local store; the pipe is replaced by direct calls."""
from __future__ import annotations

import hashlib
import io
import os

from workers.artifacts.service import ArtifactStore
from workers.repository.index import IndexEntry
from workers.repository.packer import Packer
from workers.repository.repo import Repository
from workers.storage.local import LocalStore

KiB = 1024


def blob(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_two_process_packers_store_each_blob_once_and_the_sync_indexes_their_packs(tmp_path):
    # Given the sync's packer and two reader processes' packers that meet some of the same content
    artifacts = ArtifactStore(LocalStore(tmp_path / "store"))
    sync = Packer(Repository(artifacts, "stamp"), target=64 * KiB, index_every=2)
    shared = [os.urandom(10 * KiB) for _ in range(6)]
    own = [[os.urandom(9 * KiB) for _ in range(8)] for _ in range(2)]
    readers = [Packer(Repository(artifacts, "stamp"), target=64 * KiB, uploads=1, known=set(), claim=sync.claim,
                      on_stored=sync.stored) for _ in range(2)]
    # When both pack their own content and all of the shared content, interleaved
    for i in range(8):
        for r, packer in enumerate(readers):
            packer.add(blob(own[r][i]), own[r][i])
            if i < 6:
                packer.add(blob(shared[i]), shared[i])
    for packer in readers:
        packer.finish()
    sync.finish()
    # Then the index names every blob once, the packs hold exactly the distinct bytes, and each blob reads back
    repo = Repository(artifacts, "stamp")
    index = repo.load_index()
    distinct = {blob(d): d for d in shared + own[0] + own[1]}
    assert set(index.blobs) == set(distinct)
    packs = {index.place(b).pack for b in distinct}
    assert sum(artifacts.record(repo.pack_key(p)).plaintext_size for p in packs) == sum(map(len, distinct.values()))
    assert sync.new_bytes == sum(map(len, distinct.values())) and sync.packs == len(packs)
    for blob_id, data in distinct.items():
        place = index.place(blob_id)
        out = io.BytesIO()
        repo.read_pack(place.pack, out, keys=None)
        assert out.getvalue()[place.offset:place.offset + place.length] == data


def test_a_pack_whose_every_blob_was_claimed_elsewhere_is_not_stored(tmp_path):
    # Given content the sync's packer already has claimed for another process
    artifacts = ArtifactStore(LocalStore(tmp_path / "store"))
    sync = Packer(Repository(artifacts, "stamp"), target=64 * KiB)
    data = os.urandom(5 * KiB)
    assert sync.claim([IndexEntry(blob(data), 0, len(data))]) == []         # granted to "another process"
    reader = Packer(Repository(artifacts, "stamp"), target=64 * KiB, uploads=1, known=set(), claim=sync.claim,
                    on_stored=sync.stored)
    # When a reader process packs only that content
    reader.add(blob(data), data)
    reader.finish()
    # Then nothing is stored for it (no pack object), and the claim stands for the one that made it
    assert not list(artifacts.backend.list("stamp/fileshare/packs/"))
    assert sync.packs == 0 and sync.new_bytes == len(data)
