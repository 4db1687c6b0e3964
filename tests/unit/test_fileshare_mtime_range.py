"""A file time on the share outside what a manifest can hold (a signed 64-bit count of nanoseconds) is clamped
where it enters, so such a file is backed up and its snapshot restores; before, the manifest was written with
the raw time and every restore of the snapshot refused it."""
from __future__ import annotations

import os

from tests.unit.test_fileshare_sync import repo_for, sync
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.fileshare.smbtree import EPOCH, _ns
from workers.fileshare.tree import MTIME_MAX, MTIME_MIN

YEAR_2554_NS = 1 << 64          # what ext4 keeps of it is still past 2262, the most a manifest holds


def test_a_file_dated_past_2262_is_backed_up_and_its_snapshot_restores(tmp_path):
    # Given a share with a file touched far into the future beside an ordinary one
    src = tmp_path / "src"
    (src / "site").mkdir(parents=True)
    (src / "site" / "future.txt").write_bytes(b"from the future")
    (src / "site" / "now.txt").write_bytes(b"today")
    os.utime(src / "site" / "future.txt", ns=(YEAR_2554_NS, YEAR_2554_NS))
    assert os.stat(src / "site" / "future.txt").st_mtime_ns > MTIME_MAX        # the filesystem really holds it
    # When it is synced and the snapshot restored
    result = sync(tmp_path, "s1")
    assert result.stats.files == 2
    repo = repo_for(tmp_path)
    manifest = repo.manifest("s1", cached=False)
    Restorer(repo, LocalTree(tmp_path / "r", create=True)).run(manifest)
    # Then both files come back byte for byte, the future one with the latest time a manifest can hold
    assert (tmp_path / "r/site/future.txt").read_bytes() == b"from the future"
    assert (tmp_path / "r/site/now.txt").read_bytes() == b"today"
    entry = {e.path: e for e in manifest.entries}["site/future.txt"]
    assert entry.mtime_ns == MTIME_MAX
    assert os.stat(tmp_path / "r/site/future.txt").st_mtime_ns == MTIME_MAX
    assert os.stat(tmp_path / "r/site/now.txt").st_mtime_ns == os.stat(src / "site/now.txt").st_mtime_ns


def test_smb_file_times_beyond_either_end_are_clamped():
    # An SMB FILETIME is unsigned 100 ns since 1601: its largest value lies past 2262, and 0 before 1677
    assert _ns((1 << 64) - 1) == MTIME_MAX
    assert _ns(0) == MTIME_MIN
    assert _ns(EPOCH + 17) == 1700                      # in range: unchanged
