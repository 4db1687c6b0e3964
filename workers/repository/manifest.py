"""The snapshot manifest: every directory (empty ones too) and file of a snapshot, with size, mtime,
attributes and the ids of the content blobs, in path order. Stored as compressed (and, when a
certificate is configured, encrypted) JSON::

    {"format": 2, "snapshot_id": ..., "stamp": ..., "backup_set_id": ..., "source": ..., "sub_path": ...,
     "parent": ..., "created_at": ..., "partial": false, "chunker": {...},
     "skipped": [{"path": ..., "reason": ...}],
     "entries": [{"path": "site", "type": "dir", "mtime_ns": ..., "attrs": 16},
                 {"path": "site/a.txt", "type": "file", "size": 5, "mtime_ns": ..., "attrs": 32,
                  "sha256": "...", "blobs": ["<sha256 of chunk 1>", ...], "unstable": false, "file_id": 123}]}

``file_id`` (optional, absent when 0 = unknown) is the source's id of the file (SMB FileId, local inode): a
rename keeps it, which lets the next sync carry a moved file over unread (``moves``).

A blob id is the SHA-256 of the chunk's bytes; the index says which pack holds it. A file's content is its
blob list (restic's model): restore checks every blob against its id and the file against its size.
``sha256``, the SHA-256 of the whole file, is there when it costs nothing: a file of one blob (it is that
blob's id) or an empty file. Format 1 (older snapshots, still read) carried it for every file; format 2 no
longer hashes a file of several blobs a second time as a whole.

A manifest comes from the store, which is not trusted: ``from_json`` checks every entry (a safe relative path,
see ``paths``; sane sizes, times, attributes and blob ids; no duplicates; no file that is another entry's parent)
and refuses the whole manifest with :class:`~workers.repository.paths.UnsafeEntryError` naming the first bad one.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from workers.repository.paths import UnsafeEntryError, check_path, shown
from workers.storage.crypto import UnsupportedArtifactError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
FORMAT, READABLE = 2, (1, 2)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_INT64, _UINT64 = 1 << 63, 1 << 64


def file_sha256(blobs: list[str] | tuple[str, ...]) -> str:
    """The whole file's SHA-256 where the blob ids give it for free (one blob, or none), else ""."""
    return blobs[0] if len(blobs) == 1 else EMPTY_SHA256 if not blobs else ""


@dataclass(slots=True)
class Entry:
    path: str
    is_dir: bool
    size: int
    mtime_ns: int
    attrs: int
    sha256: str = ""                  # "" for a file of several blobs in a format 2 manifest
    blobs: tuple[str, ...] = ()
    unstable: bool = False            # still changing after re-reads: stored as last read
    file_id: int = 0                  # the source's id of the file (SMB FileId, local inode); 0: unknown

    def same_metadata(self, other: "Entry") -> bool:
        """Unchanged for an incremental sync: same kind, size, mtime and attributes."""
        return (self.is_dir, self.size, self.mtime_ns, self.attrs) == \
            (other.is_dir, other.size, other.mtime_ns, other.attrs)

    def same_content(self, other: "Entry") -> bool:
        if self.is_dir != other.is_dir or self.size != other.size:
            return False
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        return self.blobs == other.blobs

    def to_dict(self) -> dict:
        if self.is_dir:
            return {"path": self.path, "type": "dir", "mtime_ns": self.mtime_ns, "attrs": self.attrs}
        out = {"path": self.path, "type": "file", "size": self.size, "mtime_ns": self.mtime_ns,
               "attrs": self.attrs, "blobs": list(self.blobs)}
        if self.sha256:
            out["sha256"] = self.sha256
        if self.unstable:
            out["unstable"] = True
        if self.file_id:
            out["file_id"] = self.file_id
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "Entry":
        """An entry read from a manifest, refused (:class:`UnsafeEntryError`) unless every field is sane."""
        if not isinstance(d, dict):
            raise UnsafeEntryError(d, "an entry must be a JSON object", where=where)
        path = check_path(d.get("path"), where=where)

        def number(key: str, low: int, high: int) -> int:
            value = d.get(key)
            if type(value) is not int or not low <= value <= high:      # bool is not a number here
                raise UnsafeEntryError(path, f"{key!r} must be an integer from {low} to {high}, not "
                                             f"{shown(value, 40)}", where=where)
            return value

        mtime_ns, attrs = number("mtime_ns", -_INT64, _INT64 - 1), number("attrs", 0, 0xFFFF_FFFF)
        kind = d.get("type")
        if kind == "dir":
            return cls(path, True, 0, mtime_ns, attrs)
        if kind != "file":
            raise UnsafeEntryError(path, f"'type' must be 'dir' or 'file', not {shown(kind, 40)}", where=where)
        blobs, sha256, unstable = d.get("blobs"), d.get("sha256", ""), d.get("unstable", False)
        if not isinstance(blobs, list) or not all(isinstance(b, str) and _HEX64.fullmatch(b) for b in blobs):
            raise UnsafeEntryError(path, "'blobs' must be a list of blob ids (64 lowercase hex digits)", where=where)
        if sha256 != "" and not (isinstance(sha256, str) and _HEX64.fullmatch(sha256)):
            raise UnsafeEntryError(path, "'sha256' must be 64 lowercase hex digits", where=where)
        if not isinstance(unstable, bool):
            raise UnsafeEntryError(path, "'unstable' must be true or false", where=where)
        file_id = number("file_id", 0, _UINT64 - 1) if "file_id" in d else 0
        return cls(path, False, number("size", 0, _INT64 - 1), mtime_ns, attrs, sha256, tuple(blobs), unstable,
                   file_id)


