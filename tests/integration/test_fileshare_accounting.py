"""Sync accounting against a real Samba share: files that vanish during a sync are counted and listed, files
still growing make the snapshot partial with a warning naming them, and a renamed directory is carried over
without reading its files."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import uuid
from pathlib import Path

import pytest

from contracts import BackupDue, BackupDuePayload
from tests.unit.forge import plan_set
from tests.unit.test_fileshare_trees import MiB, make_tree, picture, write
from workers.artifacts.service import ArtifactStore
from workers.config import load_settings
from workers.fileshare import handler as handler_module
from workers.fileshare.handler import FileshareHandler, commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.smbtree import SmbTree
from workers.fileshare.sync import Sync
from workers.repository.repo import Repository
from workers.runtime.worker import JobContext
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
CTX = JobContext("fileshare", "fileshare:1", 0, logging.LoggerAdapter(logging.getLogger("test"), {}))


def share_dir(smb) -> tuple[Path, str]:
    name = f"fa-{uuid.uuid4().hex[:8]}"
    (smb.path / name).mkdir()
    shutil.chown(smb.path / name, smb.username)
    return smb.path / name, smb.unc(name)


class Changing(SmbTree):
    """The real share, with the world changing under the sync at precise moments (through the server's own
    directory, as another writer on the file server would): after the root is listed a small file and a
    directory are deleted; a large file is deleted right after it was read; a large log grows before every
    read."""

    small, folder, big, growing = "site/wwwroot/index.html", "deep", "big/app.zip", "LogFiles/big.log"

    def __init__(self, local: Path, source: str, **kw) -> None:
        super().__init__(source, **kw)
        self.local, self.grown = local, 0

    def scandir(self, rel: str):
        listed = super().scandir(rel)
        if rel == "site/wwwroot":
            (self.local / self.small).unlink()
        if rel == "":
            shutil.rmtree(self.local / self.folder)
        return listed

    @contextlib.contextmanager
    def open_read(self, rel: str):
        if rel == self.growing:
            with open(self.local / rel, "ab") as fh:
                fh.write(b"another line\n" * 100)
            self.grown += 1
        with super().open_read(rel) as stream:
            yield stream
        if rel == self.big:
            (self.local / rel).unlink()


def test_vanished_and_growing_files_are_reported_in_the_synced_event_and_a_warning(smb_server, tmp_path,
                                                                                     monkeypatch):
    # Given a tree on the share where, during the sync, a small file, a directory and a large file (after it was
    # read) are deleted and a large log keeps growing
    src, unc = share_dir(smb_server)
    make_tree(src, big=3 * MiB, owner=smb_server.username)
    write(src, Changing.growing, b"log line\n" * 200_000, owner=smb_server.username)
    tree = Changing(src, unc, username=smb_server.username, password=smb_server.password, port=smb_server.port)
    monkeypatch.setattr(handler_module, "open_tree", lambda *a, **kw: tree)
    settings = load_settings(store={"kind": "local", "local_path": str(tmp_path / "store")}, fileshare={
        "source": unc, "username": smb_server.username, "password": smb_server.password, "port": smb_server.port,
        "cache_dir": str(tmp_path / "cache"), "reread": 1})
    event = BackupDue(source="test", stamp="stamp1", correlation_id="set-acc",
                      payload=BackupDuePayload(backup_set_id="set-acc", components=("fileshare",)))
    plan_set(LocalStore(tmp_path / "store"), "set-acc", "fileshare")
    # When the backup runs
    handler = FileshareHandler(settings.fileshare, settings.retention, ArtifactStore(LocalStore(tmp_path / "store")))
    synced, _, warning = handler.backup_due(event, CTX)
    p = synced.payload
    # Then the vanished file, directory and large file are counted and listed, with the bytes read of the large one
    assert p.vanished == (Changing.big, Changing.folder + "/", Changing.small) and p.vanished_count == 3
    assert p.vanished_bytes == 3 * MiB and p.skipped_count == 0
    # And the growing log was read 1 + 1 times, stored as last read, listed as unstable; the snapshot is partial
    assert tree.grown == 2 and p.changed_while_read == 1 and p.unstable == (Changing.growing,) and p.partial
    # And a warning job-failed names it and says what to do
    assert warning.type == "job-failed" and warning.payload.severity == "warning"
    assert Changing.growing in warning.payload.message and "REREAD" in warning.payload.hint
    # And the snapshot holds neither vanished file, but everything else
    repo = Repository(ArtifactStore(LocalStore(tmp_path / "store")), "stamp1")
    paths = {e.path for e in repo.manifest("set-acc").entries}
    assert not paths & {Changing.big, Changing.small, Changing.folder} and Changing.growing in paths
    assert p.files == 47 - 2 + 1


def test_a_renamed_directory_is_carried_over_without_reading_its_files(smb_server, tmp_path):
    # Given a directory of 300 files on the share, synced once
    src, unc = share_dir(smb_server)
    rnd = random.Random(3)
    for i in range(300):
        write(src, f"site/wwwroot/assets/f{i:03d}.js", rnd.randbytes(rnd.randint(1, 30_000)),
              1_700_000_000_000_000_000 + i * 1_000_000_000, smb_server.username)
    write(src, "site/big.bin", rnd.randbytes(3 * MiB), owner=smb_server.username)
    settings = FileshareSettings(source=unc, username=smb_server.username, password=smb_server.password,
                                 port=smb_server.port, cache_dir=tmp_path / "cache")
    store = ArtifactStore(LocalStore(tmp_path / "store"))

    def sync(sid: str) -> dict:
        repo = Repository(store, "stamp1", cache_dir=tmp_path / "cache")
        tree = SmbTree(unc, username=smb_server.username, password=smb_server.password, port=smb_server.port)
        result = Sync(settings, repo, tree).run(sid, "stamp1", sid, None)
        commit(repo, result)
        return result.stats

    first = sync("s1")
    assert first.files_new == 301
    # When the directory (and the large file) are renamed and the share is synced again
    os.rename(src / "site/wwwroot/assets", src / "site/wwwroot/static")
    os.rename(src / "site/big.bin", src / "site/big-renamed.bin")
    second = sync("s2")
    # Then not one byte is read: every file is carried over from its old path
    assert second.bytes_read == 0 and second.files_moved == 301 and second.files_new == 0
    assert second.files_removed == 301 and second.new_bytes == 0 and second.files == 301
    # And the snapshot restores to exactly the renamed tree
    repo = Repository(store, "stamp1")
    Restorer(repo, LocalTree(tmp_path / "r", create=True)).run(repo.manifest("s2"))
    assert picture(tmp_path / "r") == picture(src)
