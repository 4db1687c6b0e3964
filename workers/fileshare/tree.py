"""A directory tree to back up from or restore into: the :class:`Tree` protocol, what it lists (:class:`Stat`) and
how it fails; a local path (``localtree``) or an SMB share (``smbtree``) implement it, ``opener`` picks one.

Paths inside a tree are relative and '/'-separated (``site/wwwroot/index.html``; ``""`` is the root). Errors
about one file are :class:`FileProblem` (locked, denied, vanished, changed: the sync retries or skips that
file); errors about the tree itself are Transient/PermanentError (the job is retried or dead-lettered).

A restore writes through ``makedirs`` / ``open_write`` / ``set_mtime``, which never leave the tree: every path is
checked (``paths``) before anything is written, and ``open_write`` writes to a temporary name in the same
directory that replaces the file only when the caller's block ends without an error (after it verified the
content), so a failed restore leaves the old file.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from workers.runtime.errors import PermanentError, TransientError

DIRECTORY, READONLY, HIDDEN, SYSTEM, ARCHIVE, DEVICE, NORMAL = 0x10, 0x01, 0x02, 0x04, 0x20, 0x40, 0x80
ATTRIBUTES = READONLY | HIDDEN | SYSTEM | ARCHIVE     # the DOS attributes a restore sets


@dataclass(frozen=True, slots=True)
class Stat:
    name: str
    is_dir: bool
    size: int
    mtime_ns: int
    attrs: int
    file_id: int = 0          # the server's id of the file (SMB FileId, local inode), kept across renames; 0: unknown


class FileProblem(Exception):
    """One file could not be read as it is; ``kind`` is locked, denied, vanished or changed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message

    def __reduce__(self):
        return FileProblem, (self.kind, self.message)


class SourceUnavailable(TransientError):
    default_hint = ("The file share could not be reached or dropped the connection; the job is retried with "
                    "backoff. If it persists check APPSVC_DR_FILESHARE__SOURCE / APPSVC_DR_FILESHARE__PORT and "
                    "that the file server is up.")


class SourceDenied(PermanentError):
    default_hint = ("The file server rejected the login: check APPSVC_DR_FILESHARE__USERNAME and "
                    "APPSVC_DR_FILESHARE__PASSWORD (the App Service FileShareOwner account, as DOMAIN\\user "
                    "or user@domain).")


class SourceMisconfigured(PermanentError):
    default_hint = (r"Set APPSVC_DR_FILESHARE__SOURCE to \\server\share[\dir] or an absolute local path that "
                    "exists.")


class Tree(Protocol):
    name: str

    def connect(self) -> None: ...
    def spec(self) -> dict: ...
    def scandir(self, rel: str) -> list[Stat]: ...
    def stat(self, rel: str) -> Stat: ...
    def read(self, rel: str, listed: Stat, limit: int) -> tuple[bytes, Stat] | None: ...
    def open_read(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def open_write(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def makedirs(self, rel: str) -> None: ...
    def set_mtime(self, rel: str, mtime_ns: int) -> None: ...
    def close(self) -> None: ...
    # a restore target also has (see localtree.LocalTree / smbtree.SmbTree):
    # exists(), case_insensitive(), listdir(rel), write_file(rel, data, mtime_ns, attrs),
    # set_meta(rel, mtime_ns, attrs, is_dir=False), remove(rel), rename(rel, new_name); keeps_attributes


# what a snapshot manifest can hold (a signed 64-bit count of nanoseconds: 1677-09-21 to 2262-04-11)
MTIME_MIN, MTIME_MAX = -(1 << 63), (1 << 63) - 1


def held_mtime(mtime_ns: int) -> int:
    """A file time as read off a tree, within what a manifest can hold. A share can carry a time outside it (an
    SMB FILETIME in the year 30828, a local file touched to the year 2446): clamped here, where it enters, so one
    such file cannot make its whole snapshot unrestorable; the file's content is kept as it is."""
    return min(max(mtime_ns, MTIME_MIN), MTIME_MAX)


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


