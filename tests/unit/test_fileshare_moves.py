"""Moves: a file renamed since the previous snapshot is carried over unread; a copy, or one of several files
alike, is read (size and mtime cannot tell which one it is)."""
from __future__ import annotations

import os
import shutil

from tests.unit.test_fileshare_sync import repo_for, sync
from tests.unit.test_fileshare_trees import picture, write
from workers.fileshare.restore import Restorer
from workers.fileshare.tree import LocalTree

T = 1_700_000_000_000_000_000


def test_renames_are_carried_over_but_copies_and_look_alikes_are_read(tmp_path):
    # Given files synced once: one unique, one to be copied, and two alike (same size and mtime, other content)
    src = tmp_path / "src"
    write(src, "a/unique.bin", b"u" * 5000, T)
    write(src, "a/original.bin", b"o" * 6000, T + 1)
    write(src, "a/twin1.bin", b"1" * 7000, T + 2)
    write(src, "a/twin2.bin", b"2" * 7000, T + 2)
    sync(tmp_path, "s1")
    # When the unique one is renamed, the original copied with its mtime, and both look-alikes renamed
    os.rename(src / "a/unique.bin", src / "a/renamed.bin")
    shutil.copy2(src / "a/original.bin", src / "a/copy.bin")
    os.rename(src / "a/twin1.bin", src / "a/t1.bin")
    os.rename(src / "a/twin2.bin", src / "a/t2.bin")
    second = sync(tmp_path, "s2").stats
    # Then only the rename is carried over; the copy and the look-alikes are read
    assert second["files_moved"] == 1 and second["files_new"] == 3
    assert second["bytes_read"] == 6000 + 7000 + 7000
    # And the snapshot restores exactly (each look-alike with its own content)
    repo = repo_for(tmp_path)
    Restorer(repo, LocalTree(tmp_path / "r", create=True)).run(repo.manifest("s2", cached=False))
    assert picture(tmp_path / "r") == picture(src)
