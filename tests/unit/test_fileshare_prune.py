"""Prune: reachability and pack classification (pure), then forget + prune on a real LocalStore — what stays
restores byte for byte, what was only in forgotten snapshots is gone, a dry run changes nothing, and a prune
interrupted after its index switch leaves a restorable repository that the next prune finishes."""
from __future__ import annotations

import contextlib
import random
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest

from tests.unit.certs import make_cert
from tests.unit.test_fileshare_trees import BASE_NS, MiB, copy_tree, make_tree, picture, write
from workers.artifacts.service import ArtifactStore
from workers.fileshare.handler import commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.repository.forget import Policy, forget
from workers.repository.index import IndexEntry
from workers.repository.lock import LockLost
from workers.repository.manifest import Entry, Manifest
from workers.repository.prune import Pruner, classify, reachable
from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.local import LocalStore

NOW_GRACE = timedelta(0)          # the test's packs are seconds old: let prune treat unindexed ones as old


def manifest(sid: str, *files: tuple[str, ...]) -> Manifest:
    return Manifest(sid, "stamp1", sid, "src", entries=[Entry(f"f{i}", False, 1, 0, 32, "x", blobs)
                                                        for i, blobs in enumerate(files)])


def test_reachable_is_the_union_of_every_manifests_blobs():
    assert reachable([manifest("a", ("b1", "b2")), manifest("b", ("b2", "b3"), ())]) == {"b1", "b2", "b3"}
    assert reachable([]) == set()


def test_classify_deletes_unused_packs_keeps_partly_used_ones_whole_and_drops_vanished_packs():
    # Given packs fully used, partly used, unused, and one that the index lists but the store lost
    entries = {"full": [IndexEntry("b1", 0, 10), IndexEntry("b2", 10, 10)],
               "part": [IndexEntry("b3", 0, 100), IndexEntry("old", 100, 50)], "dead": [IndexEntry("x1", 0, 7)],
               "gone": [IndexEntry("b4", 0, 5), IndexEntry("x2", 5, 5)], "dup": [IndexEntry("b1", 0, 10)]}
    plan = classify(entries, {"b1", "b2", "b3", "b4"}, present={"full", "part", "dead", "dup"})
    # Then only the unused pack goes; the partial one is kept with all its entries and its waste counted
    assert plan.delete == ["dead"] and plan.partial == ["part"] and plan.unused_bytes == 50
    assert plan.keep == {"dup": [IndexEntry("b1", 0, 10)], "full": entries["full"], "part": entries["part"]}
    # And the lost pack's entries are dropped, its needed blob reported missing
    assert plan.dangling == ["gone"] and plan.missing == {"b4"}


# ------------------------------------------------------------------------------------ on a LocalStore
def fs_settings(tmp_path) -> FileshareSettings:
    return FileshareSettings(source=str(tmp_path / "src"), cache_dir=tmp_path / "cache", pack_size=MiB,
                             chunk_avg=256 * 1024)


def repo_for(store: ArtifactStore, tmp_path) -> Repository:
    return Repository(store, "stamp1", cache_dir=tmp_path / "cache")


def history(tmp_path, store: ArtifactStore, count: int = 4) -> dict[str, Path]:
    """Snapshots s1..s<count> of a tree that changes in between (a new unique file replaces the previous one,
    index.html changes); returns a copy of the tree as each snapshot saw it."""
    make_tree(tmp_path / "src", big=MiB)
    copies = {}
    for i in range(1, count + 1):
        if i > 1:
            (tmp_path / f"src/unique/gen{i - 1}.bin").unlink()
        write(tmp_path / "src", f"unique/gen{i}.bin", random.Random(i).randbytes(300_000), BASE_NS + i * 10**9)
        write(tmp_path / "src", "site/wwwroot/index.html", f"<html>v{i}</html>".encode(), BASE_NS + i * 10**9)
        repo = repo_for(store, tmp_path)
        commit(repo, Sync(fs_settings(tmp_path), repo, LocalTree(tmp_path / "src")).run(f"s{i}", "stamp1", f"s{i}",
                                                                                        None))
        copies[f"s{i}"] = copy_tree(tmp_path / "src", tmp_path / f"then-s{i}")
    return copies


