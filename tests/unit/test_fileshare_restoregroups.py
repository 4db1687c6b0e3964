"""Large files restored pack by pack in two processes (``workers.fileshare.restoregroups``), from a real encrypted
local store opened from settings into a real local directory: the split keeps files that share packs together;
both processes restore byte for byte with mtimes; a group process killed half-way or unable to start loses
nothing: its files are restored by the file-by-file restore here and no temporary file is left."""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
import re
import signal
import threading

import pytest

from tests.unit.certs import make_cert
from tests.unit.test_fileshare_trees import BASE_NS, MiB, picture, write
from workers.artifacts.service import ArtifactStore
from workers.fileshare.handler import commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare.restoregroups import shared_packs, split
from workers.fileshare.restoreplan import Step
from workers.fileshare.restorestream import Layout
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.repository.index import BlobPlace
from workers.repository.manifest import Entry
from workers.repository.paths import PARTIAL
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing
from workers.storage.keys import spki_sha256
from workers.storage.settings import EncryptionSettings, StoreSettings

LARGE = {f"media/{i}.bin": (5 + i) * MiB + 7 * i for i in range(8)}
SMALL_FILES = {f"small/{i}.txt": 2000 + i for i in range(4)}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Large and small files synced into an encrypted local store opened from settings (so that another process
    can open it again), 4 MiB packs: (repository, keys, manifest, source folder)."""
    root = tmp_path_factory.mktemp("groups")
    rnd = random.Random(9)
    src = root / "src"
    for i, (rel, size) in enumerate({**LARGE, **SMALL_FILES}.items()):
        write(src, rel, rnd.randbytes(size), BASE_NS + i * 1000)
    cert, key = make_cert("restoregroups").write(root)
    store = ArtifactStore.from_settings(StoreSettings(kind="local", local_path=root / "store"),
                                        EncryptionSettings(certificate=cert))
    settings = FileshareSettings(source=str(src), cache_dir=root / "cache", pack_size=4 * MiB)
    repo = Repository(store, "stamp1", cache_dir=root / "cache")
    commit(repo, Sync(settings, repo, LocalTree(src)).run("s1", "stamp1", "s1", None))
    keys = KeyRing.from_files(keys=[key])
    repo = Repository(store, "stamp1")
    return repo, keys, repo.manifest("s1", keys), src


def restorer(repo, keys, target, tree=None, **kw) -> Restorer:
    return Restorer(repo, tree or LocalTree(target, create=True), keys=keys, writers=0, groups=2, groups_from=0,
                    temp_root=target.parent / "t", retries=0, **kw)


def partials(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{PARTIAL}"))


def groups_alive() -> list[str]:
    return [p.name for p in multiprocessing.active_children() if p.name == "restore-group"]


def killing(killed: list[int]):
    """A progress callback that kills the group process (SIGKILL) the first time it reports bytes written."""
    def progress(n: int) -> None:
        if threading.current_thread().name == "restore-group-listener" and not killed:
            for child in multiprocessing.active_children():
                if child.name == "restore-group":
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)
    return progress


def layout(path: str, *packs: str) -> Layout:
    """A file of one 1 MiB blob in each of ``packs``."""
    blobs = tuple(f"{path}-{i}" for i in range(len(packs)))
    step = Step(Entry(path, False, len(packs) * MiB, 0, 0, blobs=blobs), path, "create")
    return Layout(step, [BlobPlace(pack, i * MiB, MiB) for i, pack in enumerate(packs)])


def test_split_cuts_along_the_pack_order_keeping_files_that_share_packs_together():
    # Given two pairs of files backed up together (each pair's chunks interleaved in its own packs), listed mixed
    files = [layout("c", "p3", "p4"), layout("a", "p1", "p2"), layout("d", "p3", "p4"), layout("b", "p1", "p2")]
    # When they are split in two
    runs = split(files, 2)
    # Then each pair is one run, of equal bytes, and no pack is needed by both
    assert [sorted(lay.step.entry.path for lay in run) for run in runs] == [["c", "d"], ["a", "b"]]
    assert shared_packs(runs) == 0
    # And a chain of files that all share packs is cut once: only the pack where the runs meet is fetched twice
    chain = [layout(f"f{i}", f"q{i}", f"q{i + 1}") for i in range(6)]
    runs = split(chain, 2)
    assert [[lay.step.entry.path for lay in run] for run in runs] == [["f0", "f1", "f2"], ["f3", "f4", "f5"]]
    assert shared_packs(runs) == 1
    # And asking for more runs than files gives one per file, none empty
    assert [len(run) for run in split(chain[:2], 5)] == [1, 1]


def test_keys_handed_to_a_process_are_the_same_keys(stored):
    repo, keys, manifest, src = stored
    again = KeyRing.taken(keys.handed())
    assert again.names == keys.names
    public = make_cert("restoregroups").private_key.public_key()
    found = again.find(spki_sha256(public))
    assert found is not None and found.public_key().public_numbers() == public.public_numbers()


def test_large_files_are_restored_by_two_processes_exactly(stored, tmp_path, caplog):
    # Given a snapshot of 8 large files and some small ones in an encrypted store opened from settings
    repo, keys, manifest, src = stored
    caplog.set_level(logging.INFO, logger="workers")
    target = tmp_path / "r"
    # When it is restored with 2 processes for the large files (whatever their size)
    report = restorer(repo, keys, target).run(manifest)
    # Then every file and directory is there with its bytes and mtime, and no temporary file
    assert report.exact and report.files_restored == len(LARGE) + len(SMALL_FILES)
    assert picture(target) == picture(src) and partials(target) == []
    # And the large files were split between this process and one of its own, which restored its share
    assert "large file(s) in 2 process(es)" in caplog.text
    own = [int(n) for n in re.findall(r"a process of its own restored (\d+) of its", caplog.text)]
    assert len(own) == 1 and own[0] > 0
    assert groups_alive() == []


def test_a_group_process_killed_half_way_loses_nothing(stored, tmp_path, caplog):
    # Given a restore whose second process is killed as soon as it reports its first bytes written
    repo, keys, manifest, src = stored
    caplog.set_level(logging.INFO, logger="workers")
    target, killed = tmp_path / "r", []
    report = restorer(repo, keys, target, progress=killing(killed)).run(manifest)
    # Then it was killed half-way, and said so
    assert killed and "its process ended before it finished" in caplog.text
    # And its files were restored here: every file exact, no temporary file left by the killed process
    assert report.exact and picture(target) == picture(src) and partials(target) == []
    assert groups_alive() == []


class _Elsewhere(LocalTree):
    """A target whose spec names a folder that does not exist: another process cannot open it."""

    def spec(self) -> dict:
        return {"kind": "local", "root": str(self.root) + "-missing"}


def test_a_group_process_that_cannot_start_leaves_its_files_to_this_one(stored, tmp_path, caplog):
    repo, keys, manifest, src = stored
    caplog.set_level(logging.INFO, logger="workers")
    target = tmp_path / "r"
    # When the second process cannot open the target
    report = restorer(repo, keys, target, tree=_Elsewhere(target, create=True)).run(manifest)
    # Then it says why, and every file is restored exactly here
    assert "failed (SourceMisconfigured:" in caplog.text
    assert report.exact and picture(target) == picture(src) and partials(target) == []
