"""A directory on a local (or mounted) file system. Writes go to ``<name>.partial-<uuid>`` in the same
directory, are fsynced and ``os.replace``-d into place; user metadata lives in a JSON sidecar
``<name>.drmeta`` written the same way. Neither kind of file is ever listed.

A ``private`` store (plaintext staging, secrets drop copies) creates its files 0600 and the directories it
creates 0700, explicitly, whatever the process umask."""
from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

from workers.storage._streams import CHUNK, SizedReader
from workers.storage.base import (META_SUFFIX, PARTIAL_MARK, ObjectExists, ObjectInfo, ObjectNotFound,
                                  StorageError, StorageMisconfigured, is_hidden_name, validate_key,
                                  validate_metadata, validate_prefix)
from workers.storage.localfs import (NOT_FOUND, PRIVATE_FILE, SETTING, classify_os_error, fsync_dir,
                                     make_private_dirs, utc)


class LocalStore:
    atomic_rename = True

    def __init__(self, root: Path | str, *, create: bool = True, private: bool = False) -> None:
        self.root = Path(root).absolute()
        self.create, self.private = create, private
        self._file_mode = PRIVATE_FILE if private else 0o666
        self.name = self.root.as_uri()
        self._root_ok = False

    def __repr__(self) -> str:
        return f"LocalStore({self.name})"

    # ------------------------------------------------------------------------------------- interface
    def put(self, key: str, stream: BinaryIO, size: int | None = None,
            metadata: dict[str, str] | None = None, *, sha256: str | None = None) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        self._check_root()
        path = self.root / key
        source = SizedReader(stream, size, key)
        tmp = path.with_name(f"{path.name}{PARTIAL_MARK}{uuid.uuid4().hex}")
        fh = self._create(tmp, key)
        try:
            with fh:
                while data := source.read(CHUNK):          # the caller's stream: its errors pass through
                    with self._errors("write", key):
                        fh.write(data)
                with self._errors("write", key):
                    fh.flush()
                    os.fsync(fh.fileno())
            with self._errors("write", key):
                self._write_metadata(path, meta, key)
                os.replace(tmp, path)
                fsync_dir(path.parent)
                st = os.stat(path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return ObjectInfo(key=key, size=st.st_size, modified=utc(st.st_mtime), metadata=meta)

    def put_new(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Write ``key`` only if it does not exist (``ExclusiveCreate``): the body is written and fsynced under a
        temporary name, then hard-linked into place, which fails atomically if ``key`` is already there."""
        validate_key(key)
        self._check_root()
        path = self.root / key
        tmp = path.with_name(f"{path.name}{PARTIAL_MARK}{uuid.uuid4().hex}")
        try:
            with self._create(tmp, key) as fh, self._errors("write", key):
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ObjectExists(f"{self.name}: {key!r} exists already (created by another writer)") from None
            except OSError as exc:
                raise classify_os_error(exc, where=self.name, what=f"create {key!r}") from exc
            with self._errors("write", key):
                fsync_dir(path.parent)
                st = os.stat(path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return ObjectInfo(key=key, size=st.st_size, modified=utc(st.st_mtime))

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        validate_key(key)
        self._check_root()
        try:
            fh = open(self.root / key, "rb")
        except OSError as exc:
            raise self._not_found_or(exc, "read", key) from exc
        with fh:
            yield fh

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        self._check_root()
        path = self.root / key
        try:
            st = os.stat(path)
        except OSError as exc:
            raise self._not_found_or(exc, "stat", key) from exc
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"{self.name}: no object {key!r} (it is a directory)")
        return ObjectInfo(key=key, size=st.st_size, modified=utc(st.st_mtime),
                          metadata=self._read_metadata(path, key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        self._check_root()
        base = prefix.rpartition("/")[0]
        return self._walk(self.root / base if base else self.root, base, prefix)

    def delete(self, key: str) -> None:
        validate_key(key)
        self._check_root()
        path = self.root / key
        for victim in (path, path.with_name(path.name + META_SUFFIX)):
            try:
                victim.unlink()
            except OSError as exc:
                if exc.errno not in NOT_FOUND:
                    raise classify_os_error(exc, where=self.name, what=f"delete {key!r}") from exc

    def free_space(self) -> tuple[int, int]:
        """(bytes free for this process's user, total bytes) of the volume behind the store (``statvfs``)."""
        self._check_root()
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            raise classify_os_error(exc, where=self.name, what="measure free space") from exc
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def close(self) -> None:
        """Nothing to release (for symmetry with the network backends)."""

    # --------------------------------------------------------------------------------------- helpers
    @contextlib.contextmanager
    def _errors(self, verb: str, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise classify_os_error(exc, where=self.name, what=f"{verb} {key!r}") from exc

    def _not_found_or(self, exc: OSError, verb: str, key: str) -> StorageError:
        if exc.errno in NOT_FOUND:
            return ObjectNotFound(f"{self.name}: no object {key!r}")
        return classify_os_error(exc, where=self.name, what=f"{verb} {key!r}")

    def _check_root(self) -> None:
        if self._root_ok:
            return
        if self.root.exists() and not self.root.is_dir():
            raise StorageMisconfigured(f"{self.name}: the store path exists but is not a directory",
                                       hint=f"Point {SETTING} at a directory.")
        if not self.root.is_dir():
            if not self.create:
                raise StorageMisconfigured(f"{self.name}: the store directory does not exist", hint=(
                    f"Create it (and mount the backup volume there), or fix {SETTING}."))
            try:
                self._mkdirs(self.root)
            except OSError as exc:
                raise classify_os_error(exc, where=self.name, what="create the store directory") from exc
        self._root_ok = True

    def _create(self, tmp: Path, key: str) -> BinaryIO:
        for attempt in (1, 2):
            try:
                return os.fdopen(self._create_file(tmp), "wb")
            except FileNotFoundError:
                if attempt == 2:
                    raise StorageMisconfigured(f"{self.name}: directory for {key!r} vanished while writing")
                self._root_ok = False
                self._check_root()                    # never re-create a vanished root when create=False
                with self._errors("create the directory for", key):
                    self._mkdirs(tmp.parent)
            except OSError as exc:
                raise classify_os_error(exc, where=self.name, what=f"write {key!r}") from exc
        raise AssertionError("unreachable")

    def _create_file(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._file_mode)

    def _mkdirs(self, directory: Path) -> None:
        if self.private:
            make_private_dirs(directory)
        else:
            directory.mkdir(parents=True, exist_ok=True)

    def _write_metadata(self, path: Path, meta: dict[str, str], key: str) -> None:
        sidecar = path.with_name(path.name + META_SUFFIX)
        if not meta:
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
            return
        tmp = sidecar.with_name(f"{sidecar.name}{PARTIAL_MARK}{uuid.uuid4().hex}")
        try:
            with os.fdopen(self._create_file(tmp), "w", encoding="utf-8") as fh:
                json.dump({"metadata": meta}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, sidecar)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _read_metadata(self, path: Path, key: str) -> dict[str, str]:
        try:
            with open(path.with_name(path.name + META_SUFFIX), encoding="utf-8") as fh:
                return dict(json.load(fh)["metadata"])
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise classify_os_error(exc, where=self.name, what=f"read metadata of {key!r}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageMisconfigured(f"{self.name}: the metadata sidecar of {key!r} is corrupt ({exc})",
                                       hint="Something other than appservice-dr wrote it: delete and re-put "
                                            "the object.") from exc

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if not is_hidden_name(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise classify_os_error(exc, where=self.name, what=f"list {rel or '/'!r}") from exc
        items = []
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            order = key + "/" if is_dir else key     # a directory's keys all sort as "<dir>/..."
            if order.startswith(prefix) or (is_dir and prefix.startswith(order)):
                items.append((order, is_dir, entry, key))
        for _, is_dir, entry, key in sorted(items, key=lambda item: item[0]):
            if is_dir:
                yield from self._walk(Path(entry.path), key, prefix)
            elif entry.is_file():
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue                          # deleted while listing
                yield ObjectInfo(key=key, size=st.st_size, modified=utc(st.st_mtime))
