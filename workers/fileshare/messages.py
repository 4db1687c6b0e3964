"""What the sync and its readers say to each other: named records, picklable (they cross the pipes of the
``spawn``-started reader processes, which import this module by name) and cheap (a named tuple is a tuple).

Tasks (to readers): :class:`ListDir` · :class:`ReadFiles` · ``None`` (stop).
Results (to the sync): :class:`Listed` or :class:`ListFailed` for a directory; :class:`NewBlob` for content not
known to the reader process yet (the sync deduplicates again; reader threads of the sync's own process hand blobs
straight to the packer instead); :class:`FileRead` or :class:`FileFailed` for a file; :class:`ReaderFailed` when
the tree itself failed (unreachable, bad login). Reader processes that pack and upload themselves send
:class:`Claim` (answered on that process's own queue with the refused blob ids) and :class:`PackStored`.
"""
from __future__ import annotations

from typing import NamedTuple, Union

from workers.fileshare.tree import Stat
from workers.repository.index import IndexEntry


class ListDir(NamedTuple):
    rel: str


class FileToRead(NamedTuple):
    file_id: int                # the sync's number for it while it is read
    rel: str
    listed: Stat                # as the listing saw it (a change while read is measured against it)


class ReadFiles(NamedTuple):
    files: list[FileToRead]     # small files in a batch, or one large file


class Listed(NamedTuple):
    rel: str
    stats: list[Stat]


class ListFailed(NamedTuple):
    rel: str
    kind: str                   # locked, denied, vanished or changed (FileProblem.kind)
    message: str


class NewBlob(NamedTuple):
    blob: str
    data: bytes


class Content(NamedTuple):
    """What reading one file gave: the file's SHA-256 (or ""), its stat after the read, its blob ids, and whether
    it was still changing after every re-read (stored as last read)."""
    sha256: str
    after: Stat
    blobs: list[str]
    unstable: bool


class FileRead(NamedTuple):
    file_id: int
    content: Content


class FileFailed(NamedTuple):
    file_id: int
    kind: str                   # FileProblem.kind
    message: str
    read: int = 0               # bytes already chunked and handed on (e.g. a file that vanished after it was read)


class ReaderFailed(NamedTuple):
    transient: bool
    name: str                   # the error's class name
    message: str
    hint: str | None


class Claim(NamedTuple):
    """A reader process is about to encode and upload a pack of ``blobs``: which of them does another store?"""
    proc: int                   # the asking process's number: the answer goes to its queue
    blobs: list[IndexEntry]


class PackStored(NamedTuple):
    """A reader process stored a pack: the sync indexes it."""
    pack: str
    blobs: list[IndexEntry]
    stored_size: int
    deduplicated: bool


Task = Union[ListDir, ReadFiles]
Result = Union[Listed, ListFailed, NewBlob, FileRead, FileFailed, ReaderFailed, Claim, PackStored]
