"""Finished jobs handed from the job threads to the I/O loop: queued under a lock, and one wake-up of the loop
drains every job finished meanwhile."""
from __future__ import annotations

import threading
from typing import Callable

from pika.adapters.select_connection import IOLoop


class HandBack:
    """Finished jobs on their way from the job threads to ``finish``, called on the I/O loop's thread with each
    one's (connection, tag, outcome, delivery)."""

    def __init__(self, ioloop: IOLoop, finish: Callable[..., None]) -> None:
        self._ioloop, self._finish = ioloop, finish
        self._done: list = []
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, finished: tuple) -> None:
        """Queue a finished job for the I/O loop; one wake-up drains every job finished meanwhile."""
        with self._lock:
            self._done.append(finished)
            if self._scheduled:
                return
            self._scheduled = True
        self._ioloop.add_callback_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            finished, self._done = self._done, []
            self._scheduled = False
        for connection, tag, outcome, delivery in finished:
            self._finish(connection, tag, outcome, delivery)
