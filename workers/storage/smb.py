r"""A directory on an SMB share (``\\host\share\dir``) through smbprotocol's ``smbclient``. Same layout as the
local store: ``<name>.partial-<uuid>`` renamed into place (replace-if-exists, atomic on the server) and a
``<name>.drmeta`` JSON sidecar for user metadata. Each store has its own session (``workers.smb.session``: its
own connection cache, the port passed on every call), closed by :meth:`SmbStore.close`; failures are classified
by ``workers.smb.status``."""
from __future__ import annotations

import contextlib
import errno
import json
import ntpath
import uuid
from datetime import datetime, timezone
from typing import Any, BinaryIO, Iterator

import smbclient
from smbprotocol.open import FilePipePrinterAccessMask

from workers.storage._streams import CHUNK, SizedReader, reader
from workers.storage.base import (META_SUFFIX, PARTIAL_MARK, InvalidArgument, ObjectExists, ObjectInfo,
                                  ObjectNotFound, StorageError, StorageFull, StorageMisconfigured,
                                  StoragePermissionDenied, StorageUnavailable, is_hidden_name, validate_key,
                                  validate_metadata, validate_prefix)
from workers.smb.io import SMBRawIO  # smbclient._io, see smb.io
from workers.smb.rename import rename
from workers.smb.session import Session
from workers.smb.status import Kind, SettingNames, classify, kind_of, ntstatus
from workers.smb.unc import parse_unc

_DIRECTORY = 0x10
_NAME_COLLISION = 0xC0000035     # STATUS_OBJECT_NAME_COLLISION: a rename without replace found the name taken
STORE_SETTINGS = SettingNames("APPSVC_DR_STORE__SMB_PATH", "APPSVC_DR_STORE__SMB_USERNAME",
                              "APPSVC_DR_STORE__SMB_PASSWORD", "APPSVC_DR_STORE__SMB_PORT",
                              "APPSVC_DR_STORE__SMB_ENCRYPT")
_ERRORS: dict[Kind, type[StorageError]] = {
    Kind.CREDENTIALS: StoragePermissionDenied, Kind.DENIED: StoragePermissionDenied,
    Kind.NO_SHARE: StorageMisconfigured, Kind.FULL: StorageFull, Kind.NO_ENCRYPTION: StorageMisconfigured,
    Kind.LOCKED: StorageUnavailable, Kind.UNREACHABLE: StorageUnavailable,
}


