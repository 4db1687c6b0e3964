r"""An SMB share (``\\server\share[\dir]``) as a :class:`~workers.fileshare.tree.Tree`, through smbprotocol.

Every call passes the port explicitly (``DirEntry.stat()`` would forget it and dial 445) and each tree has
its own connection cache. Two request-saving tricks, since smbprotocol is CPU-bound per process:

* directories are listed with raw QUERY_DIRECTORY requests parsed with ``struct`` (``smbclient.scandir``
  builds an SMBRawIO per entry, which dominates a 10,000-entry walk), as FileIdFullDirectoryInformation: each
  entry carries the server's 64-bit FileId (0 when unknown), which survives a rename (``moves``);
* a small file is read with ONE compound request: CREATE + READ + CLOSE(post-query attributes), so the
  "after" size and mtime come back with the data and a file that changed while read is detected for free.

As a restore target (the methods in ``smbtarget``) it never leaves the share directory and never follows a
reparse point (a symlink or junction): every path is checked (``paths``) before any request; each directory a restore writes into is
checked once (``lstat``: not a reparse point, a directory) and remembered; ``stat`` does not follow reparse
points and reports their attribute, so the restorer refuses one where a file goes; a file is written to a
temporary name opened with FILE_OPEN_REPARSE_POINT and renamed over its path (``smbclient.replace``) only after
the caller verified it.
"""
from __future__ import annotations

import contextlib
import struct
import threading
from typing import Any, BinaryIO, Iterator, NamedTuple

import smbclient
from smbprotocol.exceptions import NoMoreFiles, NoSuchFile
from smbprotocol.file_info import FileInformationClass
from smbprotocol.open import SMB2QueryDirectoryResponse
from smbprotocol.structure import DateTimeField

from workers.fileshare.smbtarget import SmbTarget, _Translating
from workers.fileshare.tree import DIRECTORY, FileProblem, SourceDenied, SourceMisconfigured, \
    SourceUnavailable, Stat, held_mtime
from workers.repository.paths import parts
from workers.runtime.errors import PermanentError
from workers.smb.io import SMBDirectoryIO, SMBFileTransaction, SMBRawIO
from workers.smb.session import Session
from workers.smb.status import Kind, SettingNames, classify, ntstatus
from workers.smb.unc import parse_unc

EPOCH = DateTimeField.EPOCH_FILETIME
_DIR_INFO = struct.Struct("<IIQQQQQQIIIIQ")        # FileIdFullDirectoryInformation up to FileName
FILESHARE_SETTINGS = SettingNames("APPSVC_DR_FILESHARE__SOURCE", "APPSVC_DR_FILESHARE__USERNAME",
                                  "APPSVC_DR_FILESHARE__PASSWORD", "APPSVC_DR_FILESHARE__PORT",
                                  "APPSVC_DR_FILESHARE__ENCRYPT")
_END_OF_FILE = 0xC0000011
_NO_ID = 0xFFFF_FFFF_FFFF_FFFF                     # a FileId the server does not know (MS-FSCC: all ones)
_CLOSE = struct.Struct("<HHIQQQQQQI")              # SMB2 CLOSE response
_QUERY_OUTPUT = 64 * 1024                             # one credit per QUERY_DIRECTORY
CREDITS = 512


def _ns(filetime: int) -> int:
    return held_mtime((filetime - EPOCH) * 100)


class Closed(NamedTuple):
    """What a CLOSE response with post-query attributes says of the file."""
    last_write: int             # FILETIME
    size: int                   # end of file
    attrs: int


def _close_attributes(sent: Any) -> Closed:
    """From a CLOSE response's raw bytes (smbprotocol's parsed datetime drops the last 100 ns digit)."""
    fields = _CLOSE.unpack_from(sent.response["data"].get_value())
    return Closed(last_write=fields[5], size=fields[8], attrs=fields[9])


