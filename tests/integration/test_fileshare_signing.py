"""A signed file-share repository on a real local store and a real S3 server (moto): bad index objects
(not an artifact, decoding far past their size, unsigned) are skipped with a warning while sync and restore
keep working; the manifest cache is 0600 in 0700 directories."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import stat

import pytest

from tests.contract.conftest import make_store
from tests.unit.certs import signed
from tests.unit.test_fileshare_trees import change_tree, copy_tree, make_tree, picture
from workers.artifacts.service import ArtifactStore, OverwriteError
from workers.fileshare.handler import commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.repository.repo import Repository
from workers.storage.codec import IntegrityError, encode

STAMP = "stamp1"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def backend(request, tmp_path):
    store = make_store(request.param, request, tmp_path)
    signed(store, tmp_path)
    yield store
    with contextlib.suppress(Exception):
        for info in list(store.list("")):
            store.delete(info.key)


def repo_for(backend, tmp_path, cache: bool = True) -> Repository:
    return Repository(ArtifactStore(backend), STAMP, cache_dir=tmp_path / "cache" if cache else None)


def sync(backend, tmp_path, sid: str, cache: bool = True):
    repo = repo_for(backend, tmp_path, cache)
    settings = FileshareSettings(source=str(tmp_path / "src"), cache_dir=tmp_path / "cache")
    result = Sync(settings, repo, LocalTree(tmp_path / "src")).run(sid, STAMP, sid, None)
    commit(repo, result)
    return result


def plant(backend, repo: Repository, stored: bytes, name: str | None = None) -> str:
    name = name or hashlib.sha256(stored).hexdigest()
    backend.put(repo.index_key(name), io.BytesIO(stored), size=len(stored))
    return name


def as_artifact(plain: bytes) -> bytes:
    return encode(io.BytesIO(plain), compress=True, recipient=None).read()


def test_bad_index_objects_are_skipped_with_a_warning_and_sync_and_restore_still_work(backend, tmp_path, caplog):
    # Given a signed repository with one snapshot
    make_tree(tmp_path / "src", big=1 << 20)
    first_tree = copy_tree(tmp_path / "src", tmp_path / "t1")
    sync(backend, tmp_path, "s1")
    repo = repo_for(backend, tmp_path, cache=False)
    # And three bad index objects: not an artifact, a few KB decoding to 64 MiB, and a well-formed unsigned one
    bogus = plant(backend, repo, b"not an artifact at all", "ab" * 32)
    bomb_body = b" " * (64 << 20)
    bomb = plant(backend, repo, as_artifact(bomb_body), hashlib.sha256(bomb_body).hexdigest())
    forged_body = json.dumps({"format": 1, "packs": [{"id": "ff" * 32, "blobs": [["ee" * 32, 0, 10]]}]},
                             separators=(",", ":")).encode()
    forged = plant(backend, repo, as_artifact(forged_body), hashlib.sha256(forged_body).hexdigest())
    assert backend.stat(repo.index_key(bomb)).size < 16 << 10
    # When the index is loaded
    with caplog.at_level(logging.WARNING):
        index = repo.load_index()
    # Then each bad one is skipped with a warning saying why, and the genuine entries are all there
    assert f"skipping index object {repo.index_key(bogus)}" in caplog.text
    assert f"index object {bomb[:12]} decodes to more than" in caplog.text
    assert f"{repo.index_key(forged)}) is not signed" in caplog.text
    assert "ee" * 32 not in index and {bogus, bomb, forged}.isdisjoint(index.objects) and len(index) > 0
    # And a later sync (no cache: everything from the store) and restores of both snapshots work
    change_tree(tmp_path / "src")
    sync(backend, tmp_path, "s2", cache=False)
    repo = repo_for(backend, tmp_path, cache=False)
    for sid, expected in (("s1", first_tree), ("s2", tmp_path / "src")):
        Restorer(repo, LocalTree(tmp_path / f"r-{sid}", create=True)).run(repo.manifest(sid, cached=False))
        assert picture(tmp_path / f"r-{sid}") == picture(expected)


def test_reading_an_index_object_stops_at_its_cap(backend, tmp_path):
    # Given an index object of a few KB that would decode to 64 MiB
    repo = repo_for(backend, tmp_path, cache=False)
    bomb_body = b"[" * (64 << 20)
    name = plant(backend, repo, as_artifact(bomb_body), hashlib.sha256(bomb_body).hexdigest())
    # When it is read / Then decoding stops at 64 × its stored size (at least 1 MiB) with a clear error
    with pytest.raises(IntegrityError, match=r"decodes to more than 1048576 bytes"):
        repo.read_index(name)


def test_the_manifest_cache_is_private(backend, tmp_path):
    # Given a synced snapshot (the cache holds its manifest: every file name of the share) and a lax umask
    make_tree(tmp_path / "src", big=1 << 16)
    old = os.umask(0o022)
    try:
        sync(backend, tmp_path, "s1")
    finally:
        os.umask(old)
    # Then every cache directory is 0700 and every cache file 0600
    repo = repo_for(backend, tmp_path)
    assert repo.cache is not None and repo.cache.is_dir()
    found = list(repo.cache.rglob("*"))
    assert any(p.name == "s1.json.zst" for p in found)
    for path in [repo.cache, *found]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_a_crashed_syncs_manifest_is_replaced_but_a_committed_one_is_write_once(backend, tmp_path):
    # Given a sync that stored its manifest and crashed before the summary (which marks the snapshot done)
    make_tree(tmp_path / "src", big=1 << 16)
    repo = repo_for(backend, tmp_path)
    settings = FileshareSettings(source=str(tmp_path / "src"), cache_dir=tmp_path / "cache")
    crashed = Sync(settings, repo, LocalTree(tmp_path / "src")).run("s1", STAMP, "s1", None)
    repo.put_manifest(crashed.manifest)
    # When the redelivered event syncs again (the tree changed meanwhile) / Then its manifest replaces it
    change_tree(tmp_path / "src")
    sync(backend, tmp_path, "s1")
    assert repo_for(backend, tmp_path, cache=False).manifest("s1", cached=False).to_json() != crashed.manifest.to_json()
    assert repo.summary("s1")["manifest_key"] == repo.manifest_key("s1")
    # And once committed, a different manifest for the snapshot is refused
    with pytest.raises(OverwriteError):
        repo.put_manifest(crashed.manifest)
