r"""An SMB share (``\\server\share[\dir]``) as a :class:`~workers.fileshare.tree.Tree`, through smbprotocol.

Every call passes the port explicitly (``DirEntry.stat()`` would forget it and dial 445) and each tree has
its own connection cache. Two request-saving tricks, since smbprotocol is CPU-bound per process:

* directories are listed with raw QUERY_DIRECTORY requests parsed with ``struct`` (``smbclient.scandir``
  builds an SMBRawIO per entry, which dominates a 10,000-entry walk);
* a small file is read with ONE compound request: CREATE + READ + CLOSE(post-query attributes), so the
  "after" size and mtime come back with the data and a file that changed while read is detected for free.

As a restore target it never leaves the share directory and never follows a reparse point (a symlink or
junction): every path is checked (``paths``) before any request; each directory a restore writes into is
checked once (``lstat``: not a reparse point, a directory) and remembered; ``stat`` does not follow reparse
points and reports their attribute, so the restorer refuses one where a file goes; a file is written to a
temporary name opened with FILE_OPEN_REPARSE_POINT and renamed over its path (``smbclient.replace``) only after
the caller verified it.
"""
from __future__ import annotations

import contextlib
import errno
import ntpath
import struct
import threading
from typing import Any, BinaryIO, Iterator

import smbclient
from smbclient._io import SMBDirectoryIO, SMBFileTransaction, SMBRawIO
from smbprotocol.exceptions import NoMoreFiles, NoSuchFile, SMBAuthenticationError, SMBException, \
    SMBResponseException
from smbprotocol.file_info import FileInformationClass, FileRenameInformation
from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask as Access, SMB2QueryDirectoryResponse, \
    SMB2SetInfoRequest
from smbprotocol.structure import DateTimeField

from workers.fileshare.paths import REPARSE_POINT, UnsafeTargetError, parts, partial_name, shown
from workers.fileshare.tree import DIRECTORY, FileProblem, SourceDenied, SourceMisconfigured, \
    SourceUnavailable, Stat, split_unc

EPOCH = DateTimeField.EPOCH_FILETIME
_DIR_INFO = struct.Struct("<IIQQQQQQII")           # FileDirectoryInformation up to FileNameLength
_CREDENTIALS = {0xC000006D, 0xC000006A, 0xC0000071, 0xC0000072, 0xC000006E, 0xC0000234, 0xC0000193, 0xC0000224}
_LOCKED = {0xC0000043, 0xC0000054, 0xC0000055}      # SHARING_VIOLATION, FILE_LOCK_CONFLICT, LOCK_NOT_GRANTED
_DENIED = {0xC0000022, 0xC00000A2}                  # ACCESS_DENIED, MEDIA_WRITE_PROTECTED
_MISSING = {0xC0000034, 0xC000003A, 0xC000000F, 0xC0000056, 0xC00000BA, 0xC0000103}
_NO_SHARE = {0xC00000CC, 0xC0000225, 0xC00000BE}
_END_OF_FILE = 0xC0000011
_CLOSE = struct.Struct("<HHIQQQQQQI")              # SMB2 CLOSE response
_QUERY_OUTPUT = 64 * 1024                             # one credit per QUERY_DIRECTORY
# Streamed reads ask for at most this much per READ (64 credits): larger READs save per-request work (-8% CPU
# of 1 MiB ones, measured).
STREAM_READ = 4 << 20
CREDITS = 512
_WRITE_RENAME = Access.FILE_WRITE_DATA | Access.FILE_WRITE_ATTRIBUTES | Access.FILE_WRITE_EA | \
    Access.FILE_READ_ATTRIBUTES | Access.DELETE                # a restored file: written, then renamed into place


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _ns(filetime: int) -> int:
    return (filetime - EPOCH) * 100


def _close_attributes(sent: Any) -> tuple[int, int, int]:
    """(last write FILETIME, end of file, attributes) from a CLOSE response's raw bytes (smbprotocol's
    parsed datetime drops the last 100 ns digit)."""
    fields = _CLOSE.unpack_from(sent.response["data"].get_value())
    return fields[5], fields[8], fields[9]


