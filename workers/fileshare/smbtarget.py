"""The restore-target half of :class:`~workers.fileshare.smbtree.SmbTree`: everything a restore writes, never
leaving the share directory and never following a reparse point (see ``smbtree``'s module docstring).

A small file is one compound request (CREATE a temporary name + WRITE + SET_INFO rename + SET_INFO mtime and
attributes + CLOSE); mtimes and DOS attributes of anything else are one compound request too.
"""
from __future__ import annotations

import contextlib
import errno
from typing import Any, BinaryIO, Iterator

import smbclient
from smbprotocol.file_info import FileBasicInformation
from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask as Access
from smbprotocol.structure import DateTimeField

from workers.fileshare.smbwrite import PipelinedWriter
from workers.fileshare.tree import ATTRIBUTES, DIRECTORY, NORMAL, Stat
from workers.repository.paths import REPARSE_POINT, UnsafeTargetError, parts, partial_name, shown
from workers.smb.io import SMBFileTransaction, SMBRawIO, set_info
from workers.smb.rename import rename, rename_info
from workers.smb.session import Session

EPOCH = DateTimeField.EPOCH_FILETIME
# Streamed reads ask for at most this much per READ (64 credits): larger READs save per-request work (-8% CPU
# of 1 MiB ones, measured).
STREAM_READ = 4 << 20
# A restored file is written in WRITEs of up to this much (smbclient's buffer's default is 64 KiB, so a 1 MiB
# blob was one WRITE each): fewer, larger requests for the same bytes; up to WRITES_IN_FLIGHT of them outstanding
# on the file's handle (``smbwrite``).
STREAM_WRITE = 2 << 20
WRITES_IN_FLIGHT = 2
_WRITE_RENAME = Access.FILE_WRITE_DATA | Access.FILE_WRITE_ATTRIBUTES | Access.FILE_WRITE_EA | \
    Access.FILE_READ_ATTRIBUTES | Access.DELETE                # a restored file: written, then renamed into place


