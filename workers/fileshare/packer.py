"""Group new blobs into pack objects of at most ``target`` bytes and upload them in the background.

Memory stays bounded: the pack being filled plus at most ``uploads + 1`` sealed packs waiting or uploading
(``add`` blocks while that many are in flight). Each stored pack is followed at once by its index object, so
an interrupted sync leaves only indexed packs behind (their blobs are reused by the next run) — at worst the
packs whose index write was cut off, which are re-uploaded.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from workers.fileshare.repo import Repository


class Packer:
    def __init__(self, repo: Repository, *, target: int, uploads: int = 2,
                 progress: Callable[[str, int], None] = lambda kind, n: None) -> None:
        self.repo, self.target, self.progress = repo, target, progress
        self._buf = bytearray()
        self._blobs: list[list] = []
        self._pending: set[str] = set()
        self._pool = ThreadPoolExecutor(uploads, thread_name_prefix="fileshare-pack")
        self._slots = threading.BoundedSemaphore(uploads + 1)
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self.packs = self.new_blobs = self.new_bytes = self.stored_bytes = 0

    def known(self, blob: str) -> bool:
        return blob in self.repo.index or blob in self._pending

    def add(self, blob: str, data: bytes | memoryview) -> bool:
        """Queue ``data`` under ``blob`` unless that blob is stored or queued already. True if queued."""
        self._raise()
        if self.known(blob):
            return False
        if self._blobs and len(self._buf) + len(data) > self.target:
            self._seal()                                # packs stay <= target: one S3 part each
        self._blobs.append([blob, len(self._buf), len(data)])
        self._buf += data
        self._pending.add(blob)
        self.new_blobs += 1
        self.new_bytes += len(data)
        return True

    def _seal(self) -> None:
        if not self._blobs:
            return
        body, blobs = self._buf, self._blobs
        self._buf, self._blobs = bytearray(), []
        while not self._slots.acquire(timeout=0.5):
            self._raise()
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(self._upload, body, blobs))

    def _upload(self, body: bytearray, blobs: list[list]) -> None:
        try:
            if self._error is not None:
                return
            pack, stored = self.repo.put_pack(body)
            self.repo.write_index({pack: blobs})
            with self._lock:
                self.packs += 0 if stored.deduplicated else 1
                self.stored_bytes += 0 if stored.deduplicated else stored.stored_size
            self.progress("uploaded", 0 if stored.deduplicated else stored.stored_size)
        except BaseException as exc:  # noqa: BLE001 - handed to the producer thread
            self._error = self._error or exc
        finally:
            for blob, _, _ in blobs:
                self._pending.discard(blob)
            self._slots.release()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Upload what is left and wait for every upload; raises the first upload error."""
        try:
            self._seal()
            for future in list(self._futures):
                future.result()
            self._raise()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        self._error = self._error or RuntimeError("aborted")
        self._pool.shutdown(wait=True, cancel_futures=True)
