"""Incremental snapshots of a local tree into a LocalStore: packing, deduplication, resume, restore."""
from __future__ import annotations

import pytest

from tests.unit.certs import make_cert
from tests.unit.test_fileshare_trees import MiB, change_tree, copy_tree, make_tree, picture
from workers.artifacts.service import ArtifactStore
from workers.fileshare.chunker import Chunker
from workers.fileshare.handler import commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.repository.packer import INDEX_EVERY
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.local import LocalStore


def settings(tmp_path, **kw) -> FileshareSettings:
    return FileshareSettings(source=str(tmp_path / "src"), cache_dir=tmp_path / "cache", **kw)


def repo_for(tmp_path, store: ArtifactStore | None = None, cache: bool = True) -> Repository:
    return Repository(store or ArtifactStore(LocalStore(tmp_path / "store")), "stamp1",
                      cache_dir=tmp_path / "cache" if cache else None)


def sync(tmp_path, sid: str, store=None, cache=True, **kw):
    repo = repo_for(tmp_path, store, cache)
    result = Sync(settings(tmp_path, **kw), repo, LocalTree(tmp_path / "src")).run(sid, "stamp1", sid, None)
    commit(repo, result)
    return result


def test_first_and_second_snapshot_store_only_new_bytes_and_restore_exactly(tmp_path):
    # Given a generated tree, synced once
    sizes = make_tree(tmp_path / "src")
    before = copy_tree(tmp_path / "src", tmp_path / "t0")
    first = sync(tmp_path, "s1")
    # Then every file was read once, identical content stored once, in few packs
    assert first.stats.files == len(sizes) and first.stats.files_new == len(sizes)
    assert first.stats.new_bytes == sum(sizes.values()) - sizes["data/dup-b.bin"]
    assert first.stats.packs == 1
    # When the tree changes (add, modify, delete, rename) and is synced again
    new_content = change_tree(tmp_path / "src")
    after = copy_tree(tmp_path / "src", tmp_path / "t1")
    second = sync(tmp_path, "s2")
    # Then unchanged files are not read and only the new bytes are stored (plus the big file's changed chunk)
    s = second.stats
    assert (s.files_new, s.files_changed, s.files_removed) == (1, 2, 2)
    assert s.files_unchanged == len(sizes) - 3       # modified ×2, deleted; the renamed one moved (not read)
    assert s.files_moved == 1 and s.bytes_read == new_content + 3 * MiB
    assert new_content <= s.new_bytes <= new_content + Chunker().max
    # And each snapshot restores to exactly the tree of its time
    repo = repo_for(tmp_path)
    for sid, expected in (("s1", before), ("s2", after)):
        Restorer(repo, LocalTree(tmp_path / f"r-{sid}", create=True)).run(repo.manifest(sid, cached=False))
        assert picture(tmp_path / f"r-{sid}") == picture(expected)


def test_restore_is_resumable_and_can_pick_a_sub_directory(tmp_path):
    # Given a snapshot restored once
    make_tree(tmp_path / "src")
    sync(tmp_path, "s1")
    repo = repo_for(tmp_path)
    manifest = repo.manifest("s1")
    first = Restorer(repo, LocalTree(tmp_path / "r", create=True)).run(manifest)
    # When one file is damaged and the restore runs again
    (tmp_path / "r/site/wwwroot/index.html").write_bytes(b"damaged")
    again = Restorer(repo, LocalTree(tmp_path / "r", create=True)).run(manifest)
    # Then only that file is written again
    assert again.files_restored == 1 and again.files_identical == first.files_restored - 1
    assert picture(tmp_path / "r") == picture(tmp_path / "src")
    # And a restore of one directory brings only that directory (with its empty sub-directories)
    part = Restorer(repo, LocalTree(tmp_path / "p", create=True)).run(manifest, "deep")
    assert part.files_restored == 0 and (tmp_path / "p/deep/a/b/c/empty").is_dir()
    assert not (tmp_path / "p/site").exists()


def test_many_small_files_cost_a_few_pack_objects(tmp_path):
    # Given 600 small files (about 6 MiB) and 1 MiB packs
    for i in range(600):
        (tmp_path / "src" / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / f"d{i % 7}" / f"f{i}").write_bytes(i.to_bytes(4, "big") * 2500)
    # When synced
    result = sync(tmp_path, "s1", pack_size=MiB, chunk_avg=256 * 1024)
    # Then they went into a handful of packs, each followed by its index object
    store = tmp_path / "store/stamp1/fileshare"
    packs = [p for p in (store / "packs").iterdir() if p.suffix == ""]
    assert result.stats.packs == len(packs) and 5 <= len(packs) <= 8
    repo = repo_for(tmp_path)
    assert len(repo.load_index()) == 600


def test_an_interrupted_snapshot_resumes_from_the_packs_already_stored(tmp_path):
    # Given a store that goes away for good when the eleventh pack is uploaded (uploads one at a time; stored
    # packs are indexed in batches of INDEX_EVERY, so the first batch of 8 is indexed by then)
    assert INDEX_EVERY == 8
    make_tree(tmp_path / "src", big=12 * MiB)
    backend = LocalStore(tmp_path / "store")
    real_put, puts = backend.put, []

    def failing_put(key, stream, size=None, metadata=None, **kwargs):
        puts.append(key)
        if sum("/packs/" in k and not k.endswith(".json") for k in puts) > 10:
            raise ConnectionError("store went away")
        return real_put(key, stream, size, metadata, **kwargs)

    backend.put = failing_put
    with pytest.raises(ConnectionError):
        sync(tmp_path, "s1", store=ArtifactStore(backend), pack_size=MiB, chunk_avg=256 * 1024, uploads=1)
    # When the store is back and the same snapshot is tried again
    backend.put = real_put
    result = sync(tmp_path, "s1", store=ArtifactStore(backend), pack_size=MiB, chunk_avg=256 * 1024)
    # Then the bytes of the indexed packs (8 of nearly 1 MiB) are not uploaded again, and the snapshot is whole
    assert result.stats.new_bytes <= result.stats.bytes - 5 * MiB
    Restorer(repo_for(tmp_path), LocalTree(tmp_path / "r", create=True)).run(repo_for(tmp_path).manifest("s1"))
    assert picture(tmp_path / "r") == picture(tmp_path / "src")


def test_encrypted_repository_without_the_local_cache_reads_again_but_uploads_nothing(tmp_path):
    # Given an encrypted repository (the worker has only the certificate) with one snapshot
    cert = make_cert("fileshare-unit")
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    store = ArtifactStore(LocalStore(tmp_path / "store"), certificate=load_certificate(tmp_path / "cert.pem"))
    make_tree(tmp_path / "src")
    sync(tmp_path, "s1", store=store)
    raw = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert b"same bytes same bytes" not in raw and "naïve".encode() not in raw
    # When the worker's cache is lost and it syncs again
    second = sync(tmp_path, "s2", store=store, cache=False)
    # Then it has to read every file again, but stores no new content
    assert second.stats.files_unchanged == 0 and second.stats.new_bytes == 0
    # And the private key restores it
    keys = KeyRing.from_files(keys=[tmp_path / "key.pem"])
    repo = repo_for(tmp_path, store, cache=False)
    Restorer(repo, LocalTree(tmp_path / "r", create=True), keys=keys).run(repo.manifest("s2", keys))
    assert picture(tmp_path / "r") == picture(tmp_path / "src")
