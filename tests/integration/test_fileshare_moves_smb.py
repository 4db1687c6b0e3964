"""Renames over SMB told apart by the server's file id (FileIdFullDirectoryInformation): a renamed file is carried
over unread even among look-alikes (same size and mtime), and another file of the same size and mtime under a new
name is read, never taken for a moved one."""
from __future__ import annotations

import os
import shutil
import uuid

import pytest

from tests.unit.test_fileshare_trees import picture, write
from workers.artifacts.service import ArtifactStore
from workers.fileshare.handler import commit
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare.settings import FileshareSettings
from workers.fileshare.smbtree import SmbTree
from workers.fileshare.sync import Sync
from workers.repository.repo import Repository
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
T = 1_700_000_000_000_000_000


def test_look_alikes_renamed_on_the_share_are_carried_over_by_file_id_and_a_replacement_is_read(smb_server, tmp_path):
    # Given a folder on the share with two look-alike files (same size and mtime, other content) and a third one,
    # synced once
    name = f"mv-{uuid.uuid4().hex[:8]}"
    src = smb_server.path / name
    src.mkdir()
    shutil.chown(src, smb_server.username)
    unc = smb_server.unc(name)
    write(src, "a/twin1.bin", b"1" * 7000, T, smb_server.username)
    write(src, "a/twin2.bin", b"2" * 7000, T, smb_server.username)
    write(src, "a/old.bin", b"o" * 5000, T + 1, smb_server.username)
    settings = FileshareSettings(source=unc, username=smb_server.username, password=smb_server.password,
                                 port=smb_server.port, cache_dir=tmp_path / "cache")
    store = ArtifactStore(LocalStore(tmp_path / "store"))

    def sync(sid: str) -> tuple[dict, dict]:
        repo = Repository(store, "stamp1", cache_dir=tmp_path / "cache")
        tree = SmbTree(unc, username=smb_server.username, password=smb_server.password, port=smb_server.port)
        result = Sync(settings, repo, tree).run(sid, "stamp1", sid, None)
        commit(repo, result)
        return result.stats, {e.path: e.file_id for e in result.manifest.files()}

    first, ids = sync("s1")
    assert first.files_new == 3 and all(ids.values()) and len(set(ids.values())) == 3, ids
    # When both look-alikes are renamed, and the third file is replaced by another file of the same size and mtime
    # under a new name (created before the old one is deleted: a file of its own)
    os.rename(src / "a/twin1.bin", src / "a/t1.bin")
    os.rename(src / "a/twin2.bin", src / "a/t2.bin")
    write(src, "a/new.bin", b"n" * 5000, T + 1, smb_server.username)
    os.remove(src / "a/old.bin")
    second, ids2 = sync("s2")
    # Then the renamed look-alikes are carried over unread (their file ids kept), and only the replacement is read
    assert second.files_moved == 2 and second.files_new == 1, second
    assert second.bytes_read == 5000 and second.new_bytes == 5000
    assert (ids2["a/t1.bin"], ids2["a/t2.bin"]) == (ids["a/twin1.bin"], ids["a/twin2.bin"])
    assert ids2["a/new.bin"] not in ids.values()
    # And the snapshot restores exactly (each look-alike with its own content, the replacement with its own)
    repo = Repository(store, "stamp1")
    Restorer(repo, LocalTree(tmp_path / "r", create=True)).run(repo.manifest("s2"))
    assert picture(tmp_path / "r") == picture(src)
