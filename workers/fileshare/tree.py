"""A directory tree to back up from or restore into: a local path or an SMB share (``smbtree``).

Paths inside a tree are relative and '/'-separated (``site/wwwroot/index.html``; ``""`` is the root). Errors
about one file are :class:`FileProblem` (locked, denied, vanished, changed: the sync retries or skips that
file); errors about the tree itself are Transient/PermanentError (the job is retried or dead-lettered).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import stat as py_stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from workers.runtime.errors import PermanentError, TransientError

DIRECTORY, READONLY, ARCHIVE = 0x10, 0x01, 0x20


@dataclass(frozen=True, slots=True)
class Stat:
    name: str
    is_dir: bool
    size: int
    mtime_ns: int
    attrs: int


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


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def split_unc(path: str) -> list[str] | None:
    if not path.startswith(("\\\\", "//")):
        return None
    return [p for p in re.split(r"[\\/]+", path) if p]


def open_tree(source: str, *, username: str | None = None, password=None, port: int = 445,
              encrypt: bool = True) -> Tree:
    """The tree behind ``source``: ``\\\\server\\share[\\dir]`` or an absolute local path."""
    parts = split_unc(source)
    if parts is not None:
        from workers.fileshare.smbtree import SmbTree
        return SmbTree(source, username=username, password=password, port=port, encrypt=encrypt)
    if source and os.path.isabs(source):
        return LocalTree(source)
    raise SourceMisconfigured(f"file-share source {source!r} is neither a UNC path nor an absolute local path")


def tree_from_spec(spec: dict) -> Tree:
    kind = spec.pop("kind")
    return open_tree(**spec) if kind == "smb" else LocalTree(spec["root"])


class LocalTree:
    """A local (or mounted) directory."""

    def __init__(self, root: str | Path, *, create: bool = False) -> None:
        self.root = Path(root).absolute()
        self.name = str(self.root)
        self._create = create

    def spec(self) -> dict:
        return {"kind": "local", "root": str(self.root)}

    def connect(self) -> None:
        if self._create:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise SourceMisconfigured(f"{self.root} is not a directory")

    def _path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    @staticmethod
    def _stat(name: str, st: os.stat_result) -> Stat:
        is_dir = py_stat.S_ISDIR(st.st_mode)
        attrs = DIRECTORY if is_dir else ARCHIVE
        if not st.st_mode & 0o200:
            attrs |= READONLY
        return Stat(name, is_dir, 0 if is_dir else st.st_size, st.st_mtime_ns, attrs)

    def scandir(self, rel: str) -> list[Stat]:
        out = []
        with _local_errors(rel), os.scandir(self._path(rel)) as entries:
            for entry in entries:
                if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                    continue                       # like robocopy /XJ: no links, devices or sockets
                with contextlib.suppress(FileNotFoundError):
                    out.append(self._stat(entry.name, entry.stat(follow_symlinks=False)))
        return out

    def stat(self, rel: str) -> Stat:
        with _local_errors(rel):
            return self._stat(rel.rpartition("/")[2], os.stat(self._path(rel), follow_symlinks=False))

    def read(self, rel: str, listed: Stat, limit: int) -> tuple[bytes, Stat] | None:
        with _local_errors(rel), open(self._path(rel), "rb") as fh:
            data = fh.read(limit + 1)
            after = self._stat(listed.name, os.fstat(fh.fileno()))
        return (data, after) if len(data) <= limit else None

    @contextlib.contextmanager
    def open_read(self, rel: str) -> Iterator[BinaryIO]:
        with _local_errors(rel):
            fh = open(self._path(rel), "rb")
        with fh:
            yield fh

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        with _local_errors(rel):
            fh = open(self._path(rel), "wb")
        with fh:
            yield fh

    def makedirs(self, rel: str) -> None:
        with _local_errors(rel):
            self._path(rel).mkdir(parents=True, exist_ok=True)

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        with _local_errors(rel):
            os.utime(self._path(rel), ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _local_errors(rel: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        raise FileProblem("vanished", f"{rel or '/'}: no longer exists") from exc
    except PermissionError as exc:
        raise FileProblem("denied", f"{rel or '/'}: access denied") from exc
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EHOSTDOWN):
            raise SourceUnavailable(f"{rel or '/'}: {os.strerror(exc.errno or 0)}") from exc
        raise
