"""A restore to a real Samba share from a real (moto) S3 repository with the large files written by writer
processes (``workers.fileshare.restoreprocs``): exact bytes and mtimes; a damaged blob, a writer's own failure and
writers killed half-way each fail only their file, leave no temporary file and change no file already there; a
second run completes the restore. Without writer processes the large files are restored pack by pack
(``workers.fileshare.restorestream``), exactly, with no pack decoded to local disk."""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
import re
import shutil
import uuid
from pathlib import Path

import pytest

from tests.unit.certs import make_cert
from tests.unit.test_fileshare_trees import BASE_NS, MiB, make_tree, picture, write
from workers.artifacts.service import ArtifactStore
from workers.fileshare.handler import commit
from workers.fileshare.opener import open_tree
from workers.fileshare import restorestream
from workers.fileshare.restore import SMALL, Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.sync import Sync
from workers.repository.paths import PARTIAL
from workers.repository.repo import Repository
from workers.storage.codec import KeyRing, load_certificate
from workers.storage.s3 import S3Store

pytestmark = pytest.mark.integration
LARGE = {"media/a.bin": 6 * MiB + 11, "media/b.bin": 9 * MiB, "media/c.bin": 13 * MiB - 5, "media/d.bin": 7 * MiB,
         "deep/er/e.bin": 5 * MiB + 1}


def share_dir(smb, name: str | None = None) -> tuple[Path, str]:
    path = smb.path / (name or f"rp-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    shutil.chown(path, smb.username)
    return path, smb.unc(path.name)


def tree(smb, unc: str):
    return open_tree(unc, username=smb.username, password=smb.password, port=smb.port)


@pytest.fixture
def stored(smb_server, s3_server, tmp_path):
    """A tree with 5 large files (and make_tree's small ones) on the share, synced into an encrypted S3
    repository in 4 MiB packs: (repository, keys, manifest, source directory)."""
    make_cert("restore-procs").write(tmp_path)
    src, unc = share_dir(smb_server)
    make_tree(src, big=MiB, owner=smb_server.username)
    rnd = random.Random(17)
    for i, (rel, size) in enumerate(sorted(LARGE.items())):
        write(src, rel, rnd.randbytes(size), BASE_NS + i * 1_000_000_000, smb_server.username)
    for folder in ("media", "deep", "deep/er"):
        shutil.chown(src / folder, smb_server.username)
    store = ArtifactStore(S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key,
                                  f"rp-{uuid.uuid4().hex[:8]}", secure=False),
                          certificate=load_certificate(tmp_path / "cert.pem"))
    settings = FileshareSettings(source=unc, username=smb_server.username, password=smb_server.password,
                                 port=smb_server.port, cache_dir=tmp_path / "cache", pack_size=4 * MiB)
    repo = Repository(store, "stamp1", cache_dir=tmp_path / "cache")
    commit(repo, Sync(settings, repo, tree(smb_server, unc)).run("s1", "stamp1", "s1", None))
    keys = KeyRing.from_files(keys=[tmp_path / "key.pem"])
    return Repository(store, "stamp1"), keys, Repository(store, "stamp1").manifest("s1", keys), src


def partials(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob(f"*{PARTIAL}")]


def writers_alive() -> list[str]:
    return [p.name for p in multiprocessing.active_children() if p.name.startswith("restore-writer")]


def test_large_files_written_by_writer_processes_are_exact(smb_server, stored, tmp_path):
    # Given a snapshot with 5 files above the in-process size, and an empty folder of the share
    repo, keys, manifest, src = stored
    target, unc = share_dir(smb_server)
    seen: list[list[str]] = []
    # When it is restored with 2 writer processes (started whatever the size)
    report = Restorer(repo, tree(smb_server, unc), keys=keys, writers=2, writers_from=0, temp_root=tmp_path / "t",
                      progress=lambda n: seen.append(writers_alive()) if n > SMALL else None).run(manifest)
    # Then every file and directory is there with its bytes and mtime, and nothing else
    assert report.exact and report.files_restored == len([e for e in manifest.entries if not e.is_dir])
    assert picture(target) == picture(src)
    assert partials(target) == []
    # And the large files were written while the writer processes ran, which are gone after the restore
    assert len(seen) == len(LARGE) and all(sorted(names) == ["restore-writer-0", "restore-writer-1"]
                                           for names in seen)
    assert writers_alive() == []


