"""Small files riding along a pack-by-pack restore (``workers.fileshare.restorestream``): from a real encrypted local
store into a real local directory, a small file whose blobs lie in packs streamed for the large files is written
whole from them, so no pack is fetched twice; a small file that cannot be written, or whose blob is damaged, goes
to the file-by-file restore, which reports it once with its usual reason."""
from __future__ import annotations

import logging
import random
import re

import pytest

from tests.unit.test_fileshare_restorestream import backed_up, blob_moved, partials, restorer
from tests.unit.test_fileshare_trees import BASE_NS, MiB, picture, write
from workers.repository.paths import PARTIAL

LARGE = {f"big/{i}.bin": (5 + 2 * i) * MiB + 13 * i for i in range(3)}
SMALL_FILES = {f"site{i % 7}/page{i}.html": 1000 + 397 * i for i in range(120)}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Large and small files synced together (their chunks share packs), 4 MiB packs, encrypted: (repository,
    keys, manifest, source folder)."""
    root = tmp_path_factory.mktemp("riders")
    rnd = random.Random(23)
    src = root / "src"
    for i, (rel, size) in enumerate({**LARGE, **SMALL_FILES}.items()):
        write(src, rel, rnd.randbytes(size), BASE_NS + i * 1000)
    return (*backed_up(root, src), src)


def counted(repo, monkeypatch) -> dict[str, list[str]]:
    """The packs the restore opens: streamed (pack by pack) and fetched whole (the file-by-file restore)."""
    opened: dict[str, list[str]] = {"streamed": [], "whole": []}
    open_pack, read_pack = repo.open_pack, repo.read_pack
    monkeypatch.setattr(repo, "open_pack", lambda pack, *a, **k: opened["streamed"].append(pack) or
                        open_pack(pack, *a, **k))
    monkeypatch.setattr(repo, "read_pack", lambda pack, *a, **k: opened["whole"].append(pack) or
                        read_pack(pack, *a, **k))
    return opened


def riding(manifest, repo) -> list[str]:
    """The small files whose blobs all lie in packs that hold a large file's blob."""
    repo.load_index()
    large_packs = {repo.index.place(b).pack for e in manifest.entries if e.path in LARGE for b in e.blobs}
    return [e.path for e in manifest.entries if e.path in SMALL_FILES and
            {repo.index.place(b).pack for b in e.blobs} <= large_packs]


def test_small_files_in_the_large_files_packs_are_written_from_them_and_no_pack_is_fetched_twice(
        mixed, tmp_path, caplog, monkeypatch):
    # Given a snapshot whose small files' chunks were packed with the large files' (some of them at least)
    repo, keys, manifest, src = mixed
    along = riding(manifest, repo)
    assert along
    opened = counted(repo, monkeypatch)
    caplog.set_level(logging.INFO, logger="workers")
    # When it is restored
    report = restorer(repo, keys, tmp_path / "r").run(manifest)
    # Then every file is there with its bytes and mtime, and no temporary file
    assert report.exact and report.files_restored == len(LARGE) + len(SMALL_FILES)
    assert picture(tmp_path / "r") == picture(src) and partials(tmp_path / "r") == []
    # And those small files were written from the packs streamed for the large files
    assert f"with {len(along)} small file(s) from the same packs" in caplog.text
    # And no pack was fetched twice: the file-by-file restore fetched only packs nothing had streamed
    assert len(opened["streamed"]) == len(set(opened["streamed"]))
    assert set(opened["whole"]).isdisjoint(opened["streamed"])


def test_a_small_file_that_cannot_be_written_is_reported_once_and_the_others_are_restored(mixed, tmp_path):
    # Given a target where one riding small file's temporary name is taken by a directory
    repo, keys, manifest, src = mixed
    victim = riding(manifest, repo)[0]
    folder, _, name = victim.rpartition("/")
    (tmp_path / "r" / folder / f".{name}{PARTIAL}").mkdir(parents=True)
    # When the snapshot is restored
    report = restorer(repo, keys, tmp_path / "r").run(manifest)
    # Then it is listed once, with the target's problem and how to fix it, and every other file is exact
    assert [f.path for f in report.failed] == [victim] and report.failed[0].hint
    restored = {k: v for k, v in picture(tmp_path / "r").items() if PARTIAL not in k}
    assert restored == {k: v for k, v in picture(src).items() if k != victim}


def test_a_damaged_blob_of_a_riding_small_file_fails_only_it_with_the_usual_reason(mixed, tmp_path, caplog):
    # Given an index that places a riding small file's blob one byte off (its bytes no longer match its id)
    repo, keys, manifest, src = mixed
    victim = riding(manifest, repo)[-1]
    caplog.set_level(logging.INFO, logger="workers")
    with blob_moved(repo, manifest, victim, 0):
        # When the snapshot is restored
        report = restorer(repo, keys, tmp_path / "r").run(manifest)
    # Then the pack-by-pack restore gave it up, and the file-by-file restore lists only it, with its usual reason
    assert re.search(rf"{re.escape(victim)}.? left to the file-by-file restore: blob \w+ in pack \w+ does not match",
                     caplog.text)
    assert [f.path for f in report.failed] == [victim] and "does not match its id" in report.failed[0].reason
    assert not (tmp_path / "r" / victim).exists() and partials(tmp_path / "r") == []
    assert picture(tmp_path / "r") == {k: v for k, v in picture(src).items() if k != victim}
