"""A local (or mounted) directory as a :class:`~workers.fileshare.tree.Tree`.

As a restore target it walks every path one component at a time from a descriptor of its root with
``O_NOFOLLOW`` (a symlink or other non-directory where a directory goes is refused, never followed or removed),
and ``open_write`` writes to a temporary name in the same directory (0600) that replaces the file only when the
caller's block ends without an error. DOS attributes: read-only is the file's mode, all of them an extended
attribute (``ATTRS_XATTR``) where the file system has them.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat as py_stat
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

from workers.fileshare.tree import ARCHIVE, ATTRIBUTES, DEVICE, DIRECTORY, READONLY, FileProblem, \
    SourceMisconfigured, SourceUnavailable, Stat, held_mtime
from workers.repository.paths import REPARSE_POINT, UnsafeTargetError, parts, partial_name, shown

ATTRS_XATTR = "user.appsvc-dr.dosattrib"             # where a local target keeps them (hex), besides read-only
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KIND = {py_stat.S_IFLNK: "a symbolic link", py_stat.S_IFREG: "a file", py_stat.S_IFDIR: "a directory"}


class LocalTree:
    """A local (or mounted) directory."""

    keeps_attributes = False                          # read-only is the mode; the rest an extended attribute

    def __init__(self, root: str | Path, *, create: bool = False) -> None:
        self.root = Path(root).absolute()
        self.name = str(self.root)
        self._create = create
        self._root_fd: int | None = None
        self._mode = 0o600
        self._guard = threading.Lock()

    def spec(self) -> dict:
        return {"kind": "local", "root": str(self.root)}

    def connect(self) -> None:
        if self._create:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise SourceMisconfigured(f"{self.root} is not a directory")
        self._mode = 0o666 & ~_umask()                  # what a restored file gets once it is complete

    def _path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    @staticmethod
    def _stat(name: str, st: os.stat_result) -> Stat:
        is_dir = py_stat.S_ISDIR(st.st_mode)
        attrs = DIRECTORY if is_dir else REPARSE_POINT if py_stat.S_ISLNK(st.st_mode) else \
            ARCHIVE if py_stat.S_ISREG(st.st_mode) else DEVICE
        if not st.st_mode & 0o200:
            attrs |= READONLY
        return Stat(name, is_dir, 0 if is_dir else st.st_size, held_mtime(st.st_mtime_ns), attrs, st.st_ino)

    # ---- reading (the backup source) -----------------------------------------------------------
    def scandir(self, rel: str) -> list[Stat]:
        out = []
        with _local_errors(rel), os.scandir(self._path(rel)) as entries:
            for entry in entries:
                if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                    continue                       # like robocopy /XJ: no links, devices or sockets
                with contextlib.suppress(FileNotFoundError):
                    out.append(self._stat(entry.name, entry.stat(follow_symlinks=False)))
        return out

    def read(self, rel: str, listed: Stat, limit: int) -> tuple[bytes, Stat] | None:
        with _local_errors(rel), open(self._path(rel), "rb") as fh:
            data = fh.read(limit + 1)
            after = self._stat(listed.name, os.fstat(fh.fileno()))
        return (data, after) if len(data) <= limit else None

    # ---- walking without following links (everything a restore touches) -----------------------
    def _dir_fd(self) -> int:
        with self._guard:
            if self._root_fd is None:
                self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            return self._root_fd

    def _refuse(self, fd: int, name: str, where: str, want: str) -> UnsafeTargetError:
        try:
            kind = _KIND.get(py_stat.S_IFMT(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode), "a special file")
        except FileNotFoundError:
            kind = "gone"
        return UnsafeTargetError(f"{self.name}/{shown(where)[1:-1]} is {kind}, not {want}: refused (a restore never "
                                 "follows or replaces it)")

    @contextlib.contextmanager
    def _walk(self, names: list[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory ``names`` leads to, reached component by component with O_NOFOLLOW
        (creating missing ones when ``create``)."""
        root = fd = self._dir_fd()
        try:
            for depth, name in enumerate(names):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, dir_fd=fd)
                try:
                    step = os.open(name, _DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    raise self._refuse(fd, name, "/".join(names[:depth + 1]), "a directory") from None
                if fd != root:
                    os.close(fd)
                fd = step
            yield fd
        finally:
            if fd != root:
                os.close(fd)

    @contextlib.contextmanager
    def _parent(self, rel: str) -> Iterator[tuple[int, str]]:
        """A descriptor of ``rel``'s directory (see ``_walk``) and ``rel``'s last name ("" for the root)."""
        names = parts(rel)
        with self._walk(names[:-1]) as fd:
            yield fd, names[-1] if names else ""

    def stat(self, rel: str) -> Stat:
        with _local_errors(rel), self._parent(rel) as (fd, name):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False) if name else os.fstat(fd)
        return self._stat(rel.rpartition("/")[2], st)

    @contextlib.contextmanager
    def open_read(self, rel: str) -> Iterator[BinaryIO]:
        with _local_errors(rel), self._parent(rel) as (fd, name):
            try:
                ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise self._refuse(fd, name, rel, "a file") from None
            if not py_stat.S_ISREG(os.fstat(ffd).st_mode):
                os.close(ffd)
                raise self._refuse(fd, name, rel, "a file")
            fh = os.fdopen(ffd, "rb")
        with fh:
            yield fh

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """Write ``rel`` through a temporary file (0600) beside it, renamed over ``rel`` only if the block ends
        without an error; on an error it is removed and an existing ``rel`` is left as it was."""
        with _local_errors(rel), self._parent(rel) as (fd, name):
            with contextlib.suppress(FileNotFoundError):
                if not py_stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise self._refuse(fd, name, rel, "a file")
            tmp, flags = partial_name(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                wfd = os.open(tmp, flags, 0o600, dir_fd=fd)
            except FileExistsError:                      # left by an interrupted restore
                os.unlink(tmp, dir_fd=fd)
                wfd = os.open(tmp, flags, 0o600, dir_fd=fd)
            try:
                with os.fdopen(wfd, "wb") as fh:
                    yield fh
                    os.fchmod(fh.fileno(), self._mode)
                os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
                raise

    def makedirs(self, rel: str) -> None:
        with _local_errors(rel), self._walk(parts(rel), create=True):
            pass

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        with _local_errors(rel), self._parent(rel) as (fd, name):
            if name:
                os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=fd, follow_symlinks=False)
            else:
                os.utime(fd, ns=(mtime_ns, mtime_ns))

    # ---- restore target ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.root.is_dir()

    def free_space(self) -> int:
        """Bytes this user may still write where the root is (or would be created: its nearest existing parent)."""
        where = self.root
        while not where.exists() and where != where.parent:
            where = where.parent
        st = os.statvfs(where)
        return st.f_bavail * st.f_frsize

    def case_insensitive(self) -> bool:
        """Whether the root's name with its letters' case swapped is the same directory (a case-insensitive mount)."""
        swapped = self.root.with_name(self.root.name.swapcase())
        if swapped == self.root:
            return False
        try:
            return os.path.samestat(os.stat(self.root), os.stat(swapped))
        except OSError:
            return False

    def listdir(self, rel: str) -> list[Stat]:
        """Everything in directory ``rel``, links and special files included (flagged, never followed)."""
        out = []
        with _local_errors(rel), self._walk(parts(rel)) as fd, os.scandir(fd) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    out.append(self._stat(entry.name, entry.stat(follow_symlinks=False)))
        return out

    def write_file(self, rel: str, data: bytes, mtime_ns: int, attrs: int | None) -> None:
        with self.open_write(rel) as fh:
            fh.write(data)
        self.set_meta(rel, mtime_ns, attrs)

    def set_meta(self, rel: str, mtime_ns: int | None, attrs: int | None, *, is_dir: bool = False) -> None:
        """Set ``rel``'s mtime and DOS attributes (None: leave it): read-only as the file's mode, all of them in
        an extended attribute where the file system has them."""
        with _local_errors(rel), self._parent(rel) as (fd, name):
            if attrs is not None:
                ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd) \
                    if name else os.dup(fd)
                try:
                    st = os.fstat(ffd)
                    if py_stat.S_ISREG(st.st_mode):
                        os.fchmod(ffd, self._mode & ~0o222 if attrs & READONLY else self._mode)
                    with contextlib.suppress(OSError):
                        os.setxattr(ffd, ATTRS_XATTR, f"0x{attrs & ATTRIBUTES:x}".encode())
                finally:
                    os.close(ffd)
            if mtime_ns is not None:
                if name:
                    os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=fd, follow_symlinks=False)
                else:
                    os.utime(fd, ns=(mtime_ns, mtime_ns))

    def remove(self, rel: str) -> None:
        """Remove the file ``rel`` (a link itself, never what it points to)."""
        with _local_errors(rel), self._parent(rel) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def rename(self, rel: str, new_name: str) -> None:
        """Rename ``rel`` (file or directory) to ``new_name`` in the same directory, never replacing anything."""
        parts(new_name)
        with _local_errors(rel), self._parent(rel) as (fd, name):
            with contextlib.suppress(FileNotFoundError):
                os.stat(new_name, dir_fd=fd, follow_symlinks=False)
                raise FileProblem("denied", f"{rel}: cannot be moved aside, {new_name!r} exists")
            os.rename(name, new_name, src_dir_fd=fd, dst_dir_fd=fd)

    def close(self) -> None:
        with self._guard:
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, racing other threads); 077 if unknown."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("Umask:")).split()[1], 8)
    return 0o077


@contextlib.contextmanager
def _local_errors(rel: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        raise FileProblem("vanished", f"{rel or '/'}: no longer exists") from exc
    except PermissionError as exc:
        raise FileProblem("denied", f"{rel or '/'}: access denied") from exc
    except (IsADirectoryError, NotADirectoryError) as exc:   # e.g. a directory where its temporary file goes
        raise FileProblem("denied", f"{rel or '/'}: {os.strerror(exc.errno or 0).lower()}: "
                                    f"{shown(exc.filename or rel)}") from exc
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EHOSTDOWN):
            raise SourceUnavailable(f"{rel or '/'}: {os.strerror(exc.errno or 0)}") from exc
        raise