class SmbStore:
    atomic_rename = True

    def __init__(self, unc_path: str, username: str | None = None, password: Any = None, port: int = 445,
                 encrypt: bool = True, *, create: bool = True, timeout: float = 30.0,
                 settings: SettingNames = STORE_SETTINGS) -> None:
        unc = parse_unc(unc_path)
        if unc is None:
            raise StorageMisconfigured(f"invalid SMB path {unc_path!r}", hint=(
                rf"Set {settings.path} to \\host\share or \\host\share\dir (the port goes in {settings.port})."))
        self.host, self.share, self.port, self.create, self.settings = unc.host, unc.share, port, create, settings
        self._root = unc.path
        self.name = unc.url(port)
        self.session = Session(unc, username=username, password=password, port=port, encrypt=encrypt,
                               timeout=timeout)
        self._kw = self.session.kw
        self._ready = False

    def __repr__(self) -> str:
        return f"SmbStore({self.name})"

    # ------------------------------------------------------------------------------------- interface
    def put(self, key: str, stream: BinaryIO, size: int | None = None,
            metadata: dict[str, str] | None = None, *, sha256: str | None = None) -> ObjectInfo:
        meta = validate_metadata(metadata)
        source = SizedReader(stream, size, key)
        with self._temporary(key) as (path, tmp, fh):
            while data := source.read(4 * CHUNK):            # the caller's stream: its errors pass through
                with self._errors("write", key):
                    fh.write(data)
            with self._errors("write", key):
                fh.close()
                self._write_metadata(path, meta)
                self._replace(tmp, path)
                info = self._stat(path, key)
        return ObjectInfo(key=key, size=info.size, modified=info.modified, metadata=meta)

    def put_new(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Write ``key`` only if it does not exist (``ExclusiveCreate``): written under a temporary name, then
        renamed on its handle without replacing, which the server refuses atomically when ``key`` exists."""
        with self._temporary(key) as (path, tmp, fh), self._errors("write", key):
            fh.write(body)
            fh.close()
            try:
                self._replace(tmp, path, replace=False)
            except Exception as exc:
                if ntstatus(exc) == _NAME_COLLISION:
                    raise ObjectExists(f"{self.name}: {key!r} exists already (created by another writer)") from None
                raise
        return self._stat(path, key)

    @contextlib.contextmanager
    def _temporary(self, key: str) -> Iterator[tuple[str, str, BinaryIO]]:
        """``(path, temporary path, its open file)`` for writing ``key``; on failure the temporary is removed."""
        validate_key(key)
        self._connect()
        path = self._path(key)
        tmp = f"{path}{PARTIAL_MARK}{uuid.uuid4().hex}"
        fh = self._create(tmp, key)
        try:
            yield path, tmp, fh
        except BaseException:
            with contextlib.suppress(Exception):
                fh.close()
            with contextlib.suppress(Exception):
                smbclient.remove(tmp, **self._kw)
            raise

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

    def free_space(self) -> tuple[int, int]:
        """(bytes free for this login, total bytes) of the share's volume (``FileFsFullSizeInformation``; a quota
        or Samba's ``max disk size`` shows here)."""
        self._connect()
        with self._errors("measure free space of", ""):
            volume = smbclient.stat_volume(self._root, **self._kw)
        return volume.caller_available_size, volume.total_size

    def close(self) -> None:
        """Log off and close this store's connection (it reconnects if used again)."""
        self.session.close()
        self._ready = False

    # --------------------------------------------------------------------------------------- helpers
    def _path(self, key: str) -> str:
        return self._root + "\\" + key.replace("/", "\\") if key else self._root

    def _connect(self) -> None:
        if self._ready:
            return
        with self._errors("connect to", ""):
            self.session.register()
            try:
                smbclient.stat(self._root, **self._kw)
            except OSError as exc:
                if kind_of(exc) is Kind.NO_SHARE or exc.errno != errno.ENOENT:
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
                if exc.errno != errno.ENOENT or kind_of(exc) is Kind.NO_SHARE:
                    raise
            smbclient.makedirs(ntpath.dirname(tmp), exist_ok=True, **self._kw)
            return smbclient.open_file(tmp, mode="xb", **self._kw)

    def _replace(self, src: str, dst: str, *, replace: bool = True) -> None:
        """Rename ``src`` over ``dst`` (or, without ``replace``, only if ``dst`` does not exist) with one SET_INFO
        on ``src``'s handle (``workers.smb.rename``)."""
        with SMBRawIO(src, mode="r", share_access="rwd", desired_access=FilePipePrinterAccessMask.DELETE,
                      **self._kw) as raw:
            rename(raw.fd, ntpath.basename(dst), replace=replace)

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
            kind = kind_of(exc)
            missing = kind in (Kind.MISSING, Kind.WRONG_TYPE) or (
                ntstatus(exc) is None and isinstance(exc, FileNotFoundError))
            if missing and missing_ok:
                return
            if missing and missing_ok is False:
                raise ObjectNotFound(f"{self.name}: no object {key!r}") from exc
            mapped = self._translate(exc, verb, key)
            if mapped is None:
                raise
            raise mapped from exc

    def _translate(self, exc: BaseException, verb: str, key: str) -> StorageError | None:
        failure = classify(exc, f"{self.name}: cannot {verb}{f' {key!r}' if key else ''}", host=self.host,
                           share=self.share, port=self.port, settings=self.settings)
        if failure is None:
            return None
        if failure.kind in (Kind.NAME_CONFLICT, Kind.WRONG_TYPE, Kind.MISSING):
            return InvalidArgument(failure.detail + " (the key collides with an existing object or directory)")
        return _ERRORS[failure.kind](failure.detail, hint=failure.hint)
