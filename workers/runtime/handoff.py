"""Deliveries from the connection's I/O thread to the job threads, woken once per I/O-loop pass.

A plain queue wakes a sleeping job thread for every delivery put in it, and a woken thread asks for the GIL
while the I/O thread is still reading the socket: the two hand the GIL back and forth once per message.
Here deliveries go into a deque at once (a running job thread takes the next one without any wake-up), and
sleeping threads are woken once per loop pass, after everything read in that pass was queued, as many as
there is work for. Work is still taken one delivery at a time, so a long job never holds others back.
"""
from __future__ import annotations

import collections
import queue


class Handoff:
    def __init__(self, ioloop, concurrency: int) -> None:
        self._ioloop, self._concurrency = ioloop, concurrency
        self._backlog: collections.deque = collections.deque()
        self._wake: queue.SimpleQueue = queue.SimpleQueue()  # True: look again; None: stop
        self._wake_scheduled = False

    def put(self, item) -> None:
        """I/O thread only."""
        self._backlog.append(item)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._ioloop.call_later(0, self._wake_threads)

    def _wake_threads(self) -> None:
        self._wake_scheduled = False
        for _ in range(min(len(self._backlog), self._concurrency)):
            self._wake.put(True)

    def get(self):
        """Job threads: the next item, waiting for one; None once :meth:`close` was called."""
        while True:
            try:
                return self._backlog.popleft()
            except IndexError:  # nothing queued: sleep until woken (a spare wake-up just looks again)
                if self._wake.get() is None:
                    return None

    def close(self, threads: int) -> None:
        """Stop ``threads`` job threads once they are idle (items still queued are dropped: unacked, the
        broker redelivers them)."""
        for _ in range(threads):
            self._wake.put(None)