@dataclass
class Manifest:
    snapshot_id: str
    stamp: str
    backup_set_id: str
    source: str
    sub_path: str | None = None
    parent: str | None = None
    created_at: str = ""
    partial: bool = False
    chunker: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    def sort(self) -> None:
        self.entries.sort(key=lambda e: e.path)

    def files(self) -> Iterator[Entry]:
        return (e for e in self.entries if not e.is_dir)

    def dirs(self) -> Iterator[Entry]:
        return (e for e in self.entries if e.is_dir)

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files())

    def blob_ids(self) -> set[str]:
        return {b for e in self.files() for b in e.blobs}

    def to_json(self) -> bytes:
        head = {"format": FORMAT, "snapshot_id": self.snapshot_id, "stamp": self.stamp,
                "backup_set_id": self.backup_set_id, "source": self.source, "sub_path": self.sub_path,
                "parent": self.parent, "created_at": self.created_at, "partial": self.partial,
                "chunker": self.chunker, "skipped": self.skipped}
        body = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
        entries = ",".join(json.dumps(e.to_dict(), ensure_ascii=False, separators=(",", ":"))
                           for e in self.entries)
        return f'{body},"entries":[{entries}]}}'.encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") not in READABLE:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise UnsupportedArtifactError(f"unknown snapshot manifest format {found!r} (this build "
                                           f"reads formats {', '.join(map(str, READABLE))})")
        where = f"snapshot {shown(data.get('snapshot_id'), 80)}: "
        if not isinstance(data.get("entries"), list):
            raise UnsafeEntryError(data.get("entries"), "'entries' must be a list", where=where)
        sub_path = data.get("sub_path")
        manifest = cls(snapshot_id=data["snapshot_id"], stamp=data["stamp"], backup_set_id=data["backup_set_id"],
                       source=data["source"], sub_path=None if sub_path is None else check_path(sub_path, where=where),
                       parent=data.get("parent"), created_at=data.get("created_at", ""),
                       partial=bool(data.get("partial")), chunker=data.get("chunker") or {},
                       skipped=_skipped(data.get("skipped") or [], where),
                       entries=[Entry.from_dict(d, where) for d in data["entries"]])
        _check_tree(manifest.entries, where)
        return manifest


def _skipped(items: object, where: str) -> list[dict]:
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("path"), str) and
                                              isinstance(i.get("reason"), str) for i in items):
        raise UnsafeEntryError("skipped", "'skipped' must be a list of {path, reason} strings", where=where)
    return list(items)


def check_entries(entries: list[Entry], where: str = "") -> None:
    """What ``from_json`` checks of the paths, for entries from anywhere (a restore checks its selection again)."""
    for entry in entries:
        check_path(entry.path, where=where)
    _check_tree(entries, where)


def _check_tree(entries: list[Entry], where: str) -> None:
    """No path twice, and no file that another entry sits under (it would be written as a directory)."""
    files: set[str] = set()
    seen: set[str] = set()
    for entry in entries:
        if entry.path in seen:
            raise UnsafeEntryError(entry.path, "the path is listed twice", where=where)
        seen.add(entry.path)
        if not entry.is_dir:
            files.add(entry.path)
    for entry in entries:
        path, cut = entry.path, entry.path.rfind("/")
        while cut > 0:
            if path[:cut] in files:
                raise UnsafeEntryError(entry.path, f"its parent {shown(path[:cut], 80)} is a file of the snapshot",
                                       where=where)
            cut = path.rfind("/", 0, cut)


@dataclass
class Diff:
    added: list[Entry] = field(default_factory=list)
    removed: list[Entry] = field(default_factory=list)
    modified: list[tuple[Entry, Entry]] = field(default_factory=list)   # (old, new): content changed
    touched: list[tuple[Entry, Entry]] = field(default_factory=list)    # same content, metadata changed

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified or self.touched)

    def lines(self) -> Iterator[str]:
        rows = [(e.path, "+", e) for e in self.added] + [(e.path, "-", e) for e in self.removed] + \
               [(n.path, "M", n) for _, n in self.modified] + [(n.path, "T", n) for _, n in self.touched]
        for path, mark, entry in sorted(rows, key=lambda r: r[0]):
            yield f"{mark} {path}{'/' if entry.is_dir else ''}"


def diff(old: Iterable[Entry], new: Iterable[Entry]) -> Diff:
    """What changed from ``old`` to ``new`` (``M`` content, ``T`` only mtime/attributes)."""
    before = {e.path: e for e in old}
    result = Diff()
    for entry in new:
        prev = before.pop(entry.path, None)
        if prev is None or prev.is_dir != entry.is_dir:
            if prev is not None:
                result.removed.append(prev)
            result.added.append(entry)
        elif not entry.is_dir and not prev.same_content(entry):
            result.modified.append((prev, entry))
        elif not prev.same_metadata(entry):
            result.touched.append((prev, entry))
    result.removed.extend(before.values())
    return result
