r"""A directory on an SMB share (``\\host\share\dir``) through smbprotocol's ``smbclient``. Same layout as the
local store: ``<name>.partial-<uuid>`` renamed into place (replace-if-exists, atomic on the server) and a
``<name>.drmeta`` JSON sidecar for user metadata. Each store has its own connection cache, and every call
passes the port explicitly (``DirEntry.stat()`` would forget it and dial 445)."""
from __future__ import annotations

import contextlib
import errno
import json
import ntpath
import re
import uuid
from datetime import datetime, timezone
from typing import Any, BinaryIO, Iterator

import smbclient
from smbprotocol.exceptions import SMBAuthenticationError, SMBException, SMBResponseException
from smbprotocol.file_info import FileRenameInformation
from smbprotocol.open import FilePipePrinterAccessMask

from workers.storage._streams import CHUNK, SizedReader, reader
from workers.storage.base import (META_SUFFIX, PARTIAL_MARK, InvalidArgument, ObjectInfo, ObjectNotFound,
                                  StorageError, StorageFull, StorageMisconfigured, StoragePermissionDenied,
                                  StorageUnavailable, is_hidden_name, validate_key, validate_metadata,
                                  validate_prefix)
from workers.storage.smbio import SMBFileTransaction, SMBRawIO, set_info  # smbclient._io, see smbio

_DIRECTORY = 0x10
_CREDENTIALS = {0xC000006D, 0xC000006A, 0xC0000071, 0xC0000072, 0xC000006E, 0xC0000234, 0xC0000193, 0xC0000224}
_DENIED = {0xC0000022, 0xC0000061, 0xC00000A2}
_NO_SHARE = {0xC00000CC, 0xC0000225, 0xC00000BE}        # BAD_NETWORK_NAME, NOT_FOUND, BAD_NETWORK_PATH
_FULL = {0xC000007F, 0xC0000044}                          # DISK_FULL, QUOTA_EXCEEDED
_CONFLICT = {0xC0000035, 0xC00000BA, 0xC0000103, 0xC0000033}  # name collision, is/not a directory, bad name
_MISSING = {0xC0000034, 0xC000003A, 0xC000000F, 0xC0000056}  # name/path not found, no such file, delete pending
_NOT_A_FILE = {0xC00000BA, 0xC0000103}                    # reading "a" when it is a directory, "a/x" when a file


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


