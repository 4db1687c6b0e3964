"""Objects that say "my holder is alive": locks and leases written to a store and rewritten by a background thread
while their holder works (``workers.repository.lock``, ``workers.artifacts.jobs``).

A subclass writes its object in ``_write`` (and records when with :meth:`Heartbeat._wrote`), claims in ``acquire``
and then calls :meth:`Heartbeat._start`. The thread stops rewriting once the object is gone (someone removed it as
stale: writing it back would resurrect a claim that was taken over) and marks it ``_lost``.
"""
from __future__ import annotations

import os
import socket
import threading
import time

from workers.storage.base import StorageBackend


def holder_alive(host: str, pid: int) -> bool:
    """False only when the holder ran on this host and its process no longer exists (elsewhere: unknown, True)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class Heartbeat:
    backend: StorageBackend
    key: str

    def __init__(self) -> None:
        self._refreshed = time.monotonic()
        self._lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        raise NotImplementedError

    def acquire(self) -> "Heartbeat":
        raise NotImplementedError

    def _wrote(self, started: float) -> None:
        self._refreshed = started

    def _start(self, every: float, name: str) -> None:
        self._thread = threading.Thread(target=self._refresh_loop, args=(every,), name=name, daemon=True)
        self._thread.start()

    def _refresh_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                if not self.backend.exists(self.key):        # removed as stale: never write it back
                    self._lost = True
                    return
                self._write()
            except Exception:  # noqa: BLE001 - the holder's check reports a lapsed object
                continue

    def _lapsed(self, limit: float) -> float | None:
        """Seconds since the last refresh when the object may have been ignored or removed meanwhile, else None."""
        lapsed = time.monotonic() - self._refreshed
        if self._lost or lapsed >= limit or not self.backend.exists(self.key):
            return lapsed
        return None

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.backend.delete(self.key)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
