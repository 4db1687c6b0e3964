"""Snapshot manifests: JSON round trip and the diff between two snapshots."""
from __future__ import annotations

from workers.fileshare.manifest import Entry, Manifest, diff


def f(path: str, size: int = 1, mtime: int = 10, sha: str = "a" * 64, attrs: int = 0x20) -> Entry:
    return Entry(path, False, size, mtime, attrs, sha, (sha,) if size else ())


def d(path: str, mtime: int = 10) -> Entry:
    return Entry(path, True, 0, mtime, 0x10)


def test_manifest_round_trips_unicode_paths_empty_dirs_and_flags():
    # Given a manifest with an empty directory, a unicode name, a zero-byte file and an unstable file
    m = Manifest("snap-1", "stamp1", "set-1", "smb://fs/share", sub_path=None, parent="snap-0", partial=True,
                 skipped=[{"path": "locked.db", "reason": "in use"}],
                 entries=[d("empty"), f("café/文件 ✓.txt", 3), f("zero", 0), Entry("log", False, 5, 1, 0x20, "b" * 64,
                                                                                     ("b" * 64,), True)])
    # When it is written and read back
    back = Manifest.from_json(m.to_json())
    # Then every field survives
    assert back == m
    assert [e.path for e in back.dirs()] == ["empty"] and back.total_bytes == 8
    assert back.entries[3].unstable and not back.entries[1].unstable


def test_diff_names_added_removed_modified_and_touched_entries():
    # Given an old and a new listing: add, delete, modify, touch (same content), rename, file→directory
    old = [d("a"), f("a/keep"), f("a/gone"), f("a/edit", sha="1" * 64), f("a/touch", mtime=1), f("old-name", 7),
           f("x")]
    new = [d("a"), f("a/keep"), f("a/new"), f("a/edit", sha="2" * 64), f("a/touch", mtime=2), f("new-name", 7),
           d("x")]
    # When they are compared
    changes = diff(old, new)
    # Then each change is classified once
    assert sorted(e.path for e in changes.added) == ["a/new", "new-name", "x"]
    assert sorted(e.path for e in changes.removed) == ["a/gone", "old-name", "x"]
    assert [n.path for _, n in changes.modified] == ["a/edit"]
    assert [n.path for _, n in changes.touched] == ["a/touch"]
    assert "+ x/" in list(changes.lines()) and "- x" in list(changes.lines())


def test_identical_listings_have_an_empty_diff():
    # Given the same entries twice / When compared / Then nothing changed
    entries = [d("a"), f("a/b"), f("c", 0)]
    assert diff(entries, list(entries)).empty
