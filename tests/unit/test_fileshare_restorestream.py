"""Large files restored pack by pack (``workers.fileshare.restorestream``) from a real encrypted local store into a
real local directory: byte for byte with mtimes, no pack decoded to local disk; a damaged blob, a missing pack or a
target that cannot be written leave the file to the file-by-file restore, which reports it as always, with no
temporary file left; files beyond what may be open at once are restored by the file-by-file restore."""
from __future__ import annotations

import contextlib
import logging
import random
import re
import shutil

import pytest

from tests.unit.certs import make_cert
from tests.unit.test_fileshare_trees import BASE_NS, MiB, picture, write
from workers.artifacts.service import ArtifactStore
from workers.fileshare.handler import commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare import restorestream
from workers.fileshare.restoreorder import admitted, pack_order
from workers.fileshare.restorestream import StreamedRestore
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.repository.paths import PARTIAL
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.local import LocalStore

LARGE = {"media/a.bin": 6 * MiB + 11, "media/b.bin": 9 * MiB, "media/c.bin": 13 * MiB - 5,
         "deep/er/d.bin": 5 * MiB + 1, "media/same.bin": 6 * MiB + 11}
SMALL_FILES = {f"small/{i}.txt": 1000 + i for i in range(5)}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A snapshot of large files (one a copy of another: its blobs are stored once) and small ones, in 4 MiB
    packs, encrypted: (repository, keys, manifest, source folder)."""
    root = tmp_path_factory.mktemp("stream")
    rnd = random.Random(5)
    src = root / "src"
    for i, (rel, size) in enumerate({**LARGE, **SMALL_FILES}.items()):
        data = rnd.randbytes(size) if rel != "media/same.bin" else (src / "media/a.bin").read_bytes()
        write(src, rel, data, BASE_NS + i * 1000)
    return (*backed_up(root, src), src)


def backed_up(root, src) -> tuple[Repository, KeyRing, object]:
    """``src`` synced as snapshot s1 into an encrypted local store under ``root``, in 4 MiB packs: (repository,
    keys, manifest)."""
    cert = make_cert(f"restorestream-{root.name}")
    (root / "key.pem").write_bytes(cert.key_pem())
    (root / "cert.pem").write_bytes(cert.cert_pem)
    store = ArtifactStore(LocalStore(root / "store"), certificate=load_certificate(root / "cert.pem"))
    settings = FileshareSettings(source=str(src), cache_dir=root / "cache", pack_size=4 * MiB)
    repo = Repository(store, "stamp1", cache_dir=root / "cache")
    commit(repo, Sync(settings, repo, LocalTree(src)).run("s1", "stamp1", "s1", None))
    keys = KeyRing.from_files(keys=[root / "key.pem"])
    repo = Repository(store, "stamp1")
    return repo, keys, repo.manifest("s1", keys)


def restorer(repo, keys, target, **kw) -> Restorer:
    return Restorer(repo, LocalTree(target, create=True), keys=keys, writers=0, temp_root=target.parent / "t",
                    retries=0, **kw)


@contextlib.contextmanager
def blob_moved(repo, manifest, path: str, i: int):
    """The index places blob ``i`` of ``path`` one byte off (its bytes no longer match its id) meanwhile."""
    repo.load_index()
    blob = next(e for e in manifest.entries if e.path == path).blobs[i]
    pack, offset, length = repo.index.blobs[blob]
    repo.index.blobs[blob] = (pack, offset + 1, length)
    try:
        yield
    finally:
        repo.index.blobs[blob] = (pack, offset, length)


def partials(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{PARTIAL}"))


def test_large_files_are_restored_pack_by_pack_exactly_with_no_pack_on_local_disk(stored, tmp_path, caplog,
                                                                                   monkeypatch):
    # Given a snapshot whose large files span several packs, some packs holding parts of two files (the sync reads
    # several files at once, so how many overlap varies: enough may be open at once for all of them)
    monkeypatch.setattr(restorestream, "MAX_OPEN", len(LARGE))
    repo, keys, manifest, src = stored
    repo.load_index()
    packs_of = {e.path: {repo.index.place(b).pack for b in e.blobs} for e in manifest.entries if e.path in LARGE}
    assert all(len(packs) > 1 for packs in packs_of.values())
    assert any(packs_of[a] & packs_of[b] for a in LARGE for b in LARGE if a < b and "same" not in a + b)
    # When it is restored
    caplog.set_level(logging.INFO, logger="workers")
    report = restorer(repo, keys, tmp_path / "r").run(manifest)
    # Then every file is there with its bytes and mtime, and nothing else
    assert report.exact and report.files_restored == len(LARGE) + len(SMALL_FILES)
    assert picture(tmp_path / "r") == picture(src) and partials(tmp_path / "r") == []
    # And every large file was written pack by pack: the file-by-file restore decoded no pack to local disk
    assert f"restore: {len(LARGE)} large file(s) streamed from" in caplog.text
    assert "0 left to the file-by-file restore" in caplog.text
    assert re.search(r"restore: 0 of \d+ packs decoded to the private directory", caplog.text)


def test_the_file_by_file_restore_alone_gives_the_same_tree(stored, tmp_path):
    # Given the same snapshot, When it is restored with the pack-by-pack restore turned off
    repo, keys, manifest, src = stored
    report = restorer(repo, keys, tmp_path / "r", streamed=False).run(manifest)
    # Then the tree is the same
    assert report.exact and picture(tmp_path / "r") == picture(src)


def test_a_damaged_blob_fails_its_file_with_the_usual_reason_and_leaves_no_temporary_file(stored, tmp_path, caplog):
    # Given an index that places media/b.bin's third blob one byte off (its bytes no longer match its id)
    repo, keys, manifest, src = stored
    caplog.set_level(logging.INFO, logger="workers")
    with blob_moved(repo, manifest, "media/b.bin", 2):
        # When the snapshot is restored
        report = restorer(repo, keys, tmp_path / "r").run(manifest)
    # Then the pack-by-pack restore gave it up when it met the blob, and the file-by-file restore lists only it,
    # with its usual reason; no temporary file is left
    assert re.search(r"media/b\.bin.? left to the file-by-file restore: blob \w+ in pack \w+ does not match", caplog.text)
    assert [f.path for f in report.failed] == ["media/b.bin"]
    assert "does not match its id" in report.failed[0].reason and report.failed[0].hint
    assert not (tmp_path / "r/media/b.bin").exists() and partials(tmp_path / "r") == []
    expected = {k: v for k, v in picture(src).items() if k != "media/b.bin"}
    assert picture(tmp_path / "r") == expected


def test_a_missing_pack_fails_only_the_files_that_need_it(stored, tmp_path):
    # Given a store that lost one pack of media/c.bin (a copy of the repository's store: the others keep theirs)
    repo, keys, manifest, src = stored
    repo.load_index()
    entry = next(e for e in manifest.entries if e.path == "media/c.bin")
    lost = repo.index.place(entry.blobs[-1]).pack
    needing = sorted(e.path for e in manifest.entries if any(repo.index.place(b).pack == lost for b in e.blobs))
    store_dir = tmp_path / "store"
    shutil.copytree(repo.data.backend.root, store_dir)
    broken = Repository(ArtifactStore(LocalStore(store_dir)), "stamp1")
    broken.data.backend.delete(broken.pack_key(lost))
    # When the snapshot is restored from it
    report = restorer(broken, keys, tmp_path / "r").run(broken.manifest("s1", keys))
    # Then exactly the files that need the lost pack are listed, none of them left half-written
    assert sorted(f.path for f in report.failed) == needing and "media/c.bin" in needing
    assert all(not (tmp_path / "r" / p).exists() for p in needing) and partials(tmp_path / "r") == []
    assert picture(tmp_path / "r") == {k: v for k, v in picture(src).items() if k not in needing}


def test_a_file_that_cannot_be_written_is_reported_and_the_others_are_restored(stored, tmp_path):
    # Given a target where media/c.bin's temporary file cannot be created (a directory holds its name)
    repo, keys, manifest, src = stored
    (tmp_path / "r/media" / f".c.bin{PARTIAL}").mkdir(parents=True)
    # When the snapshot is restored
    report = restorer(repo, keys, tmp_path / "r").run(manifest)
    # Then media/c.bin is listed with the target's problem, and every other file is exact
    assert [f.path for f in report.failed] == ["media/c.bin"]
    restored = {k: v for k, v in picture(tmp_path / "r").items() if not k.startswith("media/.c.bin")}
    assert restored == {k: v for k, v in picture(src).items() if k != "media/c.bin"}


def test_files_beyond_those_open_at_once_are_left_to_the_file_by_file_restore(stored, tmp_path):
    # Given the plan of the large files, with one file open at a time
    repo, keys, manifest, src = stored
    plan = restorer(repo, keys, tmp_path / "r").plan(manifest)
    for step in plan.steps:
        if step.entry.is_dir:
            (tmp_path / "r" / step.target).mkdir(parents=True, exist_ok=True)
    target = LocalTree(tmp_path / "r")
    large = [s for s in plan.steps if s.entry.path in LARGE]
    repo.load_index()
    streamed = StreamedRestore(repo, keys, target.open_write, target.set_meta, max_open=1, packs_at_once=1)
    # When they are restored pack by pack
    done, rest = streamed.run(large)
    # Then some are restored (exactly), the others left untouched for the file-by-file restore
    assert done and rest and len(done) + len(rest) == len(large)
    for step in done:
        assert (tmp_path / "r" / step.target).read_bytes() == (src / step.entry.path).read_bytes()
        assert (tmp_path / "r" / step.target).stat().st_mtime_ns == step.entry.mtime_ns
    assert all(not (tmp_path / "r" / s.target).exists() for s in rest) and partials(tmp_path / "r") == []
    # And the whole restore, with the same limit, restores every file
    report = Restorer(repo, LocalTree(tmp_path / "r"), keys=keys, writers=0, retries=0).run(manifest)
    assert report.exact and picture(tmp_path / "r") == picture(src)


def test_packs_are_taken_in_the_order_the_files_need_them():
    # Given two files written together (packs p1 p2 p3 and p2 p4) and one that needs an earlier pack last
    # When ordered, Then each file's packs keep their order, p3/p4 after p2, and a disagreement is broken
    assert pack_order([["p1", "p2", "p3"], ["p2", "p4"]]) == ["p1", "p2", "p3", "p4"]
    assert pack_order([["a", "b"], ["b", "a"]]) == ["a", "b"]
    assert pack_order([]) == []


def test_no_more_files_are_admitted_than_may_be_open_at_once():
    # Given files open over these pack positions, When at most two may be open, Then the third overlapping one
    # waits out (the file-by-file restore takes it) and a later one is admitted once one has closed
    assert admitted([(0, 3), (1, 4), (2, 5), (5, 6)], 2) == [True, True, False, True]
    assert admitted([(0, 1)] * 3, 3) == [True, True, True]


def test_a_file_that_repeats_its_own_chunks_gets_each_copy_where_it_goes(tmp_path):
    # Given a large file whose content repeats a 3 MiB block (the chunker cuts the same chunks: blobs listed twice)
    rnd = random.Random(11)
    block = rnd.randbytes(3 * MiB)
    data = rnd.randbytes(100_000) + block * 4 + rnd.randbytes(50_000)
    write(tmp_path / "src", "rep.bin", data, BASE_NS)
    repo, keys, manifest = backed_up(tmp_path, tmp_path / "src")
    (entry,) = [e for e in manifest.entries if e.path == "rep.bin"]
    assert len(set(entry.blobs)) < len(entry.blobs)
    # When it is restored pack by pack
    plan = restorer(repo, keys, tmp_path / "r").plan(manifest)
    (tmp_path / "r").mkdir()
    repo.load_index()
    done, rest = StreamedRestore(repo, keys, LocalTree(tmp_path / "r").open_write,
                                 LocalTree(tmp_path / "r").set_meta).run([s for s in plan.steps if not s.entry.is_dir])
    # Then every copy of each repeated blob is where the file has it
    assert len(done) == 1 and rest == []
    assert (tmp_path / "r/rep.bin").read_bytes() == data
    assert (tmp_path / "r/rep.bin").stat().st_mtime_ns == BASE_NS