def assert_restores(store: ArtifactStore, tmp_path, copies: dict[str, Path], snapshots, tag: str,
                    keys: KeyRing | None = None) -> None:
    repo = Repository(store, "stamp1")                          # no cache: what the store holds
    for sid in snapshots:
        target = tmp_path / f"restore-{tag}-{sid}"
        Restorer(repo, LocalTree(target, create=True), keys=keys).run(repo.manifest(sid, keys, cached=False))
        assert picture(target) == picture(copies[sid]), sid


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@contextlib.contextmanager
def failing_pack_deletes(store: ArtifactStore) -> Iterator[None]:
    """The store goes away whenever a pack is deleted (index objects still go)."""
    backend = store.backend
    real_delete = backend.delete

    def failing_delete(key: str) -> None:
        if "/packs/" in key:
            raise ConnectionError("store went away while deleting packs")
        real_delete(key)

    backend.delete = failing_delete
    try:
        yield
    finally:
        backend.delete = real_delete


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(LocalStore(tmp_path / "store"))


def test_forget_then_prune_frees_what_only_forgotten_snapshots_needed_and_the_rest_restores(tmp_path, store):
    # Given four snapshots of a changing tree
    copies = history(tmp_path, store)
    repo = repo_for(store, tmp_path)
    blobs = {sid: repo.manifest(sid, cached=False).blob_ids() for sid in copies}
    packs_before = set(repo.load_index().packs())
    # When all but the newest two are forgotten and the repository is pruned
    plan = forget(repo, Policy(keep_last=2))
    report = Pruner(Repository(store, "stamp1"), None).run()
    # Then s1 and s2 are gone from the listing; s3 and s4 restore byte for byte
    assert plan.forget == ["s2", "s1"] and plan.keep == ["s4", "s3"]
    assert [s["snapshot_id"] for s in Repository(store, "stamp1").summaries()] == ["s3", "s4"]
    assert_restores(store, tmp_path, copies, ["s3", "s4"], "after")
    # And what only the forgotten snapshots needed is no longer indexed; s2's pack (only its own data) is gone;
    # s1's first pack is kept whole (partly used: the unchanged tree lives there), its waste reported
    live = blobs["s3"] | blobs["s4"]
    fresh = Repository(store, "stamp1").load_index()
    s2_only = blobs["s2"] - blobs["s1"] - live
    assert s2_only and not s2_only & set(fresh.blobs)
    packs = fresh.packs()
    for blob in (blobs["s1"] | blobs["s2"]) - live:
        assert blob not in fresh or any(e.blob in live for e in packs[fresh.place(blob).pack])   # partly used pack
    assert len(report.packs_deleted) >= 1 and report.packs_partial >= 1 and report.bytes_freed > 300_000
    assert report.unused_bytes_kept >= 300_000 and report.snapshots == 2 and report.index_objects_removed >= 1
    packs_dir = tmp_path / "store/stamp1/fileshare/packs"
    for pack in report.packs_deleted:
        assert not (packs_dir / pack).exists() and not (packs_dir / f"{pack}.record.json").exists()
    assert set(fresh.packs()) == packs_before - set(report.packs_deleted)
    assert len(list(store.backend.list("stamp1/fileshare/index/"))) == 1
    # When it is pruned again / Then there is nothing left to do
    again = Pruner(Repository(store, "stamp1"), None).run()
    assert not again.packs_deleted and not again.unindexed_deleted and again.bytes_freed == 0