class SmbTarget:
    """Mixed into SmbTree (which provides ``_path``, ``_errors``, ``_kw``, ``_guard``, ``_checked``...)."""

    _kw: dict[str, Any]
    session: Session

    def _make_root(self) -> None:
        """Create the target folder (and missing parents inside the share) like a local target's."""
        names, base = list(self.session.unc.dirs), f"\\\\{self.host}\\{self.share}"
        depth = len(names)
        while depth:                                          # the deepest folder that exists
            try:
                smbclient.lstat("\\".join([base, *names[:depth]]), **self._kw)
                break
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise                                     # denied, no such share...: reported as it is
                depth -= 1
        for i in range(depth + 1, len(names) + 1):
            with contextlib.suppress(FileExistsError):
                smbclient.mkdir("\\".join([base, *names[:i]]), **self._kw)

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """Write ``rel`` through a temporary file beside it, renamed over ``rel`` (on the same handle) only if the
        block ends without an error; on an error it is removed and an existing ``rel`` is left as it was."""
        names = parts(rel)
        self._directory(names[:-1], create=False)
        tmp = self._path("/".join([*names[:-1], partial_name(names[-1])]))
        with self._errors(rel):
            fh = smbclient.open_file(tmp, mode="wb", share_access="r", desired_access=_WRITE_RENAME,
                                     create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, buffering=0, **self._kw)
        out = PipelinedWriter(fh.fd, size=STREAM_WRITE, depth=WRITES_IN_FLIGHT)
        try:
            try:
                yield _Translating(out, self, rel)       # type: ignore[arg-type]
                with self._errors(rel):
                    out.flush()
                    rename(fh.fd, names[-1])
            except BaseException:
                out.abandon()
                raise
            finally:
                with self._errors(rel):
                    fh.close()
        except BaseException:
            with contextlib.suppress(Exception):
                smbclient.remove(tmp, **self._kw)
            raise

    def exists(self) -> bool:
        """Whether the target folder is there (a restore plan of a missing one: everything is created)."""
        with self._errors(""):
            self.session.register()
            try:
                smbclient.lstat(self._root, **self._kw)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                return False
        return True

    def free_space(self) -> int:
        """Bytes the login may still write on the share (SMB FileFsFullSizeInformation: caller available)."""
        with self._errors(""):
            self.session.register()
            return int(smbclient.stat_volume(f"\\\\{self.host}\\{self.share}", **self._kw).caller_available_size)

    def case_insensitive(self) -> bool:
        """Whether the server matches names regardless of case, seen on the root folder's own name (a share
        root alone: assumed, as Windows does)."""
        names = list(self.session.unc.dirs)
        cased = [i for i, n in enumerate(names) if n.swapcase() != n]
        if not cased:
            return True
        probe = list(names)
        probe[cased[-1]] = probe[cased[-1]].swapcase()
        try:
            smbclient.lstat("\\".join(["\\\\" + self.host, self.share, *probe]), **self._kw)
        except OSError:
            return False
        return True

    def listdir(self, rel: str) -> list[Stat]:
        """Everything in directory ``rel``; a reparse point is listed with its attribute (never followed)."""
        return self.scandir(rel)

    def write_file(self, rel: str, data: bytes, mtime_ns: int, attrs: int | None) -> None:
        """A whole (small) file in ONE compound request: CREATE a temporary name + WRITE + SET_INFO(rename over
        ``rel``) + SET_INFO(mtime, attributes) + CLOSE; the caller verified ``data``. On any failure the temporary
        file is removed and an existing ``rel`` is left as it was."""
        names = parts(rel)
        self._directory(names[:-1], create=False)
        tmp = self._path("/".join([*names[:-1], partial_name(names[-1])]))
        raw = SMBRawIO(tmp, mode="wb", share_access="r", desired_access=_WRITE_RENAME,
                       create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, **self._kw)
        window = raw.fd.connection.sequence_window
        if len(data) > raw.fd.connection.max_write_size or window["high"] - window["low"] < len(data) // 65536 + 8:
            with self.open_write(rel) as fh:
                fh.write(data)
            self.set_meta(rel, mtime_ns, attrs)
            return
        transaction = SMBFileTransaction(raw)
        with self._errors(rel):
            raw.open(transaction=transaction)
            if data:
                transaction += raw.fd.write(data, 0, send=False)
            set_info(transaction, rename_info(raw.fd, names[-1]))
            set_info(transaction, _basic(mtime_ns, attrs, False))         # after the rename, or Samba drops them
            transaction += raw.fd.close(send=False)
            try:
                transaction.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    smbclient.remove(tmp, **self._kw)
                raise

    def set_meta(self, rel: str, mtime_ns: int | None, attrs: int | None, *, is_dir: bool = False) -> None:
        """Set ``rel``'s mtime and DOS attributes (None: leave it) in one compound request, on the path itself
        (FILE_OPEN_REPARSE_POINT: a reparse point is never followed)."""
        self._set_info(rel, Access.FILE_WRITE_ATTRIBUTES, _basic(mtime_ns, attrs, is_dir))

    def remove(self, rel: str) -> None:
        with self._errors(rel):
            smbclient.remove(self._path(rel), **self._kw)

    def rename(self, rel: str, new_name: str) -> None:
        """Rename ``rel`` (file or directory) to ``new_name`` beside it, never replacing anything."""
        parts(new_name)
        self._set_info(rel, Access.DELETE, lambda fd: rename_info(fd, new_name, replace=False))
        with self._guard:
            self._checked = {c for c in self._checked if c != rel and not c.startswith(rel + "/")}

    def _set_info(self, rel: str, access: int, info: Any) -> None:
        """One compound request on ``rel`` itself (FILE_OPEN_REPARSE_POINT: a reparse point is never followed):
        CREATE + SET_INFO(``info``, or ``info(open)``) + CLOSE."""
        with self._errors(rel):
            raw = SMBRawIO(self._path(rel), mode="rb", share_access="rwd",
                           desired_access=access | Access.FILE_READ_ATTRIBUTES,
                           create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, **self._kw)
            transaction = SMBFileTransaction(raw)
            raw.open(transaction=transaction)
            set_info(transaction, info(raw.fd) if callable(info) else info)
            transaction += raw.fd.close(send=False)
            transaction.commit()

    def makedirs(self, rel: str) -> None:
        self._directory(parts(rel), create=True)

    def _directory(self, names: list[str], *, create: bool) -> None:
        """Check (once per tree) that each component of ``names`` is a directory and not a reparse point, creating
        missing ones when ``create``; anything else there is refused."""
        for depth in range(1, len(names) + 1):
            rel = "/".join(names[:depth])
            with self._guard:
                if rel in self._checked:
                    continue
            if create:                                       # one request for a new directory (the plan knows)
                try:
                    smbclient.mkdir(self._path(rel), **self._kw)
                except OSError:
                    pass                                     # there already (or refused): checked below
                else:
                    with self._guard:
                        self._checked.add(rel)
                    continue
            with self._errors(rel):
                try:
                    attrs = smbclient.lstat(self._path(rel), **self._kw).st_file_attributes
                except OSError as exc:
                    if not create or exc.errno != errno.ENOENT:
                        raise
                    try:
                        smbclient.mkdir(self._path(rel), **self._kw)
                    except OSError as race:                  # made meanwhile, or a name the server hides
                        if race.errno not in (errno.EEXIST, errno.ENOENT):
                            raise
                    try:
                        attrs = smbclient.lstat(self._path(rel), **self._kw).st_file_attributes
                    except OSError as hidden:                # Samba answers "not found" for a symlink leading
                        if hidden.errno != errno.ENOENT:     # out of the share, and will not create the name
                            raise
                        raise UnsafeTargetError(f"{self.name}/{shown(rel)[1:-1]} can be neither created nor "
                                                "opened (a link leading outside the share?): refused") from None
            if attrs & REPARSE_POINT or not attrs & DIRECTORY:
                kind = "a reparse point (symlink or junction)" if attrs & REPARSE_POINT else "a file"
                raise UnsafeTargetError(f"{self.name}/{shown(rel)[1:-1]} is {kind}, not a directory: refused (a "
                                        "restore never follows or replaces it)")
            with self._guard:
                self._checked.add(rel)

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        with self._errors(rel):
            smbclient.utime(self._path(rel), ns=(mtime_ns, mtime_ns), follow_symlinks=False, **self._kw)


