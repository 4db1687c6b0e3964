"""Decoded packs of a restore on local disk: each pack fetched once (a background thread fetches them in the order
the restore needs them, a few ahead), read blob by blob, and deleted as soon as no file still needs it.

Decoded packs are plaintext: they live in a private directory (0700, files 0600) under the configured cache
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


class PackCache:
    def __init__(self, repo: Repository, keys: KeyRing | None, refs: Counter, *, temp_root: Path | None = None,
                 ahead: int = 4) -> None:
        self.repo, self.keys, self.refs = repo, keys, refs
        root = private_dir(temp_root or Path(tempfile.gettempdir()) / f"appsvc-dr-restore-{os.geteuid()}")
        remove_stale(root)
        self.dir = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        self._lock_fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._room = threading.Semaphore(ahead)
        self._stop = threading.Event()
        self._fetcher: threading.Thread | None = None

    def prefetch(self, order: list[str]) -> None:
        """Fetch ``order``'s packs in the background, at most ``ahead`` decoded packs on disk at once."""
        def run() -> None:
            for pack in order:
                self._room.acquire()
                if self._stop.is_set():
                    return
                with contextlib.suppress(Exception):        # a failure is met again (and reported) by the reader
                    self._fetch(pack)
        self._fetcher = threading.Thread(target=run, name="restore-prefetch", daemon=True)
        self._fetcher.start()

    def _fetch(self, pack: str) -> Path:
        with self._guard:
            lock = self._locks.setdefault(pack, threading.Lock())
        with lock:
            path = self.dir / pack
            if not path.exists() and self.refs[pack] > 0:
                tmp = path.with_suffix(".partial")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    self.repo.read_pack(pack, out, self.keys)
                tmp.rename(path)
            return path

    def blob(self, blob: str) -> bytes:
        pack, offset, length = self.repo.index.place(blob)
        path = self._fetch(pack)
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        with self._guard:
            self.refs[pack] -= 1
            last = self.refs[pack] <= 0
        if last:
            path.unlink(missing_ok=True)
            self._room.release()
        if hashlib.sha256(data).hexdigest() != blob:
            raise IntegrityError(f"blob {blob[:12]} in pack {pack[:12]} does not match its id")
        return data

    def release(self, blobs) -> None:
        """A file that will not be written after all: its blobs no longer keep their packs."""
        for blob in blobs:
            pack = self.repo.index.place(blob).pack
            with self._guard:
                self.refs[pack] -= 1
                last = self.refs[pack] == 0
            if last:
                (self.dir / pack).unlink(missing_ok=True)
                self._room.release()

    def close(self) -> None:
        self._stop.set()
        for _ in range(64):
            self._room.release()
        if self._fetcher is not None:
            self._fetcher.join(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._lock_fd)
