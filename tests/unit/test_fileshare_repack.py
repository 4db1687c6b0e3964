"""Prune with repacking on a real LocalStore: partly used packs are rewritten so only needed bytes stay, what
remains restores byte for byte (plain and encrypted), encrypted packs are never rewritten in plaintext, and a
prune that crashes after repacking leaves a restorable repository that the next prune finishes."""
from __future__ import annotations

import pytest

from tests.unit.certs import make_cert
from tests.unit.test_fileshare_prune import (NOW_GRACE, assert_restores, failing_pack_deletes, files_under,
                                             history, repo_for)
from workers.artifacts.service import ArtifactStore
from workers.repository.forget import Policy, forget
from workers.repository.index import IndexEntry
from workers.repository.prune import Pruner
from workers.repository.repack import choose, to_move
from workers.repository.repo import Repository
from workers.runtime.errors import ConfigurationError
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.local import LocalStore


def pack_files(tmp_path) -> dict[str, int]:
    packs = tmp_path / "store/stamp1/fileshare/packs"
    return {p.name: p.stat().st_size for p in packs.iterdir() if "." not in p.name}


def every_indexed_blob_is_needed(store: ArtifactStore, keys: KeyRing | None = None) -> bool:
    repo = Repository(store, "stamp1")
    live = {b for s in repo.summaries() for b in repo.manifest(s["snapshot_id"], keys, cached=False).blob_ids()}
    return set(repo.load_index().blobs) == live


def test_choose_and_to_move_pick_mostly_unused_packs_and_only_blobs_held_nowhere_else():
    keep = {"p1": [IndexEntry("a", 0, 10), IndexEntry("b", 10, 90)],
            "p2": [IndexEntry("c", 0, 50), IndexEntry("d", 50, 50)], "p3": [IndexEntry("a", 0, 10)]}
    live = {"a", "c", "d"}
    assert choose(keep, live, 0.5) == ["p1"] and choose(keep, live, 0) == [] and choose(keep, live, 1.0) == ["p1"]
    assert to_move(keep, ["p1"], live) == {}                   # "a" is held by p3 as well
    assert to_move(keep, ["p1", "p3"], live) == {"a": 10}


def test_prune_repacks_partly_used_packs_so_only_needed_bytes_stay_and_everything_restores(tmp_path):
    # Given four snapshots of a changing tree, the oldest two forgotten (their packs now partly used)
    store = ArtifactStore(LocalStore(tmp_path / "store"))
    copies = history(tmp_path, store)
    forget(repo_for(store, tmp_path), Policy(keep_last=2))
    dry = Pruner(Repository(store, "stamp1"), None, repack_below=1.0).run(dry_run=True)
    assert dry.packs_repacked and dry.bytes_to_move > 0
    # When it is pruned with repacking of every partly used pack, and the store fails deleting old packs
    with failing_pack_deletes(store), pytest.raises(ConnectionError):
        Pruner(Repository(store, "stamp1"), None, repack_below=1.0).run()
    # Then the remaining snapshots still restore (both copies of the moved blobs are there, one indexed)
    assert_restores(store, tmp_path, copies, ["s3", "s4"], "crashed")
    # When the prune runs again
    report = Pruner(Repository(store, "stamp1"), None, repack_below=1.0, unindexed_grace=NOW_GRACE).run()
    # Then the old packs are gone, no partly used pack is left, and the index lists only needed blobs
    assert report.unindexed_deleted and report.packs_partial == 0 and report.unused_bytes_kept == 0
    assert set(pack_files(tmp_path)) == set(Repository(store, "stamp1").load_index().packs())
    assert every_indexed_blob_is_needed(store)
    assert_restores(store, tmp_path, copies, ["s3", "s4"], "repacked")
    # And a prune right after it has nothing to do
    again = Pruner(Repository(store, "stamp1"), None, repack_below=1.0).run()
    assert not again.packs_repacked and not again.packs_deleted and again.bytes_freed == 0


def test_repacking_frees_more_than_keeping_partly_used_packs_whole(tmp_path):
    # Given the same history in two stores, the oldest two snapshots forgotten in each
    sizes = {}
    for below in (0.0, 1.0):
        store = ArtifactStore(LocalStore(tmp_path / f"{below}" / "store"))
        history(tmp_path / f"{below}", store)
        forget(repo_for(store, tmp_path / f"{below}"), Policy(keep_last=2))
        # When one is pruned without repacking and the other with it
        report = Pruner(Repository(store, "stamp1"), None, repack_below=below).run()
        sizes[below] = sum(pack_files(tmp_path / f"{below}").values())
        assert (report.repacked is not None) is (below > 0)
    # Then repacking leaves fewer bytes in packs: the 300 kB unique file of s2 no longer stays in s1's pack
    assert sizes[1.0] < sizes[0.0] - 250_000


def test_an_encrypted_repository_is_repacked_encrypted_and_never_without_a_certificate(tmp_path):
    # Given an encrypted repository with two snapshots, the older one forgotten
    cert, key = make_cert("repack-unit").write(tmp_path)
    keys = KeyRing.from_files(keys=[key])
    store = ArtifactStore(LocalStore(tmp_path / "store"), certificate=load_certificate(cert))
    copies = history(tmp_path, store, count=2)
    forget(repo_for(store, tmp_path), Policy(keep_last=1))
    before = files_under(tmp_path / "store")
    # When an operator prunes with the key but without the certificate configured
    plain = ArtifactStore(LocalStore(tmp_path / "store"))
    with pytest.raises(ConfigurationError) as refused:
        Pruner(Repository(plain, "stamp1"), keys, repack_below=1.0).run()
    # Then nothing changes, and the error says how to go on
    assert "unencrypted" in refused.value.message and "--repack-below 0" in refused.value.hint
    assert files_under(tmp_path / "store") == before
    # And when repacking was only the default (not strict), the prune goes on and keeps those packs whole
    lenient = Pruner(Repository(plain, "stamp1"), keys, repack_below=1.0, repack_strict=False).run()
    assert lenient.repack_skipped and "unencrypted" in lenient.repack_skipped and lenient.packs_partial >= 1
    assert not lenient.packs_repacked and any("kept whole" in line for line in lenient.lines())
    # When the certificate is configured too
    report = Pruner(Repository(store, "stamp1"), keys, repack_below=1.0).run()
    # Then the partly used pack is rewritten, encrypted, and the snapshot restores with the key
    assert report.packs_repacked and report.repacked.packs_written >= 1
    raw = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert b"same bytes same bytes" not in raw
    assert every_indexed_blob_is_needed(store, keys)
    assert_restores(store, tmp_path, copies, ["s2"], "encrypted", keys=keys)