class SmbTree:
    def __init__(self, source: str, *, username: str | None = None, password: Any = None, port: int = 445,
                 encrypt: bool = True, timeout: float = 30.0) -> None:
        parts = split_unc(source)
        if not parts or len(parts) < 2 or any(p in (".", "..") for p in parts):
            raise SourceMisconfigured(f"invalid SMB path {source!r}")
        self.host, self.share, self.port = parts[0], parts[1], port
        self._root = "\\\\" + "\\".join(parts)
        self.name = f"smb://{self.host}{'' if port == 445 else f':{port}'}/{'/'.join(parts[1:])}"
        self._source, self._username, self._password, self._encrypt = source, username, _secret(password), encrypt
        self._kw: dict[str, Any] = dict(username=username, password=self._password, port=port, encrypt=encrypt,
                                        connection_timeout=timeout, connection_cache={})
        self._checked: set[str] = set()                  # directories seen to be real directories (restore)
        self._guard = threading.Lock()

    def spec(self) -> dict:
        """How to open this tree again in another process (holds the password: never log it)."""
        return {"kind": "smb", "source": self._source, "username": self._username, "password": self._password,
                "port": self.port, "encrypt": self._encrypt}

    def __repr__(self) -> str:
        return f"SmbTree({self.name})"

    def _path(self, rel: str) -> str:
        """The UNC path of ``rel``, refused (UnsafeEntryError) before any request unless it stays inside the tree."""
        return "\\".join([self._root, *parts(rel)])

    # ------------------------------------------------------------------------------------------ session
    def connect(self) -> None:
        with self._errors(""):
            smbclient.register_session(self.host, **self._kw)
            st = smbclient.stat(self._root, **self._kw)
            fd = SMBRawIO(self._root, mode="r", **self._kw).fd       # ask for credits up front: compound reads
            fd.connection.echo(sid=fd.tree_connect.session.session_id, credit_request=CREDITS)  # need 1 per 64 KiB
        if not st.st_file_attributes & DIRECTORY:
            raise SourceMisconfigured(f"{self.name} is not a directory")

    def close(self) -> None:
        smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._kw["connection_cache"])

    # ------------------------------------------------------------------------------------------ reading
    def scandir(self, rel: str) -> list[Stat]:
        out: list[Stat] = []
        with self._errors(rel), SMBDirectoryIO(self._path(rel), share_access="rwd", **self._kw) as handle:
            fd, flags = handle.fd, 1                     # SMB2_RESTART_SCANS on the first request
            while True:
                request, _ = fd.query_directory("*", FileInformationClass.FILE_DIRECTORY_INFORMATION, flags=flags,
                                                max_output=_QUERY_OUTPUT, send=False)
                sent = fd.connection.send(request, fd.tree_connect.session.session_id,
                                          fd.tree_connect.tree_connect_id)
                try:
                    response = fd.connection.receive(sent)
                except (NoMoreFiles, NoSuchFile):
                    break
                reply = SMB2QueryDirectoryResponse()
                reply.unpack(response["data"].get_value())
                _parse_directory(reply["buffer"].get_value(), out)
                flags = 0
        return out

    def stat(self, rel: str) -> Stat:
        """Like ``lstat``: a reparse point is not followed, and its attributes say so (REPARSE_POINT)."""
        with self._errors(rel):
            st = smbclient.lstat(self._path(rel), **self._kw)
        is_dir = bool(st.st_file_attributes & DIRECTORY)
        return Stat(rel.rpartition("/")[2], is_dir, 0 if is_dir else st.st_size, st.st_mtime_ns,
                    st.st_file_attributes)

    def read(self, rel: str, listed: Stat, limit: int) -> tuple[bytes, Stat] | None:
        """The whole file in one compound request, if it (still) fits in ``limit``; None if it does not."""
        if listed.size > limit:
            return None
        with self._errors(rel):
            raw = SMBRawIO(self._path(rel), mode="r", share_access="rwd", **self._kw)
            window = raw.fd.connection.sequence_window
            if listed.size >= raw.fd.connection.max_read_size or \
                    window["high"] - window["low"] < listed.size // 65536 + 4:
                return None                                          # the streaming path gets its own credits
            transaction = SMBFileTransaction(raw)
            raw.open(transaction=transaction)
            if listed.size:
                transaction += raw.fd.read(0, listed.size + 1 if listed.size < limit else listed.size, send=False)
            close_request, close_receive = raw.fd.close(get_attributes=True, send=False)
            transaction += (close_request, lambda sent: (close_receive(sent), _close_attributes(sent))[1])
            try:
                transaction.commit()
            except OSError as exc:
                if getattr(exc, "ntstatus", None) == _END_OF_FILE:   # it shrank to 0 bytes meanwhile
                    raise FileProblem("changed", f"{rel}: changed while it was read") from None
                raise
        data, closed = (transaction.results[1], transaction.results[2]) if listed.size else \
            (b"", transaction.results[1])
        after = Stat(listed.name, False, closed[1], _ns(closed[0]), closed[2])
        return (data, after) if after.size <= limit else None

    @contextlib.contextmanager
    def open_read(self, rel: str) -> Iterator[BinaryIO]:
        with self._errors(rel):
            fh = smbclient.open_file(self._path(rel), mode="rb", buffering=0, share_access="rwd", **self._kw)
        try:
            yield _Translating(fh, self, rel)           # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                fh.close()

    # ------------------------------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """Write ``rel`` through a temporary file beside it, renamed over ``rel`` (on the same handle) only if the
        block ends without an error; on an error it is removed and an existing ``rel`` is left as it was."""
        names = parts(rel)
        self._directory(names[:-1], create=False)
        tmp = self._path("/".join([*names[:-1], partial_name(names[-1])]))
        with self._errors(rel):
            fh = smbclient.open_file(tmp, mode="wb", share_access="r", desired_access=_WRITE_RENAME,
                                     create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, **self._kw)
        try:
            try:
                yield _Translating(fh, self, rel)       # type: ignore[misc]
                with self._errors(rel):
                    fh.flush()
                    _rename(fh.raw.fd, names[-1])
            finally:
                with self._errors(rel):
                    fh.close()
        except BaseException:
            with contextlib.suppress(Exception):
                smbclient.remove(tmp, **self._kw)
            raise

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

    # ------------------------------------------------------------------------------------------- errors
    @contextlib.contextmanager
    def _errors(self, rel: str) -> Iterator[None]:
        try:
            yield
        except (FileProblem, SourceDenied, SourceMisconfigured, SourceUnavailable):
            raise
        except Exception as exc:
            mapped = self.classify(exc, rel)
            if mapped is None:
                raise
            raise mapped from exc

    def classify(self, exc: BaseException, rel: str) -> Exception | None:
        status = getattr(exc, "ntstatus", None) or (exc.status if isinstance(exc, SMBResponseException) else None)
        where = f"{self.name}/{rel}" if rel else self.name
        detail = f"{where}: {type(exc).__name__}" + (f" (NTSTATUS 0x{status:08x})" if status else f": {exc}")
        if isinstance(exc, SMBAuthenticationError) or status in _CREDENTIALS:
            return SourceDenied(detail)
        if status in _NO_SHARE:
            return SourceMisconfigured(detail, hint=f"Share {self.share!r} does not exist on {self.host}: fix "
                                                    "APPSVC_DR_FILESHARE__SOURCE.")
        if status in _DENIED and not rel:
            return SourceDenied(detail, hint="The account may not read the share: grant it read access (the App "
                                             "Service FileShareOwner has it), or fix APPSVC_DR_FILESHARE__USERNAME.")
        if status in _LOCKED:
            return FileProblem("locked", f"{rel}: in use by another process (sharing violation)")
        if status in _DENIED:
            return FileProblem("denied", f"{rel}: access denied")
        if status in _MISSING:
            return FileProblem("vanished", f"{rel}: no longer exists") if rel else \
                SourceMisconfigured(detail, hint=r"The directory in APPSVC_DR_FILESHARE__SOURCE does not exist.")
        if isinstance(exc, SMBException) and "encryption is required" in str(exc):
            return SourceMisconfigured(detail, hint="The file server cannot encrypt SMB traffic: enable SMB 3, "
                                                    "or set APPSVC_DR_FILESHARE__ENCRYPT=false on a trusted network.")
        if isinstance(exc, (SMBException, OSError, EOFError)) or (
                isinstance(exc, ValueError) and "Failed to connect" in str(exc)):
            return SourceUnavailable(detail)
        return None


def _rename(fd: Any, name: str) -> None:
    """Rename an open file to ``name`` in its directory, replacing a file there (not following a reparse point):
    SET_INFO FileRenameInformation on the handle. ``smbclient.replace`` would first open the destination for
    FILE_EXECUTE, which Samba refuses on a file without the x bit."""
    info = FileRenameInformation()
    info["replace_if_exists"] = True
    info["file_name"] = ntpath.join(ntpath.dirname(fd.file_name), name)
    request = SMB2SetInfoRequest()
    request["info_type"], request["file_info_class"] = info.INFO_TYPE, info.INFO_CLASS
    request["file_id"], request["buffer"] = fd.file_id, info
    fd.connection.receive(fd.connection.send(request, fd.tree_connect.session.session_id,
                                             fd.tree_connect.tree_connect_id))


def _parse_directory(buffer: bytes, out: list[Stat]) -> None:
    offset = 0
    while True:
        (next_offset, _index, _created, _accessed, written, _changed, size, _alloc, attrs,
         name_length) = _DIR_INFO.unpack_from(buffer, offset)
        start = offset + _DIR_INFO.size
        name = buffer[start:start + name_length].decode("utf-16-le")
        if name not in (".", ".."):
            is_dir = bool(attrs & DIRECTORY)
            out.append(Stat(name, is_dir, 0 if is_dir else size, _ns(written), attrs))
        if not next_offset:
            return
        offset += next_offset


class _Translating:
    """A file object whose read/write errors are classified like the tree's."""

    def __init__(self, fh: BinaryIO, tree: SmbTree, rel: str) -> None:
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
