"""Moves: a file renamed since the previous snapshot is carried over unread, recognised by its file id where the
source gives one (a local tree: the inode), even among look-alikes; a copy is read; without ids, one of several
files alike is read (size and mtime cannot tell which one it is); with ids, another file of the same size and
mtime is never taken for a moved one."""
from __future__ import annotations

import os
import shutil

from tests.unit.test_fileshare_sync import repo_for, sync
from tests.unit.test_fileshare_trees import picture, write
from workers.fileshare.localtree import LocalTree
from workers.fileshare.moves import Moves
from workers.fileshare.restore import Restorer
from workers.fileshare.tree import Stat
from workers.repository.manifest import Entry

T = 1_700_000_000_000_000_000


def test_renames_are_carried_over_by_file_id_even_among_look_alikes_but_copies_are_read(tmp_path):
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
    # Then the renames are carried over (the look-alikes told apart by their inodes); only the copy is read
    assert second.files_moved == 3 and second.files_new == 1
    assert second.bytes_read == 6000
    # And the snapshot restores exactly (each look-alike with its own content)
    repo = repo_for(tmp_path)
    Restorer(repo, LocalTree(tmp_path / "r", create=True)).run(repo.manifest("s2", cached=False))
    assert picture(tmp_path / "r") == picture(src)


def _moves(previous: list[Entry], listed: dict[str, Stat]) -> dict[str, str | None]:
    """Each new path of ``listed`` and the previous path it is carried over from (None: read)."""
    moves, by_path = Moves({e.path: e for e in previous}), {e.path: e for e in previous}
    for path, st in listed.items():
        if path in by_path:
            moves.still_listed(by_path[path])
        else:
            moves.candidate(path, st)
    return {path: prev.path if prev else None for path, _, prev in moves.resolve()}


def test_without_ids_look_alikes_are_read_and_with_ids_another_file_is_never_a_move():
    # Given two look-alike files (same size, mtime and attributes) in a previous snapshot, without file ids
    old = [Entry("t1", False, 7000, T, 32), Entry("t2", False, 7000, T, 32)]
    # When both are renamed and the listing has no ids either, then neither is carried over
    assert _moves(old, {"n1": Stat("n1", False, 7000, T, 32), "n2": Stat("n2", False, 7000, T, 32)}) == {}
    # Given the same files recorded with their ids
    old = [Entry("t1", False, 7000, T, 32, file_id=11), Entry("t2", False, 7000, T, 32, file_id=12)]
    # When one is renamed (its id kept) and the other replaced by a new file of the same size and mtime
    got = _moves(old, {"n1": Stat("n1", False, 7000, T, 32, 11), "n2": Stat("n2", False, 7000, T, 32, 99)})
    # Then the renamed one is carried over and the other is not a move (no candidate at all)
    assert got == {"n1": "t1"}
    # And a unique previous file with an id: a new file alike with another id is not it, one without an id is
    one = [Entry("u", False, 5000, T, 32, file_id=21)]
    assert _moves(one, {"x": Stat("x", False, 5000, T, 32, 22)}) == {}
    assert _moves(one, {"x": Stat("x", False, 5000, T, 32)}) == {"x": "u"}
    # And an id still at its old path (a hard link) or claimed twice is read, not carried over
    assert _moves(one, {"u": Stat("u", False, 5000, T, 32, 21), "x": Stat("x", False, 5000, T, 32, 21)}) == \
        {"x": None}
    assert _moves(one, {"x": Stat("x", False, 5000, T, 32, 21), "y": Stat("y", False, 5000, T, 32, 21)}) == \
        {"x": "u", "y": None}