def test_dry_run_changes_nothing_but_reports_the_same_as_the_real_run(tmp_path, store):
    # Given four snapshots, three forgotten
    copies = history(tmp_path, store, count=3)
    forget(repo_for(store, tmp_path), Policy(keep_last=1))
    before = files_under(tmp_path / "store")
    # When prune and forget run as dry runs
    dry = Pruner(Repository(store, "stamp1"), None).run(dry_run=True)
    assert forget(repo_for(store, tmp_path), Policy(keep_last=0), dry_run=True).forget == []
    # Then not one object changed
    assert files_under(tmp_path / "store") == before
    # And neither does a prune that finds, once its plan is made, that it lost its lock
    def lost() -> None:
        raise LockLost("the prune lock was lost")

    with pytest.raises(LockLost):
        Pruner(Repository(store, "stamp1"), None).run(before_changes=lost)
    assert files_under(tmp_path / "store") == before
    # And the real run does what the dry run said
    real = Pruner(Repository(store, "stamp1"), None).run()
    assert (real.packs_deleted, real.bytes_freed, real.new_index) == (dry.packs_deleted, dry.bytes_freed, dry.new_index)
    assert_restores(store, tmp_path, copies, ["s3"], "dry")


def test_a_prune_that_fails_deleting_packs_leaves_a_restorable_repo_and_the_next_prune_finishes(tmp_path, store):
    # Given four snapshots, two forgotten
    copies = history(tmp_path, store)
    forget(repo_for(store, tmp_path), Policy(keep_last=2))
    # When the prune crashes after writing the new index and removing the old ones, before any pack is gone
    with failing_pack_deletes(store), pytest.raises(ConnectionError):
        Pruner(Repository(store, "stamp1"), None).run()
    # Then every remaining snapshot restores, and no index object lists a doomed pack
    assert_restores(store, tmp_path, copies, ["s3", "s4"], "crashed")
    index = Repository(store, "stamp1").load_index()
    # And a sync of content that only a doomed pack held stores it again (nothing dedups against doomed packs)
    write(tmp_path / "src", "unique/gen2.bin", random.Random(2).randbytes(300_000), BASE_NS)
    assert history_sync(tmp_path, store, "s5").new_bytes >= 300_000
    copies["s5"] = copy_tree(tmp_path / "src", tmp_path / "then-s5")
    # When the next prune runs: unindexed packs younger than the grace period are kept, older ones deleted
    young = Pruner(Repository(store, "stamp1"), None).run()
    assert young.unindexed_young >= 1 and not young.unindexed_deleted
    second = Pruner(Repository(store, "stamp1"), None, unindexed_grace=NOW_GRACE).run()
    # Then the leftovers are deleted and the store holds exactly the packs the index lists
    assert second.unindexed_deleted and second.bytes_freed > 0
    on_disk = {p.name for p in (tmp_path / "store/stamp1/fileshare/packs").iterdir() if "." not in p.name}
    assert on_disk == set(Repository(store, "stamp1").load_index().packs()) and on_disk >= set(index.packs())
    assert_restores(store, tmp_path, copies, ["s3", "s4", "s5"], "second")


def history_sync(tmp_path, store: ArtifactStore, sid: str) -> dict:
    repo = repo_for(store, tmp_path)
    result = Sync(fs_settings(tmp_path), repo, LocalTree(tmp_path / "src")).run(sid, "stamp1", sid, None)
    commit(repo, result)
    return result.stats


def test_prune_of_an_encrypted_repository_needs_the_key_and_says_so(tmp_path):
    # Given an encrypted repository (the worker has only the certificate)
    cert, key = make_cert("prune-unit").write(tmp_path)
    store = ArtifactStore(LocalStore(tmp_path / "store"), certificate=load_certificate(cert))
    history(tmp_path, store, count=2)
    before = files_under(tmp_path / "store")
    # When it is pruned without the private key / Then it stops before changing anything, naming the fix
    with pytest.raises(PermanentError) as failure:
        Pruner(Repository(store, "stamp1"), None).run()
    assert "manifest of snapshot s1" in failure.value.message and "--key" in failure.value.hint
    assert files_under(tmp_path / "store") == before
    # And with the key it works
    forget(repo_for(store, tmp_path), Policy(keep_last=1))
    report = Pruner(Repository(store, "stamp1"), KeyRing.from_files(keys=[key])).run()
    assert report.snapshots == 1 and report.packs_partial >= 1 and report.unused_bytes_kept >= 300_000
