"""A manifest from the store is checked where it enters: every entry a safe relative path with sane fields."""
from __future__ import annotations

import json

import pytest

from tests.unit.forge import TRAVERSALS
from workers.repository.manifest import Entry, Manifest
from workers.repository.paths import MAX_COMPONENT, PARTIAL, UnsafeEntryError, partial_name, path_problem
from workers.runtime.errors import PermanentError

BLOB = "ab" * 32


def raw(*entries: dict, **head) -> bytes:
    body = {"format": 2, "snapshot_id": "forged-1", "stamp": "s", "backup_set_id": "b", "source": "x",
            "entries": list(entries), **head}
    return json.dumps(body).encode()


def file(path, **fields) -> dict:
    return {"path": path, "type": "file", "size": 3, "mtime_ns": 1, "attrs": 32, "blobs": [BLOB], **fields}


@pytest.mark.parametrize("path", list(TRAVERSALS) + ["/srv/victim/abs.txt"])
def test_every_traversal_form_is_refused_when_the_manifest_is_loaded(path):
    # Given a manifest from the store with one hostile entry beside a good one
    body = raw(file("site/ok.txt"), file(path))
    # When it is loaded / Then it is refused naming the snapshot, the entry (escaped) and the broken rule
    with pytest.raises(UnsafeEntryError) as refused:
        Manifest.from_json(body)
    err = refused.value
    rule = TRAVERSALS.get(path, "absolute path")
    assert isinstance(err, PermanentError) and rule in err.rule
    assert "snapshot 'forged-1'" in err.message and repr(path)[:60] in err.message
    assert "\x00" not in err.message and "\x01" not in err.message and "\x7f" not in err.message
    assert "tampered" in err.hint and "restore another snapshot" in err.hint


@pytest.mark.parametrize("entry, rule", [
    (file("a", size=-1), "'size' must be an integer"),
    (file("a", size=True), "'size' must be an integer"),
    (file("a", size="3"), "'size' must be an integer"),
    (file("a", mtime_ns=1.5), "'mtime_ns' must be an integer"),
    (file("a", attrs=1 << 32), "'attrs' must be an integer"),
    (file("a", blobs=["AB" * 32]), "'blobs' must be a list of blob ids"),
    (file("a", blobs=["../../x"]), "'blobs' must be a list of blob ids"),
    (file("a", blobs=BLOB), "'blobs' must be a list of blob ids"),
    (file("a", sha256="x"), "'sha256' must be 64 lowercase hex"),
    (file("a", unstable="yes"), "'unstable' must be true or false"),
    (file("a", file_id=-1), "'file_id' must be an integer"),
    (file("a", file_id=1 << 64), "'file_id' must be an integer"),
    (file("a", file_id="7"), "'file_id' must be an integer"),
    (file("a", file_id=None), "'file_id' must be an integer"),
    (file("a", type="symlink"), "'type' must be 'dir' or 'file'"),
    (file(7), "a path must be a string"),
    (file(""), "an empty path"),
    (["a"], "an entry must be a JSON object"),
])
def test_entries_with_insane_fields_are_refused(entry, rule):
    # Given an entry a worker never writes / When loaded / Then refused with the rule it breaks
    with pytest.raises(UnsafeEntryError, match=rule):
        Manifest.from_json(raw(entry))


def test_duplicates_and_a_file_used_as_a_directory_are_refused():
    # Given the same path twice / Then refused
    with pytest.raises(UnsafeEntryError, match="listed twice"):
        Manifest.from_json(raw(file("a/b"), {"path": "a/b", "type": "dir", "mtime_ns": 1, "attrs": 16}))
    # Given a file that another entry sits under / Then refused, naming both
    with pytest.raises(UnsafeEntryError, match=r"'a/b/c'.*its parent 'a/b' is a file"):
        Manifest.from_json(raw(file("a/b"), file("a/b/c")))
    # Given a hostile sub_path or entries that are not a list / Then refused
    with pytest.raises(UnsafeEntryError, match="'..' component"):
        Manifest.from_json(raw(file("a"), sub_path="../up"))
    with pytest.raises(UnsafeEntryError, match="'entries' must be a list"):
        Manifest.from_json(json.dumps({"format": 2, "snapshot_id": "x", "entries": {"a": 1}}).encode())
    with pytest.raises(UnsafeEntryError, match="'skipped' must be a list"):
        Manifest.from_json(raw(file("a"), skipped=[{"path": 1}]))


def test_windows_limits_count_utf16_units_and_good_names_still_load():
    # Given names at the limits: 255 ASCII characters; 127 astral characters (254 UTF-16 units) and 128 (256)
    ok, astral_ok, astral_long = "a" * MAX_COMPONENT, "\U0001F600" * 127, "\U0001F600" * 128
    # Then the first two are fine, the third is too long for SMB although it has only 128 code points
    assert path_problem(f"d/{ok}") is None and path_problem(astral_ok) is None
    assert "longer than 255" in path_problem(astral_long)
    # And a path over 32,767 UTF-16 units is refused even when each component is fine
    assert "longer than 32767" in path_problem("/".join([ok] * 129))
    # And ordinary App Service names (unicode, spaces, dots, dashes) load unchanged
    names = ["site/wwwroot/café/naïve 文件 ✓.txt", "site/.hidden", "a..b", "LogFiles/app-1.log", ok]
    manifest = Manifest.from_json(raw(*(file(n) for n in names)))
    assert [e.path for e in manifest.entries] == names and manifest.entries[0] == \
        Entry(names[0], False, 3, 1, 32, "", (BLOB,))


def test_the_temporary_name_of_a_restored_file_fits_beside_it():
    # Given an ordinary name and one at the 255 limit / Then both temporary names are hidden and fit the limit
    assert partial_name("index.html") == f".index.html{PARTIAL}"
    long = partial_name("é" * 200)
    assert long.startswith(".") and long.endswith(PARTIAL) and len(long.encode()) <= MAX_COMPONENT
    assert path_problem(long) is None and partial_name("é" * 200) == long != partial_name("é" * 199)
