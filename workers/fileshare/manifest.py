"""The snapshot manifest: every directory (empty ones too) and file of a snapshot, with size, mtime,
attributes and the ids of the content blobs, in path order. Stored as compressed (and, when a
certificate is configured, encrypted) JSON::

    {"format": 2, "snapshot_id": ..., "stamp": ..., "backup_set_id": ..., "source": ..., "sub_path": ...,
     "parent": ..., "created_at": ..., "partial": false, "chunker": {...},
     "skipped": [{"path": ..., "reason": ...}],
     "entries": [{"path": "site", "type": "dir", "mtime_ns": ..., "attrs": 16},
                 {"path": "site/a.txt", "type": "file", "size": 5, "mtime_ns": ..., "attrs": 32,
                  "sha256": "...", "blobs": ["<sha256 of chunk 1>", ...], "unstable": false}]}

A blob id is the SHA-256 of the chunk's bytes; the index says which pack holds it. A file's content is its
blob list (restic's model): restore checks every blob against its id and the file against its size.
``sha256``, the SHA-256 of the whole file, is there when it costs nothing: a file of one blob (it is that
blob's id) or an empty file. Format 1 (older snapshots, still read) carried it for every file; format 2 no
longer hashes a file of several blobs a second time as a whole.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from workers.storage.crypto import UnsupportedArtifactError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
FORMAT, READABLE = 2, (1, 2)


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
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Entry":
        if d["type"] == "dir":
            return cls(d["path"], True, 0, int(d["mtime_ns"]), int(d["attrs"]))
        return cls(d["path"], False, int(d["size"]), int(d["mtime_ns"]), int(d["attrs"]), d.get("sha256", ""),
                   tuple(d["blobs"]), bool(d.get("unstable", False)))


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
        if data.get("format") not in READABLE:
            raise UnsupportedArtifactError(f"unknown snapshot manifest format {data.get('format')!r} (this build "
                                           f"reads formats {', '.join(map(str, READABLE))})")
        return cls(snapshot_id=data["snapshot_id"], stamp=data["stamp"], backup_set_id=data["backup_set_id"],
                   source=data["source"], sub_path=data.get("sub_path"), parent=data.get("parent"),
                   created_at=data.get("created_at", ""), partial=bool(data.get("partial")),
                   chunker=data.get("chunker") or {}, skipped=list(data.get("skipped") or []),
                   entries=[Entry.from_dict(d) for d in data["entries"]])


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