class SmbTree(SmbTarget):
    keeps_attributes = True                               # DOS attributes are the server's own
    windows_names = True                                  # names must be valid Windows names

    def __init__(self, source: str, *, username: str | None = None, password: Any = None, port: int = 445,
                 encrypt: bool = True, timeout: float = 30.0, create: bool = False) -> None:
        unc = parse_unc(source)
        if unc is None:
            raise SourceMisconfigured(f"invalid SMB path {source!r}")
        self.host, self.share, self.port = unc.host, unc.share, port
        self._root = unc.path
        self.name = unc.url(port)
        self.session = Session(unc, username=username, password=password, port=port, encrypt=encrypt,
                               timeout=timeout)
        self._kw = self.session.kw
        self._source, self._username, self._password, self._encrypt = source, username, self._kw["password"], encrypt
        self._checked: set[str] = set()                  # directories seen to be real directories (restore)
        self._create = create                            # a restore target: create the root folder if missing
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
            self.session.register()
            if self._create:
                self._make_root()
            st = smbclient.stat(self._root, **self._kw)
            fd = SMBRawIO(self._root, mode="r", **self._kw).fd       # ask for credits up front: compound reads
            fd.connection.echo(sid=fd.tree_connect.session.session_id, credit_request=CREDITS)  # need 1 per 64 KiB
        if not st.st_file_attributes & DIRECTORY:
            raise SourceMisconfigured(f"{self.name} is not a directory")

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------------------------------ reading
    def scandir(self, rel: str) -> list[Stat]:
        out: list[Stat] = []
        with self._errors(rel), SMBDirectoryIO(self._path(rel), share_access="rwd", **self._kw) as handle:
            fd, flags = handle.fd, 1                     # SMB2_RESTART_SCANS on the first request
            while True:
                request, _ = fd.query_directory("*", FileInformationClass.FILE_ID_FULL_DIRECTORY_INFORMATION, flags=flags,
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
        return Stat(rel.rpartition("/")[2], is_dir, 0 if is_dir else st.st_size,
                    held_mtime(st.st_mtime_ns), st.st_file_attributes)

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
                if ntstatus(exc) == _END_OF_FILE:   # it shrank to 0 bytes meanwhile
                    raise FileProblem("changed", f"{rel}: changed while it was read") from None
                raise
        data, closed = (transaction.results[1], transaction.results[2]) if listed.size else \
            (b"", transaction.results[1])
        after = Stat(listed.name, False, closed.size, _ns(closed.last_write), closed.attrs)
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
        """The tree's error for ``exc`` (``workers.smb.status`` decides the kind): about the tree itself when
        ``rel`` is the root or the kind concerns the whole share, else a :class:`FileProblem` of one file."""
        failure = classify(exc, f"{self.name}/{rel}" if rel else self.name, host=self.host, share=self.share,
                           port=self.port, settings=FILESHARE_SETTINGS)
        if failure is None:
            return None
        kind, detail = failure.kind, failure.detail
        if kind is Kind.CREDENTIALS:
            return SourceDenied(detail)
        if kind in (Kind.NO_SHARE, Kind.NO_ENCRYPTION):
            return SourceMisconfigured(detail, hint=failure.hint)
        if kind is Kind.FULL:
            return PermanentError(detail, hint=failure.hint)
        if kind is Kind.UNREACHABLE:
            return SourceUnavailable(detail)
        if not rel:
            if kind is Kind.DENIED:
                return SourceDenied(detail, hint="The account may not read the share: grant it read access (the "
                                                 "App Service FileShareOwner has it), or fix "
                                                 "APPSVC_DR_FILESHARE__USERNAME.")
            if kind is not Kind.LOCKED:
                return SourceMisconfigured(detail, hint=r"The directory in APPSVC_DR_FILESHARE__SOURCE does not "
                                                        "exist (or is not a usable directory).")
        if kind is Kind.LOCKED:
            return FileProblem("locked", f"{rel}: in use by another process (sharing violation)")
        if kind is Kind.DENIED:
            return FileProblem("denied", f"{rel}: access denied")
        if kind is Kind.NAME_CONFLICT:
            return FileProblem("denied", f"{rel}: the name exists already or the server refuses it")
        return FileProblem("vanished", f"{rel}: no longer exists")                 # MISSING, WRONG_TYPE


def _parse_directory(buffer: bytes, out: list[Stat]) -> None:
    offset = 0
    while True:
        (next_offset, _index, _created, _accessed, written, _changed, size, _alloc, attrs,
         name_length, _ea, _reserved, file_id) = _DIR_INFO.unpack_from(buffer, offset)
        start = offset + _DIR_INFO.size
        name = buffer[start:start + name_length].decode("utf-16-le")
        if name not in (".", ".."):
            is_dir = bool(attrs & DIRECTORY)
            out.append(Stat(name, is_dir, 0 if is_dir else size, _ns(written), attrs,
                            0 if file_id == _NO_ID else file_id))
        if not next_offset:
            return
        offset += next_offset