def test_large_files_restored_pack_by_pack_to_the_share_are_exact(smb_server, stored, tmp_path, caplog, monkeypatch):
    # Given a snapshot with 5 large files in 4 MiB packs (as many may be open at once), and an empty folder
    monkeypatch.setattr(restorestream, "MAX_OPEN", len(LARGE))
    repo, keys, manifest, src = stored
    target, unc = share_dir(smb_server)
    caplog.set_level(logging.INFO, logger="workers")
    # When it is restored in this process (no writer processes)
    report = Restorer(repo, tree(smb_server, unc), keys=keys, writers=0, temp_root=tmp_path / "t").run(manifest)
    # Then every file and directory is there with its bytes and mtime, and nothing else
    assert report.exact and picture(target) == picture(src) and partials(target) == []
    # And the large files were streamed pack by pack (positional WRITEs), no pack decoded to local disk
    assert f"restore: {len(LARGE)} large file(s) streamed from" in caplog.text
    assert re.search(r"restore: 0 of \d+ packs decoded to the private directory", caplog.text)


def obstructed(smb) -> tuple[Path, str]:
    """A target folder with the operator's own copy of media/b.bin, and a directory where media/c.bin's temporary
    file would go (so it cannot be created)."""
    target, unc = share_dir(smb)
    (target / "media" / f".c.bin{PARTIAL}").mkdir(parents=True)
    (target / "media" / "b.bin").write_bytes(b"the operator's copy")
    for path in (target / "media", target / "media" / f".c.bin{PARTIAL}", target / "media" / "b.bin"):
        shutil.chown(path, smb.username)
    return target, unc


def test_damaged_blob_and_writer_failure_fail_only_their_files(smb_server, stored, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="workers")
    # Given two such target folders
    repo, keys, manifest, src = stored
    (target, unc), (control, control_unc) = obstructed(smb_server), obstructed(smb_server)
    # And an index that places media/b.bin's fourth blob one byte off (its bytes no longer match its id): the
    # first three blobs reach the writer before the damage is found
    repo.load_index()
    b_entry = next(e for e in manifest.entries if e.path == "media/b.bin")
    assert len(b_entry.blobs) > 4
    pack, offset, length = repo.index.blobs[b_entry.blobs[3]]
    repo.index.blobs[b_entry.blobs[3]] = (pack, offset + 1, length)
    # When the snapshot is restored into one with 2 writer processes, into the other with none
    reports = [Restorer(repo, tree(smb_server, where), keys=keys, writers=writers, writers_from=0,
                        temp_root=tmp_path / "t", retries=0).run(manifest)
               for where, writers in ((unc, 2), (control_unc, 0))]
    # Then exactly those two files are listed, with the same reasons and hints as when written in-process (where
    # the pack-by-pack restore gave them up first)
    assert "media/b.bin" in caplog.text and "left to the file-by-file restore" in caplog.text
    assert sorted(reports[0].failed, key=str) == sorted(reports[1].failed, key=str)
    failed = {f.path: f for f in reports[0].failed}
    assert sorted(failed) == ["media/b.bin", "media/c.bin"]
    assert "does not match its id" in failed["media/b.bin"].reason
    # And the operator's copy is untouched, no temporary file of b.bin is left, every other file is exact
    assert (target / "media" / "b.bin").read_bytes() == b"the operator's copy"
    assert partials(target) == ["media/.c.bin" + PARTIAL]
    left_out = {"media/b.bin", "media/c.bin", f"media/.c.bin{PARTIAL}"}
    assert {k: v for k, v in picture(target).items() if k not in left_out} == \
        {k: v for k, v in picture(src).items() if k not in left_out}
    assert writers_alive() == []


def test_writers_killed_half_way_fail_their_files_and_a_second_run_completes(smb_server, stored, tmp_path):
    # Given a restore with 2 writer processes, both killed as soon as the first large file is done
    repo, keys, manifest, src = stored
    target, unc = share_dir(smb_server)
    killed: list[int] = []

    def kill_writers(nbytes: int) -> None:
        if nbytes > SMALL and not killed:
            for process in multiprocessing.active_children():
                if process.name.startswith("restore-writer"):
                    os.kill(process.pid, 9)
                    killed.append(process.pid)

    report = Restorer(repo, tree(smb_server, unc), keys=keys, writers=2, writers_from=0, temp_root=tmp_path / "t",
                      retries=0, progress=kill_writers).run(manifest)
    # Then at most the two files that met a dead writer are listed, saying so; the others were written here
    assert len(killed) == 2
    assert len(report.failed) <= 2
    assert all("writer process ended" in f.reason for f in report.failed)
    assert report.files_restored + len(report.failed) == len([e for e in manifest.entries if not e.is_dir])
    # And no temporary file is left behind
    assert partials(target) == []
    # And the same restore run again completes the target exactly
    again = Restorer(repo, tree(smb_server, unc), keys=keys, writers=2, writers_from=0,
                     temp_root=tmp_path / "t").run(manifest)
    assert again.exact and picture(target) == picture(src)
    assert again.files_restored == len(report.failed)
    assert writers_alive() == []
