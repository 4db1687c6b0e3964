"""Restore a snapshot into a tree (a local directory or an SMB share), like ``robocopy /E``: every directory
(empty ones too), every file byte for byte with its mtime, each file's SHA-256 verified as it is written.

Resumable: a file already at the target with the same size, mtime and SHA-256 is left alone. A file is written
to a temporary name beside it and renamed over it only once its size and hashes are verified, so a failed or
interrupted restore never damages a file already there, and a half-written file never looks done.

Safe against a forged snapshot: the selected entries are checked before anything is written (``paths``: no
entry can leave the target), the target walks every path without following symlinks / reparse points, and a
reparse point where a file goes is refused (:class:`~workers.fileshare.paths.UnsafeTargetError`). Packs are decoded once
each into a temporary directory and deleted as soon as no file still needs them.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workers.artifacts.catalog import artifact_key
from workers.artifacts.service import sha256_of
from workers.fileshare.manifest import Entry, Manifest, check_entries
from workers.fileshare.paths import REPARSE_POINT, UnsafeTargetError, shown
from workers.fileshare.repo import Repository
from workers.fileshare.tree import FileProblem, Tree
from workers.runtime.errors import PermanentError
from workers.storage.artifact import KeyRing
from workers.storage.base import ObjectNotFound
from workers.storage.crypto import IntegrityError

REACL = ("On the file server, in an elevated command prompt, run ReACL.cmd from the BCDR folder of the App "
         "Service installation files, so the restored content gets the ACLs App Service expects; then go on with "
         "the controller steps (Restore-AppServiceStamp, Restore-AppServiceRoles, Sync-AppServiceObject).")


def snapshot_of_set(repo: Repository, set_id: str) -> str:
    prefix = artifact_key(repo.stamp, set_id, "fileshare", "")
    names = sorted(i.key[len(prefix):] for i in repo.data.backend.list(prefix)
                   if i.key.endswith(".json") and not i.key.endswith(".record.json"))
    if not names:
        raise PermanentError(f"backup set {set_id} of {repo.stamp} has no file-share snapshot",
                             hint="List sets with `appsvc-dr artifacts list` and snapshots with "
                                  "`appsvc-dr snapshots list`.")
    out = io.BytesIO()
    repo.meta.get(prefix + ("snapshot.json" if "snapshot.json" in names else names[0]), out)
    return json.loads(out.getvalue())["snapshot_id"]


def load_manifest(repo: Repository, snapshot: str, keys) -> Manifest:
    """A snapshot's manifest read from the store (never the cache): decrypted and verified."""
    try:
        return repo.manifest(snapshot, keys, cached=False)
    except ObjectNotFound:
        raise PermanentError(f"no snapshot {snapshot} for stamp {repo.stamp}",
                             hint="See `appsvc-dr snapshots list --stamp STAMP`.") from None


@dataclass
class RestoreReport:
    dirs: int = 0
    files_restored: int = 0
    files_identical: int = 0
    bytes_written: int = 0
    failed: list[str] = field(default_factory=list)


def select(manifest: Manifest, path: str | None) -> list[Entry]:
    if not path:
        return list(manifest.entries)
    path = path.strip("/")
    return [e for e in manifest.entries if e.path == path or e.path.startswith(path + "/")]