class SmbStore:
    atomic_rename = True

    def __init__(self, unc_path: str, username: str | None = None, password: Any = None, port: int = 445,
                 encrypt: bool = True, *, create: bool = True, timeout: float = 30.0) -> None:
        parts = [p for p in re.split(r"[\\/]+", unc_path or "") if p]
        if not unc_path.startswith(("\\\\", "//")) or len(parts) < 2 or any(p in (".", "..") for p in parts):
            raise StorageMisconfigured(f"invalid SMB path {unc_path!r}", hint=(
                r"Set APPSVC_DR_STORE__SMB_PATH to \\host\share or \\host\share\dir (the port goes in "
                "APPSVC_DR_STORE__SMB_PORT)."))
        self.host, self.share, self.port, self.create = parts[0], parts[1], port, create
        self._root = "\\\\" + "\\".join(parts)
        self.name = f"smb://{self.host}{'' if port == 445 else f':{port}'}/{'/'.join(parts[1:])}"
        self._cache: dict[str, Any] = {}
        self._kw: dict[str, Any] = dict(username=username, password=_secret(password), port=port,
                                        encrypt=encrypt, connection_timeout=timeout, connection_cache=self._cache)
        self._ready = False

    def __repr__(self) -> str:
        return f"SmbStore({self.name})"

    # ------------------------------------------------------------------------------------- interface
    def put(self, key: str, stream: BinaryIO, size: int | None = None,
            metadata: dict[str, str] | None = None, *, sha256: str | None = None) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        self._connect()
        path = self._path(key)
        tmp = f"{path}{PARTIAL_MARK}{uuid.uuid4().hex}"
        source = SizedReader(stream, size, key)
        fh = self._create(tmp, key)
        try:
            while data := source.read(4 * CHUNK):            # the caller's stream: its errors pass through
                with self._errors("write", key):
                    fh.write(data)
            with self._errors("write", key):
                fh.close()
                self._write_metadata(path, meta)
                self._replace(tmp, path)
                info = self._stat(path, key)
        except BaseException:
            with contextlib.suppress(Exception):
                fh.close()
            with contextlib.suppress(Exception):
                smbclient.remove(tmp, **self._kw)
            raise
        return ObjectInfo(key=key, size=info.size, modified=info.modified, metadata=meta)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        validate_key(key)
        self._connect()
        with self._errors("read", key, missing_ok=False):
            raw = smbclient.open_file(self._path(key), mode="rb", buffering=0, share_access="rwd", **self._kw)
        stream = reader(raw, lambda exc: self._translate(exc, "read", key))
        try:
            yield stream
        finally:
            stream.close()

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        self._connect()
        path = self._path(key)
        info = self._stat(path, key)
        return ObjectInfo(key=key, size=info.size, modified=info.modified, metadata=self._read_metadata(path, key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._walk(prefix.rpartition("/")[0], prefix)

    def delete(self, key: str) -> None:
        validate_key(key)
        self._connect()
        path = self._path(key)
        for victim in (path, path + META_SUFFIX):
            with self._errors("delete", key, missing_ok=True):
                smbclient.remove(victim, **self._kw)

    def exists(self, key: str) -> bool:
        validate_key(key)
        self._connect()
        try:
            self._stat(self._path(key), key)                  # no sidecar read
        except ObjectNotFound:
            return False
        return True

    def close(self) -> None:
        smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)
        self._ready = False

    # --------------------------------------------------------------------------------------- helpers
    def _path(self, key: str) -> str:
        return self._root + "\\" + key.replace("/", "\\") if key else self._root

    def _connect(self) -> None:
        if self._ready:
            return
        with self._errors("connect to", ""):
            smbclient.register_session(self.host, **self._kw)
            try:
                smbclient.stat(self._root, **self._kw)
            except OSError as exc:
                if getattr(exc, "ntstatus", None) in _NO_SHARE or exc.errno != errno.ENOENT:
                    raise
                if not self.create:
                    raise StorageMisconfigured(f"{self.name}: the directory does not exist on the share", hint=(
                        "Create it, or fix APPSVC_DR_STORE__SMB_PATH.")) from None
                smbclient.makedirs(self._root, exist_ok=True, **self._kw)
        self._ready = True

    def _create(self, tmp: str, key: str) -> BinaryIO:
        with self._errors("write", key):
            try:
                return smbclient.open_file(tmp, mode="xb", **self._kw)
            except OSError as exc:
                if exc.errno != errno.ENOENT or getattr(exc, "ntstatus", None) in _NO_SHARE:
                    raise
            smbclient.makedirs(ntpath.dirname(tmp), exist_ok=True, **self._kw)
            return smbclient.open_file(tmp, mode="xb", **self._kw)

    def _replace(self, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst`` with one SET_INFO. (``smbclient.replace`` first opens ``dst`` for
        FILE_EXECUTE, which Samba refuses for files without the x bit.)"""
        with SMBRawIO(src, mode="r", share_access="rwd", desired_access=FilePipePrinterAccessMask.DELETE,
                      **self._kw) as raw:
            rel = raw.fd.file_name
            tree = raw.fd.tree_connect
            if tree.is_dfs_share and rel.startswith(tree.share_name[2:]):
                rel = rel[len(tree.share_name) - 1:]
            rename = FileRenameInformation()
            rename["replace_if_exists"] = True
            rename["file_name"] = ntpath.join(ntpath.dirname(rel), ntpath.basename(dst))
            with SMBFileTransaction(raw) as transaction:
                set_info(transaction, rename)

    def _stat(self, path: str, key: str) -> ObjectInfo:
        with self._errors("stat", key, missing_ok=False):
            st = smbclient.stat(path, **self._kw)
        if st.st_file_attributes & _DIRECTORY:
            raise ObjectNotFound(f"{self.name}: no object {key!r} (it is a directory)")
        return ObjectInfo(key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def _write_metadata(self, path: str, meta: dict[str, str]) -> None:
        sidecar = path + META_SUFFIX
        if not meta:
            try:
                smbclient.remove(sidecar, **self._kw)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            return
        tmp = f"{sidecar}{PARTIAL_MARK}{uuid.uuid4().hex}"
        try:
            with smbclient.open_file(tmp, mode="xb", **self._kw) as fh:
                fh.write(json.dumps({"metadata": meta}).encode("utf-8"))
            self._replace(tmp, sidecar)
        except BaseException:
            with contextlib.suppress(Exception):
                smbclient.remove(tmp, **self._kw)
            raise

    def _read_metadata(self, path: str, key: str) -> dict[str, str]:
        try:
            with self._errors("read metadata of", key, missing_ok=False):
                with smbclient.open_file(path + META_SUFFIX, mode="rb", share_access="rwd", **self._kw) as fh:
                    raw = fh.read()
        except ObjectNotFound:
            return {}
        try:
            return dict(json.loads(raw)["metadata"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageMisconfigured(f"{self.name}: the metadata sidecar of {key!r} is corrupt ({exc})",
                                       hint="Something other than appservice-dr wrote it: delete and re-put "
                                            "the object.") from exc

    def _walk(self, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        self._connect()
        try:
            with self._errors("list", rel or "/", missing_ok=False):
                with smbclient.scandir(self._path(rel), **self._kw) as entries:
                    found = [(e.name, e.smb_info) for e in entries if not is_hidden_name(e.name)]
        except ObjectNotFound:
            return
        items = []
        for name, info in found:
            key = f"{rel}/{name}" if rel else name
            is_dir = bool(info.file_attributes & _DIRECTORY)
            order = key + "/" if is_dir else key           # a directory's keys all sort as "<dir>/..."
            if order.startswith(prefix) or (is_dir and prefix.startswith(order)):
                items.append((order, is_dir, key, info))
        for _, is_dir, key, info in sorted(items, key=lambda item: item[0]):
            if is_dir:
                yield from self._walk(key, prefix)
            else:
                yield ObjectInfo(key=key, size=info.end_of_file, modified=info.last_write_time.astimezone(timezone.utc))

    @contextlib.contextmanager
    def _errors(self, verb: str, key: str, *, missing_ok: bool | None = None) -> Iterator[None]:
        """Classify smbprotocol errors. ``missing_ok``: True = ignore not-found, False = ObjectNotFound,
        None = a not-found is a real error (e.g. the directory vanished)."""
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            status = getattr(exc, "ntstatus", None) or getattr(exc, "status", None) \
                if isinstance(exc, (OSError, SMBResponseException)) else None
            missing = status in _MISSING or status in _NOT_A_FILE or (
                status is None and isinstance(exc, FileNotFoundError))
            if missing and missing_ok:
                return
            if missing and missing_ok is False:
                raise ObjectNotFound(f"{self.name}: no object {key!r}") from exc
            mapped = self._translate(exc, verb, key)
            if mapped is None:
                raise
            raise mapped from exc

    def _translate(self, exc: BaseException, verb: str, key: str) -> StorageError | None:
        where = f"{self.name}: cannot {verb}{f' {key!r}' if key else ''}"
        status = getattr(exc, "ntstatus", None) or (exc.status if isinstance(exc, SMBResponseException) else None)
        detail = f"{where}: {type(exc).__name__}" + (f" (NTSTATUS 0x{status:08x})" if status else f": {exc}")
        if isinstance(exc, SMBAuthenticationError) or status in _CREDENTIALS:
            return StoragePermissionDenied(detail, hint=(
                f"The server rejected the login: check APPSVC_DR_STORE__SMB_USERNAME and "
                f"APPSVC_DR_STORE__SMB_PASSWORD for {self.host} (user name as DOMAIN\\user or user@domain)."))
        if status in _DENIED:
            return StoragePermissionDenied(detail, hint=(
                f"The user in APPSVC_DR_STORE__SMB_USERNAME may not write here: grant it change/modify rights on "
                f"share {self.share!r} and the folder in APPSVC_DR_STORE__SMB_PATH."))
        if status in _NO_SHARE:
            return StorageMisconfigured(detail, hint=(
                f"Share {self.share!r} does not exist on {self.host}: fix APPSVC_DR_STORE__SMB_PATH."))
        if status in _FULL:
            return StorageFull(detail, hint=(
                f"Share {self.share!r} is full or over quota: free space or grow it, then "
                "`appsvc-dr dlq replay <worker>`."))
        if status in _CONFLICT or status in _MISSING:
            return InvalidArgument(detail + " (the key collides with an existing object or directory)")
        if isinstance(exc, SMBException) and "encryption is required" in str(exc):
            return StorageMisconfigured(detail, hint=(
                "The server cannot encrypt SMB traffic (SMB 3 needed): upgrade/enable it, or set "
                "APPSVC_DR_STORE__SMB_ENCRYPT=false on a trusted network."))
        if isinstance(exc, (SMBException, OSError, EOFError)) or (
                isinstance(exc, ValueError) and "Failed to connect" in str(exc)):
            return StorageUnavailable(detail, hint=(
                f"Check that {self.host}:{self.port} (APPSVC_DR_STORE__SMB_PATH, APPSVC_DR_STORE__SMB_PORT) "
                "is up and reachable; the job is retried with backoff."))
        return None
