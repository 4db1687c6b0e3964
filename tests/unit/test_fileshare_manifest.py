"""Snapshot manifests: JSON round trip and the diff between two snapshots."""
from __future__ import annotations

from workers.repository.manifest import Entry, Manifest, diff


def f(path: str, size: int = 1, mtime: int = 10, sha: str = "a" * 64, attrs: int = 0x20) -> Entry:
    return Entry(path, False, size, mtime, attrs, sha, (sha,) if size else ())


def d(path: str, mtime: int = 10) -> Entry:
    return Entry(path, True, 0, mtime, 0x10)


def test_manifest_round_trips_unicode_paths_empty_dirs_and_flags():
    # Given a manifest with an empty directory, a unicode name, a zero-byte file, an unstable file and a file
    # with the source's 64-bit file id
    m = Manifest("snap-1", "stamp1", "set-1", "smb://fs/share", sub_path=None, parent="snap-0", partial=True,
                 skipped=[{"path": "locked.db", "reason": "in use"}],
                 entries=[d("empty"), f("café/文件 ✓.txt", 3), f("zero", 0), Entry("log", False, 5, 1, 0x20, "b" * 64,
                                                                                     ("b" * 64,), True),
                          Entry("z", False, 1, 1, 0x20, "c" * 64, ("c" * 64,), file_id=(1 << 64) - 2)])
    # When it is written and read back
    back = Manifest.from_json(m.to_json())
    # Then every field survives
    assert back == m
    assert [e.path for e in back.dirs()] == ["empty"] and back.total_bytes == 9
    assert back.entries[3].unstable and not back.entries[1].unstable
    # And an unknown file id (0) is not written at all: older readers see the entries they know
    assert back.entries[4].file_id == (1 << 64) - 2 and b'"file_id"' not in Manifest("s", "t", "b", "x", entries=[
        f("a")]).to_json()


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


def test_format_2_keeps_a_whole_file_hash_only_where_it_is_free_and_still_reads_format_1():
    import hashlib
    import io
    import json

    from workers.fileshare.restorecheck import same_file
    from workers.repository.manifest import EMPTY_SHA256, file_sha256
    # Given a file of three blobs, one of one blob and an empty one, as the reader records them
    parts = [b"x" * 10, b"y" * 7, b"z" * 3]
    ids = [hashlib.sha256(p).hexdigest() for p in parts]
    big = Entry("big", False, 20, 1, 0x20, file_sha256(ids), tuple(ids))
    one = Entry("one", False, 10, 1, 0x20, file_sha256(ids[:1]), tuple(ids[:1]))
    empty = Entry("empty", False, 0, 1, 0x20, file_sha256([]), ())
    m = Manifest("s2", "stamp", "set", "src", entries=[big, empty, one])
    # When the manifest is written
    raw = json.loads(m.to_json())
    # Then it is format 2, the multi-blob file carries only its blob list, the others their (free) SHA-256
    assert raw["format"] == 2
    by = {e["path"]: e for e in raw["entries"]}
    assert "sha256" not in by["big"] and by["big"]["blobs"] == ids
    assert by["one"]["sha256"] == ids[0] and by["empty"]["sha256"] == EMPTY_SHA256
    assert Manifest.from_json(m.to_json()) == m
    # And a format 1 manifest (every file with its SHA-256) still reads, and compares by content with format 2
    whole = hashlib.sha256(b"".join(parts)).hexdigest()
    old = dict(raw, format=1, entries=[dict(by["big"], sha256=whole)])
    old_big = Manifest.from_json(json.dumps(old).encode()).entries[0]
    assert old_big.sha256 == whole and old_big.same_content(big) and big.same_content(old_big)
    assert diff([old_big], [big]).empty
    changed = Entry("big", False, 20, 1, 0x20, "", (ids[0], ids[2], ids[1]))
    assert not changed.same_content(big) and [n.path for _, n in diff([old_big], [changed]).modified] == ["big"]
    # And an unknown format is refused with its number
    import pytest
    from workers.storage.crypto import UnsupportedArtifactError
    with pytest.raises(UnsupportedArtifactError, match="format 3") as refused:
        Manifest.from_json(json.dumps(dict(raw, format=3)).encode())
    assert "newer appsvc-dr" in refused.value.hint
    # And a target file is recognised as identical blob by blob (restore's resumable skip), any change is not
    lengths = dict(zip(ids, map(len, parts)))
    assert same_file(io.BytesIO(b"".join(parts)), big, lengths.__getitem__)
    assert same_file(io.BytesIO(b"".join(parts)), old_big, lengths.__getitem__)
    assert not same_file(io.BytesIO(b"".join(parts)[:-1] + b"!"), big, lengths.__getitem__)
    assert not same_file(io.BytesIO(b"".join(parts) + b"+"), big, lengths.__getitem__)
    assert not same_file(io.BytesIO(b"".join(parts)[:15]), big, lengths.__getitem__)