class PackCache:
    """Decoded packs on local disk; each is fetched once and removed when its last blob was read."""

    def __init__(self, repo: Repository, keys: KeyRing | None, refs: Counter) -> None:
        self.repo, self.keys, self.refs = repo, keys, refs
        self.dir = Path(tempfile.mkdtemp(prefix="appsvc-dr-restore-"))
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def blob(self, blob: str) -> bytes:
        pack, offset, length = self.repo.index.blobs[blob]
        with self._guard:
            lock = self._locks.setdefault(pack, threading.Lock())
        with lock:
            path = self.dir / pack
            if not path.exists():
                tmp = path.with_suffix(".partial")
                with open(tmp, "wb") as out:
                    self.repo.read_pack(pack, out, self.keys)
                tmp.rename(path)
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(length)
            self.refs[pack] -= 1
            if self.refs[pack] <= 0:
                path.unlink(missing_ok=True)
        if hashlib.sha256(data).hexdigest() != blob:
            raise IntegrityError(f"blob {blob[:12]} in pack {pack[:12]} does not match its id")
        return data

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Restorer:
    def __init__(self, repo: Repository, target: Tree, *, keys: KeyRing | None = None, transfers: int = 8,
                 progress: Callable[[int], None] = lambda nbytes: None) -> None:
        self.repo, self.target, self.keys, self.transfers, self.progress = repo, target, keys, transfers, progress

    def run(self, manifest: Manifest, path: str | None = None) -> RestoreReport:
        entries = select(manifest, path)
        if path and not entries:
            raise PermanentError(f"{path!r} is not in snapshot {manifest.snapshot_id}",
                                 hint="List the snapshot's paths with `appsvc-dr snapshots diff` or drop --path.")
        check_entries(entries, where=f"snapshot {shown(manifest.snapshot_id, 80)}: ")   # before any byte is written
        try:
            return self._write(manifest, entries)
        except FileProblem as exc:                      # the target refused one path (denied, locked, vanished)
            raise PermanentError(f"restore into {self.target.name} stopped: {exc.message} ({exc.kind})",
                                 hint="Fix access to that path in the target (permissions, a process holding it), "
                                      "then run the same restore again: files already restored are skipped.") \
                from exc

    def _write(self, manifest: Manifest, entries: list[Entry]) -> RestoreReport:
        self.target.connect()
        self.repo.load_index()
        files = [e for e in entries if not e.is_dir]
        missing = {b for e in files for b in e.blobs if b not in self.repo.index}
        if missing:
            raise PermanentError(f"snapshot {manifest.snapshot_id} needs {len(missing)} blob(s) that no index "
                                 "lists", hint="The repository is damaged (packs or index objects deleted): "
                                               "restore another snapshot.")
        report = RestoreReport()
        dirs = sorted((e for e in entries if e.is_dir), key=lambda e: e.path)
        for entry in dirs:
            self.target.makedirs(entry.path)
        report.dirs = len(dirs)
        for parent in sorted({e.path.rpartition("/")[0] for e in files} - {""} - {d.path for d in dirs}):
            self.target.makedirs(parent)
        with ThreadPoolExecutor(self.transfers) as pool:
            identical = list(pool.map(self._identical, files))
        todo = [e for e, same in zip(files, identical, strict=True) if not same]
        report.files_identical = len(files) - len(todo)
        refs = Counter(self.repo.index.blobs[b][0] for e in todo for b in e.blobs)
        order = {p: i for i, p in enumerate(sorted(refs))}
        todo.sort(key=lambda e: min((order[self.repo.index.blobs[b][0]] for b in e.blobs), default=-1))
        cache = PackCache(self.repo, self.keys, refs)
        try:
            with ThreadPoolExecutor(self.transfers) as pool:
                for written in pool.map(lambda e: self._restore(e, cache), todo):
                    report.bytes_written += written
        finally:
            cache.close()
        report.files_restored = len(todo)
        for entry in sorted(dirs, key=lambda e: e.path.count("/"), reverse=True):
            self.target.set_mtime(entry.path, entry.mtime_ns)
        return report

    def _identical(self, entry: Entry) -> bool:
        try:
            st = self.target.stat(entry.path)
        except FileProblem:
            return False
        if st.attrs & REPARSE_POINT:
            raise UnsafeTargetError(f"{self.target.name}/{shown(entry.path)[1:-1]} is a symbolic link or reparse "
                                    "point: refused (a restore never follows or replaces it)")
        if st.is_dir or st.size != entry.size or st.mtime_ns // 100 != entry.mtime_ns // 100:
            return False
        with self.target.open_read(entry.path) as fh:
            same = _same_file(fh, entry, lambda blob: self.repo.index.blobs[blob][2])
        if same:
            self.progress(entry.size)
        return same

    def _restore(self, entry: Entry, cache: PackCache) -> int:
        digest, size = hashlib.sha256() if entry.sha256 else None, 0
        with self.target.open_write(entry.path) as fh:      # a temporary file, renamed over the path on success
            try:
                for blob in entry.blobs:
                    data = cache.blob(blob)                 # checked against its id
                    if digest is not None:
                        digest.update(data)
                    size += len(data)
                    fh.write(data)
            except IntegrityError as exc:
                raise IntegrityError(f"{shown(entry.path)} not restored: {exc.message}", hint=exc.hint) from exc
            if size != entry.size or (digest is not None and digest.hexdigest() != entry.sha256):
                raise IntegrityError(f"{shown(entry.path)} not restored: its content does not match the snapshot's "
                                     "size and SHA-256")
        self.target.set_mtime(entry.path, entry.mtime_ns)
        self.progress(size)
        return size


def _same_file(fh, entry: Entry, length: Callable[[str], int]) -> bool:
    """Whether ``fh`` holds ``entry``'s content: its SHA-256 when the manifest has it, else blob by blob."""
    if entry.sha256:
        return sha256_of(fh)[0] == entry.sha256
    for blob in entry.blobs:
        want, digest = length(blob), hashlib.sha256()
        while want and (data := fh.read(min(want, 1 << 20))):
            digest.update(data)
            want -= len(data)
        if want or digest.hexdigest() != blob:
            return False
    return not fh.read(1)
