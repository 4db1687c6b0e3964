"""Decoded packs of a restore: each pack fetched once (``fetchers`` background threads fetch them in the order the
restore needs them, several GETs in flight, a few packs ahead), read blob by blob, and dropped as soon as no file
still needs it.

A decoded pack is kept in memory while the packs held in memory stay within ``memory`` bytes (no local disk write and
read-back on the way from the store to the target), else on local disk. Decoded packs are plaintext: on disk they
live in a private directory (0700, files 0600) under the configured cache
(``APPSVC_DR_FILESHARE__CACHE_DIR``/``restore-tmp``), one per run, holding a lock file the run keeps locked. A run
killed before it could clean up leaves its directory; the next restore removes every directory whose lock is free.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import stat as py_stat
import tempfile
import threading
from collections import Counter
from pathlib import Path

from workers.repository.repo import Repository
from workers.runtime.errors import PermanentError
from workers.storage.codec import KeyRing
from workers.storage.crypto import IntegrityError

log = logging.getLogger(__name__)
LOCK = "run.lock"


def private_dir(path: Path) -> Path:
    """``path`` created 0700 (and its parents), refused unless it is a real directory of ours, 0700."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if not py_stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermanentError(f"{path} is not a directory owned by this user: refused for decrypted restore data",
                             hint="Remove it, or point APPSVC_DR_FILESHARE__CACHE_DIR at a private directory.")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def remove_stale(root: Path) -> int:
    """Remove the run directories under ``root`` left by killed restores (their lock is free); how many."""
    removed = 0
    for run in root.glob("run-*"):
        try:
            fd = os.open(run / LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None                               # killed between creating the directory and its lock
        except OSError:
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue                                # a restore running now
        finally:
            if fd is not None:
                os.close(fd)
        shutil.rmtree(run, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed %d temporary restore folder(s) left by interrupted restores under %s", removed, root)
    return removed


MEMORY = 32 << 20        # decoded packs held in memory at once (the rest spill to the private directory)
FETCHERS = 3             # packs fetched and decoded at once: S3 GETs in flight


class _Spool:
    """Where a pack is decoded: memory up to ``limit`` bytes (a buffer of that size made at once: growing it with
    ``+=`` copied the first megabytes over and over), then a private file (0600) at ``path``."""

    def __init__(self, limit: int, path: Path) -> None:
        self.limit, self.path, self.buf, self.fh, self.size = limit, path, bytearray(limit), None, 0

    def write(self, data) -> int:
        n = len(data)
        if self.fh is None and self.size + n <= self.limit:
            self.buf[self.size:self.size + n] = data
            self.size += n
            return n
        if self.fh is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            self.fh = os.fdopen(fd, "wb")
            self.fh.write(memoryview(self.buf)[:self.size])
            self.buf = bytearray()
        return self.fh.write(data)

    def view(self) -> memoryview:
        return memoryview(self.buf)[:self.size]


def _pack_sizes(repo: Repository, refs: Counter) -> dict[str, int]:
    """The plaintext size of each pack in ``refs`` (the end of its last blob the index lists)."""
    sizes: dict[str, int] = {}
    if repo is None or not refs:
        return sizes
    for blob in repo.index.blobs:
        place = repo.index.place(blob)
        if place.pack in refs and place.offset + place.length > sizes.get(place.pack, 0):
            sizes[place.pack] = place.offset + place.length
    return sizes


class PackCache:
    def __init__(self, repo: Repository, keys: KeyRing | None, refs: Counter, *, temp_root: Path | None = None,
                 ahead: int = 6, fetchers: int = FETCHERS, memory: int = MEMORY) -> None:
        self.repo, self.keys, self.refs = repo, keys, refs
        root = private_dir(temp_root or Path(tempfile.gettempdir()) / f"appsvc-dr-restore-{os.geteuid()}")
        remove_stale(root)
        self.dir = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        self._lock_fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._room = threading.Semaphore(ahead)
        self._fetcher_count = fetchers
        self._stop = threading.Event()
        self._fetchers: list[threading.Thread] = []
        self._memory = self._budget = memory                    # bytes still free for packs held in memory
        self._sizes = _pack_sizes(repo, refs)                   # each needed pack's plaintext size, from the index
        self._held: dict[str, memoryview] = {}                  # decoded packs in memory
        self._reserved: dict[str, int] = {}                     # memory budget each fetched pack took
        self.spilled = 0                                        # packs decoded to the private directory

    @property
    def largest_in_memory(self) -> int:
        """The largest decoded pack this cache may hold in memory (0: none fits its budget)."""
        return max((size for size in self._sizes.values() if size <= self._memory), default=0)

    def prefetch(self, order: list[str]) -> None:
        """Fetch ``order``'s packs in the background, ``fetchers`` at once, at most ``ahead`` decoded packs held."""
        queue, queue_lock = iter(order), threading.Lock()

        def run() -> None:
            while True:
                self._room.acquire()
                with queue_lock:
                    pack = next(queue, None)
                if pack is None or self._stop.is_set():
                    self._room.release()
                    return
                with contextlib.suppress(Exception):        # a failure is met again (and reported) by the reader
                    self._fetch(pack)
        for i in range(max(1, self._fetcher_count)):
            thread = threading.Thread(target=run, name=f"restore-prefetch-{i}", daemon=True)
            thread.start()
            self._fetchers.append(thread)

    def _fetch(self, pack: str) -> memoryview | Path:
        with self._guard:
            lock = self._locks.setdefault(pack, threading.Lock())
        with lock:
            path = self.dir / pack
            with self._guard:
                held = self._held.get(pack)
                if held is not None or path.exists() or self.refs[pack] <= 0:
                    return held if held is not None else path
                size = self._sizes.get(pack, 0)
                limit = self._reserved[pack] = size if size <= self._memory else 0
                self._memory -= limit
            spool = _Spool(limit, path.with_suffix(".partial"))
            try:
                self.repo.read_pack(pack, spool, self.keys, blobs_checked=True)     # each blob: blob()
            except BaseException:
                if spool.fh is not None:
                    spool.fh.close()
                    spool.path.unlink(missing_ok=True)
                self._give_back(pack)
                raise
            if spool.fh is None:
                view = spool.view()
                with self._guard:
                    self._held[pack] = view
                return view
            spool.fh.close()
            spool.path.rename(path)
            with self._guard:
                self.spilled += 1
            self._give_back(pack)                   # on disk: its memory budget is free again
            return path

    def _give_back(self, pack: str) -> None:
        with self._guard:
            self._memory += self._reserved.pop(pack, 0)

    def _drop(self, pack: str) -> None:
        with self._guard:
            self._held.pop(pack, None)
        self._give_back(pack)
        (self.dir / pack).unlink(missing_ok=True)
        self._room.release()

    def blob(self, blob: str) -> bytes | memoryview:
        """The blob's bytes, checked against its id (its SHA-256). Its reference to the pack is dropped only once it
        passed: a blob that fails is released by the caller with the rest of its file (dropping it here too counted
        it twice, and another file's pack could go before that file read it)."""
        pack, offset, length = self.repo.index.place(blob)
        where = self._fetch(pack)
        if isinstance(where, memoryview):
            data = where[offset:offset + length]
        else:
            with open(where, "rb") as fh:
                fh.seek(offset)
                data = fh.read(length)
        if len(data) != length or hashlib.sha256(data).hexdigest() != blob:   # the caller releases it (release)
            raise IntegrityError(f"blob {blob[:12]} in pack {pack[:12]} does not match its id")
        with self._guard:
            self.refs[pack] -= 1
            last = self.refs[pack] <= 0
        if last:
            self._drop(pack)
        return data

    def release(self, blobs) -> None:
        """A file that will not be written after all: its blobs no longer keep their packs."""
        for blob in blobs:
            pack = self.repo.index.place(blob).pack
            with self._guard:
                self.refs[pack] -= 1
                last = self.refs[pack] == 0
            if last:
                self._drop(pack)

    def close(self) -> None:
        log.info("restore: %d of %d packs decoded to the private directory (over the %d MiB in memory)",
                 self.spilled, len(self.refs), self._budget >> 20)
        self._stop.set()
        for _ in range(64):
            self._room.release()
        for thread in self._fetchers:
            thread.join(timeout=30)
        self._held.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._lock_fd)