def _basic(mtime_ns: int | None, attrs: int | None, is_dir: bool) -> FileBasicInformation:
    """FileBasicInformation setting only the last write time and the attributes (0 leaves a field unchanged)."""
    info = FileBasicInformation()
    info["creation_time"] = info["last_access_time"] = info["change_time"] = 0
    info["last_write_time"] = 0 if mtime_ns is None else mtime_ns // 100 + EPOCH
    if attrs is None:
        info["file_attributes"] = 0
    else:
        bits = attrs & ATTRIBUTES
        info["file_attributes"] = bits | DIRECTORY if is_dir else bits or NORMAL
    return info


class _Translating:
    """A file object whose read/write errors are classified like the tree's."""

    def __init__(self, fh: BinaryIO, tree: Any, rel: str) -> None:
        self._fh, self._tree, self._rel = fh, tree, rel

    def read(self, size: int = -1) -> bytes:
        with self._tree._errors(self._rel):
            return self._fh.read(size)

    def readinto(self, buffer) -> int:
        with self._tree._errors(self._rel):
            return self._fh.readinto(memoryview(buffer)[:STREAM_READ])     # type: ignore[attr-defined]

    def write(self, data) -> int:
        with self._tree._errors(self._rel):
            return self._fh.write(data)

    def write_at(self, offset: int, data) -> int:
        with self._tree._errors(self._rel):
            return self._fh.write_at(offset, data)      # type: ignore[attr-defined]
